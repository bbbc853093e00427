"""glasscam — in-situ LAMMPS samples → CNN / Grad-CAM → structural indicators → correlations.

A reproduction of Oyama, Koyama & Kawasaki, "What do deep neural networks find in disordered
structures of glasses?" (Front. Phys. 2023), as one installable package:

``glasscam.insitu``    run inside LAMMPS (hooks of the ``fix insitu`` plugin), pure kernels
                       (gridization, cage-relative displacements, periodic geometry), the one
                       model table (:mod:`glasscam.insitu.systems`) and the store schemas;
                       imports nothing heavy.
``glasscam.analysis``  offline, Dask-parallel analysis, grouped by the paper's concepts.
``glasscam.inputs``    the LAMMPS decks and presets (package data; ``glasscam decks DIR``).

Importing ``glasscam`` is cheap (it happens in every MPI rank of every LAMMPS partition).

The Python API (imported on first use)::

    import glasscam as gc
    model = gc.load_model("runs/demo/model")          # one network or an ensemble
    frame = gc.read_configuration("glass.data")       # LAMMPS data/dump, extended XYZ
    r = model.explain(frame.positions, frame.species, frame.box, indicators=True)
    r.p_glass, r.cam, r.gamma, r.gamma_cg, r.voronoi, r.ttop
    stores = gc.open_run("runs/demo")                 # {"samples": xarray.DataTree, ...}
"""

from __future__ import annotations

import functools
import os
import subprocess
from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("glasscam")
except metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

COMMIT_FILE = "_commit.txt"  # written at build time (CMakeLists.txt) beside this module


@functools.cache
def commit() -> str | None:
    """The git commit this installation was built from, when known.

    A source checkout (editable install) answers with its current ``HEAD`` (``-dirty`` when
    tracked files differ); a wheel answers with the commit recorded when it was built.
    """
    source = Path(__file__).resolve().parents[1]
    if (source / ".git").exists():
        try:
            head = subprocess.run(
                ["git", "-C", str(source), "rev-parse", "HEAD"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
            return head + ("-dirty" if dirty else "") if head else None
        except (OSError, subprocess.SubprocessError):
            pass
    candidates = [Path(__file__).with_name(COMMIT_FILE)]
    try:
        candidates += [
            Path(f.locate()) for f in metadata.files("glasscam") or () if f.name == COMMIT_FILE
        ]
    except metadata.PackageNotFoundError:
        pass
    for path in candidates:
        if path.is_file():
            text = path.read_text().strip()
            if text:
                return text
    return os.environ.get("GLASSCAM_COMMIT") or None


def version_string() -> str:
    """``glasscam X.Y.Z (commit abc...)`` — what ``glasscam --version`` prints."""
    c = commit()
    return f"glasscam {__version__}" + (f" (commit {c})" if c else "")


_API = {
    "load_model": "glasscam.analysis.apply.explain",
    "TrainedModel": "glasscam.analysis.apply.explain",
    "read_configuration": "glasscam.analysis.apply.read",
    "read_configurations": "glasscam.analysis.apply.read",
    "open_run": "glasscam.analysis.apply.datasets",
    "open_store": "glasscam.analysis.apply.datasets",
}


def __getattr__(name: str):
    """The Python API, imported on first use (``import glasscam`` itself stays cheap)."""
    if name in _API:
        import importlib

        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'glasscam' has no attribute {name!r}")


__all__ = ["__version__", "commit", "version_string", *_API]
