"""Every store of a run folder as xarray objects (``xarray.open_datatree`` on Zarr): the arrays
keep the dimension names of :mod:`glasscam.insitu.schema` (S samples, N particles, C
configurations or channels, K outputs, ...), and every group (liquid/, glass/, cooling/,
reference/) is a node of the tree. Lazy: nothing is read until used."""

from __future__ import annotations

import os
from pathlib import Path


def open_store(path: str | os.PathLike):
    """One glasscam store (validated by its schema) as an ``xarray.DataTree``."""
    import xarray as xr
    from glasscam.insitu.schema import open_store as open_validated

    where = os.fspath(path)
    open_validated(where)  # a clear error for a damaged or foreign store
    return xr.open_datatree(where, engine="zarr", consolidated=False)


def open_run(run: str | os.PathLike) -> dict[str, object]:
    """Every store of a run folder: ``{"samples": DataTree, "gradcam": ..., "indicators":
    ..., "propensity_T0.45": ...}`` (the store's file name without ``.zarr``)."""
    folder = Path(run)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: run folder does not exist")
    stores = sorted(p for p in folder.glob("*.zarr") if (p / "zarr.json").exists())
    if not stores:
        raise FileNotFoundError(f"{folder}: no *.zarr store in this run folder")
    return {p.name[: -len(".zarr")]: open_store(p) for p in stores}
