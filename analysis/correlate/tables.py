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
``attribution_ranking.csv``     with ``gradcam_*.zarr`` stores: every attribution method ×
                                layer scored like Γ, its agreement with Grad-CAM and cost;
                                ``attribution_sanity.csv``: their randomised-network checks
                                (:mod:`.attribution_ranking`)
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
from glasscam.analysis.correlate import judge
from glasscam.analysis.correlate.coarse_grain import PairList, coarse_grain_pairs, normalize
from glasscam.analysis.correlate.judge import FLIP, SYMBOLS
from glasscam.analysis.correlate.measures import (
    inverse_e_length,
    pearson,
    spatial_correlation,
    spearman,
    zero_crossing,
)
from glasscam.analysis.dynamics.propensity import ensemble_splits
from glasscam.insitu.geometry import Box
from glasscam.insitu.integrity import sweep_leftovers, write_atomically
from glasscam.insitu.lock import OutputLock

INDICATORS = ("gamma", "voronoi", "ttop")  # the structural ones; judge adds the baselines


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
    delta_min: float = 0.3  # C_max over outputs with δ ≥ this (the ballistic start excluded)
    null_draws: int = 1000  # torus translations of the significance null
    bootstrap: int = 200  # replica-bootstrap resamples per configuration
    seed: int = 0  # of the null's translations, the bootstraps, the replica splits

    def significance_options(self) -> judge.Options:
        """The options of the significance analysis (:mod:`.judge`)."""
        return judge.Options(
            xi_grid=self.xi_grid, xi_delta=self.xi_delta, kernel=self.kernel,
            cutoff_factor=self.cutoff_factor, dr=self.dr, delta_min=self.delta_min,
            delta_targets=self.delta_targets, null_draws=self.null_draws,
            bootstrap=self.bootstrap, seed=self.seed,
        )
    max_samples: int | None = None  # cap on samples per class for Figs 6/8 (None: all)


# --------------------------------------------------------------------------------------------
# small helpers


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for row in rows:
                w.writerow([_fmt(v) for v in row])

    return write_atomically(path, write)


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
    return judge.label(ind, flip)


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
# propensity analysis: every configuration of every isoconfigurational store


def configuration_fields(inp: RunInputs, conf) -> dict[str, np.ndarray]:
    """Γ, ϒ, Θ (and the per-particle energy when the samples store has it) of the glass
    sample a configuration starts from; checks that the configurations agree."""
    cls, sample, where = "glass", int(conf.sample), str(conf.store)
    spos, _ = sample_configuration(inp, cls, sample)
    d = Box.from_box(conf.box).minimum_image(spos - np.asarray(conf.positions, np.float64))
    if np.abs(d).max() > 1e-3:
        raise CorrelateInputError(
            f"{where}: 'reference/positions' of configuration {conf.index} differ from "
            f"{inp.samples_path} field '{cls}/positions[{sample}]'"
        )
    fields = sample_fields(inp, cls, sample)
    if "particle_energy" in inp.samples[cls]:
        energy = np.asarray(inp.samples[f"{cls}/particle_energy"][sample], dtype=np.float64)
        if np.all(np.isfinite(energy)):
            fields["energy"] = energy
    return fields


def analyse_store(
    inp: RunInputs, path: Path, opts: CorrelateOptions, rng: np.random.Generator, echo=print
) -> dict[str, list]:
    """Rows of every table for the configurations of one propensity store (one temperature)."""
    from glasscam.analysis.dynamics.propensity import open_configurations

    confs = open_configurations(path)
    jopts = opts.significance_options()
    rows: dict[str, list] = {k: [] for k in ("t3", "t4", "f3", "f7", "per", "sig")}
    results = []
    for conf in confs:
        if conf.positions.shape[0] != inp.natoms:
            raise CorrelateInputError(
                f"{path}: field 'reference/positions' has N = {conf.positions.shape[0]}, but "
                f"{inp.samples_path} has N = {inp.natoms}"
            )
        try:
            res = judge.analyse_configuration(conf, configuration_fields(inp, conf),
                                              inp.system, jopts, rng)
        except CorrelateInputError:
            raise
        except ValueError as err:  # a kernel refused the data: say which store
            raise CorrelateInputError(f"{path}: {err}") from None
        results.append(res)
        temp, s = res.temperature, res.sample
        rows["t3"] += [
            [temp, s, "Delta (used)", res.xi_delta, res.xi_delta_how, res.xi_delta_flag],
            [temp, s, "Delta (bare 1/e rule, paper)", res.xi_delta_bare,
             f"C_Delta(xi) = 1/e of the replica-mean Delta at delta = {res.delta_ref:.3g}",
             False],
            [temp, s, "Delta (noise-free)", res.xi_delta_noise_free,
             f"1/e of the cross-correlation of disjoint replica halves at delta = "
             f"{res.delta_ref:.3g}", False],
        ]
        for target, corr in res.c_delta.items():
            if corr is None:
                continue
            k = int(res.valid[-1]) if target == "largest" else res.targets[target]
            rows["f3"] += [[temp, s, target, res.delta[k], r, c, n]
                           for r, c, n in zip(corr.r, corr.c, corr.counts, strict=True)]
        for name, ind in res.indicators.items():
            lab = judge.label(name, ind.flip)
            rows["t3"].append([temp, s, judge.SYMBOLS[name], ind.xi,
                               f"argmax_xi max_(delta >= {opts.delta_min:g}) C({lab}, Delta)",
                               ind.cutoff_flag])
            a = int(np.flatnonzero(np.asarray(opts.xi_grid) == ind.xi)[0])
            for j, k in enumerate(res.columns):
                if not ind.in_valid[j]:
                    continue
                rows["f7"].append([temp, s, judge.SYMBOLS[name], lab, ind.xi, res.xi_delta,
                                   int(k), res.delta[k], ind.scan[a, j],
                                   float(ind.null_by_output[:, j].mean()),
                                   float(np.quantile(ind.null_by_output[:, j], 0.95))])
            rows["per"].append([
                temp, s, judge.SYMBOLS[name], lab, ind.c_max, ind.xi, res.delta[ind.k],
                judge.p_of(ind), float(ind.null_max.mean()),
                float(np.quantile(ind.null_max, 0.95)), res.ceiling.get(ind.k, float("nan")),
                ind.partial, res.xi_delta, res.replicas,
            ])
        rows["t4"] += ensemble_table(conf, res, opts)
        echo(f"correlate: {path.name} configuration {conf.index} (sample {s}) analysed")
    rows["sig"] = judge.summarise(results, confs, jopts, rng)
    return rows


def ensemble_table(conf, res, opts: CorrelateOptions) -> list[list[Any]]:
    """Table 4 rows at δ ≈ 1: Pearson between disjoint sub-ensembles and the full one."""
    ns = len(conf.replicas)
    size = min(opts.ensemble_size, ns // opts.ensemble_count)
    temp, s = res.temperature, res.sample
    k = res.targets.get(1.0)
    if size < 2 or k is None:
        why = f"only {ns} done replicas" if size < 2 else "delta ~ 1 not reached"
        return [[temp, s, "skipped", why, float("nan"), float("nan"), 0, ns]]
    crd = np.asarray(conf.crd(k), dtype=np.float64)
    pos, box = np.asarray(conf.positions, np.float64), np.asarray(conf.box, np.float64)
    pairs = PairList.build(pos, box, opts.cutoff_factor * res.xi_delta)
    blocks = list(ensemble_splits(ns, size, opts.ensemble_count).values())
    subsets = [crd[idx].mean(axis=0) for idx in blocks[:-1]]
    full = crd[blocks[-1]].mean(axis=0)

    def cg(x):
        return coarse_grain_pairs(x, pairs, res.xi_delta, opts.cutoff_factor * res.xi_delta,
                                  opts.kernel)

    sub_cg = [cg(x) for x in subsets]
    full_cg = cg(full)
    pairs_ij = list(combinations(range(len(subsets)), 2))
    es, ea = f"e{size}", f"e{ns}"
    table = [
        (f"C({es}i,{es}j) bare", np.mean([pearson(subsets[i], subsets[j]) for i, j in pairs_ij])),
        (f"C({es}i,{es}j) cg", np.mean([pearson(sub_cg[i], sub_cg[j]) for i, j in pairs_ij])),
        (f"C({es}i,{ea}) bare", np.mean([pearson(x, full) for x in subsets])),
        (f"C({es}i,{ea}) cg", np.mean([pearson(x, full_cg) for x in sub_cg])),
        (f"C({es}i bare,{es}i cg)", np.mean([pearson(x, c) for x, c in zip(subsets, sub_cg,
                                                                           strict=True)])),
        (f"C({ea} bare,{ea} cg)", pearson(full, full_cg)),
        (f"C({es}i cg,{ea} bare)", np.mean([pearson(c, full) for c in sub_cg])),
    ]
    return [[temp, s, name, "", float(v), res.delta[k], size, ns] for name, v in table]


def curve_means(f7: list[list[Any]]) -> list[list[Any]]:
    """Figs 5/7 over configurations: at each output, the mean C with a 95 % percentile band
    of the configurations and the mean null band."""
    out = []
    keyed: dict[tuple, list[list[Any]]] = {}
    for r in f7:
        keyed.setdefault((r[0], r[2], r[3], r[6]), []).append(r)
    for (temp, ind, lab, k), rs in sorted(keyed.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                         kv[0][3])):
        c = np.array([r[8] for r in rs], dtype=np.float64)
        lo, hi = (np.nanquantile(c, [0.025, 0.975]) if len(c) > 1 else (np.nan, np.nan))
        out.append([temp, ind, lab, k, float(np.mean([r[7] for r in rs])), float(np.nanmean(c)),
                    float(lo), float(hi), float(np.mean([r[9] for r in rs])),
                    float(np.mean([r[10] for r in rs])), len(rs)])
    return out


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


def ensemble_agreement(inp: RunInputs, opts: CorrelateOptions) -> list[list[Any]]:
    """Inter-model agreement of the CNN ensemble: Pearson between the Γ of two members on the
    same sample, bare and coarse-grained at ``xi_pairs``, mean ± std over member pairs and
    samples of the split (issue 11: how much of Γ is the network, how much its seed)."""
    from glasscam.analysis.stage import select_samples

    g = inp.gradcam
    if g is None or "gamma_members" not in g["glass"] or g["glass/gamma_members"].shape[1] < 2:
        return []
    rows = []
    for cls in ("glass", "liquid"):
        sel = select_samples(inp.samples, cls, opts.split, str(inp.samples_path))
        done = np.asarray(g[f"{cls}/done"][:], dtype=bool)
        sel = sel[done[sel]]
        bare, cg = [], []
        for idx in sel[: opts.max_samples] if opts.max_samples else sel:
            members = np.asarray(g[f"{cls}/gamma_members"][int(idx)], dtype=np.float64)
            pos, box = sample_configuration(inp, cls, int(idx))
            pairs = PairList.build(pos, box, opts.cutoff_factor * opts.xi_pairs)
            smooth = coarse_grain_pairs(members.T, pairs, opts.xi_pairs,
                                        opts.cutoff_factor * opts.xi_pairs, opts.kernel).T
            for a, b in combinations(range(len(members)), 2):
                bare.append(pearson(members[a], members[b]))
                cg.append(pearson(smooth[a], smooth[b]))
        if bare:
            rows.append([cls, len(members), len(sel), opts.xi_pairs,
                         float(np.nanmean(bare)), float(np.nanstd(bare)),
                         float(np.nanmean(cg)), float(np.nanstd(cg))])
    return rows


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
    """Compute everything and write the CSVs; return their paths. ``RUN/tables`` is locked
    for the run (a second correlate on the same run folder is refused, naming this one)."""
    run_dir = Path(run).resolve()
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: run folder does not exist")
    with OutputLock(run_dir / "tables", what="tables folder"):
        sweep_leftovers(run_dir / "tables")
        return _run_correlate(run, opts, echo)


def _run_correlate(run: str | os.PathLike, opts: CorrelateOptions | None,
                   echo: Callable[[str], None]) -> list[Path]:
    opts = opts or CorrelateOptions()
    if not opts.xi_grid or min(opts.xi_grid) < 0:
        raise CorrelateInputError(f"xi grid must be non-empty and >= 0, got {opts.xi_grid}")
    if opts.kernel not in ("exp", "gauss", "tophat"):
        raise CorrelateInputError(f"unknown kernel {opts.kernel!r}")
    if opts.null_draws < 19:
        raise CorrelateInputError(f"--null-draws must be >= 19 (p < 0.05 needs 19), got "
                                  f"{opts.null_draws}")
    inp = open_inputs(run, opts.system)
    if inp.system not in FLIP:
        raise CorrelateInputError(f"unknown system {inp.system!r}; choose kam or abm")
    tables = inp.run / "tables"
    written: list[Path] = []
    rows: dict[str, list] = {k: [] for k in ("t3", "t4", "f3", "f7", "per", "sig")}
    rng = np.random.default_rng(opts.seed)
    if not inp.propensity_paths:
        echo(f"correlate: no propensity*.zarr in {inp.run}: Tables 3-5 and Figs 3/5/7 skipped")
    for path in inp.propensity_paths:
        for k, v in analyse_store(inp, path, opts, rng, echo).items():
            rows[k].extend(v)
    if inp.propensity_paths:
        sig_rows = rows["sig"]
        written += [
            _write_csv(tables / "significance.csv", judge.SIGNIFICANCE_COLUMNS,
                       [[r[c] for c in judge.SIGNIFICANCE_COLUMNS] for r in sig_rows]),
            _write_csv(tables / "significance_per_configuration.csv",
                       ["temperature", "sample", "indicator", "correlated_as", "c_max", "xi",
                        "delta_star", "p_value", "null_mean", "null_p95", "noise_ceiling",
                        "partial_given_composition", "xi_delta", "replicas"], rows["per"]),
            _write_csv(tables / "table3_xi.csv",
                       ["temperature", "sample", "variable", "xi", "how", "cutoff_beyond_half_box"],
                       rows["t3"]),
            _write_csv(tables / "table4_ensembles.csv",
                       ["temperature", "sample", "quantity", "note", "pearson", "delta",
                        "ensemble_size", "replicas"], rows["t4"]),
            _write_csv(tables / "table5_cmax.csv",
                       ["temperature", "indicator", "correlated_as", "baseline", "xi",
                        "xi_delta", "c_max", "ci_low", "ci_high", "p_value", "null_mean",
                        "null_p95", "noise_ceiling", "delta_star", "configurations"],
                       [[r["temperature"], r["indicator"], r["correlated_as"], r["baseline"],
                         r["xi"], r["xi_delta"], r["c_mean"], r["ci_low"], r["ci_high"],
                         r["p_value"], r["null_mean"], r["null_p95"], r["noise_ceiling"],
                         r["delta_reached"], r["configurations"]]
                        for r in sig_rows if r["delta_target"] == "max"]),
            _write_csv(tables / "fig3_c_delta.csv",
                       ["temperature", "sample", "delta_target", "delta", "r", "c", "pairs"],
                       rows["f3"]),
            _write_csv(tables / "fig7_indicators_vs_delta.csv",
                       ["temperature", "sample", "indicator", "correlated_as", "xi", "xi_delta",
                        "output", "delta", "pearson", "null_mean", "null_p95"], rows["f7"]),
            _write_csv(tables / "fig7_mean.csv",
                       ["temperature", "indicator", "correlated_as", "output", "delta",
                        "pearson", "band_low", "band_high", "null_mean", "null_p95",
                        "configurations"], curve_means(rows["f7"])),
        ]
    srows = analyse_samples(inp, opts, echo)
    agreement = ensemble_agreement(inp, opts)
    if agreement:
        written.append(_write_csv(
            tables / "ensemble_agreement.csv",
            ["class", "members", "samples", "xi", "pearson_bare_mean", "pearson_bare_std",
             "pearson_cg_mean", "pearson_cg_std"], agreement))
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
    from glasscam.analysis.correlate import attribution_ranking

    if attribution_ranking.has_rivals(inp.run):  # gradcam_*.zarr beside gradcam.zarr
        written += attribution_ranking.write_tables(inp, opts, tables, echo)
    return written
