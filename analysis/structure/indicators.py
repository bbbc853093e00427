"""Structural indicators of every sample, in parallel on Dask: samples.zarr → indicators.zarr.

For each done sample of both classes (optionally only one split) the driver computes the
Voronoi volume ϒ (:mod:`glasscam.insitu.geometry`) and the Tong-Tanaka order parameter Θ
(:mod:`glasscam.analysis.structure.tong_tanaka`, additive diameters of the run's system) and writes
them to
``indicators.zarr`` (schema ``glasscam.indicators/1``, :mod:`glasscam.insitu.schema`).

The stage (:class:`Indicators`) only says what it computes for a batch of samples; the base,
:class:`glasscam.analysis.stage.SampleStage`, owns the selection, resume, chunk writing (``done``
last) and the backends: a ``distributed.LocalCluster`` (``workers`` processes, 1 thread each)
by default, an existing scheduler when an address is given, or in-process
(``scheduler="serial"``). The kernels are deterministic, so every mode writes bit-identical
stores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from glasscam.analysis.stage import SampleStage, StageInputError, load_done, select_samples
from glasscam.analysis.structure.tong_tanaka import TongTanaka, diameters_for
from glasscam.insitu.geometry import PeriodicVoronoi
from glasscam.insitu.schema import create_indicators_store, open_indicators_store

ALGORITHM = "delaunay-ghost-skin/1"
DEFAULT_SKIN = 2.5  # ghost skin in mean spacings (glasscam.insitu.geometry)


IndicatorsInputError = StageInputError  # bad input to the stage: names the file and field

__all__ = ["Indicators", "IndicatorsInputError", "compute_sample", "load_indicators",
           "run_indicators", "select_samples", "system_of"]


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
# the stage


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


class Indicators(SampleStage):
    """ϒ and Θ of every selected sample (:class:`~glasscam.analysis.stage.SampleStage`)."""

    name = "indicators"
    inputs = ("positions", "types", "box")
    create = staticmethod(create_indicators_store)
    open = staticmethod(open_indicators_store)

    def __init__(self, samples, out, split: str = "all", system: str | None = None,
                 skin_factor: float = DEFAULT_SKIN, provenance: dict[str, Any] | None = None):
        super().__init__(samples, out, split)
        self.system = system_of(self.samples_parameters, self.samples, system)
        self.diameters = [float(d) for d in diameters_for(self.system)]
        self.skin_factor = float(skin_factor)
        if self.natoms != self.source["glass/positions"].shape[1]:
            raise IndicatorsInputError(f"{self.samples}: liquid and glass have different N")
        self.extra = dict(provenance or {})

    def parameters(self) -> dict[str, Any]:
        return {"system": self.system, "diameters": self.diameters,
                "skin_factor": self.skin_factor, "algorithm": ALGORITHM}

    def provenance(self) -> dict[str, Any]:
        return {"samples": self.samples, "samples_parameters": self.samples_parameters,
                **self.extra}

    def update_provenance(self, root) -> None:
        root.attrs["provenance"] = {**dict(root.attrs.get("provenance", {})), **self.provenance()}

    def compute(self, cls: str, inputs) -> dict[str, np.ndarray]:
        pos, typ, box = inputs["positions"], inputs["types"], inputs["box"]
        vol = np.empty(typ.shape, dtype=np.float64)
        theta = np.empty(typ.shape, dtype=np.float64)
        for k in range(len(typ)):
            vol[k], theta[k] = compute_sample(pos[k], typ[k], box[k], self.diameters,
                                              self.skin_factor)
        return {"voronoi": vol, "ttop": theta}


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
    progress: Callable[[int, int], None] | None = None,
    slurm: Any = None,
) -> dict[str, Any]:
    """Compute the indicators of every selected sample; return a summary dict.

    ``scheduler``: None → a new LocalCluster with ``workers`` processes; ``"serial"`` →
    in-process; otherwise the address of a running ``distributed`` scheduler.
    """
    stage = Indicators(
        samples, out, split, system, skin_factor,
        provenance={
            "scheduler": scheduler or f"LocalCluster({workers}x{threads_per_worker})",
            "split": split,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    backend = "local" if scheduler is None else scheduler
    stage.slurm = slurm
    return stage.run(backend, batch_size, workers, threads_per_worker, progress=progress,
                     echo=echo)


def load_indicators(path: str | os.PathLike, cls: str, indices: Sequence[int] | None = None):
    """(voronoi [S', N], ttop [S', N]) of done samples; error if a requested one is not done."""
    return load_done(path, open_indicators_store, cls, ("voronoi", "ttop"), indices)
