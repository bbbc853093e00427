"""Spatial correlation functions, crossing finders, Pearson/Spearman, and the ξ scan
(paper §4.2, §4.5-4.7, DESIGN §5).

* ``spatial_correlation``: C_X(r) = ⟨δX_i δX_j⟩_{|r_ij| = r} / ⟨δX²⟩, δX = X − mean(X), the
  average over unordered pairs i ≠ j whose minimum-image distance falls in each bin
  [r_k, r_k + dr); the first point is r = 0 with C = 1 (the i = j term) exactly.
* ``first_crossing``: the first r where a sampled curve falls through a level: log-linear
  interpolation between the bracketing samples when both are positive (exact for exponentials,
  so C = exp(−r/ℓ) gives ℓ for the level 1/e at any sampling), linear otherwise (exact for
  piecewise-linear curves; used for the zero crossing r_Γ).
* ``pearson``/``spearman``: scipy.stats, NaN for a constant field.
* ``scan_xi``: Pearson between the coarse-grained, normalised structural field (or 1 − it) and
  a target (the coarse-grained propensity), for each ξ of a grid; one pair list serves all ξ.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from glasscam.analysis.correlate.coarse_grain import (
    DEFAULT_CUTOFF_FACTOR,
    Kernel,
    PairList,
    coarse_grain_pairs,
    normalize,
)
from glasscam.analysis.paper import INV_E
from glasscam.insitu.geometry import check_configuration


@dataclass(frozen=True)
class Correlation:
    """C_X(r) sampled at ``r`` (r[0] = 0, then bin centres), with the pair count per bin."""

    r: np.ndarray
    c: np.ndarray
    counts: np.ndarray


def check_field(values: np.ndarray, n: int, what: str = "field") -> np.ndarray:
    """A finite per-particle field of ``n`` values, as float64."""
    x = np.asarray(values, dtype=np.float64)
    if x.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contains NaN or inf")
    return x


def spatial_correlation(
    values: np.ndarray,
    positions: np.ndarray,
    box: np.ndarray,
    r_max: float | None = None,
    dr: float = 0.1,
    pairs: PairList | None = None,
) -> Correlation:
    """C_X(r) of one configuration; ``r_max`` defaults to min(L)/2. Empty bins give NaN."""
    pos, lengths = check_configuration(positions, box)
    x = check_field(values, len(pos))
    if not dr > 0:
        raise ValueError(f"dr must be > 0, got {dr}")
    r_max = float(lengths.min() / 2 if r_max is None else min(r_max, lengths.min() / 2))
    if pairs is None or pairs.r_max < r_max:
        pairs = PairList.build(pos, lengths, r_max)
    dx = x - x.mean()
    var = float(np.mean(dx * dx))
    nbins = int(np.floor(r_max / dr + 1e-9))
    edges = np.arange(nbins + 1) * dr
    sel = pairs.r < edges[-1]
    k = np.floor(pairs.r[sel] / dr).astype(np.intp)
    prod = dx[pairs.i[sel]] * dx[pairs.j[sel]]
    num = np.bincount(k, weights=prod, minlength=nbins)[:nbins]
    cnt = np.bincount(k, minlength=nbins)[:nbins]
    with np.errstate(invalid="ignore", divide="ignore"):
        c = num / cnt / var if var > 0 else np.full(nbins, np.nan)
    r = np.concatenate([[0.0], 0.5 * (edges[:-1] + edges[1:])])
    return Correlation(r, np.concatenate([[1.0], c]), np.concatenate([[len(x)], cnt]))


def first_crossing(r: np.ndarray, c: np.ndarray, level: float) -> float:
    """First r where c falls from >= level to < level (interpolated); NaN if it never does."""
    r = np.asarray(r, dtype=np.float64)
    c = np.asarray(c, dtype=np.float64)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError("r and c must be 1D arrays of equal length")
    ok = np.isfinite(c)
    r, c = r[ok], c[ok]
    below = np.flatnonzero((c[:-1] >= level) & (c[1:] < level))
    if len(below) == 0:
        return float("nan")
    k = int(below[0])
    r0, r1, c0, c1 = r[k], r[k + 1], c[k], c[k + 1]
    if c0 == level:
        return float(r0)
    if level > 0 and c1 > 0:
        t = (np.log(c0) - np.log(level)) / (np.log(c0) - np.log(c1))
    else:
        t = (c0 - level) / (c0 - c1)
    return float(r0 + t * (r1 - r0))


def inverse_e_length(r: np.ndarray, c: np.ndarray) -> float:
    """r* with C(r*) = 1/e (ξ_Δ of the paper)."""
    return first_crossing(r, c, INV_E)


def zero_crossing(r: np.ndarray, c: np.ndarray) -> float:
    """First r where C crosses 0 (r_Γ of the paper)."""
    return first_crossing(r, c, 0.0)


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"fields differ in length: {a.shape} vs {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("field contains NaN or inf")
    return a, b


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's correlation coefficient (NaN if either field is constant)."""
    from scipy import stats

    a, b = _pair(x, y)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(stats.pearsonr(a, b).statistic)


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation coefficient (NaN if either field is constant)."""
    from scipy import stats

    a, b = _pair(x, y)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(stats.spearmanr(a, b).statistic)


def oriented(values: np.ndarray, flip: bool) -> np.ndarray:
    """α or 1 − α of a field already normalised to [0, 1]."""
    v = np.asarray(values, dtype=np.float64)
    return 1.0 - v if flip else v


def scan_xi(
    values: np.ndarray,
    target: np.ndarray,
    positions: np.ndarray,
    box: np.ndarray,
    xis: Sequence[float],
    flip: bool = False,
    cutoff_factor: float = DEFAULT_CUTOFF_FACTOR,
    kernel: str | Kernel = "exp",
    pairs: PairList | None = None,
) -> np.ndarray:
    """Pearson(oriented(normalize(X̄_ξ)), target) for every ξ in ``xis``; target is used as
    given (pass the coarse-grained, normalised Δ). Returns an array like ``xis``.

    ``target`` may also be 2D (T, N): then the result is (len(xis), T)."""
    xis = np.asarray(xis, dtype=np.float64)
    tgt = np.atleast_2d(np.asarray(target, dtype=np.float64))
    if pairs is None:
        pairs = PairList.build(positions, box, float(cutoff_factor * xis.max()))
    out = np.empty((len(xis), len(tgt)))
    for a, xi in enumerate(xis):
        field = coarse_grain_pairs(values, pairs, xi, cutoff_factor * xi, kernel)
        field = oriented(normalize(field), flip)
        for b, t in enumerate(tgt):
            out[a, b] = pearson(field, t)
    return out[:, 0] if np.ndim(target) == 1 else out
