"""Which attribution sees the dynamics? Every attribution store of a run ranked with the
significance machinery of Γ, and the sanity checks of Adebayo et al. (2018) (issue 16).

The stores are ``gradcam.zarr`` (the paper's Grad-CAM) and every ``gradcam_*.zarr`` beside it
(``glasscam gradcam --method/--layer/--randomize``; method, layer and randomisation are read
from each store's ``parameters``). Each store's particle scores are scored exactly as Γ is in
``significance.csv`` (:func:`glasscam.analysis.correlate.judge.analyse_configuration` and
:func:`~glasscam.analysis.correlate.judge.summarise`): per configuration of every propensity
store, C = Pearson(1 − X̄_ξ, Δ̄) maximised over the ξ grid (and over δ ≥ ``delta_min`` for
C_max), its torus-translation null repeating those maxima, the replica × configuration
bootstrap CI of the mean over configurations, and the noise ceiling of the replicas. Every
method is oriented like Γ (1 − score, fixed before looking, as for Γ): a method whose score goes
with mobility shows a negative C. The random draws are seeded afresh for every store, so every
method meets the same translations (paired comparison); the paper Grad-CAM's row can therefore
differ from ``significance.csv`` in the last digits of p and the CI.

``tables/attribution_ranking.csv`` — one row per trained-network store × temperature × δ target
(δ ≈ 1, and the maximum over δ ≥ delta_min): C mean [95 % CI], p, null mean and 95th
percentile, noise ceiling (at the output where the store's own C_max is reached, so it
differs between stores when their δ* differ) and C / ceiling; ``p_holm``: p adjusted by Holm's
step-down method over the stores ranked at the same temperature and δ target (picking the best
of K methods is a selection too: a single p < 0.05 among 18 methods is what chance gives); the
agreement with the paper's Grad-CAM (Spearman ρ
of the bare particle scores, mean ± std over the test samples both stores hold, both classes,
samples the paper's network misclassifies left out); the cost per image of the store's last
run (``cost`` attribute: ms per image for every network of the ensemble, device, threads);
``rank`` orders the stores by C at δ ≈ 1 when every store's configurations reached it, else by
C_max (``ranked_by``). Without a propensity store the C columns are empty and the agreement and
cost remain.

``tables/attribution_sanity.csv`` — one row per randomised store (``cascade:<module>``: the
weights re-drawn from the output layer down to that module; ``shuffled-labels``: networks
trained on permuted labels) × temperature: ρ between its scores and those of the same method ×
layer of the trained network (mean over samples; a sample where either map is constant, e.g.
an all-zero CAM, counts in ``constant_maps`` and not in the mean; all constant: ρ = 0), and its
C with Δ with p against the null. A randomised store **passes** when |ρ| < :data:`RHO_MAX`
(the map changed; an inverted map has not) and its C is not significant (p ≥ :data:`ALPHA`:
it fell to the null); the ``verdict`` names what failed. A method passes the check when all its
randomised stores pass; the report says which fail.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from glasscam.analysis.correlate import judge
from glasscam.analysis.correlate.measures import spearman

#: a randomised map must differ from the trained one: mean rank correlation below this
RHO_MAX = 0.5
#: a randomised C "falls to the null" when its p is at least this
ALPHA = 0.05
#: the δ target the ranking is made at (the maximum over δ ≥ delta_min where it is not reached)
DELTA_TARGET = 1.0

RANKING_COLUMNS = (
    "rank", "ranked_by", "method", "layer", "store", "temperature", "delta_target", "reached",
    "delta_reached", "configurations", "xi", "c_mean", "ci_low", "ci_high", "p_value",
    "p_holm", "null_mean", "null_p95", "noise_ceiling", "fraction_of_ceiling",
    "agreement_with_gradcam",
    "agreement_std", "agreement_samples", "ms_per_sample", "cost_device", "cost_threads",
    "members", "note",
)
SANITY_COLUMNS = (
    "method", "layer", "randomization", "store", "trained_store", "rank_correlation",
    "rank_correlation_std", "samples", "constant_maps", "temperature", "delta_target",
    "c_mean", "ci_low", "ci_high", "p_value", "null_p95", "trained_c_mean", "trained_p_value",
    "passes", "verdict",
)


@dataclass
class AttributionStore:
    """One gradcam store of a run folder, described by its parameters."""

    path: Path
    root: Any
    method: str
    layer: str
    randomize: str | None
    cost: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.layer

    @property
    def label(self) -> str:
        return self.method if self.layer == "input" else f"{self.method} {self.layer}"


def find_stores(run: str | Path, natoms: int | None = None) -> list[AttributionStore]:
    """``gradcam.zarr`` and every ``gradcam_*.zarr`` of a run folder (each opened and
    validated; a store of another N is an error naming it)."""
    from glasscam.analysis.correlate.tables import CorrelateInputError
    from glasscam.insitu.schema import open_gradcam_store

    run = Path(run)
    paths = [run / "gradcam.zarr"] + sorted(run.glob("gradcam_*.zarr"))
    stores = []
    for path in paths:
        if not path.is_dir():
            continue
        root = open_gradcam_store(path)
        params = dict(root.attrs["parameters"])
        if natoms is not None and int(params["natoms"]) != natoms:
            raise CorrelateInputError(
                f"{path}: parameter 'natoms' is {params['natoms']}, but the samples store has "
                f"N = {natoms}")
        stores.append(AttributionStore(
            path=path, root=root, method=str(params.get("method", "gradcam")),
            layer=str(params.get("layer", "act3")), randomize=params.get("randomize"),
            cost=dict(root.attrs.get("cost", {}) or {})))
    return stores


def has_rivals(run: str | Path) -> bool:
    """Whether the run folder holds attribution stores beside ``gradcam.zarr``."""
    return any(p.is_dir() for p in Path(run).glob("gradcam_*.zarr"))


# ---- scores ---------------------------------------------------------------------------------


def _gamma(store: AttributionStore, cls: str, sample: int) -> np.ndarray:
    from glasscam.analysis.correlate.tables import CorrelateInputError

    if not bool(store.root[f"{cls}/done"][sample]):
        raise CorrelateInputError(
            f"{store.path}: field '{cls}/done' is False for sample {sample}; run `glasscam "
            f"gradcam` with the same --method/--layer/--randomize for it")
    gamma = np.asarray(store.root[f"{cls}/gamma"][sample], dtype=np.float64)
    if not np.all(np.isfinite(gamma)):
        raise CorrelateInputError(f"{store.path}: field '{cls}/gamma[{sample}]' contains NaN "
                                  "or inf")
    return gamma


def significance_rows(inp, store: AttributionStore, opts) -> list[dict[str, Any]]:
    """The Γ rows of :func:`judge.summarise` for this store's scores, one list per
    temperature (every propensity store), the draws seeded afresh (same for every store).
    A store whose scores are constant for some configuration gets a row saying so."""
    from glasscam.analysis.dynamics.propensity import open_configurations

    jopts = opts.significance_options()
    out: list[dict[str, Any]] = []
    for path in inp.propensity_paths:
        confs = open_configurations(path)
        rng = np.random.default_rng(opts.seed)
        results = []
        for conf in confs:
            fields = {"gamma": _gamma(store, "glass", int(conf.sample))}
            results.append(judge.analyse_configuration(conf, fields, inp.system, jopts, rng))
        rows = [r for r in judge.summarise(results, confs, jopts, rng)
                if r["indicator"] == judge.SYMBOLS["gamma"]]
        if not rows:  # every configuration's map constant: no correlation at all
            temp = float(confs[0].temperature) if confs else float("nan")
            rows = [{"temperature": temp, "delta_target": t, "reached": False,
                     "configurations": 0, "constant": True}
                    for t in (DELTA_TARGET, "max")]
        out += [r for r in rows if r["delta_target"] in (DELTA_TARGET, "max")]
    return out


def _mean_rho(a: AttributionStore, b: AttributionStore, samples: dict[str, np.ndarray],
              ) -> tuple[float, float, int, int]:
    """Mean and std of Spearman ρ between the two stores' scores over ``samples`` (per class),
    the number of samples used and the number where a map is constant."""
    values, constant = [], 0
    for cls, idx in samples.items():
        for s in idx:
            rho = spearman(_gamma(a, cls, int(s)), _gamma(b, cls, int(s)))
            if np.isfinite(rho):
                values.append(rho)
            else:
                constant += 1
    if not values:
        return (0.0 if constant else float("nan")), float("nan"), 0, constant
    return float(np.mean(values)), float(np.std(values)), len(values), constant


def common_samples(inp, stores: Sequence[AttributionStore], split: str,
                   reference: AttributionStore | None = None) -> dict[str, np.ndarray]:
    """Samples of ``split`` done in every store (per class); those ``reference`` (the
    paper's store) marks misclassified are left out."""
    from glasscam.analysis.stage import select_samples

    out = {}
    for cls in ("glass", "liquid"):
        sel = select_samples(inp.samples, cls, split, str(inp.samples_path))
        keep = np.ones(len(sel), dtype=bool)
        for store in stores:
            keep &= np.asarray(store.root[f"{cls}/done"][:], dtype=bool)[sel]
        if reference is not None:
            keep &= np.asarray(reference.root[f"{cls}/correct"][:], dtype=bool)[sel]
        out[cls] = sel[keep]
    return out


# ---- the two tables --------------------------------------------------------------------------


def _f(row: dict[str, Any], key: str) -> float:
    try:
        return float(row.get(key, float("nan")))
    except (TypeError, ValueError):
        return float("nan")


def ranking(inp, opts, echo: Callable[[str], None] = print,
            stores: Sequence[AttributionStore] | None = None,
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of ``attribution_ranking.csv`` and ``attribution_sanity.csv`` (dicts keyed by
    :data:`RANKING_COLUMNS` / :data:`SANITY_COLUMNS`)."""
    stores = list(stores) if stores is not None else find_stores(inp.run, inp.natoms)
    trained = [s for s in stores if s.randomize is None]
    by_key = {s.key: s for s in trained}
    paper = by_key.get(("gradcam", "act3"))
    sig: dict[Path, list[dict[str, Any]]] = {}
    for store in stores:
        sig[store.path] = significance_rows(inp, store, opts) if inp.propensity_paths else []
        echo(f"correlate: attribution {store.path.name} scored")
    rank_rows: list[dict[str, Any]] = []
    for store in trained:
        agree = (float("nan"), float("nan"), 0, 0)
        if paper is not None and store is not paper:
            agree = _mean_rho(store, paper, common_samples(inp, [store, paper], opts.split,
                                                           paper))
        elif store is paper:
            agree = (1.0, 0.0, 0, 0)
        base = {
            "method": store.method, "layer": store.layer, "store": store.path.name,
            "agreement_with_gradcam": agree[0], "agreement_std": agree[1],
            "agreement_samples": agree[2],
            "ms_per_sample": store.cost.get("ms_per_sample", float("nan")),
            "cost_device": store.cost.get("device", ""),
            "cost_threads": store.cost.get("threads", ""),
            "members": int(dict(store.root.attrs["parameters"]).get("members", 1)),
        }
        rows = sig[store.path] or [{"temperature": float("nan"), "delta_target": "none",
                                    "reached": False, "configurations": 0,
                                    "no_propensity": True}]
        for r in rows:
            note = ""
            if r.get("constant"):
                note = "constant map for every configuration: no correlation"
            elif r.get("no_propensity"):
                note = "no propensity store: agreement and cost only"
            elif not r["reached"]:
                note = "δ target not reached by every configuration"
            ceiling = _f(r, "noise_ceiling")
            rank_rows.append({
                **base, "temperature": r["temperature"], "delta_target": r["delta_target"],
                "reached": bool(r["reached"]), "delta_reached": _f(r, "delta_reached"),
                "configurations": r.get("configurations", 0), "xi": _f(r, "xi"),
                "c_mean": _f(r, "c_mean"), "ci_low": _f(r, "ci_low"),
                "ci_high": _f(r, "ci_high"), "p_value": _f(r, "p_value"),
                "null_mean": _f(r, "null_mean"), "null_p95": _f(r, "null_p95"),
                "noise_ceiling": ceiling,
                "fraction_of_ceiling": (_f(r, "c_mean") / ceiling
                                        if np.isfinite(ceiling) and ceiling > 0 else float("nan")),
                "note": note,
            })
    _assign_ranks(rank_rows)
    _holm(rank_rows)
    sanity_rows: list[dict[str, Any]] = []
    for store in stores:
        if store.randomize is None:
            continue
        ref = by_key.get(store.key)
        if ref is None:
            rho = (float("nan"), float("nan"), 0, 0)
        else:
            rho = _mean_rho(store, ref, common_samples(inp, [store, ref], opts.split))
        ref_rows = {(r["temperature"], r["delta_target"]): r
                    for r in (sig.get(ref.path, []) if ref is not None else [])}
        rows = _primary_rows(sig[store.path]) or [{"temperature": float("nan"),
                                                   "delta_target": "none", "reached": False}]
        for r in rows:
            tr = ref_rows.get((r["temperature"], r["delta_target"]), {})
            passes, verdict = judge_sanity(rho[0], r, tr, ref is not None)
            sanity_rows.append({
                "method": store.method, "layer": store.layer, "randomization": store.randomize,
                "store": store.path.name, "trained_store": ref.path.name if ref else "",
                "rank_correlation": rho[0], "rank_correlation_std": rho[1], "samples": rho[2],
                "constant_maps": rho[3], "temperature": r["temperature"],
                "delta_target": r["delta_target"], "c_mean": _f(r, "c_mean"),
                "ci_low": _f(r, "ci_low"), "ci_high": _f(r, "ci_high"),
                "p_value": _f(r, "p_value"), "null_p95": _f(r, "null_p95"),
                "trained_c_mean": _f(tr, "c_mean"), "trained_p_value": _f(tr, "p_value"),
                "passes": passes, "verdict": verdict,
            })
    return rank_rows, sanity_rows


def _primary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per temperature, the δ ≈ 1 row where it was reached, else the C_max row."""
    out = []
    for temp in dict.fromkeys(r["temperature"] for r in rows):
        mine = [r for r in rows if r["temperature"] == temp]
        at = [r for r in mine if r["delta_target"] == DELTA_TARGET and r["reached"]]
        out.append(at[0] if at else next((r for r in mine if r["delta_target"] == "max"),
                                         mine[0]))
    return out


def judge_sanity(rho: float, row: dict[str, Any], trained: dict[str, Any], have_ref: bool,
                 ) -> tuple[bool, str]:
    """(passes, one sentence): the map must have changed (|ρ| < RHO_MAX: a map that only
    changed sign has not changed) and its C must have fallen to the null (p ≥ ALPHA, or a
    constant map)."""
    if not have_ref:
        return False, ("no trained store of this method and layer to compare with: run it "
                       "without --randomize too")
    problems = []
    if not np.isfinite(rho):
        problems.append("no sample to compare")
    elif abs(rho) >= RHO_MAX:  # an inverted map has not changed: |ρ|
        problems.append(f"the map survives the randomisation (rank correlation with the "
                        f"trained map {rho:.2f}, |ρ| >= {RHO_MAX})")
    p = _f(row, "p_value")
    if row.get("constant"):
        null = "its map is constant (no correlation with Δ)"
    elif row.get("delta_target") == "none":
        null = "no propensity store: only the map comparison is checked"
    elif np.isfinite(p) and p < ALPHA:
        problems.append(f"its C with Δ = {_f(row, 'c_mean'):.2f} is still significant "
                        f"(p = {p:.2g} < {ALPHA})")
        null = ""
    else:
        null = f"its C with Δ fell to the null (p = {p:.2g})"
    if problems:
        return False, "FAILS: " + "; ".join(problems) + "."
    note = ""
    tp = _f(trained, "p_value")
    if np.isfinite(tp) and tp >= ALPHA:
        note = (" (the trained map's own C is not significant either, so the null part of "
                "the check says little)")
    return True, f"passes: the map changed (ρ = {rho:.2f}) and {null}{note}."


def _temperature_key(value: Any) -> Any:
    return "none" if isinstance(value, float) and np.isnan(value) else value


def _assign_ranks(rows: list[dict[str, Any]]) -> None:
    """``rank`` of each store per temperature: by C at δ ≈ 1 when every store reached it,
    else by C_max (NaN last)."""
    for temp in dict.fromkeys(_temperature_key(r["temperature"]) for r in rows):
        mine = [r for r in rows if _temperature_key(r["temperature"]) == temp]
        at1 = [r for r in mine if r["delta_target"] == DELTA_TARGET]
        use = DELTA_TARGET if at1 and all(r["reached"] for r in at1) else "max"
        primary = [r for r in mine if r["delta_target"] == use]
        order = sorted(primary, key=lambda r: (not np.isfinite(r["c_mean"]),
                                               -r["c_mean"] if np.isfinite(r["c_mean"]) else 0))
        rank_of = {r["store"]: k + 1 for k, r in enumerate(order)}
        for r in mine:
            r["rank"] = rank_of.get(r["store"], "")
            r["ranked_by"] = (f"C at delta ~ {DELTA_TARGET:g}" if use == DELTA_TARGET
                              else "C_max" if primary else "")


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN stays NaN, out of the
    family)."""
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * p[i]))
        out[i] = running
    return out


def _holm(rows: list[dict[str, Any]]) -> None:
    """``p_holm`` of every row: Holm over the rows of the same temperature and δ target."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((_temperature_key(r["temperature"]), str(r["delta_target"])),
                          []).append(r)
    for family in groups.values():
        for r, p in zip(family, holm([r["p_value"] for r in family]), strict=True):
            r["p_holm"] = float(p)


def method_verdicts(sanity_rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """One sentence per method × layer: passes every sanity check, or which fail."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in sanity_rows:
        out.setdefault((r["method"], r["layer"]), []).append(r)
    verdicts = {}
    for key, rows in out.items():
        failed = [r for r in rows if not _truthy(r["passes"])]
        label = key[0] if key[1] == "input" else f"{key[0]} ({key[1]})"
        if failed:
            verdicts[key] = (f"{label} FAILS the sanity check under "
                             + ", ".join(sorted({str(r['randomization']) for r in failed}))
                             + ": " + " ".join(str(r["verdict"]) for r in failed[:1]))
        else:
            verdicts[key] = (f"{label} passes the sanity check under "
                             + ", ".join(sorted({str(r['randomization']) for r in rows})) + ".")
    return verdicts


def _truthy(value: Any) -> bool:
    return value is True or str(value) == "True"


def write_tables(inp, opts, tables: Path, echo: Callable[[str], None] = print) -> list[Path]:
    """Write ``attribution_ranking.csv`` (and ``attribution_sanity.csv`` when randomised
    stores exist) under ``tables``; return their paths."""
    from glasscam.analysis.correlate.tables import _write_csv

    rank_rows, sanity_rows = ranking(inp, opts, echo)
    rank_rows.sort(key=lambda r: (str(r["temperature"]), r["rank"] if r["rank"] != "" else 1e9,
                                  str(r["delta_target"])))
    written = [_write_csv(tables / "attribution_ranking.csv", RANKING_COLUMNS,
                          [[r.get(c, "") for c in RANKING_COLUMNS] for r in rank_rows])]
    if sanity_rows:
        written.append(_write_csv(tables / "attribution_sanity.csv", SANITY_COLUMNS,
                                  [[r.get(c, "") for c in SANITY_COLUMNS] for r in sanity_rows]))
        for sentence in method_verdicts(sanity_rows).values():
            echo(f"correlate: sanity check: {sentence}")
    return written
