"""The live Grad-CAM hook, timed part by part from outside (benchmarks/bench_live.py only).

Importing this module wraps the parts of :mod:`glasscam.insitu.live` that its hook calls
through module and class attributes, so ``benchmarks.hooks.live:gradcam`` runs exactly the
production hook while a timer records, per call, on each rank (the JSON is the partition
root's):

* ``gather`` — :func:`~glasscam.insitu.live.gather_frame` (the MPI gather by atom ID);
* ``cnn`` — :meth:`~glasscam.insitu.live.LiveModel.image` (gridization),
  :meth:`~glasscam.insitu.live.LiveModel.forward` and ``probability`` (the network);
* ``gradcam`` — :meth:`~glasscam.insitu.live.LiveModel.gradcam` (map and Γ);
* ``write_atoms`` — :func:`~glasscam.insitu.live.publish` (the per-atom properties and the
  variable, every rank), ``write_store`` — :meth:`~glasscam.insitu.live.LiveWriter.append`
  (the buffer, and a whole-chunk Zarr write every ``batch`` frames);
* ``total`` — the whole hook call (``other`` = total − the parts: the broadcast of Γ, the
  temperature, bookkeeping).

``finish timing PATH`` also writes ``{"calls": [{part: seconds}, ...], "final_flush": s}``
(one entry per call, in order; the first is the setup call, which loads the model).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

from glasscam.insitu import live as _live

from benchmarks.hooks import write_json

CALLS: list[dict[str, float]] = []
_CURRENT: dict[str, float] = {}


def _timed(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    @functools.wraps(func)
    def timed(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return func(*args, **kw)
        finally:
            _CURRENT[name] = _CURRENT.get(name, 0.0) + time.perf_counter() - t0

    return timed


_live.gather_frame = _timed(_live.gather_frame, "gather")
_live.publish = _timed(_live.publish, "write_atoms")
_live.LiveModel.image = _timed(_live.LiveModel.image, "cnn")
_live.LiveModel.forward = _timed(_live.LiveModel.forward, "cnn")
_live.LiveModel.probability = _timed(_live.LiveModel.probability, "cnn")
_live.LiveModel.gradcam = _timed(_live.LiveModel.gradcam, "gradcam")
_live.LiveWriter.append = _timed(_live.LiveWriter.append, "write_store")


def gradcam(lmp, step: int, **kw: str) -> None:
    """The production hook, one timing record per call."""
    _CURRENT.clear()
    t0 = time.perf_counter()
    try:
        _live.gradcam(lmp, step, **kw)
    finally:
        _CURRENT["total"] = time.perf_counter() - t0
        CALLS.append(dict(_CURRENT))


def finish(lmp, step: int, timing: str | None = None, **kw: str) -> None:
    """The production ``finish`` (timed: the last partial batch), then the timing JSON."""
    t0 = time.perf_counter()
    _live.finish(lmp, step, **kw)
    flush = time.perf_counter() - t0
    if timing and int(lmp.extract_setting("world_rank")) == 0:
        write_json(timing, {"calls": CALLS, "final_flush": flush})
