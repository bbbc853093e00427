"""C_X(r), the 1/e and zero-crossing finders, Pearson/Spearman and the ξ scan."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.coarse_grain import coarse_grain, normalize
from analysis.correlation import (
    INV_E,
    first_crossing,
    inverse_e_length,
    pearson,
    scan_xi,
    spatial_correlation,
    spearman,
    zero_crossing,
)


def config(n=1500, rho=1.2, seed=0):
    rng = np.random.default_rng(seed)
    length = np.sqrt(n / rho)
    box = np.array([length, length])
    return rng.uniform(0, length, (n, 2)), box, rng


def test_c_of_zero_is_one_and_white_noise_decorrelates():
    pos, box, rng = config()
    corr = spatial_correlation(rng.normal(size=len(pos)), pos, box, dr=0.25)
    assert corr.r[0] == 0.0 and corr.c[0] == 1.0
    assert np.nanmax(np.abs(corr.c[3:])) < 0.15


def test_correlation_matches_brute_force():
    pos, box, rng = config(n=300, seed=1)
    x = rng.random(300)
    corr = spatial_correlation(x, pos, box, r_max=4.0, dr=0.5)
    d = pos[:, None] - pos[None]
    d -= box * np.round(d / box)
    r = np.hypot(d[..., 0], d[..., 1])
    dx = x - x.mean()
    iu = np.triu_indices(300, 1)
    for k in range(8):
        m = (r[iu] >= 0.5 * k) & (r[iu] < 0.5 * (k + 1))
        want = np.mean(dx[iu[0][m]] * dx[iu[1][m]]) / np.mean(dx**2)
        assert corr.c[k + 1] == pytest.approx(want, rel=1e-10)
        assert corr.counts[k + 1] == m.sum()


def test_smooth_field_has_longer_correlation_than_noise():
    pos, box, rng = config(seed=2)
    x = rng.normal(size=len(pos))
    smooth = coarse_grain(x, pos, box, xi=2.0)
    c_noise = spatial_correlation(x, pos, box, dr=0.2)
    c_smooth = spatial_correlation(smooth, pos, box, dr=0.2)
    assert inverse_e_length(c_smooth.r, c_smooth.c) > 1.0
    assert inverse_e_length(c_noise.r, c_noise.c) < inverse_e_length(c_smooth.r, c_smooth.c)


@pytest.mark.parametrize("ell", [0.7, 2.0, 4.0])
@pytest.mark.parametrize("dr", [0.1, 0.37, 1.0])
def test_inverse_e_exact_on_exponential(ell, dr):
    r = np.arange(0, 20, dr)
    assert inverse_e_length(r, np.exp(-r / ell)) == pytest.approx(ell, rel=1e-12)


@pytest.mark.parametrize("r0", [1.3, 3.5])
def test_zero_crossing_exact_on_linear_and_close_on_smooth(r0):
    r = np.arange(0, 10, 0.25)
    assert zero_crossing(r, 1 - r / r0) == pytest.approx(r0, rel=1e-12)
    damped = np.exp(-r / 3) * np.cos(np.pi * r / (2 * r0))
    assert zero_crossing(r, damped) == pytest.approx(r0, abs=0.01)
    assert np.isnan(zero_crossing(r, np.exp(-r)))


def test_first_crossing_skips_nan_and_takes_the_first():
    r = np.arange(6.0)
    c = np.array([1.0, np.nan, 0.2, -0.1, 0.3, -0.2])
    assert first_crossing(r, c, 0.0) == pytest.approx(2 + 0.2 / 0.3)
    # log-linear between (0, 1) and (2, 0.2), the NaN sample skipped
    assert first_crossing(r, c, INV_E) == pytest.approx(2.0 / np.log(5.0), rel=1e-12)


def test_pearson_spearman_limits():
    rng = np.random.default_rng(3)
    x = rng.random(1000)
    assert pearson(x, x) == pytest.approx(1.0)
    assert pearson(x, -x) == pytest.approx(-1.0)
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -np.exp(x)) == pytest.approx(-1.0)
    assert abs(pearson(x, rng.random(1000))) < 0.15
    assert np.isnan(pearson(x, np.ones(1000)))
    with pytest.raises(ValueError, match="NaN"):
        pearson(x, np.full(1000, np.nan))
    with pytest.raises(ValueError, match="length"):
        pearson(x, x[:10])


def test_scan_xi_finds_the_generating_length_and_flip():
    pos, box, rng = config(seed=4)
    noise = rng.normal(size=len(pos))
    target = normalize(coarse_grain(noise, pos, box, xi=2.0))
    xis = [0.0, 0.5, 1.0, 2.0, 3.0]
    pos_scan = scan_xi(noise, target, pos, box, xis)
    assert xis[int(np.argmax(pos_scan))] == 2.0
    assert pos_scan.max() == pytest.approx(1.0)
    neg_scan = scan_xi(-noise, target, pos, box, xis, flip=True)
    np.testing.assert_allclose(neg_scan, pos_scan, atol=1e-12)
    two = scan_xi(noise, np.stack([target, 1 - target]), pos, box, xis)
    np.testing.assert_allclose(two[:, 1], -pos_scan, atol=1e-12)
