"""Where the Dask stages run: one ``--scheduler`` value names it (the stages' plans, and so their
results, are the same on every engine).

``serial``                  in-process, no Dask
``local`` (the default)     a new ``distributed.LocalCluster`` of ``--workers`` processes
``mpi``                     dask-mpi inside an MPI job: launch the command itself under MPI,
                            ``mpirun -np 4 glasscam indicators ... --scheduler mpi``; rank 0
                            runs the scheduler, rank 1 the command, ranks 2.. the workers
                            (:func:`dask_mpi.initialize`); needs ``glasscam[cluster]``
``slurm``                   a dask-jobqueue ``SLURMCluster`` built from ``--cluster-*``
                            options (:class:`SlurmOptions`) and scaled to ``jobs`` batch jobs;
                            needs ``glasscam[cluster]``
``tcp://host:8786``         a running scheduler (e.g. ``dask-mpi --scheduler-file s.json``
or ``path/to/s.json``       started by hand, or ``dask scheduler``); a ``.json`` path is a
                            scheduler file
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

ENGINES = ("serial", "local", "mpi", "slurm")


class ClusterError(ValueError):
    """A scheduler/engine that cannot be used; the message says why and what to install."""


@dataclass(frozen=True)
class SlurmOptions:
    """What a SLURMCluster job asks for (each a ``--cluster-*`` option)."""

    jobs: int = 2
    cores: int = 16
    processes: int = 16
    memory: str = "64GB"
    walltime: str = "02:00:00"
    queue: str | None = None
    account: str | None = None
    local_directory: str | None = None

    def cluster(self):
        """The (not yet scaled) ``dask_jobqueue.SLURMCluster``; nothing is submitted."""
        try:
            from dask_jobqueue import SLURMCluster
        except ImportError:
            raise ClusterError("--scheduler slurm needs dask-jobqueue: pip install "
                               "'glasscam[cluster]'") from None
        kw = {"cores": self.cores, "processes": self.processes, "memory": self.memory,
              "walltime": self.walltime, "queue": self.queue, "account": self.account,
              "local_directory": self.local_directory,
              # every worker thread single-threaded in its numerics: the tasks are many
              "job_script_prologue": ["export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"]}
        return SLURMCluster(**{k: v for k, v in kw.items() if v is not None})


def initialize_mpi() -> None:
    """Turn an MPI job into a Dask cluster (rank 0 scheduler, rank 1 returns and runs the
    command, ranks >= 2 workers that exit when the command ends). Call first thing."""
    # the workers' tracebacks when the scheduler closes at the end are noise, not errors
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    try:
        import dask_mpi
    except ImportError:
        raise ClusterError("--scheduler mpi needs dask-mpi: pip install 'glasscam[cluster]'"
                           ) from None
    from mpi4py import MPI

    if MPI.COMM_WORLD.Get_size() < 3:
        raise ClusterError(
            f"--scheduler mpi needs at least 3 MPI ranks (scheduler, client, workers); this job "
            f"has {MPI.COMM_WORLD.Get_size()}: launch it with mpirun -np 4 or more")
    dask_mpi.initialize(nthreads=1, memory_limit="auto", dashboard=False, nanny=False)


@contextlib.contextmanager
def client(backend: str, workers: int = 2, threads_per_worker: int = 1,
           slurm: SlurmOptions | None = None) -> Iterator:
    """A ``distributed.Client`` for ``backend`` (not ``serial``), closed (and its cluster
    stopped) on exit."""
    from distributed import Client, LocalCluster

    cluster = None
    if backend == "local":
        if workers < 1:
            raise ClusterError(f"workers must be >= 1, got {workers}")
        cluster = LocalCluster(n_workers=workers, threads_per_worker=threads_per_worker,
                               processes=True, dashboard_address=None)
        conn = Client(cluster)
    elif backend == "mpi":
        conn = Client()  # the scheduler dask_mpi.initialize started on rank 0
    elif backend == "slurm":
        opts = slurm or SlurmOptions()
        cluster = opts.cluster()
        cluster.scale(jobs=opts.jobs)
        conn = Client(cluster)
    elif backend.endswith(".json"):
        if not os.path.exists(backend):
            raise ClusterError(f"{backend}: scheduler file does not exist")
        conn = Client(scheduler_file=backend)
    else:
        conn = Client(backend)
    try:
        yield conn
    finally:
        conn.close()
        if cluster is not None:
            cluster.close()
