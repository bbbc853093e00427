"""MPI plumbing of the in-situ hooks: universe and partition communicators, "one process does it,
everybody learns the outcome", and a dynamic work queue shared by all partitions.

Inside LAMMPS every MPI rank runs one LAMMPS instance; with ``-partition PxQ`` the universe
(``MPI.COMM_WORLD``) is cut into P partitions ("worlds" in LAMMPS' words) that run independent
simulations. The hooks see both:

* the **universe** communicator, ``MPI.COMM_WORLD``: used only at setup and at the end (create
  the store once, share the work queue);
* the **partition** communicator, ``lmp.get_mpi_comm()``: every collective of one simulation
  (gathering a frame, broadcasting the next sample index).

Work queue (:class:`WorkQueue`): an ``int64`` counter in an MPI-3 RMA window owned by universe
rank 0. The root of each partition takes the next item with an atomic ``Fetch_and_op`` (passive
target, ``MPI_Lock_shared``) and broadcasts it to the other ranks of its partition. Partitions
therefore pull samples as they finish the previous one (dynamic load balance; a partition that
is 10 % slower simply does fewer samples), no process ever waits for another partition, and no
two partitions get the same item. With MPICH on one node the window lives in shared memory and
the atomic completes without the target's participation; across nodes MPICH progresses passive
target operations when the target next enters MPI (at the latest at its own next fetch). If a
cluster MPI stalls there, set ``MPIR_CVAR_ASYNC_PROGRESS=1`` (MPICH) or the equivalent.

Error discipline: whatever one process does on behalf of others (:func:`on_root`) is done inside
a ``try``; the exception, if any, is broadcast and raised on *every* rank, so that LAMMPS stops
everywhere with the message instead of leaving the other ranks waiting in a collective.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def barrier(comm) -> None:
    comm.Barrier()


class WorkQueue:
    """A shared queue of work items (e.g. sample indices), drained dynamically by partitions.

    Create it collectively on the universe; call :meth:`next` collectively on a partition; free
    it collectively on the universe (:meth:`free`). ``items`` must be the same on every rank.
    """

    def __init__(self, universe_comm, items: Sequence[int]):
        MPI = mpi()
        self.items = [int(i) for i in items]
        self.comm = universe_comm
        itemsize = MPI.INT64_T.Get_size()
        size = itemsize if universe_comm.Get_rank() == 0 else 0
        self.win = MPI.Win.Allocate(size, itemsize, comm=universe_comm)
        if universe_comm.Get_rank() == 0:
            self.win.Lock(0, MPI.LOCK_EXCLUSIVE)
            self.win.Put(self._zero(), 0)
            self.win.Unlock(0)
        universe_comm.Barrier()  # the counter is 0 before anybody fetches
        self._one = self._array(1)
        self._got = self._array(0)

    @staticmethod
    def _array(value: int):
        import numpy as np

        return np.array([value], dtype=np.int64)

    def _zero(self):
        return self._array(0)

    def take(self) -> int | None:
        """Atomically take the next item (one rank only; no collective). ``None`` when empty."""
        MPI = mpi()
        self.win.Lock(0, MPI.LOCK_SHARED)
        self.win.Fetch_and_op(self._one, self._got, 0, 0, MPI.SUM)
        self.win.Unlock(0)
        ticket = int(self._got[0])
        return self.items[ticket] if ticket < len(self.items) else None

    def next(self, partition_comm) -> int | None:
        """The next item for this partition (taken by its rank 0, broadcast). Collective."""
        return on_root(partition_comm, self.take)

    def free(self) -> None:
        """Release the window. Collective over the universe."""
        if self.win is not None:
            self.win.Free()
            self.win = None
