"""Timed propensity hooks and the run-wide reductions, for the generated benchmark decks only.

``setup``, ``next_replica``, ``load``, ``run_replica``, ``heartbeat`` are
:mod:`glasscam.insitu.isoconfigurational`'s hooks, each wrapped with a timer; ``finish`` also
reduces over the universe what the benchmark reports and writes it as JSON (``timing PATH``,
universe rank 0)::

    {"hooks": {hook: {"seconds": s, "calls": n}},   # universe rank 0's process
     "replica_steps": .., "phase_wall_s": .., "replica_steps_per_s": .., "peak_rss_mib": ..}

``phase_wall_s``: from the end of ``setup`` to the start of ``finish``, the maximum over the
ranks (the replica phase); ``replica_steps``: MD steps of the replicas run now, summed over
partitions; ``peak_rss_mib``: the largest peak resident set of any rank, at the end.
"""

from __future__ import annotations

import resource
import time

from glasscam.insitu import isoconfigurational as _iso
from glasscam.insitu import parallel

from benchmarks.hooks import HookTimer, write_json

TIMER = HookTimer()
_PHASE: dict[str, float] = {"t0": 0.0, "steps": 0}


def _setup(lmp, step: int, **kw: str) -> None:
    _iso.setup(lmp, step, **kw)
    _PHASE.update(t0=time.perf_counter(), steps=0)


def _run_replica(lmp, step: int, **kw: str) -> None:
    _iso.run_replica(lmp, step, **kw)
    _PHASE["steps"] += int(lmp.extract_global("ntimestep")) - int(step)


setup = TIMER.wrap(_setup, "setup")
next_replica = TIMER.wrap(_iso.next_replica)
load = TIMER.wrap(_iso.load)
run_replica = TIMER.wrap(_run_replica, "run_replica")
heartbeat = TIMER.wrap(_iso.heartbeat)


def finish(lmp, step: int, **kw: str) -> None:
    """The production ``finish``, then the reductions; universe rank 0 writes the JSON."""
    from mpi4py import MPI

    timing = kw.pop("timing", None)
    phase = time.perf_counter() - _PHASE["t0"]
    part_root = parallel.partition(lmp).Get_rank() == 0
    TIMER.wrap(_iso.finish, "finish")(lmp, step, **kw)
    uni = parallel.universe()
    wall = uni.reduce(phase, op=MPI.MAX, root=0)
    steps = uni.reduce(int(_PHASE["steps"]) if part_root else 0, op=MPI.SUM, root=0)
    rss_kib = uni.reduce(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, op=MPI.MAX, root=0)
    if uni.Get_rank() == 0:
        rate = steps / wall if wall > 0 else 0.0
        result = {
            "hooks": TIMER.as_json(),
            "replica_steps": int(steps),
            "phase_wall_s": wall,
            "replica_steps_per_s": rate,
            "peak_rss_mib": rss_kib / 1024,
        }
        print(f"benchmarks propensity: {steps} replica-steps in {wall:.3f} s "
              f"({rate:.1f} replica-steps/s); peak RSS per rank {rss_kib / 1024:.1f} MiB",
              flush=True)
        if timing:
            write_json(timing, result)
    TIMER.clear()
