"""SLURM templates of every stage (issue 15): shipped by `glasscam decks`, valid bash,
resubmittable (--requeue), and every command, option and deck variable they use exists."""

from __future__ import annotations

import re
import subprocess

import pytest
from conftest import BIN
from glasscam.analysis.pipeline.runner import deck_variables

GLASSCAM = str(BIN / "glasscam")
TEMPLATES = ("quench", "propensity", "train", "analysis")


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    dest = tmp_path_factory.mktemp("decks")
    subprocess.run([GLASSCAM, "decks", str(dest)], check=True, capture_output=True)
    return dest


def commands(script: str) -> list[str]:
    """The script's commands, continuation lines joined."""
    return [ln.strip() for ln in script.replace("\\\n", " ").splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_is_valid_and_uses_only_what_exists(decks, name):
    path = decks / "slurm" / f"{name}.sbatch"
    script = path.read_text()
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    assert "#SBATCH --requeue" in script and "#SBATCH --job-name=" in script
    assert "Resumable" in script
    helps: dict[str, str] = {}
    for cmd in commands(script):
        for sub, rest in re.findall(r'bin/glasscam"\s+(\w+)(.*?)(?=$|"\$VENV)', cmd):
            if sub not in helps:
                helps[sub] = subprocess.run([GLASSCAM, sub, "--help"], capture_output=True,
                                            text=True, env={"COLUMNS": "200", "PATH": ""}
                                            ).stdout
            for opt in re.findall(r"(--[a-z][a-z-]*)", rest):
                assert opt in helps[sub], f"{name}: glasscam {sub} has no option {opt}"
        deck = re.search(r'-in "\$DECKS/\$SYSTEM/(\w+\.in)"', cmd)
        if deck:
            known = deck_variables(decks / "kam" / deck.group(1))
            for var in re.findall(r"-var (\w+)", cmd):
                assert var in known, f"{name}: {deck.group(1)} has no variable {var!r}"
    assert helps or "lmp" in script
