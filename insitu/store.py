"""Sample store writer: one whole chunk per sample and array, ``done`` flags last, resume.

Layout and validation are :mod:`glasscam.insitu.schema`'s (DESIGN §4); this module adds the write
discipline used by the quench hooks:

* :func:`prepare_samples_store` — run by **one** process (universe rank 0, holding the store's
  lock) while the others wait: create the store atomically, or open an existing one, check
  that it was made with the parameters now requested
  (:class:`~glasscam.insitu.schema.ParameterMismatchError` naming the fields otherwise), grow
  it when more samples are asked for, verify the samples it holds (damaged ones are redone)
  and return the indices of the samples still to do.
* :class:`SampleWriter` — used by the root rank of a partition: writes one sample's liquid and
  glass snapshots and its cooling record, each array as one whole chunk (chunks are one sample
  long, so two partitions never touch the same chunk or file), then each class's checksums
  and ``done`` (:func:`glasscam.insitu.integrity.write_units`). A process killed at any point
  leaves either a sample that is not marked done (redone on resume, bit-for-bit the same
  since it depends on its seed only) or a complete one.

"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import integrity, schema


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


def prepare_samples_store(path: str | os.PathLike, params: Mapping[str, Any],
                          log: Callable[[str], None] = print) -> list[int]:
    """Create the store (or validate the existing one) and return the not-done sample indices.

    One process only, holding the store's lock (:class:`~glasscam.insitu.lock.OutputLock`).
    Creation is atomic; a store with fewer samples than asked grows (the samples it holds stay
    as they are); a resumed store is verified first and its damaged samples are redone.
    Raises :class:`~glasscam.insitu.schema.SchemaError` /
    :class:`~glasscam.insitu.schema.ParameterMismatchError` (message names the store and the
    field) if an existing store does not fit; the store is not modified then.
    """
    where = Path(path)
    root, created = integrity.open_or_create(
        where,
        create=lambda tmp: schema.create_samples_store(tmp, params),
        reopen=lambda p: schema.open_samples_store(p, mode="r+", expect=params, grow=True),
        what="samples store", log=log,
    )
    if not created:
        integrity.check_and_repair(root, str(where), log)
    done = schema.done_samples(root)
    return [int(i) for i in np.flatnonzero(~done)]


class SampleWriter:
    """Writes whole samples into an existing samples store (root rank of one partition)."""

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = os.fspath(path)
        self.root = zarr.open_group(self.path, mode="r+")

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
        # one unit per class (its arrays, their checksums, done); glass, last, also carries
        # the cooling record: a sample exists only once both classes are done
        for unit, cls in zip(schema.SAMPLES_UNITS, schema.CLASSES, strict=True):
            snap = snapshots[cls]
            values: dict[str, Any] = {
                f"{cls}/positions": snap.positions, f"{cls}/types": snap.types,
                f"{cls}/box": snap.box, f"{cls}/image": snap.image,
                f"{cls}/potential_energy": snap.potential_energy,
                f"{cls}/particle_energy": snap.particle_energy,
                f"{cls}/temperature": snap.temperature, f"{cls}/seed": seed,
            }
            if cls == "glass":
                values.update({f"cooling/{spec.name}": cooling[spec.name]
                               for spec in schema.SAMPLE_COOLING_ARRAYS})
            integrity.write_units(self.root, unit, [index],
                                  {k: np.asarray(v)[None] for k, v in values.items()})
