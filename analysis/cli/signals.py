"""SIGINT/SIGTERM (Ctrl-C, `scancel`, a batch system's time limit) in the glasscam commands:
say what was saved and that the same command resumes, then stop with 130 (SIGINT) or 143
(SIGTERM).

Each command states what survives an interruption with :func:`saving` (e.g. "every sample
marked done in runs/x/gradcam.zarr"); writers keep their outputs consistent at any instant
(whole samples with ``done`` last, atomic checkpoints), so stopping at once is safe."""

from __future__ import annotations

import os
import shlex
import signal
import sys
from typing import Any

_SAVED: list[str] = []


def saving(text: str) -> None:
    """What an interruption of the running command keeps (shown when it is interrupted)."""
    _SAVED.append(text)


def message(signame: str) -> str:
    argv = shlex.join(["glasscam", *sys.argv[1:]])
    kept = "; ".join(_SAVED) if _SAVED else "every output already marked done"
    return (f"\nglasscam: interrupted by {signame}. Kept: {kept}. Nothing partial is ever marked "
            f"done. Run the same command to resume:\n  {argv}")


received: list[int] = []


def _handler(signum: int, _frame: Any) -> None:
    if received:  # a second signal while cleaning up: leave now
        os._exit(128 + signum)
    received.append(signum)
    raise KeyboardInterrupt  # unwinds: Dask clusters are closed, locks released


def exit_code() -> int:
    """128 + the signal received (SIGINT when none was recorded: a plain Ctrl-C)."""
    return 128 + (received[0] if received else signal.SIGINT)


def report() -> None:
    sig = received[0] if received else signal.SIGINT
    print(message(signal.Signals(sig).name), file=sys.stderr, flush=True)


def install() -> None:
    """Handle SIGINT and SIGTERM in the main thread of a glasscam command."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _handler)
