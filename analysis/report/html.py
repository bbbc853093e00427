"""`glasscam report`: one HTML page a physicist reads instead of a log.

Reads a run folder (``samples.zarr``, ``model/metrics.json``, ``gradcam.zarr``,
``indicators.zarr``, ``propensity_T*.zarr``, ``tables/*.csv``, ``.glasscam/stages/*.json``) and
writes ``figures/*.png``, ``export/*.extxyz`` and ``report.html`` beside them. Every number on
the page is read from that run; the paper's values stand in the next column. A section whose
inputs are absent says so and why, instead of showing a placeholder.
"""

from __future__ import annotations

import csv
import html
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from glasscam.analysis.paper import DELTA_TARGETS, INV_E, PAPER
from glasscam.analysis.report import plots
from glasscam.insitu.integrity import write_atomically
from glasscam.insitu.lock import OutputLock


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def _f(value: Any, digits: int = 3) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return html.escape(str(value))
    if not np.isfinite(v):
        return "–"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, str) else _f(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _missing(what: str, why: str) -> str:
    return f'<p class="missing">{html.escape(what)}: not available — {html.escape(why)}</p>'


def _img(rel: str, caption: str) -> str:
    return (
        f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


# the paper's δ values (Fig 1 E/F), dotted in Figs 5 and 7
DELTA_LINES = {f"δ = {t:g}": t for t in DELTA_TARGETS}


class Report:
    """Collects sections; each figure is written under ``figures/`` of the run folder."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.fig_dir = run / "figures"
        self.fig_dir.mkdir(parents=True, exist_ok=True)
        self.sections: list[tuple[str, str]] = []
        self.figures: list[Path] = []
        self.tables: list[Path] = []
        self.cautions: list[str] = []

    def add(self, title: str, body: str) -> None:
        self.sections.append((title, body))

    def caution(self, text: str) -> None:
        """A warning shown in a banner at the top of the report."""
        self.cautions.append(text)

    def figure(self, name: str, caption: str, draw: Callable[[Path], Path]) -> str:
        path = draw(self.fig_dir / name)
        self.figures.append(path)
        return _img(f"figures/{name}", caption)


# --------------------------------------------------------------------------------------------
# sections


def provenance(rep: Report) -> dict[str, Any]:
    run = rep.run
    meta = json.loads((run / "run.json").read_text()) if (run / "run.json").exists() else {}
    preset = json.loads((run / "preset.json").read_text()) if (run / "preset.json").exists() else {}
    rows: list[list[Any]] = []
    for key in ("system", "preset", "created"):
        if key in meta:
            rows.append([key, html.escape(str(meta[key]))])
    try:
        commit = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()
    except OSError:
        commit = ""
    rows.append(["glasscam git commit", commit or "unknown"])
    samples = run / "samples.zarr"
    params: dict[str, Any] = {}
    if samples.exists():
        import zarr

        root = zarr.open_group(samples, mode="r")
        params = dict(root.attrs.get("parameters", {}))
        for key, value in dict(root.attrs.get("versions", {})).items():
            rows.append([f"version: {key}", html.escape(str(value))])
        rows.append(["quench parameters", f"<code>{html.escape(json.dumps(params))}</code>"])
    stage_rows = []
    for path in sorted((run / ".glasscam" / "stages").glob("*.json")):
        st = json.loads(path.read_text())
        stage_rows.append([st["stage"], st["wall_s"], st.get("finished", ""),
                           "<br>".join(f"<code>{html.escape(c)}</code>" for c in st["commands"])])
    body = _table(["", "value"], rows)
    if preset:
        dump = html.escape(json.dumps(preset, indent=1))
        body += f"<details><summary>preset</summary><pre>{dump}</pre></details>"
    if stage_rows:
        body += "<h3>Wall time per stage</h3>" + _table(
            ["stage", "wall [s]", "finished", "command"], stage_rows
        )
    rep.add("Run provenance", body)
    system = meta.get("system") or params.get("system") or "kam"
    return {"system": str(system), "params": params}


def training_section(rep: Report, system: str) -> None:
    path = rep.run / "model" / "metrics.json"
    if not path.exists():
        rep.add("Table 2 — classification", _missing("metrics.json", f"{path} does not exist"))
        return
    m = json.loads(path.read_text())
    test = m.get("test", {})
    accuracy = float(test.get("accuracy", float("nan")))
    if not accuracy >= 0.9:
        rep.caution(f"test accuracy {100 * accuracy:.1f} % is below 90 %: the Grad-CAM scores "
                    "come from a network that does not tell liquid from glass reliably.")
    rows = [["test accuracy", test.get("accuracy", float("nan")), PAPER["accuracy"][system]]]
    if "member_test_accuracy" in m:
        rows.append(["ensemble members' test accuracy",
                     ", ".join(f"{a:.3f}" for a in m["member_test_accuracy"]),
                     "one network in the paper"])
    per_class = test.get("per_class_accuracy") or {}
    for cls, acc in per_class.items():
        rows.append([f"test accuracy ({cls})", acc, "≈ 100 %"])
    for key in ("samples_per_s", "wall_s", "device", "epochs_run"):
        if key in m:
            paper = PAPER["training"] if key == "samples_per_s" else ""
            rows.append([key, m[key] if not isinstance(m[key], str) else html.escape(m[key]),
                         paper])
    body = _table(["quantity", "this run", "paper"], rows)
    conf = test.get("confusion_matrix")
    if conf is not None:
        labels = test.get("classes", ["liquid", "glass"])
        body += "<h3>Confusion matrix (rows: true, columns: predicted)</h3>" + _table(
            [""] + labels, [[labels[i]] + list(r) for i, r in enumerate(conf)]
        )
    wrong = test.get("misclassified", [])
    body += (
        "<p>Misclassified test samples (left out of per-sample distributions): "
        f"{html.escape(str(wrong)) if wrong else 'none'}</p>"
    )
    hist = m.get("history", [])
    if hist:
        ep = np.array([h["epoch"] for h in hist])
        body += rep.figure(
            "training_loss.png", "Training curves: loss",
            lambda p: plots.curves(ep, {"train": np.array([h["train_loss"] for h in hist]),
                                        "validation": np.array([h["val_loss"] for h in hist])},
                                   p, "epoch", "cross-entropy loss"),
        )
        body += rep.figure(
            "training_accuracy.png", "Training curves: accuracy",
            lambda p: plots.curves(ep, {"train": np.array([h["train_accuracy"] for h in hist]),
                                        "validation": np.array([h["val_accuracy"] for h in hist])},
                                   p, "epoch", "accuracy"),
        )
    rep.add("Table 2 — classification and training", body)


def cooling_section(rep: Report) -> None:
    samples = rep.run / "samples.zarr"
    if not samples.exists():
        rep.add("Fig. S6/S7 — cooling and g(r)", _missing("samples.zarr", "not found"))
        return
    from glasscam.analysis.structure.pair_correlation import mean_radial_distribution
    from glasscam.insitu.schema import done_samples, open_samples_store

    root = open_samples_store(samples)
    done = np.flatnonzero(done_samples(root))
    if done.size == 0:
        rep.add("Fig. S6/S7 — cooling and g(r)", _missing("samples", "no sample is done"))
        return
    pick = done[: min(8, done.size)]
    tm = np.asarray(
        root["cooling/target_temperature"].get_orthogonal_selection((pick, slice(None)))
    )
    pe = np.asarray(root["cooling/potential_energy"].get_orthogonal_selection((pick, slice(None))))
    body = rep.figure(
        "figS6_energy_temperature.png",
        f"Fig. S6 analogue: potential energy per particle vs temperature during the quench "
        f"({len(pick)} samples); a crystallisation would show as a jump",
        lambda p: plots.curves({f"sample {s}": tm[i] for i, s in enumerate(pick)},
                               {f"sample {s}": pe[i] for i, s in enumerate(pick)},
                               p, "T (thermostat target along the ramp)", "U / N"),
    )
    frames = {}
    for cls in ("liquid", "glass"):
        sel = done[: min(20, done.size)]
        frames[cls] = [(np.asarray(root[f"{cls}/positions"][int(s)]),
                        np.asarray(root[f"{cls}/box"][int(s)])) for s in sel]
    r_max = float(min(5.0, 0.45 * np.min(frames["glass"][0][1])))
    gr = {cls: mean_radial_distribution(f, r_max=r_max, bins=120) for cls, f in frames.items()}
    body += rep.figure(
        "figS7_gr.png", "Fig. S7 analogue: g(r) of liquid (T_L) and glass (T_G) samples",
        lambda p: plots.curves({c: gr[c][0] for c in gr}, {c: gr[c][1] for c in gr}, p,
                               "r", "g(r)"),
    )
    rep.add("Fig. S6/S7 — cooling and g(r)", body)


def _rows(path: Path) -> list[dict[str, str]]:
    return read_csv(path) if path.exists() else []


def _mean_by(rows: Sequence[dict[str, str]], key: str, value: str) -> dict[str, float]:
    groups: dict[str, list[float]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(float(r[value]))
    return {k: (float(np.mean([x for x in v if np.isfinite(x)]))
                if any(np.isfinite(x) for x in v) else float("nan"))
            for k, v in groups.items()}


def significance_section(rep: Report, system: str) -> None:
    """Is each correlation more than chance? One sentence per indicator, then the table."""
    from glasscam.analysis.correlate.judge import verdict

    rows = _rows(rep.run / "tables" / "significance.csv")
    if not rows:
        rep.add("Significance — is the correlation more than chance?",
                _missing("significance.csv", "no propensity store analysed"))
        return
    for r in rows:
        r["reached"] = r["reached"] == "True"
    sentences = "".join(f"<li>{html.escape(verdict(r))}</li>" for r in rows
                        if r["delta_target"] == "max")
    missing = sorted({r["delta_target"] for r in rows
                      if r["delta_target"] != "max" and not r["reached"]}, key=float)
    if missing:
        rep.caution(f"δ target(s) {', '.join(missing)} not reached by every configuration: "
                    "their rows say so and carry no value.")
    body = (f"<ul>{sentences}</ul><p>Each C is the mean over configurations of the per-"
            "configuration statistic; the CI (95 %) bootstraps configurations and, within "
            "each, replicas. The null evaluates the same coarse-grained indicator at randomly "
            "translated positions on the torus and repeats every choice made on the data (the "
            "maximum over ξ and over δ ≥ 0.3), so p is calibrated; <i>null other</i> is the "
            "same statistic for the indicator of another configuration. The noise ceiling is "
            "the largest C the finite number of replicas allows (split-half reliability of Δ̄, "
            "Spearman–Brown corrected, square root). x_A (local fraction of species A) and E "
            "(per-particle potential energy) are baselines; <i>partial</i> is the correlation "
            "with Δ̄ given x_A.</p>")
    body += _table(
        ["T", "indicator", "δ", "δ reached", "configs", "ξ", "C (mean)", "95 % CI", "null mean",
         "null p95", "p", "noise ceiling", "partial | x_A", "null other"],
        [[r["temperature"], html.escape(r["correlated_as"]), r["delta_target"],
          _f(r["delta_reached"], 2) if r["reached"] else "not reached", r["configurations"],
          _f(r["xi"], 2), _f(r["c_mean"]),
          f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]" if r["reached"] else "–",
          _f(r["null_mean"]), _f(r["null_p95"]), _f(r["p_value"], 2),
          _f(r["noise_ceiling"]), _f(r["partial_given_composition"]),
          _f(r["null_other_configuration_mean"])] for r in rows])
    agreement = _rows(rep.run / "tables" / "ensemble_agreement.csv")
    if agreement:
        body += ("<h3>CNN ensemble: do independently seeded networks see the same Γ?</h3>"
                 + _table(["class", "networks", "samples", "Pearson of Γ_a, Γ_b (bare)",
                           "coarse-grained (ξ)"],
                          [[r["class"], r["members"], r["samples"],
                            f"{_f(r['pearson_bare_mean'])} ± {_f(r['pearson_bare_std'])}",
                            f"{_f(r['pearson_cg_mean'])} ± {_f(r['pearson_cg_std'])} "
                            f"({_f(r['xi'], 2)})"] for r in agreement])
                 + "<p>Γ correlated with Δ is the members' mean (gradcam.zarr 'gamma'); "
                 "each member's own Γ is in 'gamma_members'.</p>")
    rep.add("Significance — is the correlation more than chance?", body)


def tables_section(rep: Report, system: str) -> None:
    tables = rep.run / "tables"
    t3, t4, t5 = (_rows(tables / n) for n in
                  ("table3_xi.csv", "table4_ensembles.csv", "table5_cmax.csv"))
    paper_c = PAPER["c_max"].get(system, {})
    paper_xi = PAPER["xi"].get(system, {})
    if t3:
        rows = []
        for temp in sorted({r["temperature"] for r in t3}, key=float):
            mine = [r for r in t3 if r["temperature"] == temp]
            for var, xi in _mean_by(mine, "variable", "xi").items():
                how = next(r["how"] for r in mine if r["variable"] == var)
                flagged = any(r["cutoff_beyond_half_box"] == "True" for r in mine
                              if r["variable"] == var)
                paper = (paper_xi["Delta"] if var.startswith("Delta")
                         else paper_xi["structural"])
                rows.append([temp, html.escape(var), _f(xi, 2), paper,
                             "3ξ > L/2" if flagged else "", html.escape(how)])
        body = _table(["T", "variable", "ξ (mean over configurations)", "ξ (paper)", "flag",
                       "how"], rows)
        body += ("<p>Paper: ξ_Δ = 4 for both systems; ξ of the structural indicators 8 (KAM) / "
                 "5 (ABM), as quoted in DESIGN §5 (Table 3 is an image). The noise-free ξ_Δ "
                 "(cross-correlation of disjoint replica halves) is the one used; the paper's "
                 "bare rule is shown beside it. Per configuration: tables/table3_xi.csv.</p>")
        rep.add("Table 3 — coarse-graining lengths", body)
    else:
        rep.add("Table 3 — coarse-graining lengths",
                _missing("table3_xi.csv", "no propensity store analysed"))
    if t4:
        rows = [[r["temperature"], r["sample"], html.escape(r["quantity"]), _f(r["pearson"]),
                 _f(r["delta"], 2), r["ensemble_size"], r["replicas"]] for r in t4]
        rep.add("Table 4 — propensity ensembles",
                _table(["T", "sample", "quantity", "Pearson", "δ", "ensemble size",
                        "replicas"], rows) + "<p>The paper's Table 4 is an image.</p>")
    else:
        rep.add("Table 4 — propensity ensembles", _missing("table4_ensembles.csv", "not written"))
    if t5:
        rows = [[r["temperature"], html.escape(r["correlated_as"]), _f(r["xi"], 2),
                 f"{_f(r['c_max'])} [{_f(r['ci_low'])}, {_f(r['ci_high'])}]",
                 _f(r["null_p95"]), _f(r["p_value"], 2), _f(r["noise_ceiling"]),
                 paper_c.get(r["indicator"], "–"), _f(r["delta_star"], 2),
                 r["configurations"]] for r in t5]
        rep.add("Table 5 — maximum correlation with the propensity",
                _table(["T", "indicator", "ξ", "C_max (95 % CI)", "null p95", "p",
                        "noise ceiling", "C_max (paper)", "δ*", "configurations"], rows))
    else:
        rep.add("Table 5 — maximum correlation with the propensity",
                _missing("table5_cmax.csv", "no propensity store analysed"))
    s2 = _rows(tables / "tableS2_pairs_summary.csv")
    if s2:
        rows = [[r["class"], r["pair"], r["samples"], r["pearson_mean"], r["pearson_std"],
                 r["spearman_mean"], r["spearman_std"]] for r in s2]
        rep.add("Table S2 — inter-indicator correlations per sample",
                _table(["class", "pair", "samples", "Pearson mean", "Pearson std",
                        "Spearman mean", "Spearman std"], rows))


def curve_figures(rep: Report, system: str) -> None:
    tables = rep.run / "tables"
    body = ""
    f3 = _rows(tables / "fig3_c_delta.csv")
    if f3:
        for temp in sorted({r["temperature"] for r in f3}, key=float):
            rows = [r for r in f3 if r["temperature"] == temp]
            xs, ys = {}, {}
            targets = sorted({r["delta_target"] for r in rows} - {"largest"}, key=float)
            for target in [*targets, "largest"]:
                mine = [r for r in rows if r["delta_target"] == target]
                if not mine:
                    continue
                by_r = _mean_by(mine, "r", "c")
                name = (f"δ ≈ {target} (reached)" if target != "largest" else
                        f"largest δ = {np.mean([float(r['delta']) for r in mine]):.2g}")
                xs[name] = np.array([float(k) for k in by_r])
                ys[name] = np.array(list(by_r.values()))
            body += rep.figure(
                f"fig3_c_delta_T{temp}.png",
                f"Fig. 3 analogue: C_Δ(r) of the bare propensity at T = {temp}, mean over "
                "configurations, at the δ targets that were reached and at the largest δ of the "
                "run (under its own value)",
                lambda p, xs=xs, ys=ys: plots.curves(xs, ys, p, "r", "C_Δ(r)",
                                                     hlines={"1/e": INV_E, "0": 0.0}),
            )
    f7 = _rows(tables / "fig7_mean.csv")
    paper_c = PAPER["c_max"].get(system, {})
    if f7:
        for temp in sorted({r["temperature"] for r in f7}, key=float):
            rows = [r for r in f7 if r["temperature"] == temp]
            inds = list(dict.fromkeys(r["indicator"] for r in rows))
            labels = {i: next(r["correlated_as"] for r in rows if r["indicator"] == i)
                      for i in inds}

            def col(i, name, rows=rows):
                return np.array([float(r[name]) for r in rows if r["indicator"] == i])

            xs = {labels[i]: col(i, "delta") for i in inds}
            ys = {labels[i]: col(i, "pearson") for i in inds}
            bands = {labels[i]: (col(i, "band_low"), col(i, "band_high")) for i in inds}
            nulls = {labels[i]: (col(i, "null_mean"), col(i, "null_p95")) for i in inds}
            if "Gamma" in inds:
                lab = labels["Gamma"]
                body += rep.figure(
                    f"fig5_gamma_vs_delta_T{temp}.png",
                    f"Fig. 5 analogue: C({lab}, Δ) vs δ at T = {temp}: mean over "
                    "configurations (shaded: their 95 % spread; hatched: null mean to null 95th "
                    "percentile); dashed: the paper's C_max",
                    lambda p, lab=lab, xs=xs, ys=ys, bands=bands, nulls=nulls: plots.curves(
                        {lab: xs[lab]}, {lab: ys[lab]}, p, "δ", "Pearson C", logx=True,
                        references={lab: paper_c["Gamma"]} if "Gamma" in paper_c else None,
                        bands={lab: bands[lab]}, null_bands={lab: nulls[lab]},
                        vlines=DELTA_LINES),
                )
            body += rep.figure(
                f"fig7_indicators_vs_delta_T{temp}.png",
                f"Fig. 7 analogue: C(indicator, Δ) vs δ at T = {temp}, mean over "
                "configurations with the null band (hatched); dashed: the paper's C_max",
                lambda p, xs=xs, ys=ys, labels=labels, nulls=nulls: plots.curves(
                    xs, ys, p, "δ", "Pearson C", logx=True,
                    references={labels[i]: paper_c[i] for i in labels if i in paper_c},
                    null_bands=nulls, vlines=DELTA_LINES),
            )
    f6 = _rows(tables / "fig6_pairs_per_sample.csv")
    if f6:
        data: dict[str, dict[str, list[float]]] = {}
        for r in f6:
            data.setdefault(r["pair"], {}).setdefault(r["class"], []).append(float(r["pearson"]))
        body += rep.figure(
            "fig6_violins.png", "Fig. 6 analogue: per-sample Pearson between indicators "
            "(test split), glass vs liquid",
            lambda p: plots.violins({k: {c: np.array(v) for c, v in d.items()}
                                     for k, d in data.items()}, p),
        )
    f8 = _rows(tables / "fig8_c_alpha.csv")
    if f8:
        rows = [r for r in f8 if r["class"] == "glass"]
        inds = list(dict.fromkeys(r["indicator"] for r in rows))
        xs = {i: np.array([float(r["r"]) for r in rows if r["indicator"] == i]) for i in inds}
        ys = {i: np.array([float(r["c_mean"]) for r in rows if r["indicator"] == i]) for i in inds}
        es = {i: np.array([float(r["c_sem"]) for r in rows if r["indicator"] == i]) for i in inds}
        body += rep.figure(
            "fig8_c_alpha.png", "Fig. 8 analogue: C_α(r) of the bare indicators, glass test "
            "samples, mean ± standard error",
            lambda p: plots.curves(xs, ys, p, "r", "C_α(r)", yerr=es, hlines={"0": 0.0}),
        )
        cross = _rows(tables / "fig8_crossings.csv")
        if cross:
            body += _table(
                ["class", "indicator", "first zero r", "1/e length", "samples", "paper r_Γ"],
                [[r["class"], r["indicator"], r["r_zero"], r["r_inv_e"], r["samples"],
                  PAPER["r_gamma"] if r["indicator"] == "Gamma" else "–"] for r in cross],
            )
    rep.add("Figures 3, 5, 6, 7, 8", body or _missing("curves", "no tables/ CSV found"))


def maps_section(rep: Report, system: str) -> None:
    """Figures 1–2 and 4: particle maps of one glass configuration, and the extxyz export."""
    from glasscam.analysis.correlate.coarse_grain import PairList, coarse_grain_pairs, normalize
    from glasscam.analysis.correlate.judge import target_output
    from glasscam.analysis.correlate.tables import FLIP, SYMBOLS, open_inputs, sample_fields
    from glasscam.analysis.dynamics.propensity import ensemble_splits, open_configurations
    from glasscam.analysis.report.export import write_extxyz

    try:
        inp = open_inputs(rep.run, system)
    except (FileNotFoundError, ValueError) as err:
        rep.add("Figures 1–2, 4 — particle maps", _missing("inputs", str(err)))
        return
    export_dir = rep.run / "export"
    body = ""
    t3 = _rows(rep.run / "tables" / "table3_xi.csv")
    confs = open_configurations(inp.propensity_paths[0]) if inp.propensity_paths else []
    for conf in confs[:1]:
        sample, temp = int(conf.sample), float(conf.temperature)
        pos, types, box = conf.positions, conf.types, conf.box
        delta, prop = conf.delta, conf.propensity
        mine = [r for r in t3 if float(r["temperature"]) == temp and int(r["sample"]) == sample]
        xi = {r["variable"]: float(r["xi"]) for r in mine}
        xi_d = xi.get("Delta (used)", 4.0)
        pairs = PairList.build(pos, box, 3.0 * max([xi_d, *xi.values(), 1.0]))
        fields = sample_fields(inp, "glass", sample)
        panels, columns = [], {}
        for name, values in fields.items():
            flip = FLIP[inp.system][name]
            x = xi.get(SYMBOLS[name], 2.0)
            cg = normalize(coarse_grain_pairs(values, pairs, x, 3.0 * x))
            shown = 1.0 - cg if flip else cg
            label = f"{'1−' if flip else ''}{SYMBOLS[name]} (ξ = {x:g})"
            panels.append((label, shown))
            columns[f"{SYMBOLS[name]}_bare"] = values
            columns[f"{SYMBOLS[name]}_cg"] = cg
        for target in DELTA_TARGETS:
            k = target_output(delta, target)
            if k is None:  # never another δ under this one's name
                panels.append((f"Δ at δ ≈ {target:g}: not reached", np.full(len(pos), 0.5)))
                continue
            d = normalize(coarse_grain_pairs(prop[k], pairs, xi_d, 3.0 * xi_d))
            panels.append((f"Δ at δ = {delta[k]:.2g} (ξ_Δ = {xi_d:.2g})", d))
            tag = f"{target:g}".replace(".", "p")
            columns[f"Delta_{tag}_bare"] = prop[k]
            columns[f"Delta_{tag}_cg"] = d
        body += rep.figure(
            f"fig1_maps_sample{sample}.png",
            f"Figs. 1–2 analogue: glass sample {sample}, coarse-grained and normalised "
            f"indicators and propensity at T = {temp:g}",
            lambda p, panels=panels, pos=pos, types=types, box=box: plots.particle_maps(
                panels, pos, types, box, p),
        )
        out = write_extxyz(export_dir / f"glass_{sample}_T{temp:g}.extxyz", pos, types, box,
                           columns, comment=f"glasscam glass sample {sample} T={temp:g}")
        body += f'<p>OVITO export: <a href="export/{out.name}">{out.name}</a></p>'
        # Fig. 4: ensembles, bare vs coarse-grained, at δ ≈ 1
        size = min(30, len(conf.replicas) // 3)
        k = target_output(delta, 1.0)
        if k is None:  # δ ≈ 1 not reached: the largest δ of the run, under its own value
            finite = np.flatnonzero(np.isfinite(delta))
            k = int(finite[-1]) if finite.size else None
        if size >= 1 and k is not None:
            crd = np.asarray(conf.crd(k), dtype=np.float64)
            ens = [(name, crd[idx].mean(axis=0))
                   for name, idx in ensemble_splits(len(crd), size, 3).items()]
            ens_panels = [(f"{n} bare", normalize(v)) for n, v in ens]
            ens_panels += [(f"{n} coarse-grained",
                            normalize(coarse_grain_pairs(v, pairs, xi_d, 3.0 * xi_d)))
                           for n, v in ens]
            body += rep.figure(
                "fig4_ensembles.png",
                f"Fig. 4 analogue: propensity of disjoint replica ensembles at δ = {delta[k]:.2g}"
                ", bare (top) and coarse-grained (bottom)",
                lambda p, ens_panels=ens_panels, pos=pos, types=types, box=box: (
                    plots.particle_maps(ens_panels, pos, types, box, p, ncol=4)),
            )
    # export of every analysed test configuration with its bare indicators
    n_exported = 0
    from glasscam.analysis.stage import select_samples

    for cls in ("glass", "liquid"):
        for idx in select_samples(inp.samples, cls, "test", str(inp.samples_path)):
            fields = sample_fields(inp, cls, int(idx))
            pos = np.asarray(inp.samples[f"{cls}/positions"][int(idx)], dtype=np.float64)
            types = np.asarray(inp.samples[f"{cls}/types"][int(idx)])
            box = np.asarray(inp.samples[f"{cls}/box"][int(idx)])
            write_extxyz(export_dir / f"{cls}_{int(idx)}.extxyz", pos, types, box,
                         {SYMBOLS[k]: v for k, v in fields.items()})
            n_exported += 1
    body += (f"<p>{n_exported} analysed test configurations exported with their per-particle "
             f"fields to <code>export/</code> (extended XYZ, opens in OVITO).</p>")
    if not inp.propensity_paths:
        body = _missing("Figures 1–2, 4", "no propensity store in the run folder") + body
    rep.add("Figures 1–2, 4 — particle maps", body)


def tables_list(rep: Report) -> None:
    csvs = sorted((rep.run / "tables").glob("*.csv"))
    rep.tables.extend(csvs)
    if csvs:
        rep.add("Tables as CSV", "<ul>" + "".join(
            f'<li><a href="tables/{p.name}">{p.name}</a></li>' for p in csvs) + "</ul>")


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
font-size:90%}th{background:#f3f3f3}figure{display:inline-block;margin:.5em;max-width:100%}
img{max-width:100%}figcaption{font-size:85%;color:#555;max-width:640px}
.missing{color:#a33}code{font-size:85%}
.caution{background:#fff4e0;border:1px solid #e0a040;padding:.3em 1em;margin:1em 0}
"""


def build_report(run: str | Path) -> Path:
    """Write ``report.html`` (and figures/exports) for a run folder; return its path. The
    report is locked while it is built (a second one is refused, naming this one)."""
    run = Path(run).resolve()
    if not run.is_dir():
        raise FileNotFoundError(f"{run}: run folder does not exist")
    with OutputLock(run / "report.html", what="report"):
        return _build_report(run)


def _build_report(run: Path) -> Path:
    t0 = time.perf_counter()
    rep = Report(run)
    info = provenance(rep)
    system = info["system"]
    training_section(rep, system)
    significance_section(rep, system)
    tables_section(rep, system)
    maps_section(rep, system)
    curve_figures(rep, system)
    cooling_section(rep)
    tables_list(rep)
    toc = "".join(f'<li><a href="#s{i}">{html.escape(t)}</a></li>'
                  for i, (t, _) in enumerate(rep.sections))
    sections = "".join(f'<h2 id="s{i}">{html.escape(t)}</h2>{b}'
                       for i, (t, b) in enumerate(rep.sections))
    banner = ("<div class='caution'><b>Caution</b><ul>" + "".join(
        f"<li>{html.escape(c)}</li>" for c in rep.cautions) + "</ul></div>") if rep.cautions \
        else ""
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>glasscam report — "
        f"{html.escape(system.upper())} — {html.escape(run.name)}</title><style>{STYLE}</style>"
        f"</head><body><h1>glasscam report: {html.escape(system.upper())}, "
        f"{html.escape(str(run))}</h1><p>Oyama, Koyama &amp; Kawasaki, Front. Phys. 2023, "
        f"reproduced from this run's own data; paper values in the next column. Built "
        f"{time.strftime('%Y-%m-%d %H:%M')} in {time.perf_counter() - t0:.1f} s.</p>"
        f"{banner}<ul>{toc}</ul>{sections}</body></html>"
    )
    return write_atomically(run / "report.html", lambda tmp: tmp.write_text(page))
