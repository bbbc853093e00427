"""Structural indicators of every sample, in parallel on Dask: samples.zarr → indicators.zarr.

For each done sample of both classes (optionally only one split) the driver computes the
Voronoi volume ϒ (:mod:`glasscam.insitu.geometry`) and the Tong-Tanaka order parameter Θ
(:mod:`glasscam.analysis.structure.tong_tanaka`, additive diameters of the run's system) and writes them to
``indicators.zarr`` (schema ``glasscam.indicators/1``, :mod:`glasscam.insitu.schema`).

* Work is cut into batches of samples of one class; a batch is one Dask task, which reads its
  samples from the samples store and writes their chunks (one chunk per sample, so no two tasks
  ever share a chunk) and then, per sample, the ``done`` flag last.
* Scheduler: a ``distributed.LocalCluster`` (``workers`` processes, 1 thread each) by default,
  an existing scheduler when an address is given, or in-process (``scheduler="serial"``). The
  kernels are deterministic, so every mode writes bit-identical stores.
* Resumable: an existing store is reopened (its parameters must match) and samples already
  marked done are skipped; a killed run never leaves a sample marked done without its fields.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from glasscam.analysis.structure.tong_tanaka import TongTanaka, diameters_for
from glasscam.insitu.geometry import PeriodicVoronoi
from glasscam.insitu.schema import CLASSES, SPLITS, SchemaError

ALGORITHM = "delaunay-ghost-skin/1"
DEFAULT_SKIN = 2.5  # ghost skin in mean spacings (glasscam.insitu.geometry)


class IndicatorsInputError(ValueError):
    """Bad input to the indicators stage; the message names the file and field."""


# --------------------------------------------------------------------------------------------
# kernel


def compute_sample(
    positions: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    diameters: Sequence[float],
    skin_factor: float = DEFAULT_SKIN,
) -> tuple[np.ndarray, np.ndarray]:
    """(ϒ, Θ) of one configuration, both float64 (N,)."""
    vor = PeriodicVoronoi(skin_factor).compute(positions, box)
    tt = TongTanaka(diameters).compute(positions, types, box, voronoi=vor)
    return vor.volumes, tt.order


# --------------------------------------------------------------------------------------------
# store helpers


def system_of(samples_params: dict[str, Any], where: str, override: str | None = None) -> str:
    """The model system ('kam'/'abm') of a samples store: ``--system``, else its parameters."""
    system = override or samples_params.get("system") or samples_params.get("model")
    if system is None:
        raise IndicatorsInputError(
            f"{where}: parameters have neither 'system' nor 'model' (kam or abm); pass --system"
        )
    system = str(system).lower()
    diameters_for(system)  # validates
    return system


def select_samples(samples_root, cls: str, split: str, where: str) -> np.ndarray:
    """Indices of done samples of class ``cls`` in ``split`` ('all', 'train', 'val', 'test')."""
    done = np.asarray(samples_root[f"{cls}/done"][:], dtype=bool)
    if split == "all":
        mask = done
    else:
        if split not in SPLITS:
            raise IndicatorsInputError(
                f"unknown split {split!r}; choose 'all' or one of {sorted(SPLITS)}"
            )
        mask = done & (np.asarray(samples_root["split"][:]) == SPLITS[split])
    return np.flatnonzero(mask)


def _check_batch(pos, typ, box, cls: str, idx: np.ndarray, where: str) -> None:
    for name, arr in (("positions", pos), ("box", box)):
        bad = ~np.isfinite(arr).reshape(len(idx), -1).all(axis=1)
        if bad.any():
            raise IndicatorsInputError(
                f"{where}: field '{cls}/{name}' of sample {int(idx[bad][0])} contains NaN or inf"
            )
    bad = ((typ < 0) | (typ > 1)).any(axis=1)
    if bad.any():
        raise IndicatorsInputError(
            f"{where}: field '{cls}/types' of sample {int(idx[bad][0])} has types outside {{0, 1}}"
        )


def run_batch(
    samples_path: str,
    out_path: str,
    cls: str,
    indices: Sequence[int],
    diameters: Sequence[float],
    skin_factor: float = DEFAULT_SKIN,
) -> list[int]:
    """One task: compute and write the samples ``indices`` of class ``cls``; return them.

    Reads the batch with one selection per array, writes both fields of every sample, then
    the batch's ``done`` flags (each sample is its own chunk, owned by this task only).
    """
    import zarr

    idx = np.asarray(indices, dtype=np.int64)
    if len(idx) == 0:
        return []
    src = zarr.open_group(samples_path, mode="r")
    dst = zarr.open_group(out_path, mode="r+")
    sel = (idx,)
    pos = np.asarray(src[f"{cls}/positions"].get_orthogonal_selection(sel))
    typ = np.asarray(src[f"{cls}/types"].get_orthogonal_selection(sel))
    box = np.asarray(src[f"{cls}/box"].get_orthogonal_selection(sel))
    _check_batch(pos, typ, box, cls, idx, samples_path)
    vol = np.empty(typ.shape, dtype=np.float64)
    theta = np.empty(typ.shape, dtype=np.float64)
    for k in range(len(idx)):
        vol[k], theta[k] = compute_sample(pos[k], typ[k], box[k], diameters, skin_factor)
    dst[f"{cls}/voronoi"].set_orthogonal_selection(sel, vol)
    dst[f"{cls}/ttop"].set_orthogonal_selection(sel, theta)
    dst[f"{cls}/done"].set_orthogonal_selection(sel, np.ones(len(idx), dtype=bool))  # last
    return idx.tolist()


# --------------------------------------------------------------------------------------------
# driver


def open_or_create(
    samples: str | os.PathLike,
    out: str | os.PathLike,
    system: str | None = None,
    skin_factor: float = DEFAULT_SKIN,
    provenance: dict[str, Any] | None = None,
):
    """Open the samples store and create (or reopen, checking parameters) the output store."""
    from glasscam.insitu.schema import (
        create_indicators_store,
        open_indicators_store,
        open_samples_store,
    )

    where = os.fspath(samples)
    if not Path(where).exists():
        raise FileNotFoundError(f"{where}: samples store does not exist")
    src = open_samples_store(where)
    sparams = dict(src.attrs["parameters"])
    system = system_of(sparams, where, system)
    params = {
        "nsamples": int(src["split"].shape[0]),
        "natoms": int(src["liquid/positions"].shape[1]),
        "system": system,
        "diameters": [float(d) for d in diameters_for(system)],
        "skin_factor": float(skin_factor),
        "algorithm": ALGORITHM,
    }
    prov = {"samples": os.path.abspath(where), "samples_parameters": sparams, **(provenance or {})}
    if Path(out).exists():
        dst = open_indicators_store(out, mode="r+", expect=params)
        dst.attrs["provenance"] = {**dict(dst.attrs.get("provenance", {})), **prov}
    else:
        dst = create_indicators_store(out, params, prov)
    return src, dst, params


def plan(src, dst, split: str, where: str, batch_size: int) -> list[tuple[str, list[int]]]:
    """Batches (class, sample indices) still to do."""
    batches: list[tuple[str, list[int]]] = []
    any_selected = False
    for cls in CLASSES:
        sel = select_samples(src, cls, split, where)
        any_selected |= len(sel) > 0
        done = np.asarray(dst[f"{cls}/done"][:], dtype=bool)
        todo = sel[~done[sel]]
        for k in range(0, len(todo), batch_size):
            batches.append((cls, todo[k : k + batch_size].tolist()))
    if not any_selected:
        raise IndicatorsInputError(
            f"{where}: no done samples in split {split!r} (fields 'liquid/done', 'glass/done', "
            "'split')"
        )
    return batches


def run_indicators(
    samples: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "all",
    scheduler: str | None = None,
    workers: int = 2,
    threads_per_worker: int = 1,
    batch_size: int = 16,
    system: str | None = None,
    skin_factor: float = DEFAULT_SKIN,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Compute the indicators of every selected sample; return a summary dict.

    ``scheduler``: None → a new LocalCluster with ``workers`` processes; ``"serial"`` →
    in-process; otherwise the address of a running ``distributed`` scheduler.
    """
    samples, out = os.fspath(samples), os.fspath(out)
    mode = "serial" if scheduler == "serial" else ("local" if scheduler is None else "remote")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    src, dst, params = open_or_create(
        samples,
        out,
        system,
        skin_factor,
        provenance={
            "scheduler": scheduler or f"LocalCluster({workers}x{threads_per_worker})",
            "split": split,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    if params["natoms"] != src["glass/positions"].shape[1]:
        raise IndicatorsInputError(f"{samples}: liquid and glass have different N")
    batches = plan(src, dst, split, samples, batch_size)
    nsamp = sum(len(b) for _, b in batches)
    t0 = time.perf_counter()
    args = (params["diameters"], params["skin_factor"])
    if not batches:
        echo(f"indicators: nothing to do, every selected sample of {out} is done")
    elif mode == "serial":
        for cls, idx in batches:
            run_batch(samples, out, cls, idx, *args)
    else:
        _run_distributed(samples, out, batches, args, scheduler, workers, threads_per_worker)
    wall = time.perf_counter() - t0
    if batches:
        echo(f"indicators: {nsamp} samples in {len(batches)} tasks, {wall:.2f} s ({mode})")
    return {"samples": nsamp, "tasks": len(batches), "wall_s": wall, "mode": mode}


def _run_distributed(samples, out, batches, args, scheduler, workers, threads_per_worker):
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=threads_per_worker,
            processes=True,
            dashboard_address=None,
        )
        client = Client(cluster)
    else:
        client = Client(scheduler)
    try:
        futures = [
            client.submit(run_batch, samples, out, cls, idx, *args, pure=False)
            for cls, idx in batches
        ]
        for fut in as_completed(futures):
            fut.result()  # re-raises a task's error here, with its message
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def load_indicators(path: str | os.PathLike, cls: str, indices: Sequence[int] | None = None):
    """(voronoi [S', N], ttop [S', N]) of done samples; error if a requested one is not done."""
    from glasscam.insitu.schema import open_indicators_store

    root = open_indicators_store(path)
    done = np.asarray(root[f"{cls}/done"][:], dtype=bool)
    idx = np.flatnonzero(done) if indices is None else np.asarray(indices, dtype=np.int64)
    missing = idx[~done[idx]]
    if len(missing):
        raise SchemaError(
            f"{os.fspath(path)}: field '{cls}/done' is False for samples "
            f"{missing[:10].tolist()}; run `glasscam indicators` first"
        )
    vor = np.stack([np.asarray(root[f"{cls}/voronoi"][int(i)]) for i in idx]) if len(idx) else None
    tt = np.stack([np.asarray(root[f"{cls}/ttop"][int(i)]) for i in idx]) if len(idx) else None
    return vor, tt
