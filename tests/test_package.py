"""The installable package: one import name, decks and presets as package data, a real wheel.

Fast: a wheel built with ``pip wheel .`` holds ``glasscam`` only (no top-level ``analysis`` or
``insitu``), every deck and preset and the plugin, and works when installed alone (not
editable) outside the source tree. Slow: the same wheel in a fresh virtual environment runs
``glasscam run --preset tiny`` from an empty working directory.
"""

from __future__ import annotations

import filecmp
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import MPIRUN, REPO, run_lammps

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (found,) = out.glob("glasscam-*.whl")
    return found


def shipped_decks() -> list[str]:
    decks = [f"{s}/{d}" for s in ("kam", "abm")
             for d in ("quench.in", "propensity.in", "aging.in")]
    decks += [f"slurm/{p.name}" for p in (REPO / "inputs" / "slurm").glob("*.sbatch")]
    return decks + [f"presets/{p.name}" for p in (REPO / "inputs" / "presets").glob("*.toml")]


def test_wheel_holds_one_package_with_decks_presets_and_plugin(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"glasscam"}, tops
    assert not any(n.startswith(("analysis/", "insitu/", "inputs/")) for n in names)
    for deck in shipped_decks():
        assert f"glasscam/inputs/{deck}" in names, deck
    assert "glasscam/insitu/_lib/insituplugin.so" in names
    for module in ("__init__.py", "insitu/quench.py", "insitu/systems.py", "analysis/stage.py",
                   "analysis/cli/__init__.py", "decks.py"):
        assert f"glasscam/{module}" in names, module
    commit = zipfile.ZipFile(wheel).read("glasscam/_commit.txt").decode().strip()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert commit == head


def test_installed_wheel_alone_imports_and_copies_its_decks(wheel, tmp_path):
    """Installed (not editable) into a folder of its own, outside the source tree, and run with
    no site processing, so neither the editable finder nor the repository can stand in."""
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
         str(wheel)], capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    site = next(p for p in sys.path if p.endswith("site-packages"))
    work = tmp_path / "empty"
    work.mkdir()
    code = (
        "import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]\n"
        "import json, glasscam, glasscam.insitu, glasscam.analysis, glasscam.insitu.plugin as p\n"
        "from glasscam.decks import copy_decks, packaged_inputs\n"
        "copy_decks('decks')\n"
        "print(json.dumps({'glasscam': glasscam.__file__, 'insitu': glasscam.insitu.__file__,"
        " 'inputs': str(packaged_inputs()), 'plugin': p.plugin_path(),"
        " 'version': glasscam.version_string()}))\n"
    )
    proc = subprocess.run([sys.executable, "-S", "-c", code, str(target), site], cwd=work,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("glasscam", "insitu", "inputs", "plugin"):
        assert Path(info[key]).resolve().is_relative_to(target.resolve()), (key, info[key])
    assert "(commit " in info["version"]
    for deck in shipped_decks():
        assert filecmp.cmp(work / "decks" / deck, REPO / "inputs" / deck, shallow=False), deck


def test_decks_copy_refuses_to_overwrite_edits(tmp_path):
    glasscam = str(BIN / "glasscam")
    first = subprocess.run([glasscam, "decks", str(tmp_path)], capture_output=True, text=True)
    assert first.returncode == 0 and first.stdout.count("wrote ") == len(shipped_decks())
    edited = tmp_path / "kam" / "quench.in"
    edited.write_text(edited.read_text() + "# my change\n")
    again = subprocess.run([glasscam, "decks", str(tmp_path)], capture_output=True, text=True)
    assert again.returncode == 2
    assert f"refusing to overwrite edited file(s) {edited}" in again.stderr
    assert edited.read_text().endswith("# my change\n")
    forced = subprocess.run([glasscam, "decks", str(tmp_path), "--force"], capture_output=True,
                            text=True)
    assert forced.returncode == 0 and forced.stdout.strip() == f"wrote {edited}"
    assert filecmp.cmp(edited, REPO / "inputs" / "kam" / "quench.in", shallow=False)


def test_version_names_the_commit():
    proc = subprocess.run([str(BIN / "glasscam"), "--version"], capture_output=True, text=True)
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    assert proc.returncode == 0
    assert proc.stdout.startswith("glasscam 0.") and head in proc.stdout


@pytest.mark.mpi
def test_copied_decks_run_under_mpirun_with_two_partitions(tmp_path):
    subprocess.run([str(BIN / "glasscam"), "decks", str(tmp_path / "d")], check=True,
                   capture_output=True)
    out = tmp_path / "samples.zarr"
    run_lammps(tmp_path / "d" / "kam" / "quench.in",
               {"out": out, "nsamples": 2, "natoms": 120, "rate": 0.2, "nequil": 100,
                "nrecord": 500, "grid": 8, "nthermo": 100000},
               np=2, partitions="2x1", cwd=tmp_path)
    from glasscam.insitu import schema

    root = schema.open_samples_store(out)
    assert schema.done_samples(root).all()
    assert root.attrs["parameters"]["model"] == "kam" and MPIRUN


def test_no_top_level_module_but_glasscam_is_importable(tmp_path):
    """Neither the wheel nor the development install exposes the repository's folders
    (insitu/, analysis/, inputs/, benchmarks/) as top-level modules."""
    code = (
        "import importlib.util as u, json\n"
        "print(json.dumps({n: u.find_spec(n) is not None for n in "
        "('glasscam', 'insitu', 'analysis', 'inputs', 'benchmarks', 'tests')}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"glasscam": True, "insitu": False, "analysis": False,
                                       "inputs": False, "benchmarks": False, "tests": False}


@pytest.mark.slow
def test_fresh_venv_runs_the_tiny_preset_from_an_empty_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "torch==2.13.0"], check=True, timeout=1800)
    subprocess.run([*pip, str(wheel)], check=True, timeout=1800)
    work = tmp_path / "empty"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(venv / "bin" / "glasscam"), "run", "--preset", "tiny", "--out", "run"],
        cwd=work, env=env, capture_output=True, text=True, timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (work / "run" / "report.html").exists()
    check = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import glasscam, glasscam.insitu, glasscam.analysis; print(glasscam.__file__)"],
        cwd=work, env=env, capture_output=True, text=True,
    )
    assert str(venv) in check.stdout
