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
import re
import subprocess
import time
import warnings
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


# --------------------------------------------------------------------------------------------
# numbers on the page: every table cell goes through _f (or _ci/_pm/_p/_pct, which round a value
# to the precision its uncertainty allows)

_INT = re.compile(r"^[+-]?\d+$")


def _number(value: Any) -> float | int | None:
    """The number a cell holds (a CSV string or a number), or None for text."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if _INT.match(text):
            return int(text)
        if not text or text[-1].isalpha() and text.lower() not in ("nan", "inf", "-inf"):
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class _Cell(str):
    """A table cell already formatted (by _f, _ci, _pm, _p, _pct): _table keeps it as is."""


def _sig(v: float, digits: int) -> str:
    """``digits`` significant digits, positional between 1e-3 and 1e6, scientific outside."""
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e6:
        return np.format_float_positional(v, precision=digits, unique=False, fractional=False,
                                          trim="-")
    return f"{v:.{digits - 1}e}"


def _f(value: Any, digits: int = 3) -> str:
    """A table cell: integers exactly, other numbers to ``digits`` significant digits, NaN as
    –, text HTML-escaped."""
    v = _number(value)
    if v is None:
        return _Cell(html.escape(str(value)))
    if isinstance(v, int):
        return _Cell(v)
    if not np.isfinite(v):
        return _Cell("–")
    return _Cell(_sig(v, digits))


def _decimals(width: float) -> int | None:
    """Decimal places that keep two significant digits of an uncertainty ``width``."""
    if not np.isfinite(width) or width <= 0:
        return None
    return max(0, 1 - int(np.floor(np.log10(width))))


def _ci(value: Any, low: Any, high: Any) -> tuple[str, str, str]:
    """A value and its confidence interval, rounded to two significant digits of the CI width
    (C = 0.392 [0.055, 0.762] reads 0.39 [0.05, 0.76])."""
    v, lo, hi = (_number(x) for x in (value, low, high))
    if v is None or lo is None or hi is None:
        return _f(value), _f(low), _f(high)
    d = _decimals(float(hi) - float(lo))
    if d is None or not np.isfinite(v):
        return _f(value), _f(low), _f(high)
    return tuple(_Cell("–" if not np.isfinite(x) else f"{x:.{d}f}") for x in (v, lo, hi))


def _pm(mean: Any, std: Any) -> str:
    """mean ± std, both to two significant digits of std."""
    m, sd = _number(mean), _number(std)
    d = None if m is None or sd is None else _decimals(float(sd))
    if d is None or not np.isfinite(m):
        return f"{_f(mean)} ± {_f(std)}"
    return _Cell(f"{m:.{d}f} ± {sd:.{d}f}")


def _p(value: Any) -> str:
    """A p-value: two significant digits, one below 0.01 (0.000999 reads 0.001)."""
    v = _number(value)
    if v is None or not np.isfinite(v):
        return _f(value)
    if v == 0:
        return _Cell("0")
    return _Cell(np.format_float_positional(float(v), precision=2 if v >= 0.01 else 1,
                                            unique=False, fractional=False, trim="-"))


def _pct(fraction: Any, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage (0.987 reads 98.7 %; 1 reads 100 %)."""
    v = _number(fraction)
    if v is None or not np.isfinite(v):
        return _f(fraction)
    text = f"{100 * float(v):.{digits}f}".rstrip("0").rstrip(".")
    return _Cell(f"{text} %")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; a string cell that holds a number is rounded by _f, other strings are
    HTML already."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    def cell(c: Any) -> str:
        keep = isinstance(c, _Cell) or isinstance(c, str) and _number(c) is None
        return c if keep else _f(c)

    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _missing(what: str, why: str) -> str:
    return f'<p class="missing">{html.escape(what)}: not available — {html.escape(why)}</p>'


def _img(rel: str, caption: str, vector: str | None = None) -> str:
    """A figure: the PNG shown, its caption, and a link to the SVG beside it."""
    link = (f' <a href="{html.escape(vector)}">[SVG]</a>' if vector else "")
    return (
        f'<figure><img src="{html.escape(rel)}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}{link}</figcaption></figure>"
    )


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
        self.fig1_deltas: list[float] = []  # δ of Fig. 1's Δ panels, as reached (Figs 5, 7)

    def add(self, title: str, body: str) -> None:
        self.sections.append((title, body))

    def caution(self, text: str) -> None:
        """A warning shown in a banner at the top of the report."""
        self.cautions.append(text)

    def figure(self, name: str, caption: str, draw: Callable[[Path], Path]) -> str:
        """Draw ``figures/NAME`` (PNG) and the SVG beside it; the page shows the PNG and links
        the SVG."""
        path = draw(self.fig_dir / name)
        self.figures.append(path)
        svg = plots.vector_path(path)
        if svg.exists() and svg != path:
            self.figures.append(svg)
        return _img(f"figures/{path.name}", caption,
                    f"figures/{svg.name}" if svg.exists() and svg != path else None)


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
    rows.append(["glasscam git commit", f"<code>{html.escape(commit)}</code>" if commit
                 else "unknown"])
    samples = run / "samples.zarr"
    params: dict[str, Any] = {}
    if samples.exists():
        import zarr

        root = zarr.open_group(samples, mode="r")
        params = dict(root.attrs.get("parameters", {}))
        for key, value in dict(root.attrs.get("versions", {})).items():
            rows.append([f"version: {key}", f"<code>{html.escape(str(value))}</code>"])
        rows.append(["quench parameters", f"<code>{html.escape(json.dumps(params))}</code>"])
    from glasscam.analysis.pipeline.runner import STAGES

    stage_rows = []
    records = [json.loads(p.read_text()) for p in (run / ".glasscam" / "stages").glob("*.json")]
    for st in sorted(records, key=lambda st: (STAGES.index(st["stage"]) if st["stage"] in STAGES
                                               else len(STAGES), st["stage"])):
        stage_rows.append([st["stage"], _duration(st["wall_s"]), st.get("finished", ""),
                           "<br>".join(f"<code>{html.escape(c)}</code>" for c in st["commands"])])
    body = _table(["", "value"], rows)
    if preset:
        dump = html.escape(json.dumps(preset, indent=1))
        body += f"<details><summary>preset</summary><pre>{dump}</pre></details>"
    if stage_rows:
        body += "<h3>Wall time per stage (pipeline order)</h3>" + _table(
            ["stage", "wall time", "finished", "command"], stage_rows
        )
    rep.add("Run provenance", body)
    system = meta.get("system") or params.get("system") or "kam"
    return {"system": str(system), "params": params}


def _duration(seconds: Any) -> str:
    """Wall time: 3 significant digits in s, and in min or h beyond two minutes."""
    v = _number(seconds)
    if v is None or not np.isfinite(v):
        return _f(seconds)
    text = f"{_sig(float(v), 3)} s"
    if v >= 7200:
        text += f" ({v / 3600:.1f} h)"
    elif v >= 120:
        text += f" ({v / 60:.0f} min)"
    return text


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
    wrong = test.get("misclassified", [])
    n_test = test.get("n")
    counted = (f" ({n_test - len(wrong)} of {n_test} right)"
               if isinstance(n_test, int) and n_test > 0 else "")
    rows = [["test accuracy", _pct(accuracy) + counted, PAPER["accuracy"][system]]]
    if "member_test_accuracy" in m:
        rows.append(["ensemble members' test accuracy",
                     ", ".join(_pct(a) for a in m["member_test_accuracy"]),
                     "one network in the paper"])
    per_class = test.get("per_class_accuracy") or {}
    for cls, acc in per_class.items():
        rows.append([f"test accuracy ({cls})", _pct(acc), "≈ 100 %"])
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
    if wrong:
        body += ("<h3>Misclassified test samples (left out of per-sample distributions, "
                 "flagged in the exports)</h3>" + _table(
                     ["true class", "sample", "predicted", "P(glass)"],
                     [[html.escape(str(w.get("class", ""))), w.get("sample", ""),
                       html.escape(str(w.get("predicted", ""))), w.get("p_glass", float("nan"))]
                      for w in wrong if isinstance(w, dict)]
                     + [[html.escape(str(w)), "", "", ""] for w in wrong
                        if not isinstance(w, dict)]))
    else:
        body += "<p>Misclassified test samples: none.</p>"
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
    tm = np.asarray(root["cooling/target_temperature"][:], dtype=np.float64)[done]
    pe = np.asarray(root["cooling/potential_energy"][:], dtype=np.float64)[done]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a record no sample reached: NaN
        t_mean, u_mean = np.nanmean(tm, axis=0), np.nanmean(pe, axis=0)
        u_std = np.nanstd(pe, axis=0)
    keep = np.isfinite(t_mean) & np.isfinite(u_mean)
    lab = f"mean of {done.size} samples"
    body = rep.figure(
        "figS6_energy_temperature.png",
        f"Fig. S6 analogue: potential energy per particle vs temperature during the quench, "
        f"mean over the {done.size} samples (shaded: ± one standard deviation between "
        "samples); a crystallisation would show as a jump",
        lambda p: plots.curves({lab: t_mean[keep]}, {lab: u_mean[keep]},
                               p, "T (thermostat target along the ramp)", "U / N",
                               bands={lab: (u_mean[keep] - u_std[keep],
                                            u_mean[keep] + u_std[keep])}),
    )
    frames = {}
    for cls in ("liquid", "glass"):
        sel = done[: min(20, done.size)]
        frames[cls] = [(np.asarray(root[f"{cls}/positions"][int(s)]),
                        np.asarray(root[f"{cls}/box"][int(s)])) for s in sel]
    r_max = float(min(5.0, 0.45 * np.min(frames["glass"][0][1])))
    gr = {cls: mean_radial_distribution(f, r_max=r_max, bins=120) for cls, f in frames.items()}
    body += rep.figure(
        "figS7_gr.png", "Fig. S7 analogue: total g(r) (all particles, A and B together; not "
        f"the partials) of {len(frames['glass'])} liquid (T_L) and glass (T_G) samples",
        lambda p: plots.curves({c: gr[c][0] for c in gr}, {c: gr[c][1] for c in gr}, p,
                               "r", "total g(r)"),
    )
    rep.add("Fig. S6/S7 — cooling and g(r)", body)


def _rows(path: Path) -> list[dict[str, str]]:
    return read_csv(path) if path.exists() else []


def _span(values: Sequence[float], digits: int = 2) -> str:
    """``0.26`` when the values agree to ``digits`` significant digits, else ``0.55–0.85``."""
    lo, hi = _f(min(values), digits), _f(max(values), digits)
    return lo if lo == hi else f"{lo}–{hi}"


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
    def c_ci(r: dict[str, Any]) -> tuple[str, str]:
        c, lo, hi = _ci(r["c_mean"], r["ci_low"], r["ci_high"])
        return (c, f"[{lo}, {hi}]") if r["reached"] else ("–", "–")

    body += _table(
        ["T", "indicator", "δ target", "δ reached (mean)", "configs", "ξ", "C (mean)", "95 % CI",
         "null mean", "null p95", "p", "noise ceiling", "partial | x_A", "null other"],
        [[r["temperature"], html.escape(r["correlated_as"]), r["delta_target"],
          _f(r["delta_reached"], 2) if r["reached"] else "not reached", r["configurations"],
          _f(r["xi"], 2), *c_ci(r),
          _f(r["null_mean"], 2), _f(r["null_p95"], 2), _p(r["p_value"]),
          _f(r["noise_ceiling"], 2), _f(r["partial_given_composition"], 2),
          _f(r["null_other_configuration_mean"], 2)] for r in rows])
    agreement = _rows(rep.run / "tables" / "ensemble_agreement.csv")
    if agreement:
        body += ("<h3>CNN ensemble: do independently seeded networks see the same Γ?</h3>"
                 + _table(["class", "networks", "samples", "Pearson of Γ_a, Γ_b (bare)",
                           "coarse-grained (ξ)"],
                          [[r["class"], r["members"], r["samples"],
                            _pm(r["pearson_bare_mean"], r["pearson_bare_std"]),
                            f"{_pm(r['pearson_cg_mean'], r['pearson_cg_std'])} "
                            f"(ξ = {_f(r['xi'], 2)})"] for r in agreement])
                 + "<p>Γ correlated with Δ is the members' mean (gradcam.zarr 'gamma'); "
                 "each member's own Γ is in 'gamma_members'.</p>")
    rep.add("Significance — is the correlation more than chance?", body)


_AT_DELTA = re.compile(r"at delta = ([-+0-9.eE]+)")


def _how(texts: Sequence[str]) -> str:
    """The 'how' of a Table 3 row over its configurations, with the δ each one measured at as
    their range, and how many did not reach the target δ ≈ 1 (those measured at their largest
    δ, which is named, never relabelled)."""
    from glasscam.analysis.correlate.judge import target_output

    deltas = [float(m.group(1)) for t in texts if (m := _AT_DELTA.search(t))]
    if not deltas:
        return html.escape(texts[0])
    text = html.escape(_AT_DELTA.sub(f"at δ = {_span(deltas)}", texts[0]))
    missed = sum(target_output(np.array([d]), 1.0) is None for d in deltas)
    if missed:
        text += (f" <b>(target δ ≈ 1 not reached by {missed} of {len(deltas)} configurations: "
                 "measured at their largest δ)</b>")
    return text


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
                how = _how([r["how"] for r in mine if r["variable"] == var])
                flagged = any(r["cutoff_beyond_half_box"] == "True" for r in mine
                              if r["variable"] == var)
                paper = (paper_xi["Delta"] if var.startswith("Delta")
                         else paper_xi["structural"])
                rows.append([temp, html.escape(var), _f(xi, 2), paper,
                             "3ξ > L/2" if flagged else "", how])
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
        rows = [[r["temperature"], r["sample"],
                 html.escape(r["quantity"] + (f": {r['note']}" if r.get("note") else "")),
                 _f(r["pearson"]), _f(r["delta"], 2), r["ensemble_size"], r["replicas"]]
                for r in t4]
        rep.add("Table 4 — propensity ensembles",
                _table(["T", "sample", "quantity", "Pearson", "δ (reached; target 1)",
                        "ensemble size", "replicas"], rows)
                + "<p>The paper's Table 4 is an image. A configuration whose run did not reach "
                "δ ≈ 1 is skipped, and says so.</p>")
    else:
        rep.add("Table 4 — propensity ensembles", _missing("table4_ensembles.csv", "not written"))
    if t5:
        rows = [[r["temperature"], html.escape(r["correlated_as"]), _f(r["xi"], 2),
                 "{} [{}, {}]".format(*_ci(r["c_max"], r["ci_low"], r["ci_high"])),
                 _f(r["null_p95"], 2), _p(r["p_value"]), _f(r["noise_ceiling"], 2),
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
        rows = [[r["class"], html.escape(r["pair"]), r["samples"],
                 _pm(r["pearson_mean"], r["pearson_std"]),
                 _pm(r["spearman_mean"], r["spearman_std"])] for r in s2]
        rep.add("Table S2 — inter-indicator correlations per sample",
                _table(["class", "pair", "samples", "Pearson (mean ± std)",
                        "Spearman (mean ± std)"], rows))


def curve_figures(rep: Report, system: str) -> None:
    tables = rep.run / "tables"
    body = ""
    f3 = _rows(tables / "fig3_c_delta.csv")
    if f3:
        for temp in sorted({r["temperature"] for r in f3}, key=float):
            rows = [r for r in f3 if r["temperature"] == temp]
            xs, ys = {}, {}
            targets = sorted({r["delta_target"] for r in rows} - {"largest"}, key=float)
            nconf = len({r["sample"] for r in rows})
            for target in [*targets, "largest"]:
                mine = [r for r in rows if r["delta_target"] == target]
                if not mine:
                    continue
                by_r = _mean_by(mine, "r", "c")
                # the δ each configuration reached (their range), never the target's
                reached = _span([float(d) for d in {r["sample"]: r["delta"] for r in mine}
                                 .values()])
                have = len({r["sample"] for r in mine})
                name = (f"δ = {reached} (target {target}"
                        + (f"; {have} of {nconf} configurations" if have < nconf else "") + ")"
                        if target != "largest" else f"largest δ of the run = {reached}")
                xs[name] = np.array([float(k) for k in by_r])
                ys[name] = np.array(list(by_r.values()))
            largest = max(float(r["delta"]) for r in rows)
            missed = [f"{t:g}" for t in DELTA_TARGETS if f"{t:g}" not in targets]
            note = (f"; δ target(s) {', '.join(missed)} not reached (largest δ reached by a "
                    f"configuration: {_f(largest, 2)}): no curve" if missed else "")
            body += rep.figure(
                f"fig3_c_delta_T{temp}.png",
                f"Fig. 3 analogue: C_Δ(r) of the bare propensity at T = {temp}, mean over "
                "configurations, labelled with the δ actually reached (its range over "
                "configurations) and the target it stands for, and at the largest δ of each "
                f"configuration's run{note}",
                lambda p, xs=xs, ys=ys: plots.curves(xs, ys, p, "r", "C_Δ(r)",
                                                     hlines={"1/e": INV_E, "0": 0.0}),
            )
    f7 = _rows(tables / "fig7_mean.csv")
    paper_c = PAPER["c_max"].get(system, {})
    # the paper's dotted lines: the δ of Fig. 1's propensity panels (as reached there)
    vlines = {f"Fig. 1: δ = {_f(d, 2)}": d for d in rep.fig1_deltas}
    g5 = [r for r in f7 if r["indicator"] == "Gamma"]
    if g5:
        temps = sorted({r["temperature"] for r in g5}, key=float)
        lab = g5[0]["correlated_as"]

        def col5(temp, name):
            return np.array([float(r[name]) for r in g5 if r["temperature"] == temp])

        x5 = {f"T = {t}": col5(t, "delta") for t in temps}
        y5 = {f"T = {t}": col5(t, "pearson") for t in temps}
        b5 = {f"T = {t}": (col5(t, "band_low"), col5(t, "band_high")) for t in temps}
        n5 = {f"T = {t}": (col5(t, "null_mean"), col5(t, "null_p95")) for t in temps}
        h5 = {f"paper C_max {paper_c['Gamma']:g}": paper_c["Gamma"]} if "Gamma" in paper_c \
            else None
        body += rep.figure(
            "fig5_gamma_vs_delta.png",
            f"Fig. 5 analogue: C({lab}, Δ) vs δ, one curve per temperature: mean over "
            "configurations (shaded: their 95 % spread; hatched: null mean to null 95th "
            "percentile); dashed: the paper's C_max; dotted: the δ of Fig. 1's panels",
            lambda p: plots.curves(x5, y5, p, "δ", "Pearson C", logx=True, hlines=h5,
                                   bands=b5, null_bands=n5, vlines=vlines,
                                   distinct_markers=True, legend_outside=len(temps) > 2),
        )
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
            nulls = {labels[i]: (col(i, "null_mean"), col(i, "null_p95")) for i in inds}
            body += rep.figure(
                f"fig7_indicators_vs_delta_T{temp}.png",
                f"Fig. 7 analogue: C(indicator, Δ) vs δ at T = {temp}, mean over "
                "configurations with the null band (hatched); dashed: the paper's C_max; "
                "dotted: the δ of Fig. 1's panels",
                lambda p, xs=xs, ys=ys, labels=labels, nulls=nulls: plots.curves(
                    xs, ys, p, "δ", "Pearson C", logx=True,
                    references={labels[i]: paper_c[i] for i in labels if i in paper_c},
                    null_bands=nulls, vlines=vlines, legend_outside=True),
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
    from glasscam.analysis.report.export import export_samples, frame_info, write_extxyz
    from glasscam.insitu import systems

    try:
        inp = open_inputs(rep.run, system)
    except (FileNotFoundError, ValueError) as err:
        rep.add("Figures 1–2, 4 — particle maps", _missing("inputs", str(err)))
        return
    export_dir = rep.run / "export"
    body = ""
    t3 = _rows(rep.run / "tables" / "table3_xi.csv")
    confs = open_configurations(inp.propensity_paths[0]) if inp.propensity_paths else []
    try:  # particles drawn at their species' diameters
        diameters = systems.get(inp.system).diameters
    except ValueError:
        diameters = (1.0, 1.0)
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
            columns[name] = values
            columns[f"{name}_cg"] = cg
        info = frame_info(inp, "glass", sample) | {"temperature": temp}
        missed = []
        for target in DELTA_TARGETS:
            k = target_output(delta, target)
            if k is None:  # never another δ under this one's name: no panel, a note
                missed.append(f"{target:g}")
                continue
            d = normalize(coarse_grain_pairs(prop[k], pairs, xi_d, 3.0 * xi_d))
            panels.append((f"Δ at δ = {_f(delta[k], 2)}\n(target {target:g}; "
                           f"ξ_Δ = {_f(xi_d, 2)})", d))
            rep.fig1_deltas.append(float(delta[k]))
            tag = f"{target:g}".replace(".", "p")
            columns[f"propensity_{tag}"] = prop[k]
            columns[f"propensity_{tag}_cg"] = d
            info[f"propensity_{tag}_delta"] = float(delta[k])
        finite = delta[np.isfinite(delta)]
        note = (f" Δ at δ ≈ {', '.join(missed)} is not shown: this configuration's run stopped "
                f"at δ = {_f(finite.max() if finite.size else float('nan'), 2)} (target "
                "not reached)." if missed else "")
        body += rep.figure(
            f"fig1_maps_sample{sample}.png",
            f"Figs. 1–2 analogue: glass sample {sample}, coarse-grained and normalised "
            f"indicators and propensity at T = {temp:g}, each Δ panel labelled with the δ it "
            f"reached; particles drawn at their diameters σ_A = {diameters[0]:.3g}, "
            f"σ_B = {diameters[1]:.3g}, scale bar in σ.{note}",
            lambda p, panels=panels, pos=pos, types=types, box=box: plots.particle_maps(
                panels, pos, types, box, p, diameters=diameters),
        )
        out = write_extxyz(export_dir / f"glass_{sample}_T{temp:g}.extxyz", pos, types, box,
                           columns, info)
        body += (f'<p>Export of these fields (extended XYZ; ASE and OVITO read it): '
                 f'<a href="export/{out.name}">{out.name}</a></p>')
        # Fig. 4: ensembles, bare vs coarse-grained, at δ ≈ 1
        size = min(30, len(conf.replicas) // 3)
        k = target_output(delta, 1.0)
        which = "target 1"
        if k is None:  # δ ≈ 1 not reached: the largest δ of the run, under its own value
            finite = np.flatnonzero(np.isfinite(delta))
            k = int(finite[-1]) if finite.size else None
            which = "the largest of the run: target 1 not reached"
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
                f"Fig. 4 analogue: propensity of disjoint replica ensembles at δ = "
                f"{_f(delta[k], 2)} ({which}), bare (top) and coarse-grained (bottom)",
                lambda p, ens_panels=ens_panels, pos=pos, types=types, box=box: (
                    plots.particle_maps(ens_panels, pos, types, box, p, ncol=4,
                                        diameters=diameters)),
            )
    # export of every analysed test configuration with its bare indicators
    n_exported = len(export_samples(inp, export_dir, "test"))
    body += (f"<p>{n_exported} test configurations exported with their per-particle fields to "
             "<code>export/</code> (extended XYZ: ASE and OVITO read it; species Ni = A, P = B "
             "as placeholders, integer <code>type</code> 1 = A / 2 = B and <code>id</code>; "
             "columns <code>gamma</code>, <code>voronoi</code>, <code>ttop</code>; info "
             "<code>misclassified</code>, <code>p_glass</code>). "
             "<code>glasscam export --lammps-data SAMPLE</code> writes a sample as a LAMMPS "
             "data file.</p>")
    if not inp.propensity_paths:
        body = _missing("Figures 1–2, 4", "no propensity store in the run folder") + body
    rep.add("Figures 1–2, 4 — particle maps", body)


def attribution_section(rep: Report, system: str) -> None:
    """Which attribution sees the dynamics? The ranking of every method × layer (scored like Γ),
    the sanity checks, and the raw maps of one configuration side by side (issue 16). Only
    when the run holds ``gradcam_*.zarr`` stores."""
    from glasscam.analysis.correlate import attribution_ranking as ar

    if not ar.has_rivals(rep.run):
        return
    title = "Which attribution sees the dynamics? Grad-CAM and its rivals"
    rows = _rows(rep.run / "tables" / "attribution_ranking.csv")
    if not rows:
        rep.add(title, _missing("attribution_ranking.csv", "run `glasscam correlate`"))
        return
    def want(r: dict[str, str]) -> str:  # the row each store is ranked by
        by = r["ranked_by"]
        return "max" if by == "C_max" else f"{ar.DELTA_TARGET:g}" if by else "none"

    primary = [r for r in rows if r["delta_target"] == want(r)]

    def c_ci(r: dict[str, str]) -> tuple[str, str]:
        if r["reached"] != "True":
            return "not reached" if r["delta_target"] != "none" else "–", "–"
        c, lo, hi = _ci(r["c_mean"], r["ci_low"], r["ci_high"])
        return c, f"[{lo}, {hi}]"

    body = ("<p>Every attribution map is mapped to the particles (a CAM by the inverse "
            "gridization, an input-space map by the gridization's adjoint: each particle reads "
            "its own species' channel) and scored exactly like Γ: 1 − score coarse-grained, C "
            "with Δ̄ maximised over ξ, the torus-translation null repeating that maximum, the "
            "bootstrap CI over configurations and replicas, the noise ceiling of the replicas. "
            f"Ranked by {html.escape(primary[0]['ranked_by'] or 'C') if primary else 'C'}; "
            "p (Holm): adjusted over the methods of the table, since picking the best of "
            "many is a selection too; "
            "agreement: Spearman ρ of the particle scores with the paper's Grad-CAM (mean ± std "
            "over test samples); cost: ms per image for every network of the ensemble on the "
            "recorded device. Per δ target: tables/attribution_ranking.csv.</p>")
    body += _table(
        ["rank", "method", "layer", "T", "δ", "configs", "C (mean)", "95 % CI", "p",
         "p (Holm)", "null p95", "noise ceiling", "C / ceiling", "ρ with Grad-CAM",
         "ms / image"],
        [[r["rank"], html.escape(r["method"]), r["layer"], r["temperature"],
          r["delta_target"], r["configurations"], *c_ci(r), _p(r["p_value"]),
          _p(r.get("p_holm", "nan")),
          _f(r["null_p95"], 2), _f(r["noise_ceiling"], 2), _f(r["fraction_of_ceiling"], 2),
          _pm(r["agreement_with_gradcam"], r["agreement_std"]), _f(r["ms_per_sample"], 2)]
         for r in primary])
    sanity = _rows(rep.run / "tables" / "attribution_sanity.csv")
    if sanity:
        for r in sanity:
            r["passes"] = r["passes"] == "True"
        verdicts = ar.method_verdicts(sanity)
        failing = [v for v in verdicts.values() if " FAILS " in v]
        if failing:
            rep.caution(f"{len(failing)} attribution method(s) fail the randomisation sanity "
                        "check (section 'Which attribution sees the dynamics?').")
        body += ("<h3>Sanity checks (Adebayo et al. 2018)</h3><ul>"
                 + "".join(f"<li>{html.escape(v)}</li>" for v in verdicts.values()) + "</ul>"
                 + f"<p>A randomised network's map must differ from the trained one (mean rank "
                 f"correlation |ρ| &lt; {ar.RHO_MAX}) and its C with Δ must fall to the null "
                 f"(p ≥ {ar.ALPHA}). cascade:&lt;module&gt;: the weights re-drawn from the "
                 "output layer down to that module; shuffled-labels: networks trained on "
                 "permuted labels.</p>")
        body += _table(
            ["method", "layer", "randomisation", "ρ with trained", "samples (constant)", "T",
             "δ", "C (mean)", "p", "passes"],
            [[html.escape(r["method"]), r["layer"], html.escape(r["randomization"]),
              _pm(r["rank_correlation"], r["rank_correlation_std"]),
              f"{r['samples']} ({r['constant_maps']})", r["temperature"], r["delta_target"],
              _f(r["c_mean"], 2), _p(r["p_value"]), "yes" if r["passes"] else "NO"]
             for r in sanity])
    body += _attribution_maps(rep, system)
    rep.add(title, body)


def _attribution_maps(rep: Report, system: str) -> str:
    """Raw maps of one glass configuration (the first propensity configuration's, else the
    first test sample every store holds), every trained method × layer side by side, and
    their coarse-grained particle scores beside Δ."""
    from glasscam.analysis.correlate import attribution_ranking as ar
    from glasscam.analysis.correlate.coarse_grain import PairList, coarse_grain_pairs, normalize
    from glasscam.analysis.correlate.judge import target_output
    from glasscam.analysis.dynamics.propensity import open_configurations
    from glasscam.insitu.schema import open_samples_store

    try:
        stores = [s for s in ar.find_stores(rep.run) if s.randomize is None]
        samples = open_samples_store(rep.run / "samples.zarr")
    except (FileNotFoundError, ValueError) as err:
        return _missing("attribution maps", str(err))
    props = sorted(rep.run.glob("propensity*.zarr"))
    conf = next(iter(open_configurations(props[0])), None) if props else None
    if conf is not None:
        sample = int(conf.sample)
    else:
        done = np.ones(samples["split"].shape[0], dtype=bool)
        for s in stores:
            done &= np.asarray(s.root["glass/done"][:], dtype=bool)
        test = np.flatnonzero(done & (np.asarray(samples["split"][:]) == 2))
        if not test.size:
            return _missing("attribution maps", "no test sample done in every store")
        sample = int(test[0])
    stores = [s for s in stores if bool(s.root["glass/done"][sample])]
    if not stores:
        return _missing("attribution maps", f"glass sample {sample} not done in the stores")
    panels = [(s.label, np.asarray(s.root["glass/cam"][sample])) for s in stores]
    out = rep.figure(
        f"attribution_maps_sample{sample}.png",
        f"Raw attribution maps of glass sample {sample} (class glass), every method × layer, "
        "each on its own colour scale; an input-space map is shown summed over species",
        lambda p: plots.image_grid(panels, p))
    pos = np.asarray(samples["glass/positions"][sample], dtype=np.float64)
    types = np.asarray(samples["glass/types"][sample])
    box = np.asarray(samples["glass/box"][sample], dtype=np.float64)
    ranking = {(r["store"]): r for r in _rows(rep.run / "tables" / "attribution_ranking.csv")
               if r["delta_target"] in ("max", "none")}
    xis = {s.path.name: _number(ranking.get(s.path.name, {}).get("xi", "nan")) for s in stores}
    xis = {k: (float(v) if v is not None and np.isfinite(v) else 2.0) for k, v in xis.items()}
    pairs = PairList.build(pos, box, 3.0 * max([*xis.values(), 1.0]))
    particles = []
    for s in stores:
        x = xis[s.path.name]
        g = np.asarray(s.root["glass/gamma"][sample], dtype=np.float64)
        particles.append((f"1−{s.label}\n(ξ = {_f(x, 2)})",
                          1.0 - normalize(coarse_grain_pairs(g, pairs, x, 3.0 * x))))
    if conf is not None:
        k = target_output(conf.delta, 1.0)
        if k is None:
            k = int(np.flatnonzero(np.isfinite(conf.delta))[-1])
        t3 = [r for r in _rows(rep.run / "tables" / "table3_xi.csv")
              if r["variable"] == "Delta (used)" and int(r["sample"]) == sample]
        xi_d = float(t3[0]["xi"]) if t3 else 2.0
        pairs_d = PairList.build(pos, box, 3.0 * max(xi_d, 1.0))
        particles.append((f"Δ at δ = {_f(conf.delta[k], 2)}\n(ξ_Δ = {_f(xi_d, 2)})",
                          normalize(coarse_grain_pairs(conf.propensity[k], pairs_d, xi_d,
                                                       3.0 * xi_d))))
    from glasscam.insitu import systems

    try:  # particles drawn at their species' diameters
        diameters = systems.get(system).diameters
    except ValueError:
        diameters = (1.0, 1.0)
    out += rep.figure(
        f"attribution_particles_sample{sample}.png",
        f"Glass sample {sample}: 1 − the coarse-grained, normalised particle score of every "
        "method (at its ξ of C_max, mean over configurations)"
        + (" beside the coarse-grained propensity (at δ ≈ 1, else the largest δ reached)"
           if conf is not None else ""),
        lambda p: plots.particle_maps(particles, pos, types, box, p, diameters=diameters,
                                      ncol=4))
    return out


def crossing_temperature(temperatures: np.ndarray, p_glass: np.ndarray,
                         level: float = 0.5) -> float:
    """The temperature where P(glass) first reaches ``level`` along a cooling ramp (rows in
    ramp order, T decreasing), linearly interpolated; NaN if it never does."""
    t = np.asarray(temperatures, dtype=float)
    p = np.asarray(p_glass, dtype=float)
    above = p >= level
    hits = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    if above.size and above[0]:
        return float(t[0])
    if not hits.size:
        return float("nan")
    k = int(hits[0])
    f = (level - p[k - 1]) / (p[k] - p[k - 1])
    return float(t[k - 1] + f * (t[k] - t[k - 1]))


def live_curves(root, system: str, max_frames: int = 64) -> dict[str, np.ndarray]:
    """From a ``glasscam.live/1`` store: time, P(glass), and at up to ``max_frames`` evenly
    spaced frames the persistence C(Γ(t0), Γ(t)) (bare and coarse-grained) and, when it holds
    displacements, C(1−Γ(t), Δ(t)) and C(1−Γ(t0), Δ(t)) (Δ: |CRD| since t0; orientation as
    the correlate stage's, FLIP). Every field is coarse-grained on the first frame's positions
    (the correlate stage's kernel and cutoff: ξ structural for Γ, ξ_Δ for Δ), then Pearson."""
    from glasscam.analysis.correlate.coarse_grain import PairList, coarse_grain_pairs, normalize
    from glasscam.analysis.correlate.judge import FLIP
    from glasscam.analysis.correlate.measures import oriented, pearson
    from glasscam.analysis.paper import XI_DELTA

    done = np.asarray(root["done"][:], dtype=bool)
    frames = int(np.argmin(done)) if not done.all() else int(done.size)
    out: dict[str, np.ndarray] = {"time": np.asarray(root["time"][:frames]),
                                  "p_glass": np.asarray(root["p_glass"][:frames])}
    if frames < 2:
        return out
    pick = np.unique(np.linspace(0, frames - 1, min(frames, max_frames)).round().astype(int))
    gamma = np.asarray(root["gamma"].get_orthogonal_selection((pick,)), dtype=np.float64)
    crd = np.asarray(root["crd"].get_orthogonal_selection((pick,)), dtype=np.float64)
    pos0 = np.asarray(root["positions"][0], dtype=np.float64)
    box0 = np.asarray(root["box"][0], dtype=np.float64)
    xi_g = float(PAPER["xi"].get(system, PAPER["xi"]["kam"])["structural"])
    pairs = PairList.build(pos0, box0, 3.0 * max(xi_g, XI_DELTA))
    cg = normalize(coarse_grain_pairs(gamma.T, pairs, xi_g))  # [N, F']
    flip = FLIP.get(system, FLIP["kam"])["gamma"]
    out["pick_time"] = out["time"][pick]
    out["persistence_bare"] = np.array([pearson(gamma[0], g) for g in gamma])
    out["persistence_cg"] = np.array([pearson(cg[:, 0], cg[:, k]) for k in range(len(pick))])
    if np.isfinite(crd).all():
        nan = float("nan")
        moved = crd.max(axis=1) > 0
        d = normalize(coarse_grain_pairs(np.where(moved[:, None], crd, 1.0).T, pairs,
                                         XI_DELTA))
        g_now = oriented(cg, flip)
        out["c_now"] = np.array([pearson(g_now[:, k], d[:, k]) if moved[k] else nan
                                 for k in range(len(pick))])
        out["c_start"] = np.array([pearson(g_now[:, 0], d[:, k]) if moved[k] else nan
                                   for k in range(len(pick))])
        out["delta"] = crd.mean(axis=1)
    return out


def live_section(rep: Report, system: str) -> None:
    """Live Grad-CAM (glasscam.insitu.live), shown when the run folder holds its stores: the
    network's glass transition along the quench ramps (``*.live.zarr``, glasscam.live-ramp/1)
    and, for every live time series (glasscam.live/1, e.g. of the aging deck), P(glass)(t),
    the persistence of what the network sees and C(1−Γ(t), Δ(t))."""
    from glasscam.analysis.correlate.judge import FLIP
    from glasscam.insitu import schema, systems

    found: dict[str, list[Path]] = {}
    for path in sorted(rep.run.glob("*.zarr")):
        try:
            kind = schema.root_metadata(path).get("attributes", {}).get("schema")
        except (OSError, schema.SchemaError):
            continue
        if kind in (schema.LIVE_SCHEMA, schema.RAMP_SCHEMA):
            found.setdefault(kind, []).append(path)
    if not found:
        return
    try:
        t_star = float(systems.get(system).t_star)
    except Exception:  # noqa: BLE001 - an unknown system: no T* line
        t_star = None
    body = ""
    for path in found.get(schema.RAMP_SCHEMA, []):
        root = schema.open_ramp_store(path)
        done = np.flatnonzero(np.asarray(root["done"][:], dtype=bool))
        if not done.size:
            body += _missing(path.name, "no sample of the ramp is done")
            continue
        temps = np.asarray(root["target_temperature"].get_orthogonal_selection((done,)))
        prob = np.asarray(root["p_glass"].get_orthogonal_selection((done,)))
        t_half = crossing_temperature(temps[0], prob.mean(axis=0))
        each = np.array([crossing_temperature(t, q) for t, q in zip(temps, prob, strict=True)])
        body += rep.figure(
            f"live_pglass_vs_T_{path.stem}.png",
            f"The network's glass transition: P(glass) along the cooling ramp of {done.size} "
            f"quench(es) ({path.name}); its mean crosses 1/2 at T = {_f(t_half)}, beside T* "
            f"= {t_star if t_star is not None else '–'}",
            lambda p, temps=temps, prob=prob, t_half=t_half: plots.pglass_vs_temperature(
                temps, prob, p, t_half, t_star))
        finite = each[np.isfinite(each)]
        body += _table(
            ["store", "samples", "T where mean P(glass) = 1/2", "per sample (mean ± sd)",
             "samples crossing", "T* (paper)"],
            [[html.escape(path.name), int(done.size), _f(t_half),
              f"{_f(finite.mean())} ± {_f(finite.std())}" if finite.size else "–",
              f"{finite.size} of {each.size}", t_star if t_star is not None else "–"]])
    for path in found.get(schema.LIVE_SCHEMA, []):
        root = schema.open_live_store(path)
        params = dict(root.attrs["parameters"])
        curves = live_curves(root, str(params.get("system") or system))
        run = params.get("run") or {}
        what = (f"glass sample {run['sample']} aged at T = {run['temp']:g}" if run.get("temp")
                else "a live run")
        if curves["time"].size == 0:
            body += _missing(path.name, "no frame is done")
            continue
        body += f"<h3>{html.escape(path.name)}: {html.escape(what)}</h3>"
        body += rep.figure(
            f"live_pglass_t_{path.stem}.png",
            f"P(glass)(t) seen in situ every frame of {path.name} ({curves['time'].size} "
            "frames)",
            lambda p, c=curves: plots.curves(c["time"], {"P(glass)": c["p_glass"]}, p,
                                             "t (LJ time since the run's step 0)",
                                             "P(glass)", hlines={"1/2": 0.5}))
        if "persistence_cg" in curves:
            body += rep.figure(
                f"live_persistence_{path.stem}.png",
                "Persistence of the structure the network sees: Pearson C(Γ(t0), Γ(t)) of "
                "the particle scores, bare and coarse-grained (on the first frame's positions)",
                lambda p, c=curves: plots.curves(
                    c["pick_time"], {"bare": c["persistence_bare"],
                                     "coarse-grained": c["persistence_cg"]},
                    p, "t", "C(Γ(t0), Γ(t))", hlines={"0": 0.0}))
        if "c_now" in curves:
            lab = "1−Γ" if FLIP.get(system, FLIP["kam"])["gamma"] else "Γ"
            body += rep.figure(
                f"live_gamma_vs_delta_{path.stem}.png",
                f"C({lab}(t), Δ(t)) and C({lab}(t0), Δ(t)) in one trajectory: Δ = |CRD| since "
                "t0 (one replica, not an isoconfigurational mean), both coarse-grained",
                lambda p, c=curves, lab=lab: plots.curves(
                    c["pick_time"], {f"C({lab}(t), Δ(t))": c["c_now"],
                                     f"C({lab}(t0), Δ(t))": c["c_start"]},
                    p, "t", "Pearson C", hlines={"0": 0.0}))
    rep.add("Live Grad-CAM — the network inside LAMMPS", body)


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
        for stale in run.glob(".report.html.*.tmp"):  # a build that was killed mid-write
            stale.unlink(missing_ok=True)
        return _build_report(run)


def _build_report(run: Path) -> Path:
    t0 = time.perf_counter()
    rep = Report(run)
    info = provenance(rep)
    system = info["system"]
    training_section(rep, system)
    significance_section(rep, system)
    attribution_section(rep, system)
    tables_section(rep, system)
    maps_section(rep, system)
    curve_figures(rep, system)
    cooling_section(rep)
    live_section(rep, system)
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
