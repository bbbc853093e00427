"""MPI plumbing of the in-situ hooks: universe and partition communicators, "one process does it,
everybody learns the outcome", and a dynamic work queue shared by all partitions.

Inside LAMMPS every MPI rank runs one LAMMPS instance; with ``-partition PxQ`` the universe
(``MPI.COMM_WORLD``) is cut into P partitions ("worlds" in LAMMPS' words) that run independent
simulations. The hooks see both:

* the **universe** communicator, ``MPI.COMM_WORLD``: used only at setup and at the end (create
  the store once, share the work queue);
* the **partition** communicator, ``lmp.get_mpi_comm()``: every collective of one simulation
  (gathering a frame, broadcasting the next sample index).

Work queue (:class:`WorkQueue`): tickets claimed by atomic file creation. Universe rank 0 makes
a fresh claims folder beside the store (``<store>.claims/<token>``, a new token per run); the
root of each partition takes the next item by creating ``<token>/<ticket>`` with
``O_CREAT | O_EXCL`` (atomic on a local file system and on NFSv3+/Lustre/GPFS), trying the
next ticket when the file already exists, and broadcasts the item to the other ranks of its
partition. Partitions pull items as they finish the previous one (dynamic load balance), no
two partitions get the same item, and nobody waits for another process. An MPI-3 RMA counter
(``Fetch_and_op`` on a window of universe rank 0) was used first and measured here: with one
rank per partition, rank 0 enters MPI only between its samples, MPICH progresses the passive
target operation only then, and partition 1 of a 2-partition demo spent 60 % of its time
waiting for its next sample (18 samples against 46). The file claims need no progress from
anybody; the store has to be on a file system every rank sees anyway.

Error discipline: whatever one process does on behalf of others (:func:`on_root`) is done inside
a ``try``; the exception, if any, is broadcast and raised on *every* rank, so that LAMMPS stops
everywhere with the message instead of leaving the other ranks waiting in a collective.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def mpi():
    """The ``mpi4py.MPI`` module (imported lazily: importing it is what loads libmpi)."""
    from mpi4py import MPI

    return MPI


def universe():
    """The universe communicator of the running LAMMPS (``MPI_COMM_WORLD``)."""
    return mpi().COMM_WORLD


def partition(lmp) -> Any:
    """The communicator of the LAMMPS instance ``lmp`` (its partition; LAMMPS' ``world``)."""
    return lmp.get_mpi_comm()


class RemoteError(RuntimeError):
    """An exception raised on another rank, re-raised here with its message."""


def on_root(comm, func: Callable[[], T], root: int = 0) -> T:
    """Run ``func()`` on ``root`` only and return its result on every rank of ``comm``.

    If ``func`` raises on the root, every rank raises: the root re-raises the original
    exception, the others a :class:`RemoteError` carrying the same message. Collective.
    """
    result: Any = None
    error: BaseException | None = None
    if comm.Get_rank() == root:
        try:
            result = func()
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            error = exc
    message = None if error is None else f"{type(error).__name__}: {error}"
    message, result = comm.bcast((message, result if error is None else None), root=root)
    if error is not None:
        raise error
    if message is not None:
        raise RemoteError(f"(on rank {root} of the universe/partition) {message}")
    return result


class WorkQueue:
    """A shared queue of work items (e.g. sample indices), drained dynamically by partitions.

    Create it collectively on the universe (``claims`` is the folder for the claim files,
    e.g. ``<store>.claims``); call :meth:`next` collectively on a partition; free it
    collectively on the universe (:meth:`free`). ``items`` must be the same on every rank.
    """

    def __init__(self, universe_comm, items: Sequence[int], claims: str | os.PathLike):
        self.items = [int(i) for i in items]
        self.comm = universe_comm
        self._cursor = 0  # tickets below this one are known to be taken

        def fresh_folder() -> str:
            import uuid

            base = Path(claims)
            if base.exists():  # claims of an earlier (killed) run: their items were redone
                shutil.rmtree(base, ignore_errors=True)
            folder = base / uuid.uuid4().hex
            folder.mkdir(parents=True)
            return str(folder)

        self.folder: str | None = on_root(universe_comm, fresh_folder)
        universe_comm.Barrier()

    def take(self) -> int | None:
        """Atomically take the next item (one rank only; no collective). ``None`` when empty."""
        if self.folder is None:
            raise RuntimeError("WorkQueue used after free()")
        while self._cursor < len(self.items):
            ticket = self._cursor
            self._cursor += 1
            try:
                fd = os.open(os.path.join(self.folder, str(ticket)),
                             os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                continue
            os.close(fd)
            return self.items[ticket]
        return None

    def next(self, partition_comm) -> int | None:
        """The next item for this partition (taken by its rank 0, broadcast). Collective."""
        return on_root(partition_comm, self.take)

    def free(self) -> None:
        """Remove the claims. Collective over the universe."""
        if self.folder is None:
            return
        self.comm.Barrier()
        if self.comm.Get_rank() == 0:
            parent = Path(self.folder).parent
            shutil.rmtree(self.folder, ignore_errors=True)
            with contextlib.suppress(OSError):
                parent.rmdir()
        self.folder = None
