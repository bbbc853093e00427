"""Cage-relative displacement (CRD) and dynamic propensity: pure numpy kernels (DESIGN §5).

Definitions (paper §3.5)::

    Δr_i(t)      = r_i(t) − r_i(0)                      unwrapped displacement
    CRD_i(t)     = | Δr_i − (1/N_i) Σ_{j ∈ cage(i) ∪ {i}} Δr_j |
    Δ_i(t)       = (1/Ns) Σ_s CRD_i^s(t)               dynamic propensity
    δ(t)         = (1/N)  Σ_i Δ_i(t)                   mean CRD over replicas and particles

**Cage definition** (the paper only says "the neighbours of i"; its supplement is not
available). Default ``"voronoi"``: the cage of *i* is *i* plus its Voronoi neighbours in the
reference (t = 0) configuration of the periodic 2D box (:class:`.geometry.PeriodicVoronoi`,
checked against freud in the tests). This is parameter-free
and the usual choice for 2D CRDs (Illing et al., PNAS 2017; Vivek et al., PNAS 2017), and it
needs no species-dependent cutoff for the non-additive KAM. Alternative ``"cutoff"``: *j* is a
neighbour of *i* when r_ij < ``factor`` · σ_ij at t = 0 (``factor`` = 1.4 by default, close
to the first minimum of g(r) of both mixtures). The cage is fixed at t = 0 for every replica:
all replicas of one isoconfigurational ensemble share it.

A cage is stored as CSR arrays ``(indptr, indices)``: the members of cage(i) ∪ {i} are
``indices[indptr[i]:indptr[i+1]]`` (i itself always included, no duplicates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from glasscam.insitu.geometry import Box, PeriodicVoronoi

CAGE_KINDS = ("voronoi", "cutoff")
DEFAULT_CUTOFF_FACTOR = 1.4


@dataclass(frozen=True)
class Cage:
    """Cage membership cage(i) ∪ {i} in CSR form, plus how it was defined."""

    indptr: np.ndarray  # int64 [N+1]
    indices: np.ndarray  # int64 [nnz]
    definition: str = "voronoi"
    counts: np.ndarray = field(init=False, repr=False)  # N_i, float64 [N]

    def __post_init__(self) -> None:
        object.__setattr__(self, "counts", np.diff(self.indptr).astype(np.float64))

    @property
    def n(self) -> int:
        return int(self.indptr.shape[0] - 1)


def cage_from_pairs(n: int, i: np.ndarray, j: np.ndarray, definition: str) -> Cage:
    """Cage from an undirected or directed list of neighbour pairs; adds i itself, dedupes."""
    i = np.asarray(i, dtype=np.int64)
    j = np.asarray(j, dtype=np.int64)
    keep = i != j
    self_idx = np.arange(n, dtype=np.int64)
    rows = np.concatenate([i[keep], j[keep], self_idx])
    cols = np.concatenate([j[keep], i[keep], self_idx])
    key = np.unique(rows * n + cols)  # sorted by row, then column; duplicates removed
    rows, cols = key // n, key % n
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return Cage(indptr=indptr, indices=cols, definition=definition)


def voronoi_cage(positions: np.ndarray, box: Sequence[float]) -> Cage:
    """Cage = i and its Voronoi neighbours in the periodic 2D box (:mod:`.geometry`)."""
    pairs = PeriodicVoronoi().compute(positions, box).neighbors
    return cage_from_pairs(len(positions), pairs[:, 0], pairs[:, 1], definition="voronoi")


def cutoff_cage(
    positions: np.ndarray,
    box: Sequence[float],
    types: np.ndarray,
    sigma: np.ndarray,
    factor: float = DEFAULT_CUTOFF_FACTOR,
) -> Cage:
    """Cage = i and every j with r_ij < factor · σ_{type_i type_j} (periodic, minimum image)."""
    from scipy.spatial import cKDTree

    sigma = np.asarray(sigma, dtype=np.float64)
    types = np.asarray(types, dtype=np.int64)
    cell = Box.from_box(box)
    pos = cell.wrap(positions)
    tree = cKDTree(pos, boxsize=cell.lengths)
    pairs = tree.query_pairs(r=factor * float(sigma.max()), output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    r = cell.distances(pos, i, j)
    keep = r < factor * sigma[types[i], types[j]]
    return cage_from_pairs(len(pos), i[keep], j[keep], definition=f"cutoff:{factor:g}")


def build_cage(
    positions: np.ndarray,
    box: Sequence[float],
    kind: str = "voronoi",
    types: np.ndarray | None = None,
    sigma: np.ndarray | None = None,
    factor: float = DEFAULT_CUTOFF_FACTOR,
) -> Cage:
    """Dispatch on ``kind`` ("voronoi" or "cutoff")."""
    if kind == "voronoi":
        return voronoi_cage(positions, box)
    if kind == "cutoff":
        if types is None or sigma is None:
            raise ValueError("cage 'cutoff' needs types and the sigma matrix")
        return cutoff_cage(positions, box, types, sigma, factor)
    raise ValueError(f"cage must be one of {CAGE_KINDS}, got {kind!r}")


def displacement(unwrapped: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Unwrapped displacement Δr = r(t) − r(0), float64 [N, D]."""
    return np.asarray(unwrapped, dtype=np.float64) - np.asarray(reference, dtype=np.float64)


def unwrap(positions: np.ndarray, image: np.ndarray, box: Sequence[float]) -> np.ndarray:
    """Unwrapped positions x + image · L from wrapped positions and integer image flags."""
    pos = np.asarray(positions, dtype=np.float64)
    return (
        pos
        + np.asarray(image, dtype=np.float64) * np.asarray(box, dtype=np.float64)[: pos.shape[1]]
    )


def cage_mean(dr: np.ndarray, cage: Cage) -> np.ndarray:
    """(1/N_i) Σ_{j ∈ cage(i) ∪ {i}} Δr_j, float64 [N, D]."""
    dr = np.asarray(dr, dtype=np.float64)
    if dr.shape[0] != cage.n:
        raise ValueError(f"displacements have {dr.shape[0]} particles, cage has {cage.n}")
    sums = np.add.reduceat(dr[cage.indices], cage.indptr[:-1], axis=0)
    return sums / cage.counts[:, None]


def crd_vectors(dr: np.ndarray, cage: Cage) -> np.ndarray:
    """Cage-relative displacement vectors Δr_i − ⟨Δr⟩_cage(i), float64 [N, D]."""
    dr = np.asarray(dr, dtype=np.float64)
    return dr - cage_mean(dr, cage)


def crd(dr: np.ndarray, cage: Cage) -> np.ndarray:
    """|CRD_i|, float64 [N]. Works on one frame [N, D] or a stack [..., N, D]."""
    dr = np.asarray(dr, dtype=np.float64)
    if dr.ndim == 2:
        v = crd_vectors(dr, cage)
        return np.hypot(v[:, 0], v[:, 1]) if v.shape[1] == 2 else np.linalg.norm(v, axis=1)
    flat = dr.reshape(-1, *dr.shape[-2:])
    return np.stack([crd(f, cage) for f in flat]).reshape(dr.shape[:-1])


def crd_from_positions(unwrapped: np.ndarray, reference: np.ndarray, cage: Cage) -> np.ndarray:
    """|CRD| at one time from unwrapped positions and the t = 0 reference, float64 [N]."""
    return crd(displacement(unwrapped, reference), cage)


class PropensityAccumulator:
    """Running sums over replicas of CRD at K output times.

    Sums are kept in float64 of the float32 values that are stored in ``crd`` (so a run resumed
    from the store, which re-reads the float32 values, sums exactly the same numbers; a float64 sum
    of float32 values of similar magnitude is exact, hence independent of the order replicas
    arrive in). Memory: K·N float64 on the process that owns it.
    """

    def __init__(self, noutputs: int, natoms: int) -> None:
        self.sum = np.zeros((noutputs, natoms), dtype=np.float64)
        self.count = np.zeros(noutputs, dtype=np.int64)

    def add(self, k: int, crd_k: np.ndarray) -> None:
        """Add replica CRD values at output ``k`` (rounded to float32 first)."""
        self.sum[k] += np.asarray(crd_k, dtype=np.float32)
        self.count[k] += 1

    def add_replica(self, crd_kn: np.ndarray) -> None:
        """Add one replica's CRD for all K outputs, [K, N]."""
        self.sum += np.asarray(crd_kn, dtype=np.float32)
        self.count += 1

    def merge(self, sums: np.ndarray, counts: np.ndarray) -> None:
        self.sum += sums
        self.count += counts


def propensity_from_sums(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(propensity f4 [K, N], delta f8 [K]) from running sums and per-output replica counts."""
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts[:, None]
    return mean.astype(np.float32), mean.mean(axis=1)


def propensity_from_crd(crd_skn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(propensity f4 [K, N], delta f8 [K]) from per-replica CRD [Ns, K, N] (float32 values)."""
    crd_skn = np.asarray(crd_skn, dtype=np.float32)
    sums = crd_skn.astype(np.float64).sum(axis=0)
    counts = np.full(crd_skn.shape[1], crd_skn.shape[0], dtype=np.int64)
    return propensity_from_sums(sums, counts)


def log_steps(nsteps: int, noutputs: int, first: int = 1) -> np.ndarray:
    """``noutputs`` strictly increasing, roughly log-spaced MD steps from ``first`` to ``nsteps``.

    s_k = round(first · (nsteps/first)^(k/(K−1))), then forced strictly increasing (each at
    least one step after the previous one) with the last equal to ``nsteps``.
    """
    nsteps, noutputs, first = int(nsteps), int(noutputs), int(first)
    if noutputs < 1:
        raise ValueError(f"noutputs must be >= 1, got {noutputs}")
    if first < 1 or first > nsteps:
        raise ValueError(f"first output step must be in [1, nsteps={nsteps}], got {first}")
    if noutputs > nsteps - first + 1:
        raise ValueError(
            f"noutputs={noutputs} distinct output steps do not fit between {first} and {nsteps}"
        )
    if noutputs == 1:
        return np.array([nsteps], dtype=np.int64)
    raw = np.rint(np.geomspace(first, nsteps, noutputs)).astype(np.int64)
    steps = raw.copy()
    for k in range(1, noutputs):
        steps[k] = max(steps[k], steps[k - 1] + 1)
    # push back from the end so that the last one is nsteps and all stay distinct
    steps[-1] = nsteps
    for k in range(noutputs - 2, -1, -1):
        steps[k] = min(steps[k], steps[k + 1] - 1)
    return steps


def replica_seed(base: int, replica: int) -> int:
    """The LAMMPS velocity seed of replica ``replica`` (in [1, 2^31 − 1)), from the base seed."""
    ss = np.random.SeedSequence([int(base), int(replica), 0xC4D])
    return int(ss.generate_state(1, dtype=np.uint32)[0] % (2**31 - 2)) + 1
