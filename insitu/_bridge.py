"""Python side of the glasscam LAMMPS plugin (``fix insitu`` / ``insitu`` command).

Called from C++ (``lammps_plugin/pyhost.cpp``) only; nothing here is public API.
The C++ layer calls :func:`create` once per fix (or per ``insitu`` command) and then
the returned :class:`Hook` with the timestep.  Neither ever raises: failures come
back as a ``(summary, details)`` pair of strings, where ``summary`` is one line for
the LAMMPS error message and ``details`` is the full text (traceback) printed by the
failing rank.  This keeps error handling, and the MPI reduction of failure flags
that the C++ side does after every call, independent of where Python failed.

Kept import-light on purpose (runs inside every MD rank): no numpy, torch or dask
at import time; ``lammps`` and ``mpi4py`` are imported on first use.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from typing import Any

# Every MPI rank of LAMMPS is one single-threaded process: numpy's BLAS/OpenMP pools would
# otherwise start a thread per core in every rank and spin on the cores the other ranks use.
# Set before the hooks import numpy; a user's explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

_LAMMPS_CACHE: dict[int, Any] = {}


class HookError(Exception):
    """A resolution failure with a ready-made (summary, details) pair."""

    def __init__(self, summary: str, details: str | None = None):
        super().__init__(summary)
        self.summary = summary
        self.details = details if details is not None else summary + "\n"


def lammps_for(capsule: Any, address: int) -> Any:
    """The ``lammps.lammps`` wrapper of the running instance (one per instance, cached)."""
    lmp = _LAMMPS_CACHE.get(address)
    if lmp is None:
        try:  # mpi4py first: it loads libmpi for lammps' ctypes checks
            from mpi4py import MPI  # noqa: F401
        except ImportError:
            pass
        import lammps

        lmp = lammps.lammps(ptr=capsule)
        _LAMMPS_CACHE[address] = lmp
    return lmp


def resolve(spec: str) -> Any:
    """Import ``module:function`` (``function`` may be a dotted attribute path)."""
    modname, sep, attr = spec.partition(":")
    if not sep or not modname or not attr:
        raise HookError(f"expected module:function, got {spec!r}")
    try:
        module = importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (modname == missing or modname.startswith(missing + ".")):
            raise HookError(
                f"cannot import module '{modname}': No module named '{missing}'",
                f"cannot import module '{modname}': No module named '{missing}'\n"
                f"  (sys.path: {sys.path})\n",
            ) from None
        raise HookError(
            f"importing module '{modname}' failed: {_last_line(exc)}", traceback.format_exc()
        ) from None
    except BaseException as exc:  # noqa: BLE001 - errors in the module itself
        raise HookError(
            f"importing module '{modname}' failed: {_last_line(exc)}", traceback.format_exc()
        ) from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            where = getattr(module, "__file__", None) or modname
            raise HookError(f"module '{modname}' ({where}) has no function '{attr}'") from None
    if not callable(obj):
        raise HookError(f"'{spec}' is not callable (it is a {type(obj).__name__})")
    return obj


class Hook:
    """``func(lmp, step, **kwargs)``; calling it returns None or (summary, details)."""

    __slots__ = ("func", "lmp", "kwargs", "spec")

    def __init__(self, func: Any, lmp: Any, kwargs: dict[str, str], spec: str):
        self.func = func
        self.lmp = lmp
        self.kwargs = kwargs
        self.spec = spec

    def __call__(self, step: int) -> tuple[str, str] | None:
        try:
            self.func(self.lmp, step, **self.kwargs)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: never a silent skip
            return _last_line(exc), traceback.format_exc()
        return None


def create(capsule: Any, address: int, spec: str, kwargs: dict[str, str]):
    """Resolve ``spec`` and bind it: returns ``(Hook, None)`` or ``(None, (summary, details))``."""
    try:
        func = resolve(spec)
        lmp = lammps_for(capsule, address)
    except HookError as exc:
        return None, (exc.summary, exc.details)
    except BaseException as exc:  # noqa: BLE001
        return None, (_last_line(exc), traceback.format_exc())
    return Hook(func, lmp, dict(kwargs), spec), None


def _last_line(exc: BaseException) -> str:
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
