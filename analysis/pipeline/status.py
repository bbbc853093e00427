"""`glasscam status RUN`: where a run folder stands, read-only (a few small reads per store).

Per stage (pipeline order): done (with its wall time), running or interrupted (a `run` holds
the folder's lock, or not), pending. Per store: done counts (samples per class, replicas and
finished configurations, epochs of the model). The total wall time across every attempt of
`glasscam run` (``.glasscam/time.json``), an estimate of the running stage's remaining time
(its elapsed time scaled by what is left of its store), and the last line of the newest log.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glasscam.analysis.pipeline.runner import (
    OUTPUTS,
    STAGES,
    marker,
    running_marker,
    time_file,
)


@dataclass
class StageStatus:
    name: str
    state: str  # done | running | interrupted | pending
    wall_s: float | None = None
    progress: float | None = None  # fraction done of the stage's own store, when known
    detail: str = ""
    remaining_s: float | None = None


@dataclass
class RunStatus:
    run: Path
    system: str | None
    preset: str | None
    active: str | None  # the holder of the run folder's lock, when a run is active
    stages: list[StageStatus] = field(default_factory=list)
    total_wall_s: float = 0.0
    last_log: tuple[str, str] | None = None  # (file, last line)

    @property
    def pending(self) -> list[str]:
        return [s.name for s in self.stages if s.state != "done"]


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _done_fraction(store: Path, groups: tuple[str, ...]) -> tuple[int, int] | None:
    import numpy as np
    import zarr

    try:
        root = zarr.open_group(str(store), mode="r")
        done = total = 0
        for g in groups:
            arr = np.asarray(root[g][...], dtype=bool)
            done += int(arr.sum())
            total += arr.size
        return done, total
    except Exception:  # noqa: BLE001 - a store being created or damaged: no count
        return None


def _store_progress(run: Path, stage: str) -> tuple[float | None, str]:
    if stage == "quench":
        got = _done_fraction(run / "samples.zarr", ("glass/done",))
        return (got[0] / got[1], f"{got[0]}/{got[1]} samples") if got else (None, "")
    if stage == "propensity":
        parts, done, total = [], 0, 0
        for store in sorted(run.glob("propensity_T*.zarr")):
            got = _done_fraction(store, ("done",))
            if got:
                done, total = done + got[0], total + got[1]
                parts.append(f"{store.name}: {got[0]}/{got[1]} replicas")
        return (done / total if total else None), "; ".join(parts)
    if stage in ("gradcam", "indicators"):
        got = _done_fraction(run / f"{stage}.zarr", ("liquid/done", "glass/done"))
        return (None, f"{got[0]} samples done") if got else (None, "")
    if stage == "train":
        metrics = _json(run / "model" / "metrics.json")
        if metrics.get("complete"):
            return 1.0, f"test accuracy {100 * metrics['test']['accuracy']:.1f} %"
        members = sorted((run / "model").glob("member*/metrics.json"))
        if members:
            return None, f"{len(members)} ensemble member(s) trained"
    return None, ""


def _active_holder(run: Path) -> str | None:
    from glasscam.insitu.lock import OutputLock, OutputLockedError, describe_holder

    if not run.with_name(run.name + ".lock").exists():
        return None
    try:
        with OutputLock(run, what="run folder", command="glasscam status"):
            return None
    except OutputLockedError as err:
        return describe_holder(err.holder)


def _last_log_line(run: Path) -> tuple[str, str] | None:
    logs = [p for p in (run / "logs").glob("*") if p.is_file()]
    if not logs:
        return None
    newest = max(logs, key=lambda p: p.stat().st_mtime)
    with open(newest, "rb") as fh:
        fh.seek(0, 2)
        fh.seek(max(0, fh.tell() - 8192))
        lines = [ln.strip() for ln in fh.read().decode(errors="replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return (str(newest.relative_to(run)), lines[-1] if lines else "")


def run_status(run: str | Path) -> RunStatus:
    folder = Path(run).resolve()
    meta = folder / "run.json"
    if not meta.exists():
        raise FileNotFoundError(f"{folder}: no run.json: not a run folder of `glasscam run`")
    info = _json(meta)
    status = RunStatus(folder, info.get("system"), info.get("preset"), _active_holder(folder))
    recorded = _json(time_file(folder)).get("total_wall_s")
    for name in STAGES:
        done, running = marker(folder, name), running_marker(folder, name)
        frac, detail = _store_progress(folder, name)
        if done.exists():
            rec = _json(done)
            wall = rec.get("wall_s_all_attempts", rec.get("wall_s"))
            status.stages.append(StageStatus(name, "done", wall, 1.0, detail))
        elif running.exists():
            rec = _json(running)
            wall = float(rec.get("wall_s", 0.0))
            state = "running" if status.active else "interrupted"
            remaining = wall * (1 - frac) / frac if frac and 0 < frac < 1 and wall else None
            status.stages.append(StageStatus(name, state, wall, frac, detail, remaining))
        else:
            has_output = any(folder.glob(OUTPUTS[name][0]))
            status.stages.append(StageStatus(name, "pending", None, frac,
                                             detail if has_output else ""))
    status.last_log = _last_log_line(folder)
    # runs made before time.json existed: the stages' own wall times
    status.total_wall_s = float(recorded) if recorded is not None else float(
        sum(s.wall_s or 0.0 for s in status.stages))
    return status


def format_status(s: RunStatus) -> str:
    from glasscam.analysis.cli.progress import format_duration

    lines = [f"run folder {s.run} ({s.system}, preset {s.preset})",
             f"  {'active: ' + s.active if s.active else 'no `glasscam run` active on it'}",
             f"  total wall time over every attempt: {format_duration(s.total_wall_s)}"]
    for st in s.stages:
        wall = f" {format_duration(st.wall_s)}" if st.wall_s else ""
        frac = f" {100 * st.progress:.0f} %" if st.progress is not None and st.state != "done" \
            else ""
        eta = f", about {format_duration(st.remaining_s)} left" if st.remaining_s else ""
        detail = f" ({st.detail})" if st.detail else ""
        lines.append(f"  {st.name:<11}{st.state}{wall}{frac}{eta}{detail}")
    pending = s.pending
    lines.append(f"  pending: {', '.join(pending)}" if pending else "  every stage is done")
    if s.last_log:
        lines.append(f"  last log line ({s.last_log[0]}): {s.last_log[1]}")
    lines.append(f"  (as of {time.strftime('%Y-%m-%d %H:%M:%S')})")
    return "\n".join(lines)
