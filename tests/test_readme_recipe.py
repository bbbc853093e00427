"""The README's "pipeline by hand" recipe, run exactly as written (issue 15), at a smaller size:
only the sizes are replaced (each replacement must find its text, so an edit of the README that
this test does not know about fails here rather than silently)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import zarr
from conftest import REPO

# README text -> the same at test scale
SMALLER = {
    "-var nsamples 64": "-var nsamples 24",
    "-var natoms 500": "-var natoms 200",
    "-var rate 0.02": "-var rate 0.2 -var nequil 200 -var nrecord 200",
    "-var grid 32": "-var grid 12",
    "-var nreplicas 30": "-var nreplicas 2",
    "-var nsteps 200000": "-var nsteps 600 -var noutputs 4",
    "--epochs 60": "--epochs 2 --threads 2",
}


def recipe() -> str:
    text = (REPO / "README.md").read_text()
    block = re.search(r"## The pipeline by hand.*?```bash\n(.*?)```", text, re.S)
    assert block, "README has no 'The pipeline by hand' bash block"
    script = block.group(1)
    for old, new in SMALLER.items():
        assert old in script, f"the README recipe no longer contains {old!r}"
        script = script.replace(old, new)
    return script


def test_readme_recipe_runs_as_written(tmp_path):
    (tmp_path / ".venv").symlink_to(REPO / ".venv")
    script = "set -euo pipefail\n" + recipe()
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    run = tmp_path / "runs" / "x"
    tables = run / "tables"
    assert (tables / "significance.csv").exists() and (run / "report.html").exists()
    prop = zarr.open_group(str(run / "propensity_T0.45.zarr"), mode="r")
    samples = zarr.open_group(str(run / "samples.zarr"), mode="r")
    # the configurations are test-split samples, which the gradcam store holds
    assert all(int(samples["split"][i]) == 2 for i in prop["samples"][:])
    gradcam = zarr.open_group(str(run / "gradcam.zarr"), mode="r")
    assert all(bool(gradcam["glass/done"][i]) for i in prop["samples"][:])
    assert Path(run / "model" / "metrics.json").exists()
