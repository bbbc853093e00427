"""Is a correlation with the propensity more than chance? One configuration at a time, then
the mean over configurations (paper §4.2–4.6; issue 11; DESIGN §5 "Significance").

For every glass configuration of an isoconfigurational store and every indicator X (Γ of the
CNN ensemble, Voronoi volume ϒ, TT-OP Θ, and two baselines: the local fraction of species A
and the per-particle potential energy) this computes

* ``C[ξ, k]`` = Pearson(oriented X̄_ξ, Δ̄_k) for ξ on the grid and every output k with
  δ_k ≥ ``delta_min`` (0.3: the ballistic first steps are not a correlation with dynamics);
  ``C_max`` = its maximum, with ξ* and δ* where it is reached; and at each δ target that was
  reached (0.3, 1, 3 — "not reached" otherwise, never another output under its name) the
  maximum over ξ at that output;
* the null: the same statistic (same maximum over ξ and over the same outputs) for X̄
  evaluated at randomly translated positions on the torus (:class:`TranslatedField`), which
  keeps the spatial structure of X and of Δ and breaks their relation; p-value, null mean and
  95th percentile; and the null of the mean over configurations (draw-wise means);
* a second null: X̄ of *another* configuration evaluated at this configuration's positions;
* error bars: a replica bootstrap of C at (ξ*, k*) for each configuration, combined with the
  bootstrap over configurations into a 95 % CI of the mean;
* the noise ceiling: the largest C any field can reach against Δ̄ measured with Ns replicas
  (split-half reliability, Spearman–Brown corrected, square root);
* the partial correlation of X̄ and Δ̄ given the coarse-grained local composition (what an
  indicator knows beyond composition);
* ξ_Δ by the paper's bare 1/e rule and by the noise-free rule (cross-correlation of disjoint
  replica halves), the latter used to coarse-grain Δ; a cutoff 3ξ beyond L/2 is flagged.

The kernels are :mod:`glasscam.analysis.correlate.significance`; this module only wires them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from glasscam.analysis.correlate import significance as sig
from glasscam.analysis.correlate.coarse_grain import PairList, coarse_grain_pairs, normalize
from glasscam.analysis.correlate.measures import (
    inverse_e_length,
    pearson,
    scan_xi,
    spatial_correlation,
)
from glasscam.analysis.paper import XI_DELTA

# indicators in the order of the tables; the two last are baselines (issue 11)
INDICATORS = ("gamma", "voronoi", "ttop", "composition", "energy")
BASELINES = ("composition", "energy")
SYMBOLS = {"gamma": "Gamma", "voronoi": "Upsilon", "ttop": "Theta",
           "composition": "x_A", "energy": "E"}
# True: 1 − X is correlated with Δ. Γ, ϒ, Θ: the paper (Figs 1, 2, 5, 7, §4.6). Baselines,
# fixed before looking (a data-chosen sign would have to be repeated by the null): a larger
# local fraction of A means fewer of the strong A–B bonds (KAM, ε_AB = 1.5) or more of the
# small, mobile species (ABM, σ_A = 5/6): both more mobile; a higher energy is less stable.
FLIP: dict[str, dict[str, bool]] = {
    "kam": {"gamma": True, "voronoi": False, "ttop": True, "composition": False,
            "energy": False},
    "abm": {"gamma": True, "voronoi": True, "ttop": False, "composition": False,
            "energy": False},
}


def label(ind: str, flip: bool) -> str:
    return f"1-{SYMBOLS[ind]}" if flip else SYMBOLS[ind]


def target_output(delta: np.ndarray, target: float, tolerance: float = 0.25) -> int | None:
    """The output whose δ is closest to ``target`` in log δ, if the target was reached.

    Reached means some output has δ ≥ target / (1 + tolerance) — within a quarter of the
    log-spaced output grid's typical ratio; otherwise None: the caller reports "not reached"
    and never the largest δ under the target's name.
    """
    delta = np.asarray(delta, dtype=np.float64)
    ok = np.isfinite(delta) & (delta > 0)
    if not ok.any() or np.nanmax(np.where(ok, delta, np.nan)) < target / (1 + tolerance):
        return None
    dist = np.where(ok, np.abs(np.log(np.where(ok, delta, 1.0)) - math.log(target)), np.inf)
    return int(np.argmin(dist))


@dataclass
class Options:
    xi_grid: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
    xi_delta: float | None = None  # None: the noise-free rule (bare 1/e when it fails)
    kernel: str = "exp"
    cutoff_factor: float = 3.0
    dr: float = 0.1
    delta_min: float = 0.3
    delta_targets: tuple[float, ...] = (0.3, 1.0, 3.0)
    null_draws: int = 1000
    bootstrap: int = 200
    splits: int = 10
    seed: int = 0


@dataclass
class IndicatorResult:
    name: str
    flip: bool
    scan: np.ndarray  # C[ξ, j] over the analysed outputs (ConfigurationResult.columns)
    c_max: float
    xi: float  # ξ* of C_max
    k: int  # output (store index) of C_max
    null_max: np.ndarray  # [draws] null of C_max
    null_by_output: np.ndarray  # [draws, J] null of max over ξ at each analysed output
    observed_by_output: np.ndarray  # [J] the same evaluator at zero translation (for p)
    in_valid: np.ndarray  # [J] bool: the analysed outputs with δ ≥ delta_min (C_max's range)
    replicates: np.ndarray  # replica bootstrap of C at (ξ*, k)
    at_target: dict[float, dict[str, Any]] = field(default_factory=dict)
    partial: float = float("nan")  # Pearson(X̄, Δ̄ | x̄_A) at (ξ*, k)
    cutoff_flag: bool = False


@dataclass
class ConfigurationResult:
    temperature: float
    sample: int
    store: str
    delta: np.ndarray  # δ of every output of the configuration
    valid: np.ndarray  # store output indices with δ ≥ delta_min (where C_max is taken)
    columns: np.ndarray  # store output indices analysed: valid ∪ the δ-target outputs
    xi_delta: float
    xi_delta_bare: float
    xi_delta_noise_free: float
    xi_delta_how: str
    xi_delta_flag: bool
    delta_ref: float  # δ of the output ξ_Δ is measured at (δ ≈ 1, else the largest)
    replicas: int
    ceiling: dict[int, float]  # noise ceiling at output k
    indicators: dict[str, IndicatorResult]
    targets: dict[float, int | None]  # δ target -> output (None: not reached)
    c_delta: dict[float | str, Any]  # δ target (or "largest") -> C of the bare Δ (Fig 3)
    delta_cg: np.ndarray  # Δ̄ [J, N] at the analysed outputs (normalised)
    translated: dict[str, Any] = field(default_factory=dict)  # TranslatedField per indicator


def indicator_fields(types: np.ndarray, fields: Mapping[str, np.ndarray],
                     energy: np.ndarray | None) -> dict[str, np.ndarray]:
    """The per-particle fields correlated with Δ: the structural ones given, plus the
    baselines (species A indicator, whose coarse-graining is the local fraction of A; the
    per-particle potential energy when the samples store has it)."""
    out = {k: np.asarray(v, dtype=np.float64) for k, v in fields.items()}
    out["composition"] = (np.asarray(types) == 0).astype(np.float64)
    if energy is not None and np.all(np.isfinite(energy)):
        out["energy"] = np.asarray(energy, dtype=np.float64)
    return {k: out[k] for k in INDICATORS if k in out}


def analyse_configuration(conf, fields: Mapping[str, np.ndarray], system: str, opts: Options,
                          rng: np.random.Generator) -> ConfigurationResult:
    """Every statistic of one configuration (``conf``: a
    :class:`glasscam.analysis.dynamics.propensity.Configuration`)."""
    pos, box = np.asarray(conf.positions, dtype=np.float64), np.asarray(conf.box, np.float64)
    delta = np.asarray(conf.delta, dtype=np.float64)
    prop = np.asarray(conf.propensity, dtype=np.float64)
    finite = np.isfinite(delta) & (delta > 0) & np.all(np.isfinite(prop), axis=1)
    if not finite.any():
        raise ValueError(
            f"{conf.store}: fields 'delta'/'propensity' of configuration {conf.index} (sample "
            f"{conf.sample}) have no output with finite values"
        )
    valid = np.flatnonzero(finite & (delta >= opts.delta_min))
    if valid.size == 0:  # δ never reached delta_min: keep the finite outputs, say so
        valid = np.flatnonzero(finite)
    half = float(np.min(box) / 2)
    xis = np.asarray(opts.xi_grid, dtype=np.float64)
    pairs = PairList.build(pos, box, max(half, opts.cutoff_factor * float(xis.max())))
    targets = {t: target_output(np.where(finite, delta, np.nan), t) for t in opts.delta_targets}

    # ξ_Δ at δ ≈ 1 (or the largest δ): the paper's bare 1/e rule and the noise-free one
    k_ref = targets.get(1.0)
    if k_ref is None:
        k_ref = int(valid[-1])
    c_bare = spatial_correlation(prop[k_ref], pos, box, dr=opts.dr, pairs=pairs)
    xi_bare = inverse_e_length(c_bare.r, sparse_bins_dropped(c_bare))
    crd_ref = np.asarray(conf.crd(k_ref), dtype=np.float64)
    xi_free = (sig.noise_free_length(crd_ref, pos, box, splits=opts.splits, rng=rng)
               if len(crd_ref) >= 4 else float("nan"))
    if opts.xi_delta is not None:
        xi_d, how = float(opts.xi_delta), "fixed (--xi-delta)"
    elif np.isfinite(xi_free):
        xi_d, how = xi_free, "noise-free (cross-correlation of replica halves)"
    elif np.isfinite(xi_bare):
        xi_d, how = xi_bare, "bare 1/e rule (the noise-free rule needs >= 4 replicas)"
    else:
        xi_d = min(XI_DELTA, half / 2)
        how = (f"FALLBACK: C_Delta never reaches 1/e within L/2 = {half:.3g}; paper's "
               f"xi_Delta = {XI_DELTA:g} capped at L/4")
    flag = sig.cutoff_flag(xi_d, opts.cutoff_factor, box)
    if opts.cutoff_factor * xi_d > pairs.r_requested:  # flagged above; computed, never clipped
        pairs = PairList.build(pos, box, opts.cutoff_factor * xi_d)

    def coarse(x: np.ndarray, xi: float) -> np.ndarray:
        return coarse_grain_pairs(x, pairs, xi, opts.cutoff_factor * xi, opts.kernel)

    # analysed: the outputs of C_max (δ ≥ delta_min) and those of the δ targets (a target
    # output can lie just below delta_min: it is reported at its target, not in C_max)
    columns = np.array(sorted(set(valid.tolist())
                              | {k for k in targets.values() if k is not None}))
    in_valid = np.isin(columns, valid)
    delta_cg = normalize(coarse(prop[columns].T, xi_d)).T  # [J, N]
    c_delta: dict[float | str, Any] = {
        t: (spatial_correlation(prop[k], pos, box, dr=opts.dr, pairs=pairs)
            if k is not None else None) for t, k in targets.items()}
    # and at the largest δ of the run, under its own value (Fig 3 when no target was reached)
    c_delta["largest"] = spatial_correlation(prop[int(valid[-1])], pos, box, dr=opts.dr,
                                             pairs=pairs)
    ceiling: dict[int, float] = {}

    def ceiling_at(k: int) -> float:
        if k not in ceiling:
            crd = np.asarray(conf.crd(k), dtype=np.float64)
            if len(crd) < 4:
                ceiling[k] = float("nan")
            else:
                _, rel = sig.split_half_reliability(
                    crd, lambda p: coarse(p, xi_d), splits=opts.splits, rng=rng)
                ceiling[k] = sig.noise_ceiling(rel)
        return ceiling[k]

    result = ConfigurationResult(
        temperature=float(conf.temperature), sample=int(conf.sample), store=str(conf.store),
        delta=delta, valid=valid, columns=columns, xi_delta=xi_d, xi_delta_bare=xi_bare,
        xi_delta_noise_free=xi_free, xi_delta_how=how, xi_delta_flag=flag,
        delta_ref=float(delta[k_ref]),
        replicas=len(conf.replicas), ceiling=ceiling, indicators={}, targets=targets,
        c_delta=c_delta, delta_cg=delta_cg,
    )
    flips = FLIP[system]
    all_fields = indicator_fields(conf.types, {k: v for k, v in fields.items()
                                               if k != "energy"}, fields.get("energy"))
    composition_cg = {xi: normalize(coarse(all_fields["composition"], xi)) for xi in xis}
    shifts = rng.random((opts.null_draws, 2)) * box
    for name in INDICATORS:
        if name not in all_fields:
            continue
        values = all_fields[name]
        if np.ptp(values) == 0:
            continue  # a constant field (an all-zero Grad-CAM map) has no correlation
        flip = flips[name]
        scan = scan_xi(values, delta_cg, pos, box, xis, flip=flip,
                       cutoff_factor=opts.cutoff_factor, kernel=opts.kernel, pairs=pairs)
        scan = np.atleast_2d(scan)
        filled = np.where(np.isnan(scan) | ~in_valid[None, :], -np.inf, scan)
        a, b = np.unravel_index(int(np.argmax(filled)), filled.shape)
        xi_star, k_star = float(xis[a]), int(columns[b])
        translated = sig.TranslatedField(values, pos, box, xis, kernel=opts.kernel,
                                         cutoff_factor=opts.cutoff_factor)
        result.translated[name] = translated
        null_by_output = _null_by_output(translated, pos, delta_cg, flip, shifts)
        # p compares like with like: the observed statistic by the null's own evaluator (it
        # differs from the exact C by < 5e-3, glasscam.analysis.correlate.significance)
        observed_by_output = _null_by_output(translated, pos, delta_cg, flip,
                                             np.zeros((1, 2)))[0]
        field_star = _oriented(normalize(coarse(values, xi_star)), flip)

        def stat(p: np.ndarray, f=field_star) -> float:
            return pearson(f, normalize(coarse(p, xi_d)))

        crd_star = np.asarray(conf.crd(k_star), dtype=np.float64)
        replicates = sig.replica_bootstrap(crd_star, stat, resamples=opts.bootstrap, rng=rng)
        res = IndicatorResult(
            name=name, flip=flip, scan=scan, c_max=float(scan[a, b]), xi=xi_star, k=k_star,
            null_max=null_by_output[:, in_valid].max(axis=1), null_by_output=null_by_output,
            observed_by_output=observed_by_output, in_valid=in_valid,
            replicates=replicates,
            partial=(sig.partial_correlation(field_star, delta_cg[b], composition_cg[xi_star])
                     if name != "composition" else float("nan")),
            cutoff_flag=sig.cutoff_flag(xi_star, opts.cutoff_factor, box),
        )
        for t, k in targets.items():
            if k is None:
                res.at_target[t] = {"reached": False, "k": None}
                continue
            j = int(np.flatnonzero(columns == k)[0])
            col = np.where(np.isnan(scan[:, j]), -np.inf, scan[:, j])
            ai = int(np.argmax(col))
            f_t = _oriented(normalize(coarse(values, float(xis[ai]))), flip)
            reps = sig.replica_bootstrap(
                np.asarray(conf.crd(k), dtype=np.float64),
                lambda p, f=f_t: pearson(f, normalize(coarse(p, xi_d))),
                resamples=opts.bootstrap, rng=rng)
            res.at_target[t] = {"reached": True, "k": k, "c": float(scan[ai, j]),
                                "observed_grid": float(observed_by_output[j]),
                                "xi": float(xis[ai]), "null": null_by_output[:, j],
                                "replicates": reps, "ceiling": ceiling_at(k)}
        ceiling_at(k_star)
        result.indicators[name] = res
    return result


def sparse_bins_dropped(corr, minimum: int = 10) -> np.ndarray:
    """C(r) with the bins of fewer than ``minimum`` pairs (below contact: a handful of close
    pairs) set to NaN, so that a crossing is never read off a nearly empty bin. r = 0 (the
    same-particle term) is kept."""
    c = np.array(corr.c, dtype=np.float64)
    sparse = np.asarray(corr.counts) < minimum
    sparse[0] = False
    c[sparse] = np.nan
    return c


def _nanmean(values) -> float:
    v = np.asarray(values, dtype=np.float64)
    return float(np.mean(v[np.isfinite(v)])) if np.isfinite(v).any() else float("nan")


def _clip(lo: float, hi: float) -> tuple[float, float]:
    """A correlation's CI within [−1, 1] (the bootstrap-t interval is not range-respecting)."""
    return max(lo, -1.0), min(hi, 1.0)


def p_of(ind: IndicatorResult) -> float:
    """p of one configuration's C_max against its own null."""
    return sig.p_value(float(ind.observed_by_output[ind.in_valid].max()), ind.null_max)


def _oriented(values: np.ndarray, flip: bool) -> np.ndarray:
    return 1.0 - values if flip else values


def _null_by_output(translated, pos, delta_cg, flip, shifts, batch: int = 32) -> np.ndarray:
    """[draws, K']: for each torus translation u, max over ξ of Pearson(oriented X̄_ξ(r + u),
    Δ̄_k) at every valid output k. The maximum over ξ and over outputs is taken on these,
    exactly as on the data."""
    out = np.empty((len(shifts), len(delta_cg)))
    sign = -1.0 if flip else 1.0
    n = len(pos)
    for start in range(0, len(shifts), batch):
        chunk = shifts[start:start + batch]
        points = (pos[None, :, :] + chunk[:, None, :]).reshape(-1, 2)
        fields = translated.at(points).reshape(-1, len(chunk), n)  # [nξ, draws, N]
        for d in range(len(chunk)):
            c = sig.pearson_rows(sign * fields[:, d], delta_cg)  # [nξ, K']
            out[start + d] = np.nanmax(np.where(np.isnan(c), -np.inf, c), axis=0)
    return out


# ---- over configurations ---------------------------------------------------------------------


def other_configuration_null(results: Sequence[ConfigurationResult], confs, name: str,
                             ) -> np.ndarray:
    """C_max of X̄ of configuration a against Δ̄ of configuration b ≠ a (X̄ evaluated at b's
    positions; same maxima over ξ and outputs): values for every ordered pair."""
    values = []
    for a, ra in enumerate(results):
        if name not in ra.translated:
            continue
        flip = ra.indicators[name].flip
        for b, rb in enumerate(results):
            if a == b or name not in rb.indicators:
                continue
            f = ra.translated[name].at(np.asarray(confs[b].positions, dtype=np.float64))
            c = sig.pearson_rows(-f if flip else f, rb.delta_cg[np.isin(rb.columns, rb.valid)])
            values.append(float(np.nanmax(c)))
    return np.asarray(values)


def summarise(results: Sequence[ConfigurationResult], confs, opts: Options,
              rng: np.random.Generator) -> list[dict[str, Any]]:
    """Rows of ``significance.csv``: per indicator, the C_max row (δ ≥ delta_min) and one row
    per δ target, mean over configurations with CI, null, p-value and noise ceiling."""
    rows = []
    temperature = results[0].temperature
    for name in INDICATORS:
        have = [r for r in results if name in r.indicators]
        if not have:
            continue
        flip = have[0].indicators[name].flip
        values = np.array([r.indicators[name].c_max for r in have])
        reps = [r.indicators[name].replicates for r in have]
        mean, lo, hi = sig.two_level_ci(reps, values, rng=rng)
        lo, hi = _clip(lo, hi)
        null_mean_draws = np.mean([r.indicators[name].null_max for r in have], axis=0)
        other = other_configuration_null(results, confs, name) if len(results) > 1 else None
        base = {
            "temperature": temperature, "indicator": SYMBOLS[name],
            "correlated_as": label(name, flip), "baseline": name in BASELINES,
            "configurations": len(have),
        }
        rows.append({
            **base, "delta_target": "max",
            "delta_reached": float(np.mean([r.delta[r.indicators[name].k] for r in have])),
            "reached": True,
            "xi": float(np.mean([r.indicators[name].xi for r in have])),
            "c_mean": mean, "ci_low": lo, "ci_high": hi,
            "null_mean": float(null_mean_draws.mean()),
            "null_p95": float(np.quantile(null_mean_draws, 0.95)),
            "p_value": sig.p_value(
                float(np.mean([ind.observed_by_output[ind.in_valid].max()
                               for ind in (r.indicators[name] for r in have)])),
                null_mean_draws),
            "p_values_per_configuration": ";".join(
                f"{p_of(r.indicators[name]):.3g}" for r in have),
            "noise_ceiling": _nanmean([r.ceiling.get(r.indicators[name].k, np.nan)
                                       for r in have]),
            "partial_given_composition": _nanmean([r.indicators[name].partial for r in have]),
            "null_other_configuration_mean": (float(np.mean(other))
                                              if other is not None and other.size else
                                              float("nan")),
            "xi_delta": float(np.mean([r.xi_delta for r in have])),
            "xi_flag": any(r.indicators[name].cutoff_flag or r.xi_delta_flag for r in have),
        })
        for t in opts.delta_targets:
            got = [r for r in have if r.indicators[name].at_target.get(t, {}).get("c")
                   is not None]
            row = {**base, "delta_target": t, "reached": len(got) == len(have)}
            if len(got) < len(have):  # not reached by every configuration: no value
                row.update({"delta_reached": float("nan"), "configurations": len(got),
                            "xi": float("nan"), "c_mean": float("nan"),
                            "ci_low": float("nan"), "ci_high": float("nan"),
                            "null_mean": float("nan"), "null_p95": float("nan"),
                            "p_value": float("nan"), "noise_ceiling": float("nan"),
                            "partial_given_composition": float("nan"),
                            "null_other_configuration_mean": float("nan"),
                            "xi_delta": float(np.mean([r.xi_delta for r in have])),
                            "xi_flag": False, "p_values_per_configuration": ""})
                rows.append(row)
                continue
            at = [r.indicators[name].at_target[t] for r in got]
            vals = np.array([a["c"] for a in at])
            m, lo_t, hi_t = sig.two_level_ci([a["replicates"] for a in at], vals, rng=rng)
            lo_t, hi_t = _clip(lo_t, hi_t)
            null_t = np.mean([a["null"] for a in at], axis=0)
            row.update({
                "delta_reached": float(np.mean([r.delta[a["k"]] for r, a in zip(got, at,
                                                                                strict=True)])),
                "xi": float(np.mean([a["xi"] for a in at])),
                "c_mean": m, "ci_low": lo_t, "ci_high": hi_t,
                "null_mean": float(null_t.mean()),
                "null_p95": float(np.quantile(null_t, 0.95)),
                "p_value": sig.p_value(float(np.mean([a["observed_grid"] for a in at])),
                                       null_t),
                "p_values_per_configuration": ";".join(
                    f"{sig.p_value(a['observed_grid'], a['null']):.3g}" for a in at),
                "noise_ceiling": _nanmean([a["ceiling"] for a in at]),
                "partial_given_composition": float("nan"),
                "null_other_configuration_mean": float("nan"),
                "xi_delta": float(np.mean([r.xi_delta for r in got])),
                "xi_flag": any(r.xi_delta_flag for r in got),
            })
            rows.append(row)
    return rows


SIGNIFICANCE_COLUMNS = (
    "temperature", "indicator", "correlated_as", "baseline", "delta_target", "delta_reached",
    "reached", "configurations", "xi", "c_mean", "ci_low", "ci_high", "null_mean", "null_p95",
    "p_value", "noise_ceiling", "partial_given_composition", "null_other_configuration_mean",
    "xi_delta", "xi_flag", "p_values_per_configuration",
)


def verdict(row: Mapping[str, Any], alpha: float = 0.01) -> str:
    """One sentence per indicator for the report."""
    name = f"C({row['correlated_as']}, Δ)"
    if not row["reached"] or not np.isfinite(float(row["c_mean"])):
        return f"{name} at δ ≈ {row['delta_target']}: not reached."
    c, lo, hi, p = (float(row[k]) for k in ("c_mean", "ci_low", "ci_high", "p_value"))
    n = row["configurations"]
    where = ("max over δ ≥ 0.3" if row["delta_target"] == "max"
             else f"δ ≈ {row['delta_target']}")
    if p < alpha:
        return (f"{name} ({where}) = {c:.2f} [{lo:.2f}, {hi:.2f}] over {n} configurations is "
                f"significant (p = {p:.2g} against the torus-translation null, whose 95th "
                f"percentile is {float(row['null_p95']):.2f}; noise ceiling "
                f"{float(row['noise_ceiling']):.2f}).")
    return (f"{name} ({where}) = {c:.2f} [{lo:.2f}, {hi:.2f}] over {n} configurations is NOT "
            f"significant (p = {p:.2g}; the null reaches {float(row['null_p95']):.2f} at its "
            f"95th percentile).")
