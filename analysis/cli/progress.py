"""Progress of the long stages: live bars on a terminal, plain lines everywhere else.

A SLURM log, ``| tee``, ``nohup`` or CI is not a terminal, and rich's live bars print nothing
there. :func:`make_progress` returns rich's ``Progress`` on a terminal and otherwise a
:class:`PlainProgress` with the same small API (``add_task``, ``advance``, ``update``,
``remove_task``, context manager) that prints a line ``description k/N (pct) rate ETA info``

* whenever a task's ``info`` changes (the end of a training epoch: one line per epoch),
* when a task completes (not for inner tasks added with ``log=False``, e.g. an epoch's
  batches),
* otherwise at most every ``interval`` seconds (default 10 s; ``GLASSCAM_PROGRESS_INTERVAL``).

:func:`progress_callback` adapts it to the ``progress(done, total)`` callbacks of the stages.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


def interval_s() -> float:
    try:
        return float(os.environ.get("GLASSCAM_PROGRESS_INTERVAL", "10"))
    except ValueError:
        return 10.0


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float = 0.0
    info: str = ""
    started: float = field(default_factory=time.monotonic)
    start_completed: float = 0.0
    last_print: float = 0.0
    log: bool = True  # False: a short inner task, printed only when the interval passed


class PlainProgress:
    """Line-by-line progress for logs (see the module docstring)."""

    def __init__(self, echo: Callable[[str], None] | None = None,
                 interval: float | None = None):
        self.echo = echo or (lambda text: print(text, flush=True))
        self.interval = interval_s() if interval is None else interval
        self.tasks: dict[int, _Task] = {}
        self._next = 0

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None, completed: float = 0,
                 **fields: Any) -> int:
        task = _Task(description, total, float(completed), str(fields.get("info", "")),
                     start_completed=float(completed), log=bool(fields.get("log", True)))
        task.last_print = time.monotonic()
        self._next += 1
        self.tasks[self._next] = task
        return self._next

    def remove_task(self, task_id: int) -> None:
        self.tasks.pop(task_id, None)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def update(self, task_id: int, advance: float | None = None,
               completed: float | None = None, total: float | None = None,
               info: str | None = None, **_: Any) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        if total is not None:
            task.total = total
        if completed is not None:
            task.completed = float(completed)
        if advance:
            task.completed += float(advance)
        changed = info is not None and info != task.info
        if info is not None:
            task.info = info
        now = time.monotonic()
        finished = task.total is not None and task.completed >= task.total
        if (task.log and (changed or finished)) or now - task.last_print >= self.interval:
            task.last_print = now
            self.echo(self.line(task, now))

    @staticmethod
    def line(task: _Task, now: float) -> str:
        elapsed = now - task.started
        done = task.completed - task.start_completed
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [task.description]
        if task.total:
            parts.append(f"{task.completed:g}/{task.total:g} "
                         f"({100 * task.completed / task.total:.0f} %)")
            left = task.total - task.completed
            eta = format_duration(left / rate) if rate > 0 and left > 0 else "-"
            parts.append(f"{rate:.3g}/s, elapsed {format_duration(elapsed)}, ETA {eta}")
        else:
            parts.append(f"{task.completed:g}, elapsed {format_duration(elapsed)}")
        if task.info:
            parts.append(task.info)
        return "  ".join(parts)


def is_terminal(console: Any = None) -> bool:
    if console is not None and hasattr(console, "is_terminal"):
        return bool(console.is_terminal)
    return sys.stdout.isatty()


def make_progress(console: Any, columns: list[Any]) -> Any:
    """rich's Progress with ``columns`` on a terminal, :class:`PlainProgress` elsewhere."""
    if is_terminal(console):
        from rich.progress import Progress

        return Progress(*columns, console=console)
    return PlainProgress(echo=lambda text: console.print(text, markup=False, highlight=False,
                                                         soft_wrap=True))


def progress_callback(description: str, echo: Callable[[str], None] | None = None
                      ) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callback printing plain lines (see :class:`PlainProgress`)."""
    bar = PlainProgress(echo)
    state: dict[str, int] = {}

    def progress(done: int, total: int) -> None:
        if "task" not in state:
            state["task"] = bar.add_task(description, total=total)
        bar.update(state["task"], completed=done)

    return progress
