"""`glasscam correlate`: coarse-grained indicators vs dynamic propensity, as CSV tables.

Reads, from one run folder: ``samples.zarr``, ``indicators.zarr``, every ``propensity*.zarr``
(one glass configuration each, at one temperature) and ``gradcam.zarr`` when present, and
writes under ``tables/`` (paper §4.2-4.7):

==============================  ==========================================================
``table3_xi.csv``               ξ per variable: ξ_Δ(δ) from C_Δ(ξ_Δ) = 1/e; ξ_α maximising
                                Pearson(α or 1−α, Δ̄) over the ξ grid and the outputs
``table4_ensembles.csv``        Pearson between Δ of disjoint sub-ensembles and the full
                                ensemble, bare and coarse-grained (at δ ≈ 1)
``table5_cmax.csv``             C_max and δ* per indicator, with the orientation used
``fig3_c_delta.csv``            C_Δ(r) at δ ≈ 0.3, 1, 3 (bare Δ)
``fig5_gamma_vs_delta.csv``     C(1−Γ, Δ̄) vs δ
``fig7_indicators_vs_delta.csv``  C(α or 1−α, Δ̄) vs δ for Γ, ϒ, Θ
``fig6_pairs_per_sample.csv``   per-sample Pearson and Spearman between Γ, ϒ, Θ (coarse-
                                grained at ``xi_pairs``), glass and liquid separately
``tableS2_pairs_summary.csv``   their mean and standard deviation
``fig8_c_alpha.csv``            C_α(r) (bare fields) mean ± standard error over samples
``fig8_crossings.csv``          first zero crossing (r_Γ) and 1/e length of each mean C_α
==============================  ==========================================================

Orientation (paper Figs 1-2, 5, 7, §4.6): KAM correlates 1−Γ, ϒ, 1−Θ with Δ; ABM 1−Γ, 1−ϒ, Θ.
Choices where the paper is silent are listed in ``docs/indicators.md``.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from glasscam.analysis.correlate.coarse_grain import PairList, coarse_grain_pairs, normalize
from glasscam.analysis.correlate.measures import (
    inverse_e_length,
    pearson,
    scan_xi,
    spatial_correlation,
    spearman,
    zero_crossing,
)
from glasscam.analysis.dynamics.propensity import ensemble_splits, output_at_delta
from glasscam.analysis.paper import XI_DELTA
from glasscam.insitu.geometry import Box

INDICATORS = ("gamma", "voronoi", "ttop")
SYMBOLS = {"gamma": "Gamma", "voronoi": "Upsilon", "ttop": "Theta"}
# True: 1 − α is correlated with Δ (paper Figs 1, 2, 5, 7 and §4.6)
FLIP: dict[str, dict[str, bool]] = {
    "kam": {"gamma": True, "voronoi": False, "ttop": True},
    "abm": {"gamma": True, "voronoi": True, "ttop": False},
}


class CorrelateInputError(ValueError):
    """Bad or inconsistent input to `glasscam correlate`; names the file and field."""


@dataclass(frozen=True)
class CorrelateOptions:
    xi_grid: tuple[float, ...] = (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0)
    xi_delta: float | None = None  # None: 1/e length of C_Δ at δ ≈ 1
    xi_pairs: float = 2.0  # ξ of the per-sample inter-indicator coefficients (Fig 6)
    kernel: str = "exp"
    cutoff_factor: float = 3.0
    dr: float = 0.1
    r_max_samples: float = 10.0  # range of the per-sample C_α(r) (Fig 8)
    split: str = "test"
    system: str | None = None
    delta_targets: tuple[float, ...] = (0.3, 1.0, 3.0)
    ensemble_size: int = 30
    ensemble_count: int = 3
    max_samples: int | None = None  # cap on samples per class for Figs 6/8 (None: all)


# --------------------------------------------------------------------------------------------
# small helpers


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow([_fmt(v) for v in row])
    return path


def _fmt(v: Any) -> Any:
    if isinstance(v, float | np.floating):
        return "nan" if not np.isfinite(v) else f"{float(v):.10g}"
    if isinstance(v, np.integer):
        return int(v)
    return v


def _finite(arr: np.ndarray, where: str, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if not np.all(np.isfinite(arr)):
        raise CorrelateInputError(f"{where}: field '{name}' contains NaN or inf")
    return arr


def orientation_label(ind: str, flip: bool) -> str:
    return f"1-{SYMBOLS[ind]}" if flip else SYMBOLS[ind]


# --------------------------------------------------------------------------------------------
# inputs


@dataclass
class RunInputs:
    run: Path
    samples: Any
    samples_path: Path
    indicators: Any
    indicators_path: Path
    system: str
    natoms: int
    gradcam: Any | None
    gradcam_path: Path | None
    gradcam_field: str | None
    propensity_paths: list[Path]


def open_inputs(run: str | os.PathLike, system: str | None = None) -> RunInputs:
    from glasscam.analysis.structure.indicators import system_of
    from glasscam.insitu.schema import open_indicators_store, open_samples_store

    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run folder does not exist")
    spath = run / "samples.zarr"
    ipath = run / "indicators.zarr"
    for p, what in ((spath, "samples store"), (ipath, "indicators store")):
        if not p.exists():
            raise FileNotFoundError(f"{p}: {what} missing (run the earlier stages first)")
    samples = open_samples_store(spath)
    sparams = dict(samples.attrs["parameters"])
    natoms = int(samples["glass/positions"].shape[1])
    indicators = open_indicators_store(ipath)
    iparams = dict(indicators.attrs["parameters"])
    if int(iparams["natoms"]) != natoms:
        raise CorrelateInputError(
            f"{ipath}: parameter 'natoms' is {iparams['natoms']}, but {spath} has N = {natoms}"
        )
    system = system or iparams.get("system") or system_of(sparams, str(spath))
    gpath = run / "gradcam.zarr"
    gradcam, gfield = None, None
    if gpath.exists():
        from glasscam.insitu.schema import open_gradcam_store

        gradcam = open_gradcam_store(gpath)
        gfield = "gamma"
        gn = int(dict(gradcam.attrs["parameters"])["natoms"])
        if gn != natoms:
            raise CorrelateInputError(
                f"{gpath}: parameter 'natoms' is {gn}, but {spath} has N = {natoms}"
            )
    props = sorted(run.glob("propensity*.zarr"))
    return RunInputs(
        run, samples, spath, indicators, ipath, str(system), natoms,
        gradcam, gpath if gradcam is not None else None, gfield, props,
    )


def sample_fields(inp: RunInputs, cls: str, idx: int) -> dict[str, np.ndarray]:
    """Bare per-particle indicators of one sample (Γ only when gradcam.zarr is present)."""
    out: dict[str, np.ndarray] = {}
    if inp.gradcam is not None:
        g = inp.gradcam
        if "done" in g[cls] and not bool(g[f"{cls}/done"][idx]):
            raise CorrelateInputError(
                f"{inp.gradcam_path}: field '{cls}/done' is False for sample {idx}"
            )
        out["gamma"] = _finite(
            g[f"{cls}/{inp.gradcam_field}"][idx], f"{inp.gradcam_path}",
            f"{cls}/{inp.gradcam_field}[{idx}]",
        ).astype(np.float64)
    ind = inp.indicators
    if not bool(ind[f"{cls}/done"][idx]):
        raise CorrelateInputError(
            f"{inp.indicators_path}: field '{cls}/done' is False for sample {idx}; "
            "run `glasscam indicators` for it"
        )
    for name in ("voronoi", "ttop"):
        out[name] = _finite(ind[f"{cls}/{name}"][idx], str(inp.indicators_path),
                            f"{cls}/{name}[{idx}]")
    return out


def sample_configuration(inp: RunInputs, cls: str, idx: int):
    s = inp.samples
    where = str(inp.samples_path)
    pos = _finite(s[f"{cls}/positions"][idx], where, f"{cls}/positions[{idx}]")
    box = _finite(s[f"{cls}/box"][idx], where, f"{cls}/box[{idx}]")
    return pos.astype(np.float64), box


# --------------------------------------------------------------------------------------------
# propensity analysis (one isoconfigurational store)


def analyse_propensity(
    inp: RunInputs, path: Path, opts: CorrelateOptions
) -> dict[str, list[list[Any]]]:
    """Rows of Tables 3/4/5 and Figs 3/5/7 for one propensity store."""
    from glasscam.insitu.schema import open_propensity_store

    store = open_propensity_store(path)
    where = str(path)
    attrs = dict(store.attrs)
    temp = float(attrs.get("temperature", attrs["parameters"].get("temp", float("nan"))))
    cls = str(attrs.get("class", "glass"))
    sample = int(attrs.get("sample", attrs["parameters"].get("sample", -1)))
    ref_pos = _finite(store["reference/positions"][:], where, "reference/positions")
    box = _finite(store["reference/box"][:], where, "reference/box")
    if ref_pos.shape[0] != inp.natoms:
        raise CorrelateInputError(
            f"{where}: field 'reference/positions' has N = {ref_pos.shape[0]}, but "
            f"{inp.samples_path} has N = {inp.natoms}"
        )
    delta = np.asarray(store["delta"][:], dtype=np.float64)
    prop = np.asarray(store["propensity"][:], dtype=np.float64)
    valid = np.isfinite(delta) & (delta > 0) & np.all(np.isfinite(prop), axis=1)
    if not valid.any():
        raise CorrelateInputError(
            f"{where}: fields 'delta'/'propensity' have no output with finite values"
        )
    ks = np.flatnonzero(valid)
    pos = ref_pos.astype(np.float64)
    fields = sample_fields(inp, cls, sample) if sample >= 0 else {}
    if sample >= 0:
        spos, _ = sample_configuration(inp, cls, sample)
        d = Box.from_box(box).minimum_image(spos - pos)
        if np.abs(d).max() > 1e-3:
            raise CorrelateInputError(
                f"{where}: 'reference/positions' differ from {inp.samples_path} field "
                f"'{cls}/positions[{sample}]' (attribute 'sample' = {sample})"
            )
    if not fields:
        from glasscam.analysis.structure.indicators import compute_sample
        from glasscam.analysis.structure.tong_tanaka import diameters_for

        types = np.asarray(store["reference/types"][:])
        fields = dict(zip(("voronoi", "ttop"),
                          compute_sample(pos, types, box, diameters_for(inp.system)), strict=True))
    r_half = float(np.min(box) / 2)
    pairs = PairList.build(pos, box, max(r_half, opts.cutoff_factor * max(opts.xi_grid)))
    rows: dict[str, list[list[Any]]] = {k: [] for k in ("t3", "t4", "t5", "f3", "f7")}
    # Fig 3 / Table 3: C_Δ(r) of the bare propensity at δ ≈ targets, ξ_Δ(δ) = 1/e length
    xi_of: dict[float, float] = {}
    for target in opts.delta_targets:
        k = int(ks[output_at_delta(delta[ks], target)])
        corr = spatial_correlation(prop[k], pos, box, dr=opts.dr, pairs=pairs)
        xi_of[target] = inverse_e_length(corr.r, corr.c)
        for r, c, n in zip(corr.r, corr.c, corr.counts, strict=True):
            rows["f3"].append([temp, target, delta[k], r, c, n])
        rows["t3"].append([temp, f"Delta({target:g})", xi_of[target],
                           f"C_Delta(xi)=1/e at delta={delta[k]:.4g}"])
    if opts.xi_delta is not None:
        xi_d = float(opts.xi_delta)
    else:
        target = min(opts.delta_targets, key=lambda t: abs(np.log(t)))
        xi_d = xi_of[target]
    how = "xi used for every coarse-grained Delta"
    if not np.isfinite(xi_d):
        # C_Δ stays above 1/e up to L/2: the box is too small to see ξ_Δ. Fall back to the
        # paper's ξ_Δ = 4 (capped at L/4) and say so in the table rather than stop the run.
        xi_d = min(XI_DELTA, r_half / 2)
        how = (f"FALLBACK: C_Delta never reaches 1/e within L/2 = {r_half:.3g}; paper's "
               f"xi_Delta = {XI_DELTA:g} capped at L/4 (override with --xi-delta)")
    rows["t3"].append([temp, "Delta(fixed)", xi_d, how])
    delta_cg = normalize(coarse_grain_pairs(prop[ks].T, pairs, xi_d, opts.cutoff_factor * xi_d,
                                            opts.kernel)).T  # [K', N]
    flips = FLIP[inp.system]
    for ind in INDICATORS:
        if ind not in fields:
            continue
        scan = scan_xi(fields[ind], delta_cg, pos, box, opts.xi_grid, flip=flips[ind],
                       cutoff_factor=opts.cutoff_factor, kernel=opts.kernel, pairs=pairs)
        label = orientation_label(ind, flips[ind])
        if np.all(np.isnan(scan)):
            # a constant field (e.g. an all-zero Grad-CAM map) has no correlation: say so
            why = f"{SYMBOLS[ind]} is constant on sample {sample}: Pearson undefined"
            rows["t3"].append([temp, SYMBOLS[ind], float("nan"), why])
            rows["t5"].append([temp, SYMBOLS[ind], label, float("nan"), xi_d, float("nan"),
                               float("nan")])
            continue
        best = np.nanmax(np.where(np.isnan(scan), -np.inf, scan), axis=1)
        a = int(np.argmax(best))
        xi_a = float(opts.xi_grid[a])
        rows["t3"].append([temp, SYMBOLS[ind], xi_a, f"argmax_xi max_delta C({label}, Delta)"])
        curve = scan[a]
        b = int(np.nanargmax(curve))
        rows["t5"].append([temp, SYMBOLS[ind], label, xi_a, xi_d, curve[b], delta[ks[b]]])
        for kk, c in zip(ks, curve, strict=True):
            rows["f7"].append([temp, SYMBOLS[ind], label, xi_a, xi_d, int(kk), delta[kk], c])
    rows["t4"] = ensemble_table(store, where, pos, box, pairs, delta, ks, xi_d, temp, opts)
    return rows


def ensemble_table(store, where, pos, box, pairs, delta, ks, xi_d, temp, opts) -> list[list[Any]]:
    """Table 4 rows at δ ≈ 1: Pearson between disjoint sub-ensembles and the full one."""
    done = np.flatnonzero(np.asarray(store["done"][:], dtype=bool))
    ns = len(done)
    size = min(opts.ensemble_size, ns // opts.ensemble_count)
    if size < 2:
        return [[temp, "skipped", f"only {ns} done replicas", float("nan"), 0, ns]]
    k = int(ks[output_at_delta(delta[ks], 1.0)])
    crd = np.stack([np.asarray(store["crd"][int(s), k], dtype=np.float64) for s in done])
    _finite(crd, where, f"crd[:, {k}]")
    blocks = list(ensemble_splits(ns, size, opts.ensemble_count).values())
    subsets = [crd[idx].mean(axis=0) for idx in blocks[:-1]]
    full = crd[blocks[-1]].mean(axis=0)

    def cg(x):
        return coarse_grain_pairs(x, pairs, xi_d, opts.cutoff_factor * xi_d, opts.kernel)

    sub_cg = [cg(x) for x in subsets]
    full_cg = cg(full)
    pairs_ij = list(combinations(range(len(subsets)), 2))
    es, ea = f"e{size}", f"e{ns}"
    rows = [
        (f"C({es}i,{es}j) bare", np.mean([pearson(subsets[i], subsets[j]) for i, j in pairs_ij])),
        (f"C({es}i,{es}j) cg", np.mean([pearson(sub_cg[i], sub_cg[j]) for i, j in pairs_ij])),
        (f"C({es}i,{ea}) bare", np.mean([pearson(s, full) for s in subsets])),
        (f"C({es}i,{ea}) cg", np.mean([pearson(s, full_cg) for s in sub_cg])),
        (f"C({es}i bare,{es}i cg)", np.mean([pearson(s, c) for s, c in zip(subsets, sub_cg,
                                                                           strict=True)])),
        (f"C({ea} bare,{ea} cg)", pearson(full, full_cg)),
        (f"C({es}i cg,{ea} bare)", np.mean([pearson(c, full) for c in sub_cg])),
    ]
    return [[temp, name, float(v), delta[k], size, ns] for name, v in rows]


# --------------------------------------------------------------------------------------------
# per-sample analysis (Figs 6, 8)


def usable_samples(inp: RunInputs, cls: str, sel: np.ndarray, split: str, echo) -> np.ndarray:
    """Samples of ``sel`` with indicators done and, with Grad-CAM, Γ done and classified
    correctly (paper footnote 2: misclassified samples are left out)."""
    keep = np.asarray(inp.indicators[f"{cls}/done"][:], dtype=bool)[sel]
    if not keep.all():
        raise CorrelateInputError(
            f"{inp.indicators_path}: field '{cls}/done' is False for samples "
            f"{sel[~keep][:10].tolist()} of split {split!r}; run `glasscam indicators`"
        )
    if inp.gradcam is not None:
        gdone = np.asarray(inp.gradcam[f"{cls}/done"][:], dtype=bool)[sel]
        if not gdone.any():
            raise CorrelateInputError(
                f"{inp.gradcam_path}: field '{cls}/done' is False for every sample of split "
                f"{split!r}; run `glasscam gradcam --split {split}`"
            )
        if not gdone.all():
            echo(f"correlate: {int((~gdone).sum())} {cls} samples of split {split!r} have no "
                 f"Grad-CAM score ({inp.gradcam_path}) and are left out")
        correct = np.asarray(inp.gradcam[f"{cls}/correct"][:], dtype=bool)[sel]
        wrong = gdone & ~correct
        if wrong.any():
            echo(f"correlate: {int(wrong.sum())} misclassified {cls} samples left out "
                 f"({sel[wrong][:10].tolist()})")
        sel = sel[gdone & correct]
    return sel


def analyse_samples(inp: RunInputs, opts: CorrelateOptions, echo=print) -> dict[str, list]:
    from glasscam.analysis.stage import select_samples

    rows: dict[str, list] = {"f6": [], "s2": [], "f8": [], "f8x": []}
    for cls in ("glass", "liquid"):
        sel = select_samples(inp.samples, cls, opts.split, str(inp.samples_path))
        if len(sel) == 0:
            raise CorrelateInputError(
                f"{inp.samples_path}: no done '{cls}' samples in split {opts.split!r} "
                "(fields 'done', 'split')"
            )
        sel = usable_samples(inp, cls, sel, opts.split, echo)
        if opts.max_samples is not None:
            sel = sel[: opts.max_samples]
        curves: dict[str, list[np.ndarray]] = {}
        r_axis = None
        coeffs: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for idx in sel:
            idx = int(idx)
            fields = sample_fields(inp, cls, idx)
            pos, box = sample_configuration(inp, cls, idx)
            r_max = min(opts.r_max_samples, float(np.min(box) / 2))
            pairs = PairList.build(pos, box, max(r_max, opts.cutoff_factor * opts.xi_pairs))
            names = [n for n in INDICATORS if n in fields]
            stack = np.stack([fields[n] for n in names], axis=1)
            cg = normalize(coarse_grain_pairs(stack, pairs, opts.xi_pairs,
                                              opts.cutoff_factor * opts.xi_pairs, opts.kernel))
            for a, b in combinations(range(len(names)), 2):
                p, s = pearson(cg[:, a], cg[:, b]), spearman(cg[:, a], cg[:, b])
                key = (SYMBOLS[names[a]], SYMBOLS[names[b]])
                coeffs.setdefault(key, []).append((p, s))
                rows["f6"].append([cls, idx, f"{key[0]}-{key[1]}", opts.xi_pairs, p, s])
            for n in names:
                corr = spatial_correlation(fields[n], pos, box, r_max=r_max, dr=opts.dr,
                                           pairs=pairs)
                r_axis = corr.r if r_axis is None or len(corr.r) < len(r_axis) else r_axis
                curves.setdefault(n, []).append(corr.c)
        for (a, b), vals in coeffs.items():
            v = np.asarray(vals)
            rows["s2"].append([cls, f"{a}-{b}", len(v), opts.xi_pairs,
                               np.nanmean(v[:, 0]), np.nanstd(v[:, 0]),
                               np.nanmean(v[:, 1]), np.nanstd(v[:, 1])])
        for n, cs in curves.items():
            m = min(len(c) for c in cs)
            arr = np.stack([c[:m] for c in cs])
            with warnings.catch_warnings():  # empty bins (r below contact) are NaN
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(arr, axis=0)
                sem = (np.nanstd(arr, axis=0, ddof=1) / np.sqrt(len(arr))
                       if len(arr) > 1 else np.full(m, np.nan))
            for r, c, e in zip(r_axis[:m], mean, sem, strict=True):
                rows["f8"].append([cls, SYMBOLS[n], r, c, e, len(arr)])
            rows["f8x"].append([cls, SYMBOLS[n], zero_crossing(r_axis[:m], mean),
                                inverse_e_length(r_axis[:m], mean), len(arr)])
        echo(f"correlate: {len(sel)} {cls} samples of split {opts.split!r}")
    return rows


# --------------------------------------------------------------------------------------------
# driver


def run_correlate(
    run: str | os.PathLike,
    opts: CorrelateOptions | None = None,
    echo: Callable[[str], None] = print,
) -> list[Path]:
    """Compute everything and write the CSVs; return their paths."""
    opts = opts or CorrelateOptions()
    if not opts.xi_grid or min(opts.xi_grid) < 0:
        raise CorrelateInputError(f"xi grid must be non-empty and >= 0, got {opts.xi_grid}")
    if opts.kernel not in ("exp", "gauss", "tophat"):
        raise CorrelateInputError(f"unknown kernel {opts.kernel!r}")
    inp = open_inputs(run, opts.system)
    if inp.system not in FLIP:
        raise CorrelateInputError(f"unknown system {inp.system!r}; choose kam or abm")
    tables = inp.run / "tables"
    written: list[Path] = []
    prop_rows: dict[str, list] = {k: [] for k in ("t3", "t4", "t5", "f3", "f7")}
    if not inp.propensity_paths:
        echo(f"correlate: no propensity*.zarr in {inp.run}: Tables 3-5 and Figs 3/5/7 skipped")
    for path in inp.propensity_paths:
        rows = analyse_propensity(inp, path, opts)
        for k, v in rows.items():
            prop_rows[k].extend(v)
        echo(f"correlate: {path.name} analysed")
    if inp.propensity_paths:
        written += [
            _write_csv(tables / "table3_xi.csv", ["temperature", "variable", "xi", "how"],
                       prop_rows["t3"]),
            _write_csv(tables / "table4_ensembles.csv",
                       ["temperature", "quantity", "pearson", "delta", "ensemble_size",
                        "replicas"], prop_rows["t4"]),
            _write_csv(tables / "table5_cmax.csv",
                       ["temperature", "indicator", "correlated_as", "xi", "xi_delta", "c_max",
                        "delta_star"], prop_rows["t5"]),
            _write_csv(tables / "fig3_c_delta.csv",
                       ["temperature", "delta_target", "delta", "r", "c", "pairs"],
                       prop_rows["f3"]),
            _write_csv(tables / "fig7_indicators_vs_delta.csv",
                       ["temperature", "indicator", "correlated_as", "xi", "xi_delta", "output",
                        "delta", "pearson"], prop_rows["f7"]),
            _write_csv(tables / "fig5_gamma_vs_delta.csv",
                       ["temperature", "indicator", "correlated_as", "xi", "xi_delta", "output",
                        "delta", "pearson"],
                       [r for r in prop_rows["f7"] if r[1] == "Gamma"]),
        ]
    srows = analyse_samples(inp, opts, echo)
    written += [
        _write_csv(tables / "fig6_pairs_per_sample.csv",
                   ["class", "sample", "pair", "xi", "pearson", "spearman"], srows["f6"]),
        _write_csv(tables / "tableS2_pairs_summary.csv",
                   ["class", "pair", "samples", "xi", "pearson_mean", "pearson_std",
                    "spearman_mean", "spearman_std"], srows["s2"]),
        _write_csv(tables / "fig8_c_alpha.csv",
                   ["class", "indicator", "r", "c_mean", "c_sem", "samples"], srows["f8"]),
        _write_csv(tables / "fig8_crossings.csv",
                   ["class", "indicator", "r_zero", "r_inv_e", "samples"], srows["f8x"]),
    ]
    return written
