"""Coarse-graining: constant fields, translation invariance, brute-force O(N²) reference."""

from __future__ import annotations

import numpy as np
import pytest
from glasscam.analysis.correlate.coarse_grain import (
    CoarseGrainer,
    PairList,
    coarse_grain,
    coarse_grain_pairs,
    normalize,
)


def config(n=600, rho=1.2, seed=0, aspect=1.0):
    rng = np.random.default_rng(seed)
    lx = np.sqrt(n / rho / aspect)
    box = np.array([lx, lx * aspect])
    return rng.uniform(0, 1, (n, 2)) * box, box, rng


def brute_force(x, pos, box, xi, r_c, kernel):
    d = pos[:, None, :] - pos[None, :, :]
    d -= box * np.round(d / box)
    r = np.hypot(d[..., 0], d[..., 1])
    w = np.where(r < r_c, kernel(r, xi), 0.0)
    return (w @ x) / w.sum(axis=1)


KERNELS = {
    "exp": lambda r, xi: np.exp(-r / xi),
    "gauss": lambda r, xi: np.exp(-0.5 * (r / xi) ** 2),
    "tophat": lambda r, xi: np.ones_like(r),
}


@pytest.mark.parametrize("kernel", sorted(KERNELS))
@pytest.mark.parametrize("xi,cutoff", [(1.0, None), (2.0, 5.0), (0.7, 10.0)])
def test_equals_brute_force(kernel, xi, cutoff):
    pos, box, rng = config(aspect=1.4, seed=1)
    x = rng.normal(size=len(pos))
    r_c = 3 * xi if cutoff is None else cutoff
    r_c = min(r_c, box.min() / 2)
    got = coarse_grain(x, pos, box, xi, cutoff=cutoff, kernel=kernel)
    want = brute_force(x, pos, box, xi, r_c, KERNELS[kernel])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_constant_field_stays_constant():
    pos, box, _ = config(seed=2)
    out = coarse_grain(np.full(len(pos), 3.25), pos, box, xi=1.5)
    np.testing.assert_allclose(out, 3.25, rtol=1e-14)


def test_independent_of_where_the_box_is_cut():
    pos, box, rng = config(seed=3)
    x = rng.random(len(pos))
    a = coarse_grain(x, pos, box, xi=1.2)
    b = coarse_grain(x, pos + np.array([7.31, -2.9]), box, xi=1.2)
    c = coarse_grain(x, np.mod(pos + box / 2, box), box, xi=1.2)
    np.testing.assert_allclose(b, a, rtol=1e-12)
    np.testing.assert_allclose(c, a, rtol=1e-12)


def test_xi_zero_is_identity_and_multiple_fields_match_single():
    pos, box, rng = config(seed=4)
    x = rng.random((len(pos), 3))
    np.testing.assert_array_equal(coarse_grain(x, pos, box, xi=0.0), x)
    many = coarse_grain(x, pos, box, xi=1.0)
    for f in range(3):
        np.testing.assert_allclose(many[:, f], coarse_grain(x[:, f], pos, box, xi=1.0))


def test_pair_list_reuse_for_smaller_cutoffs():
    pos, box, rng = config(seed=5)
    x = rng.random(len(pos))
    pairs = PairList.build(pos, box, 6.0)
    for xi in (0.5, 1.0, 2.0):
        np.testing.assert_allclose(
            coarse_grain_pairs(x, pairs, xi), coarse_grain(x, pos, box, xi), rtol=1e-12
        )
    with pytest.raises(ValueError, match="range"):
        coarse_grain_pairs(x, PairList.build(pos, box, 1.0), xi=1.0)


def test_normalize_and_grainer():
    pos, box, rng = config(seed=6)
    x = rng.normal(size=len(pos))
    cg = CoarseGrainer(xi=1.0).compute(x, pos, box)
    y = cg.normalized
    assert y.min() == 0.0 and y.max() == 1.0
    assert cg.cutoff_used == pytest.approx(3.0)
    np.testing.assert_array_equal(normalize(np.full(5, 2.0)), np.zeros(5))
    # smoothing reduces the variance of white noise
    assert cg.coarse.std() < 0.5 * x.std()


def test_cutoff_clipped_to_half_box():
    pos, box, rng = config(n=100, seed=7)
    cg = CoarseGrainer(xi=10.0).compute(rng.random(100), pos, box)
    assert cg.cutoff_used == pytest.approx(box.min() / 2)


@pytest.mark.parametrize(
    "field,msg", [(np.full(600, np.nan), "NaN"), (np.zeros(5), "shape")]
)
def test_bad_fields(field, msg):
    pos, box, _ = config(seed=8)
    with pytest.raises(ValueError, match=msg):
        coarse_grain(field, pos, box, xi=1.0)
