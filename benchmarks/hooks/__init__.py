"""Benchmark-only LAMMPS hooks: glasscam's production hooks, timed, and the benchmark paths.

The generated benchmark decks (:mod:`benchmarks.decks`) call ``benchmarks.hooks.quench:NAME``
and ``benchmarks.hooks.propensity:NAME`` where the production decks call
``glasscam.insitu.quench:NAME`` and ``glasscam.insitu.isoconfigurational:NAME``; each wrapper
times the production hook it delegates to. Nothing of ``glasscam`` imports this package: the
production hooks hold no benchmark code. ``lmp`` finds this package through ``PYTHONPATH``
(:func:`benchmarks.common.lammps_env`).
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable
from typing import Any


class HookTimer:
    """Wall time and call count of each timed hook of this process."""

    def __init__(self) -> None:
        self.table: dict[str, list[float]] = {}

    def add(self, name: str, seconds: float, calls: int = 1) -> None:
        entry = self.table.setdefault(name, [0.0, 0])
        entry[0] += seconds
        entry[1] += calls

    def wrap(self, func: Callable[..., Any], name: str | None = None) -> Callable[..., Any]:
        """``func(lmp, step, **kw)`` timed under ``name`` (default: its own name)."""
        key = name or func.__name__

        @functools.wraps(func)
        def timed(lmp, step: int, **kw: str) -> Any:
            t0 = time.perf_counter()
            try:
                return func(lmp, step, **kw)
            finally:
                self.add(key, time.perf_counter() - t0)

        return timed

    def as_json(self) -> dict[str, dict[str, float]]:
        return {k: {"seconds": v[0], "calls": int(v[1])} for k, v in self.table.items()}

    def clear(self) -> None:
        self.table.clear()


def helper_threads_cpu() -> float | None:
    """CPU seconds (user + sys) of every thread of this process except the main one.

    The main thread runs LAMMPS; the others do the background work: the stress path's writer
    thread, zarr's IO event loop and its executor threads (zarr runs its writes there, so the
    CPU time of the thread that calls zarr misses most of the cost). Linux ``/proc`` only
    (``None`` elsewhere); threads that have exited are not counted.
    """
    main = os.getpid()
    try:
        tasks = os.listdir("/proc/self/task")
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    total = 0
    for tid in tasks:
        if int(tid) == main:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    return total / tick


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (through a temporary name: never a torn file)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1)
    os.replace(tmp, path)
