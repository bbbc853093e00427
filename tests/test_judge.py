"""The significance analysis of the correlate stage (glasscam.analysis.correlate.judge):
honest δ targets, and the whole chain on a planted configuration and on a null one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from glasscam.analysis.correlate import judge
from glasscam.analysis.correlate.coarse_grain import PairList, coarse_grain_pairs


def test_target_output_is_none_when_the_target_was_not_reached():
    delta = np.array([0.05, 0.1, 0.2, 0.35, 0.6, 0.7])
    assert judge.target_output(delta, 0.3) == 3  # closest in log δ: 0.35
    assert judge.target_output(delta, 1.0) is None  # 0.7 is not δ ≈ 1: no value under it
    assert judge.target_output(delta, 3.0) is None
    assert judge.target_output(np.array([0.1, 0.9]), 1.0) == 1  # within a quarter step
    assert judge.target_output(np.array([np.nan, 0.2]), 0.2) == 1


@dataclass
class FakeConfiguration:
    """What judge needs of glasscam.analysis.dynamics.propensity.Configuration."""

    store: str
    index: int
    sample: int
    temperature: float
    positions: np.ndarray
    types: np.ndarray
    box: np.ndarray
    steps: np.ndarray
    times: np.ndarray
    delta: np.ndarray
    propensity: np.ndarray
    replicas: np.ndarray
    delta_stop: float | None
    crds: np.ndarray  # [K, Ns, N]

    def crd(self, k: int) -> np.ndarray:
        return self.crds[k]


def configuration(seed: int, planted: bool, n: int = 400, ns: int = 12,
                  deltas: tuple[float, ...] = (0.1, 0.3, 0.6, 1.0, 1.6)) -> tuple:
    """Random positions; replicas = a smooth signal + single-particle noise; an indicator that
    is (planted) the signal plus noise, or (null) an independent smooth field."""
    rng = np.random.default_rng(seed)
    box = np.array([18.0, 18.0])
    pos = rng.random((n, 2)) * box
    pairs = PairList.build(pos, box, 6.0)

    def smooth(x):
        return coarse_grain_pairs(x, pairs, 1.5, 4.5, "exp")

    signal = smooth(rng.normal(size=n))
    signal = (signal - signal.mean()) / signal.std()
    deltas = np.asarray(deltas)
    crds = np.stack([np.abs(d * (1 + 0.4 * signal)[None, :] + 0.3 * d *
                            rng.normal(size=(ns, n))) for d in deltas])
    prop = crds.mean(axis=1)
    indicator = -(signal + 0.5 * rng.normal(size=n)) if planted else smooth(rng.normal(size=n))
    conf = FakeConfiguration("p.zarr", 0, seed, 0.55, pos, (rng.random(n) < 0.65).astype(int),
                             box, np.arange(5), np.arange(5.0), prop.mean(axis=1), prop,
                             np.arange(ns), None, crds)
    return conf, {"gamma": indicator}


OPTS = judge.Options(xi_grid=(0.0, 1.0, 2.0, 3.0), null_draws=199, bootstrap=50, splits=4)


def test_planted_indicator_is_significant_and_null_one_is_not():
    rng = np.random.default_rng(0)
    planted = [configuration(s, True) for s in range(3)]
    results = [judge.analyse_configuration(c, f, "kam", OPTS, rng) for c, f in planted]
    rows = judge.summarise(results, [c for c, _ in planted], OPTS, rng)
    gamma = next(r for r in rows if r["indicator"] == "Gamma" and r["delta_target"] == "max")
    assert gamma["correlated_as"] == "1-Gamma"  # KAM: 1 − Γ (the planted field is −signal)
    assert gamma["c_mean"] > 0.6 and gamma["p_value"] < 0.01
    assert gamma["ci_low"] <= gamma["c_mean"] <= gamma["ci_high"]
    assert gamma["null_p95"] < gamma["c_mean"]
    assert 0 < gamma["noise_ceiling"] <= 1
    # δ ≈ 3 was never reached (δ ≤ 1.6): the row says so and carries no value
    row3 = next(r for r in rows if r["indicator"] == "Gamma" and r["delta_target"] == 3.0)
    assert row3["reached"] is False and np.isnan(row3["c_mean"]) and np.isnan(row3["p_value"])
    row1 = next(r for r in rows if r["indicator"] == "Gamma" and r["delta_target"] == 1.0)
    assert row1["reached"] is True and row1["delta_reached"] == pytest.approx(1.0, rel=0.05)
    # the null: an unrelated smooth indicator is not significant
    null = [configuration(10 + s, False) for s in range(3)]
    results = [judge.analyse_configuration(c, f, "kam", OPTS, rng) for c, f in null]
    rows = judge.summarise(results, [c for c, _ in null], OPTS, rng)
    gamma = next(r for r in rows if r["indicator"] == "Gamma" and r["delta_target"] == "max")
    assert gamma["p_value"] > 0.01
    assert "NOT significant" in judge.verdict(gamma) or gamma["p_value"] >= 0.01


def test_a_target_output_just_below_delta_min_is_reported_at_its_target():
    """δ ≈ 0.3 met by an output at δ = 0.27 (within the tolerance): reported under 0.3 with a
    value, while C_max still only looks at δ ≥ 0.3."""
    rng = np.random.default_rng(3)
    confs = [configuration(20 + s, True, deltas=(0.1, 0.27, 0.6, 1.0, 1.6)) for s in range(2)]
    results = [judge.analyse_configuration(c, f, "kam", OPTS, rng) for c, f in confs]
    for r, (c, _) in zip(results, confs, strict=True):
        k = r.targets[0.3]
        assert k == 1 and c.delta[k] < OPTS.delta_min
        assert k in r.columns and k not in r.valid
        assert r.indicators["gamma"].k != k  # C_max is taken over δ ≥ 0.3 only
    rows = judge.summarise(results, [c for c, _ in confs], OPTS, rng)
    row = next(r for r in rows if r["indicator"] == "Gamma" and r["delta_target"] == 0.3)
    assert row["reached"] is True and np.isfinite(row["c_mean"])
    assert row["delta_reached"] < 0.3
