"""Offline dynamic propensity: recompute CRD / Δ / δ from dumped unwrapped trajectories, split a
large isoconfigurational ensemble into sub-ensembles (paper Table 4), pick the output times at
which δ reaches given values (paper Figs. 1–5: δ ≈ 0.3, 1, 3).

The in-situ path (``insitu.propensity``) and this module share the kernels of ``insitu.crd``,
but this one reads positions from LAMMPS text dumps (``dump custom ... id type xu yu``), so it
is an independent oracle for the gather/unwrap/accumulate path that runs inside LAMMPS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from insitu.crd import Cage, build_cage, crd_from_positions, propensity_from_crd

DELTA_TARGETS: tuple[float, ...] = (0.3, 1.0, 3.0)


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
    from insitu.crd import propensity_from_sums

    return propensity_from_sums(sums, np.full(crd.shape[1], len(replicas)))


def ensembles(
    path: str | os.PathLike, size: int = 30, count: int = 3, seed: int | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Propensity and δ of each sub-ensemble of :func:`ensemble_splits`, from a store path."""
    from insitu.schema import open_propensity_store

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
    from insitu.schema import open_propensity_store

    store = open_propensity_store(Path(path))
    return {k: np.asarray(store[k][:]) for k in ("steps", "times", "propensity", "delta", "done")}


# ------------------------------------------------------------------------------------------
# a small reference store without a quench (tests, benchmarks, trying the propensity deck)

_GLASS_POTENTIAL = {
    "kam": "pair_style lj/smooth/linear 2.5\npair_coeff 1 1 1.0 1.0 2.5\n"
    "pair_coeff 1 2 1.5 0.8 2.0\npair_coeff 2 2 0.5 0.88 2.2\n",
    "abm": "pair_style lj/smooth/linear 2.916666666666667\n"
    "pair_coeff 1 1 1.0 0.8333333333333334 2.0833333333333335\n"
    "pair_coeff 1 2 1.0 1.0 2.5\npair_coeff 2 2 1.0 1.1666666666666667 2.916666666666667\n",
}
_GLASS_FRACTION_B = {"kam": 0.35, "abm": 0.5}

_GLASS_DECK = """\
units lj
dimension 2
boundary p p p
atom_style atomic
atom_modify map array
lattice sq 1.2
region box block 0 ${M} 0 ${M} -0.5 0.5
create_box 2 box
create_atoms 1 box
set type 1 type/ratio 2 ${fb} ${seed}
mass * 1.0
include ${potential}
neighbor 0.3 bin
fix flat all enforce2d
timestep 0.005
velocity all create 2.0 ${seed} dist gaussian mom yes rot no
fix md all nvt temp 2.0 2.0 0.5
run ${nmelt}
unfix md
fix md all nvt temp 0.6 0.05 0.5
run ${ncool}
minimize 0 1e-8 10000 100000
write_dump all custom ${dump} id type x y modify sort id format float %.17g
"""


def make_reference_samples(
    path: str | os.PathLike,
    side: int = 16,
    nsamples: int = 3,
    not_done: Sequence[int] = (1,),
    seed: int = 5,
    model: str = "kam",
    nmelt: int = 2000,
    ncool: int = 2000,
    lmp: str | None = None,
) -> Path:
    """A small ``glasscam.samples/1`` store of quickly made glasses (not the paper's quench).

    ``side``² particles on a square lattice at ρ = 1.2, random types (KAM 65:35, ABM 50:50),
    melted at T = 2, cooled 0.6 → 0.05 over ``ncool`` steps and minimised (one serial ``lmp``
    run per sample, so atom IDs do not depend on a rank count). Samples in ``not_done`` are left
    not done. Both classes get the same configuration (enough for the propensity path, which
    reads ``glass``).
    """
    import subprocess
    import sys
    import tempfile

    from insitu.schema import create_samples_store

    if model not in _GLASS_POTENTIAL:
        raise ValueError(f"model must be one of {sorted(_GLASS_POTENTIAL)}, got {model!r}")
    lmp = lmp or str(Path(sys.executable).parent / "lmp")
    n = side * side
    params = {
        "nsamples": nsamples,
        "natoms": n,
        "channels": 2,
        "grid": 8,
        "ncool": 1,
        "seed": seed,
        "model": model,
        "note": "analysis.propensity.make_reference_samples (test glass)",
    }
    root = create_samples_store(path, params)
    with tempfile.TemporaryDirectory() as tmp:
        deck = Path(tmp) / "glass.in"
        deck.write_text(_GLASS_DECK)
        pot = Path(tmp) / "potential.in"
        pot.write_text(_GLASS_POTENTIAL[model])
        for s in range(nsamples):
            if s in set(not_done):
                continue
            dump = Path(tmp) / f"g{s}.dump"
            cmd = [lmp, "-nocite", "-log", "none", "-screen", "none", "-in", str(deck)]
            for k, v in {
                "M": side,
                "seed": seed + s,
                "dump": dump,
                "nmelt": nmelt,
                "ncool": ncool,
                "potential": pot,
                "fb": _GLASS_FRACTION_B[model],
            }.items():
                cmd += ["-var", k, str(v)]
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            step, cols, data = next(read_dump(dump))
            lines = dump.read_text().splitlines()
            lx = float(lines[5].split()[1]) - float(lines[5].split()[0])
            ly = float(lines[6].split()[1]) - float(lines[6].split()[0])
            order = np.argsort(data[:, cols.index("id")])
            xy = data[order][:, [cols.index("x"), cols.index("y")]]
            xy = np.mod(xy, [lx, ly]).astype(np.float32)
            xy[xy >= np.float32(lx)] = 0.0
            types = (data[order][:, cols.index("type")] - 1).astype(np.int8)
            for cls in ("liquid", "glass"):
                g = root[cls]
                g["positions"][s] = xy
                g["types"][s] = types
                g["box"][s] = [lx, ly]
                g["seed"][s] = seed + s
                g["done"][s] = True
    return Path(path)
