"""Offline dynamic propensity: recompute CRD / Δ / δ from dumped unwrapped trajectories, split a
large isoconfigurational ensemble into sub-ensembles (paper Table 4), pick the output times at
which δ reaches given values (paper Figs. 1–5: δ ≈ 0.3, 1, 3).

The in-situ path (``glasscam.insitu.isoconfigurational``) and this module share the kernels of
``glasscam.insitu.cage``,
but this one reads positions from LAMMPS text dumps (``dump custom ... id type xu yu``), so it
is an independent oracle for the gather/unwrap/accumulate path that runs inside LAMMPS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from glasscam.analysis.paper import DELTA_TARGETS
from glasscam.insitu.cage import Cage, build_cage, crd_from_positions, propensity_from_crd

# ------------------------------------------------------------------------------------------
# LAMMPS dumps


def read_dump(path: str | os.PathLike) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Frames of a LAMMPS ``dump custom`` text file: (step, ids [N], columns dict as [N, C]).

    Yields ``(step, ids, table)`` with ``table`` a float64 array of the remaining columns in dump
    order; column names are checked by :func:`read_unwrapped`.
    """
    with open(path) as fh:
        while True:
            line = fh.readline()
            if not line:
                return
            if not line.startswith("ITEM: TIMESTEP"):
                raise ValueError(f"{path}: expected 'ITEM: TIMESTEP', got {line.strip()!r}")
            step = int(fh.readline())
            fh.readline()  # ITEM: NUMBER OF ATOMS
            n = int(fh.readline())
            header = fh.readline()  # ITEM: BOX BOUNDS
            ndim_lines = 3 if "zz" in header or len(header.split()) >= 6 else 2
            for _ in range(ndim_lines):
                fh.readline()
            cols = fh.readline().split()[2:]
            data = np.loadtxt(fh, max_rows=n, ndmin=2)
            yield step, cols, data


def read_unwrapped(path: str | os.PathLike) -> dict[int, np.ndarray]:
    """``{step: unwrapped xy [N, 2] sorted by atom ID}`` from a dump with ``id xu yu`` columns."""
    frames: dict[int, np.ndarray] = {}
    for step, cols, data in read_dump(path):
        try:
            ic, xc, yc = cols.index("id"), cols.index("xu"), cols.index("yu")
        except ValueError:
            raise ValueError(f"{path}: dump needs columns id xu yu, has {cols}") from None
        order = np.argsort(data[:, ic], kind="stable")
        frames[step] = data[order][:, [xc, yc]]
    return frames


def replica_crd_from_dump(path: str | os.PathLike, steps: Sequence[int], cage: Cage) -> np.ndarray:
    """|CRD| [K, N] of one replica from its dumped trajectory at the given output ``steps``.

    The reference is the dump's step-0 frame (the replica's t = 0 configuration).
    """
    frames = read_unwrapped(path)
    if 0 not in frames:
        raise ValueError(f"{path}: no frame at step 0 (the reference configuration)")
    missing = [int(s) for s in steps if int(s) not in frames]
    if missing:
        raise ValueError(f"{path}: no frames at output steps {missing[:10]}")
    ref = frames[0]
    return np.stack([crd_from_positions(frames[int(s)], ref, cage) for s in steps]).astype(
        np.float32
    )


def recompute_from_dumps(
    dumps: Sequence[str | os.PathLike],
    steps: Sequence[int],
    reference: np.ndarray,
    box: Sequence[float],
    cage_kind: str = "voronoi",
    types: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    factor: float = 1.4,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(crd f4 [Ns, K, N], propensity f4 [K, N], delta f8 [K]) from one dump per replica."""
    cage = build_cage(reference, box, cage_kind, types=types, sigma=sigma, factor=factor)
    crd_skn = np.stack([replica_crd_from_dump(p, steps, cage) for p in dumps])
    prop, delta = propensity_from_crd(crd_skn)
    return crd_skn, prop, delta


# ------------------------------------------------------------------------------------------
# ensembles (paper §4.2, Table 4)


def ensemble_splits(
    nreplicas: int, size: int = 30, count: int = 3, seed: int | None = None
) -> dict[str, np.ndarray]:
    """Disjoint replica subsets for Table 4: ``{"e30A": idx, "e30B": ..., "e100": all}``.

    Without ``seed`` the subsets are consecutive blocks (replicas 0–29, 30–59, 60–89); with a
    seed, a random permutation first. The last key holds every replica (``e{nreplicas}``).
    """
    if size * count > nreplicas:
        raise ValueError(
            f"{count} disjoint subsets of {size} need {size * count} replicas, have {nreplicas}"
        )
    order = np.arange(nreplicas)
    if seed is not None:
        order = np.random.default_rng(seed).permutation(nreplicas)
    out = {
        f"e{size}{chr(ord('A') + c)}": np.sort(order[c * size : (c + 1) * size])
        for c in range(count)
    }
    out[f"e{nreplicas}"] = np.arange(nreplicas)
    return out


def ensemble_propensity(store, replicas: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """(propensity f4 [K, N], delta f8 [K]) of a subset of a propensity store's replicas.

    Reads ``crd`` one replica at a time (memory K·N) and refuses replicas not marked done.
    """
    replicas = np.asarray(replicas, dtype=np.int64)
    done = np.asarray(store["done"][:])
    if not done[replicas].all():
        bad = replicas[~done[replicas]].tolist()
        raise ValueError(f"propensity store: replicas {bad[:10]} are not done ('done' array)")
    crd = store["crd"]
    sums = np.zeros(crd.shape[1:], dtype=np.float64)
    for s in replicas:
        sums += np.asarray(crd[int(s)], dtype=np.float32)
    from glasscam.insitu.cage import propensity_from_sums

    return propensity_from_sums(sums, np.full(crd.shape[1], len(replicas)))


def ensembles(
    path: str | os.PathLike, size: int = 30, count: int = 3, seed: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Propensity and δ of each sub-ensemble of :func:`ensemble_splits`, from a store path."""
    from glasscam.insitu.schema import open_propensity_store

    store = open_propensity_store(path)
    ns = store["done"].shape[0]
    return {
        name: ensemble_propensity(store, idx)
        for name, idx in ensemble_splits(ns, size, count, seed).items()
    }


# ------------------------------------------------------------------------------------------
# time selection


def output_at_delta(delta: np.ndarray, target: float) -> int:
    """Index k of the output whose δ is closest to ``target`` in log(δ) (NaNs ignored)."""
    delta = np.asarray(delta, dtype=np.float64)
    ok = np.isfinite(delta) & (delta > 0)
    if not ok.any():
        raise ValueError("no output with a finite positive delta")
    dist = np.where(ok, np.abs(np.log(np.where(ok, delta, 1.0)) - np.log(target)), np.inf)
    return int(np.argmin(dist))


def outputs_at_deltas(
    delta: np.ndarray, targets: Sequence[float] = DELTA_TARGETS
) -> dict[float, int]:
    """``{target: k}`` for each target δ (paper: 0.3, 1, 3 ≈ τα, 3τα, 10τα)."""
    return {float(t): output_at_delta(delta, t) for t in targets}


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """steps, times, propensity, delta, done of a propensity store (small arrays only)."""
    from glasscam.insitu.schema import open_propensity_store

    store = open_propensity_store(Path(path))
    return {k: np.asarray(store[k][:]) for k in ("steps", "times", "propensity", "delta", "done")}
