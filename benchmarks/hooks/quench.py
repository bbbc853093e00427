"""Timed quench hooks and the stress path, for the generated benchmark decks only.

``setup``, ``next``, ``start``, ``record``, ``snapshot`` are :mod:`glasscam.insitu.quench`'s
hooks, each wrapped with a timer; ``finish`` also drains the stress path and writes the timing
JSON (``timing PATH``: ``{hook: {"seconds": s, "calls": n}}`` of universe rank 0's process,
``helper_threads_cpu``: CPU of the process's threads other than LAMMPS' (zarr's IO threads, the
writer thread), and ``frames_drain``, ``frames_thread_cpu`` (the writer thread's own CPU),
``frames_written`` when frames were written). The stress path:

    insitu benchmarks.hooks.quench:frames every S out PATH nsamples .. ncool .. grid .. ...
    fix frm all insitu S benchmarks.hooks.quench:frame sample ${sample}

gathers a frame every S steps of the cooling; a background thread gridizes it and writes it
into the scratch store PATH (:class:`benchmarks.frames.FrameWriter`), frame
``sample * (ncool // S + 1) + step // S``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from glasscam.insitu import deck, parallel
from glasscam.insitu import quench as _quench

from benchmarks.frames import FrameWriter
from benchmarks.hooks import HookTimer, helper_threads_cpu, write_json

TIMER = HookTimer()

setup = TIMER.wrap(_quench.setup)
next = TIMER.wrap(_quench.next)  # noqa: A001 - the deck's verb
start = TIMER.wrap(_quench.start)
record = TIMER.wrap(_quench.record)
snapshot = TIMER.wrap(_quench.snapshot)

WHERE = "benchmarks.hooks.quench"


@dataclass
class _Frames:
    every: int
    per_sample: int
    nframes: int
    writer: FrameWriter | None  # on partition roots
    last: int = -1  # index of the last frame taken (the liquid run's last step is the glass
    # run's setup step: taken once)
    taken: int = 0


_FRAMES: _Frames | None = None


def frames(lmp, step: int, **kw: str) -> None:
    """Set up the stress path (collective over the universe): create the scratch store."""
    global _FRAMES
    where = f"{WHERE}:frames"
    p = deck.parse_keywords(
        kw,
        {"every": int, "out": str, "nsamples": int, "ncool": int, "grid": int, "channels": int,
         "kernel": str},
        where,
        required=("every", "out", "nsamples", "ncool", "grid", "channels", "kernel"),
    )
    deck.check([(p["every"] >= 1, f"every must be >= 1, got {p['every']}")], where)
    per_sample = p["ncool"] // p["every"] + 1
    nframes = p["nsamples"] * per_sample
    parallel.on_root(
        parallel.universe(),
        lambda: FrameWriter.create(p["out"], nframes, p["channels"], p["grid"], p["every"]),
    )
    root = parallel.partition(lmp).Get_rank() == 0
    writer = FrameWriter(p["out"], p["grid"], p["channels"], p["kernel"]) if root else None
    _FRAMES = _Frames(every=p["every"], per_sample=per_sample, nframes=nframes, writer=writer)


def _frame(lmp, step: int, **kw: str) -> None:
    """Fix hook of the stress path: gather the frame; the writer thread does the rest."""
    where = f"{WHERE}:frame"
    sample = deck.parse_keywords(kw, {"sample": int}, where, required=("sample",))["sample"]
    st = _FRAMES
    if st is None:
        raise RuntimeError(f"{where}: called before {WHERE}:frames")
    if step % st.every or sample < 0:
        return  # the setup call of the glass run, between two frame steps
    index = sample * st.per_sample + step // st.every
    if index == st.last:
        return
    if not 0 <= index < st.nframes:
        raise RuntimeError(f"{where}: frame {index} of sample {sample} at step {step} is outside "
                           f"the {st.nframes} frames of the store")
    st.last = index
    frame = deck.gather(lmp, parallel.partition(lmp))  # collective
    if frame is None:
        return
    assert st.writer is not None
    st.writer.submit(index, deck.wrap_float32(frame.positions, frame.box), frame.types,
                     frame.box)
    st.taken += 1


frame = TIMER.wrap(_frame, "frame")


def finish(lmp, step: int, **kw: str) -> None:
    """Drain the stress path, then the production ``finish``; write the timing JSON."""
    global _FRAMES
    timing = kw.pop("timing", None)
    extra = {}
    writer = _FRAMES.writer if _FRAMES is not None else None
    if writer is not None:
        t0 = time.perf_counter()
        writer.flush()
        TIMER.add("frames_drain", time.perf_counter() - t0)
    helpers = helper_threads_cpu()  # the writer thread still runs: its CPU is counted
    if helpers is not None:
        TIMER.add("helper_threads_cpu", helpers)
    if writer is not None:
        assert _FRAMES is not None
        writer.close()
        TIMER.add("frames_thread_cpu", writer.thread_cpu_s)
        extra["frames_written"] = {"frames": writer.written, "taken": _FRAMES.taken}
    _FRAMES = None
    TIMER.wrap(_quench.finish, "finish")(lmp, step, **kw)
    if timing and parallel.universe().Get_rank() == 0:
        write_json(timing, {**TIMER.as_json(), **extra})
    TIMER.clear()
