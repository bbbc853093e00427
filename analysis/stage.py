"""The base of every per-sample analysis stage (in the manner of MDAnalysis' ``AnalysisBase``).

A stage says what it computes for the samples of one class; :class:`SampleStage` owns the rest:

* selecting the done samples of a split (``all``, ``train``, ``val``, ``test``) of a samples
  store, for both classes;
* creating the output store (schema and array specs from :mod:`glasscam.insitu.schema`, the one
  home of every schema), or reopening it and checking that it was made with the same
  parameters (a mismatch names the field);
* skipping samples already done (resume), cutting the rest into batches of one class;
* reading each batch's inputs (one selection per array), calling :meth:`compute`, writing every
  array of every sample (one chunk per sample, owned by one task) and then ``done`` last;
* the backends: ``serial`` (in-process), a new ``distributed.LocalCluster``, or the address of
  a running scheduler. The plan is the same whatever the backend, so results are identical.

A subclass defines::

    name        str, for messages ("indicators")
    inputs      samples-store arrays a batch needs, e.g. ("positions", "types", "box")
    create / open   the schema module's create_*/open_* functions of its output store
    parameters()    what must match when a store is resumed
    compute(cls, inputs) -> {array name: values [B, ...]} for a batch of samples of one class

and may override :meth:`setup` (once per process, before the first batch: load a model).
A stage object is pickled to Dask workers: keep per-process caches out of ``__getstate__``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from glasscam.insitu import integrity
from glasscam.insitu.lock import OutputLock
from glasscam.insitu.schema import CLASSES, SPLITS, SchemaError, open_samples_store, units_of

# or a scheduler address (tcp://..., a scheduler file): glasscam.analysis.cluster
BACKENDS = ("serial", "local", "mpi", "slurm")


class StageInputError(ValueError):
    """Bad input to an analysis stage; the message names the file and field."""


def select_samples(samples_root, cls: str, split: str, where: str) -> np.ndarray:
    """Indices of done samples of class ``cls`` in ``split`` ('all', 'train', 'val', 'test')."""
    done = np.asarray(samples_root[f"{cls}/done"][:], dtype=bool)
    if split == "all":
        return np.flatnonzero(done)
    if split not in SPLITS:
        raise StageInputError(f"unknown split {split!r}; choose 'all' or one of {sorted(SPLITS)}")
    return np.flatnonzero(done & (np.asarray(samples_root["split"][:]) == SPLITS[split]))


def check_batch_size(batch_size: int) -> None:
    if int(batch_size) != batch_size or batch_size < 1:
        raise StageInputError(
            f"batch size (samples per task; --samples-per-task of `glasscam indicators`, "
            f"--batch-size of `glasscam gradcam`) must be an integer >= 1, got {batch_size}")


class SampleStage:
    """Per-sample stage: ``samples.zarr`` → an output store with one chunk per sample."""

    name = "stage"
    inputs: tuple[str, ...] = ("positions", "types", "box")
    #: the output store's create/open functions (glasscam.insitu.schema)
    create: Callable[..., Any]
    open: Callable[..., Any]

    def __init__(self, samples: str | os.PathLike, out: str | os.PathLike, split: str = "all"):
        self.samples = os.path.abspath(os.fspath(samples))
        self.out = os.path.abspath(os.fspath(out))
        if split != "all" and split not in SPLITS:
            raise StageInputError(
                f"unknown split {split!r}; choose 'all' or one of {sorted(SPLITS)}"
            )
        self.split = split
        if not Path(self.samples).exists():
            raise FileNotFoundError(f"{self.samples}: samples store does not exist")
        self.source = open_samples_store(self.samples)
        self.samples_parameters: dict[str, Any] = dict(self.source.attrs["parameters"])
        self.nsamples = int(self.source["split"].shape[0])
        self.natoms = int(self.source["liquid/positions"].shape[1])

    # ---- what a stage defines ---------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """What must match when an existing output store is resumed (besides S and N)."""
        return {}

    def provenance(self) -> dict[str, Any]:
        """Informational attributes of the output store (not compared on resume)."""
        return {}

    def setup(self) -> None:
        """Once per process before its first batch (e.g. load a model)."""

    def compute(self, cls: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Arrays of a batch of samples of class ``cls`` (leading axis: the batch)."""
        raise NotImplementedError

    def check_inputs(self, cls: str, index: np.ndarray, inputs: Mapping[str, np.ndarray]) -> None:
        """Refuse non-finite positions/boxes and types outside {0, 1}, naming the sample."""
        for name in ("positions", "box"):
            if name in inputs:
                arr = inputs[name]
                bad = ~np.isfinite(arr).reshape(len(index), -1).all(axis=1)
                if bad.any():
                    raise StageInputError(
                        f"{self.samples}: field '{cls}/{name}' of sample {int(index[bad][0])} "
                        "contains NaN or inf"
                    )
        if "types" in inputs:
            bad = ((inputs["types"] < 0) | (inputs["types"] > 1)).any(axis=1)
            if bad.any():
                raise StageInputError(
                    f"{self.samples}: field '{cls}/types' of sample {int(index[bad][0])} has "
                    "types outside {0, 1}"
                )

    # ---- what the base owns -----------------------------------------------------------------
    def store_parameters(self) -> dict[str, Any]:
        return {"nsamples": self.nsamples, "natoms": self.natoms, **self.parameters()}

    def open_or_create(self, echo: Callable[[str], None] = print):
        """Create the output store (atomically), or reopen it checking its parameters and
        verifying the samples it holds (damaged ones are marked not done, so this run redoes
        them); return its root. The caller holds the output's lock."""
        params = self.store_parameters()
        root, created = integrity.open_or_create(
            self.out,
            create=lambda tmp: self.create(tmp, params, self.provenance()),
            reopen=lambda path: self.open(path, mode="r+", expect=params),
            what=f"{self.name} store",
            log=lambda msg: echo(f"{self.name}: {msg}"),
        )
        if not created:
            self.update_provenance(root)
            integrity.check_and_repair(root, self.out, lambda msg: echo(f"{self.name}: {msg}"))
        return root

    def update_provenance(self, root) -> None:
        """Refresh the informational attributes of a resumed store (default: none)."""

    def plan(self, root, batch_size: int) -> list[tuple[str, list[int], list[int]]]:
        """Batches (class, block, samples of the block still to do), classes in CLASSES order.

        Blocks are fixed: the selected samples cut into runs of ``batch_size``, whatever is
        done. A block with anything left is computed whole and only its samples not done are
        written, so a resumed run computes every sample in the same batch as an uninterrupted
        one (batched numerics, e.g. torch on the CPU, differ in the last bits with the batch's
        composition)."""
        check_batch_size(batch_size)
        batches: list[tuple[str, list[int], list[int]]] = []
        selected = 0
        for cls in CLASSES:
            sel = select_samples(self.source, cls, self.split, self.samples)
            selected += len(sel)
            done = np.asarray(root[f"{cls}/done"][:], dtype=bool)
            for k in range(0, len(sel), batch_size):
                block = sel[k : k + batch_size]
                todo = block[~done[block]]
                if len(todo):
                    batches.append((cls, block.tolist(), todo.tolist()))
        if not selected:
            raise StageInputError(
                f"{self.samples}: no done samples in split {self.split!r} (fields "
                "'liquid/done', 'glass/done', 'split')"
            )
        return batches

    def run_batch(self, cls: str, indices: Sequence[int],
                  write: Sequence[int] | None = None) -> list[int]:
        """Read and compute one batch (one task); write the samples ``write`` of it (default:
        all), each with its checksums and ``done`` last. Returns the samples written."""
        import zarr

        index = np.asarray(indices, dtype=np.int64)
        if len(index) == 0:
            return []
        self._setup_once()
        src = zarr.open_group(self.samples, mode="r")
        dst = zarr.open_group(self.out, mode="r+")
        inputs = {
            name: integrity.read_selection(src, f"{cls}/{name}", index, self.samples)
            for name in self.inputs
        }
        inputs["index"] = index
        self.check_inputs(cls, index, inputs)
        results = self.compute(cls, inputs)
        unit = next(u for u in units_of(dst) if u.done == f"{cls}/done")
        extra = sorted(set(results) - {p.split("/", 1)[1] for p in unit.covers})
        if extra:
            raise RuntimeError(f"{self.name}: compute() returned arrays {extra} not in the schema")
        keep = np.ones(len(index), dtype=bool) if write is None else np.isin(index, write)
        # every array of every sample, their checksums, then done
        integrity.write_units(dst, unit, index[keep],
                              {f"{cls}/{k}": np.asarray(v)[keep] for k, v in results.items()})
        return index[keep].tolist()

    def _setup_once(self) -> None:
        if not getattr(self, "_ready", False):
            self.setup()
            self._ready = True

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("source", None)  # a zarr group: reopened lazily where needed
        state.pop("_ready", None)
        for key in self.transient:
            state.pop(key, None)
        return state

    #: attributes that are per-process caches (not pickled to workers)
    transient: tuple[str, ...] = ()

    def run(
        self,
        backend: str = "serial",
        batch_size: int = 16,
        workers: int = 2,
        threads_per_worker: int = 1,
        progress: Callable[[int, int], None] | None = None,
        echo: Callable[[str], None] = print,
    ) -> dict[str, Any]:
        """Compute every selected sample that is not done yet; return a summary.

        ``backend``: ``serial`` (in-process), ``local`` (a new LocalCluster of ``workers``
        processes), ``mpi`` (dask-mpi: the process was started under MPI and
        :func:`glasscam.analysis.cluster.initialize_mpi` ran first), ``slurm`` (a
        dask-jobqueue SLURMCluster of :attr:`slurm`), or the address (or scheduler file) of a
        running Dask scheduler. ``progress(done, total)`` is
        called after each batch.
        """
        check_batch_size(batch_size)  # before anything is created
        with OutputLock(self.out, what=f"{self.name} store"):
            return self._run(backend, batch_size, workers, threads_per_worker, progress, echo)

    def _run(self, backend, batch_size, workers, threads_per_worker, progress, echo):
        root = self.open_or_create(echo)
        batches = self.plan(root, batch_size)
        total = sum(len(todo) for _, _, todo in batches)
        mode = backend if backend in BACKENDS else "remote"
        t0 = time.perf_counter()
        if not batches:
            echo(f"{self.name}: nothing to do, every selected sample of {self.out} is done")
        elif mode == "serial":
            finished = 0
            for cls, block, todo in batches:
                finished += len(self.run_batch(cls, block, todo))
                if progress is not None:
                    progress(finished, total)
        else:
            self._run_distributed(batches, total, mode, backend, workers, threads_per_worker,
                                  progress)
        wall = time.perf_counter() - t0
        if batches:
            echo(f"{self.name}: {total} samples in {len(batches)} tasks, {wall:.2f} s ({mode})")
        return {"samples": total, "tasks": len(batches), "wall_s": wall, "mode": mode,
                "out": self.out}

    #: the SLURM job shape of ``backend="slurm"`` (glasscam.analysis.cluster.SlurmOptions)
    slurm: Any = None

    def _run_distributed(self, batches, total, mode, address, workers, threads, progress):
        from distributed import as_completed
        from glasscam.analysis.cluster import ClusterError, client

        if mode == "local" and workers < 1:
            raise StageInputError(f"workers must be >= 1, got {workers}")
        try:
            with client(address if mode == "remote" else mode, workers, threads,
                        self.slurm) as conn:
                futures = [conn.submit(self.run_batch, cls, block, todo, pure=False)
                           for cls, block, todo in batches]
                finished = 0
                for fut in as_completed(futures):
                    finished += len(fut.result())  # re-raises a task's error, with its message
                    if progress is not None:
                        progress(finished, total)
        except ClusterError as err:
            raise StageInputError(str(err)) from None


def load_done(path: str | os.PathLike, open_store: Callable[..., Any], cls: str,
              names: Sequence[str], indices: Sequence[int] | None = None):
    """Arrays ``names`` [S', ...] of the done samples (or of ``indices``, which must be done)."""
    root = open_store(path)
    done = np.asarray(root[f"{cls}/done"][:], dtype=bool)
    idx = np.flatnonzero(done) if indices is None else np.asarray(indices, dtype=np.int64)
    missing = idx[~done[idx]]
    if len(missing):
        raise SchemaError(
            f"{os.fspath(path)}: field '{cls}/done' is False for samples "
            f"{missing[:10].tolist()}; run the stage that writes it first"
        )
    where = os.fspath(path)
    return tuple(
        integrity.read_selection(root, f"{cls}/{name}", idx, where) if len(idx) else None
        for name in names
    )
