"""One writer per output: an exclusive lock beside every store and output folder.

Every command that writes an output (a Zarr store, a model folder, a run folder) first takes
``<output>.lock``, a small file beside the output, with ``flock(LOCK_EX | LOCK_NB)``; a second
command on the same output is refused at once with :class:`OutputLockedError`, whose message
names the output and the holder (host, pid, command, start time), which the holder writes into
the lock file. Properties relied on:

* the kernel releases a ``flock`` when its holder dies (SIGKILL included): no stale lock ever
  blocks a resume, and no "is that pid still alive?" guess is made;
* ``flock`` locks belong to an open file description: two locks taken in one process conflict
  like two processes do (a test can race two writers in one interpreter); on NFS, Linux maps
  ``flock`` onto POSIX byte-range locks, which the NFS lock manager enforces across hosts;
* the file is removed on release, and an acquirer re-checks after locking that the path still
  names the file it locked (otherwise it retries): a waiter that opened the old file before the
  holder unlinked it can never hold a lock on a file nobody else sees.

Stores are created under the lock, atomically (built in a hidden sibling folder, renamed into
place: :func:`glasscam.insitu.schema.create_store_atomically`), so the lock also covers
creation.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any


class OutputLockedError(RuntimeError):
    """Another process holds the output; the message names the output and the holder."""

    def __init__(self, message: str, holder: dict[str, Any] | None = None):
        super().__init__(message)
        self.holder = holder or {}


def lock_path(output: str | os.PathLike) -> Path:
    """The lock file of ``output``: ``<output>.lock`` beside it (trailing slashes ignored)."""
    out = Path(os.path.abspath(os.fspath(output)))
    return out.with_name(out.name + ".lock")


def describe_holder(holder: dict[str, Any]) -> str:
    if not holder:
        return "a process that has not yet written its name (starting up)"
    parts = [f"pid {holder.get('pid')} on host {holder.get('host')}"]
    if holder.get("command"):
        parts.append(f"running `{holder['command']}`")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    return ", ".join(parts)


def read_holder(path: str | os.PathLike) -> dict[str, Any]:
    """The holder recorded in a lock file ({} when empty, unreadable or gone)."""
    try:
        return json.loads(Path(path).read_text() or "{}")
    except (OSError, ValueError):
        return {}


class OutputLock:
    """Exclusive lock of one output (see the module docstring). A context manager::

        with OutputLock("runs/x/samples.zarr", what="samples store"):
            ...  # create or resume the store
    """

    def __init__(self, output: str | os.PathLike, what: str = "output",
                 command: str | None = None):
        self.output = os.path.abspath(os.fspath(output))
        self.what = what
        self.path = lock_path(self.output)
        self.command = command if command is not None else " ".join(sys.argv)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> OutputLock:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                holder = read_holder(self.path)
                raise OutputLockedError(
                    f"{self.output}: this {self.what} is being written by another process: "
                    f"{describe_holder(holder)} (lock file {self.path}). Wait for it to "
                    "finish, or stop it; a killed holder releases the lock by itself, and the "
                    "same command then resumes.",
                    holder,
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed it after we opened it: try again
                os.close(fd)
                continue
            holder = {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "command": self.command,
                "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(holder) + "\n").encode())
            self._fd = fd
            return self
        raise OSError(f"{self.path}: could not take the lock (it keeps being replaced)")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # while still locked: nobody can lock this file any more
        os.close(fd)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # a forgotten lock is released with its object
        with contextlib.suppress(Exception):
            self.release()
