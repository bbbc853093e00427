"""Sample store writer: one whole chunk per sample and array, ``done`` flags last, resume.

Layout and validation are :mod:`glasscam.insitu.schema`'s (DESIGN §4); this module adds the write
discipline used by the quench hooks:

* :func:`prepare_samples_store` — run by **one** process (universe rank 0) while the others
  wait: create the store, or open an existing one, check that it was made with the parameters
  now requested (:class:`~glasscam.insitu.schema.ParameterMismatchError` naming the fields
  otherwise) and
  return the indices of the samples still to do.
* :class:`SampleWriter` — used by the root rank of a partition: writes one sample's liquid and
  glass snapshots and its cooling record, each array as one whole chunk (chunks are one sample
  long, so two partitions never touch the same chunk or file), then ``liquid/done`` and
  ``glass/done``. A process killed at any point leaves either a sample that is not marked done
  (redone on resume, bit-for-bit the same since it depends on its seed only) or a complete one.

"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import schema


@dataclass
class Snapshot:
    """One configuration as it goes into ``liquid/`` or ``glass/`` (DESIGN §4 dtypes)."""

    positions: np.ndarray  # f4 [N, 2], wrapped into [0, L)
    types: np.ndarray  # i1 [N], 0 = A, 1 = B
    box: np.ndarray  # f8 [2]
    image: np.ndarray  # f4 [C, M, M]
    potential_energy: float  # per particle
    particle_energy: np.ndarray  # f4 [N], LAMMPS compute pe/atom
    temperature: float


def _store_exists(path: Path) -> bool:
    return (path / "zarr.json").exists()


def prepare_samples_store(path: str | os.PathLike, params: Mapping[str, Any]) -> list[int]:
    """Create the store (or validate the existing one) and return the not-done sample indices.

    One process only. Raises :class:`~glasscam.insitu.schema.SchemaError` /
    :class:`~glasscam.insitu.schema.ParameterMismatchError` (message names the store and the
    field) if an existing store does not fit; the store is not modified then.
    """
    where = Path(path)
    if _store_exists(where):
        root = schema.open_samples_store(where, mode="r+", expect=params)
        done = schema.done_samples(root)
        return [int(i) for i in np.flatnonzero(~done)]
    if where.exists() and any(where.iterdir()):
        raise schema.SchemaError(
            f"{where}: exists and is not a Zarr store (no zarr.json); refusing to write into it"
        )
    where.parent.mkdir(parents=True, exist_ok=True)
    schema.create_samples_store(where, params)
    return list(range(int(params["nsamples"])))


class SampleWriter:
    """Writes whole samples into an existing samples store (root rank of one partition)."""

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = os.fspath(path)
        self.root = zarr.open_group(self.path, mode="r+")
        self._arrays: dict[str, Any] = {}

    def _array(self, name: str):
        arr = self._arrays.get(name)
        if arr is None:
            arr = self._arrays[name] = self.root[name]
        return arr

    def write(
        self,
        index: int,
        seed: int,
        snapshots: Mapping[str, Snapshot],
        cooling: Mapping[str, np.ndarray],
    ) -> None:
        """Write sample ``index``: every class's arrays, the cooling record, then the flags."""
        missing = [c for c in schema.CLASSES if c not in snapshots]
        if missing:
            raise ValueError(f"{self.path}: sample {index} lacks the {missing} snapshot(s)")
        for cls in schema.CLASSES:
            snap = snapshots[cls]
            self._array(f"{cls}/positions")[index] = snap.positions
            self._array(f"{cls}/types")[index] = snap.types
            self._array(f"{cls}/box")[index] = snap.box
            self._array(f"{cls}/image")[index] = snap.image
            self._array(f"{cls}/potential_energy")[index] = snap.potential_energy
            self._array(f"{cls}/particle_energy")[index] = snap.particle_energy
            self._array(f"{cls}/temperature")[index] = snap.temperature
            self._array(f"{cls}/seed")[index] = seed
        for spec in schema.SAMPLE_COOLING_ARRAYS:
            self._array(f"cooling/{spec.name}")[index] = cooling[spec.name]
        # flags last: a sample exists only once all of the above is on disk
        for cls in schema.CLASSES:
            self._array(f"{cls}/done")[index] = True
