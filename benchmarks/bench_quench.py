"""Quench deck throughput: in-situ hooks on vs off, raw MD speed, samples/hour (`make bench`).

The decks are generated from the shipped production deck (:mod:`benchmarks.decks`); the
timing lives in benchmark-only hooks (:mod:`benchmarks.hooks.quench`), never in glasscam.
Everything is measured side by side in one invocation, on the same machine state:

* **hook overhead** (N = 2000, KAM, 1 rank): the quench deck with a shortened ramp (``rate``
  0.08: 9875 cooling steps + ``nequil`` 1000 per sample) run as ``off`` (the generated
  no-Python deck: the same MD, the same samples and seeds, no Python at all), ``production``
  (the production deck with its hooks timed: record every ``nrecord`` = 1000 steps, both
  snapshots gathered + gridized, the sample written) and ``stress`` (``production`` + gather
  every 100 steps a frame that a background thread gridizes, 64x64x2, and writes through
  zarr's API, one chunk per frame: :mod:`benchmarks.frames`). Each case runs with 1 and with
  3 samples; the difference is the marginal cost of a sample (steady-state throughput), the
  rest the once-per-process cost (Python start, imports, store creation), reported apart.
  Cases are interleaved ``repeats`` times; ratios are medians of paired runs, in wall time, in
  CPU time of the process tree (robust against other load, and it counts the writer thread's
  work) and in LAMMPS' MD loop time. A short ramp over-weights the per-sample costs (one
  snapshot pair per 11k steps instead of per 800k): production ratios are bounded by these.
* **raw MD steps/s** at N = 2000 with the no-Python deck, on 1 rank and on 2 ranks (one
  partition).
* **samples/hour**: the paper protocol (N = 2000, rate 1e-3, nequil 10000) from the measured
  steps/s; the demo preset measured directly with the shipped deck (2 partitions x 1 rank).

``GLASSCAM_BENCH_QUICK=1``: N = 500 and fewer samples (a smoke run; see benchmarks.common).
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from benchmarks import decks
from benchmarks.common import quick, run_lammps, write_result

EXTRA_SAMPLES = 2
STRESS_STRIDE = 100


def short_protocol() -> dict[str, Any]:
    if quick():
        return {"natoms": 500, "rate": 0.2, "nequil": 500, "nrecord": 500, "nthermo": 100000,
                "nsamples": 1, "grid": 32}
    return {"natoms": 2000, "rate": 0.08, "nequil": 1000, "nrecord": 1000, "nthermo": 100000,
            "nsamples": 1, "grid": 64}


def run_deck(case: str, variables: dict[str, Any], cwd: Path, np_: int = 1,
             partitions: str | None = None) -> dict[str, float]:
    """Run one case in ``cwd``; wall and CPU time, MD loop time, the hooks' self-timing.

    ``off``: the generated no-Python deck; ``production``/``stress``: the production deck with
    timed hooks (and the stress frames); ``shipped``: the production deck itself.
    """
    timing = cwd / "hook_timing.json"
    variables = dict(variables)
    if case == "off":
        deck = decks.write(decks.nopython_quench(variables), cwd / "quench_nopython.in")
    elif case in ("production", "stress"):
        deck = decks.write(decks.instrumented_quench(stress=case == "stress"),
                           cwd / f"quench_{case}.in")
        variables["timing"] = timing
        if case == "stress":
            variables.update(framestride=STRESS_STRIDE, frames=cwd / "frames.zarr")
    elif case == "shipped":
        deck = decks.production_deck("kam", "quench.in")
    else:
        raise ValueError(f"unknown case {case!r}")
    r = run_lammps(deck, variables, cwd, np_=np_, partitions=partitions)
    hooks = json.loads(timing.read_text()) if timing.exists() else {}

    def seconds(*names: str) -> float:
        return sum(hooks.get(k, {}).get("seconds", 0.0) for k in names)

    return {"wall_s": r.wall_s, "cpu_s": r.cpu_s,
            "loop_s": 0.0 if partitions else r.loop_s, "steps": 0 if partitions else r.steps,
            "hook_in_loop_s": seconds("record", "frame"),
            "hook_between_runs_s": seconds("next", "start", "snapshot"),
            "hook_setup_s": seconds("setup", "frames"),
            "writer_thread_cpu_s": seconds("frames_thread_cpu"),
            "helper_threads_cpu_s": seconds("helper_threads_cpu"),
            "frames_drain_s": seconds("frames_drain"),
            "frames_written": hooks.get("frames_written", {}).get("frames", 0)}


def overhead(repeats: int, work: Path) -> dict[str, Any]:
    """Hook off / production / stress, interleaved; marginal cost per sample and fixed cost."""
    short_vars = short_protocol()
    cases = ("off", "production", "stress")
    short: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
    long: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
    for r in range(repeats):
        for case in cases:
            for n, runs in ((1, short), (1 + EXTRA_SAMPLES, long)):
                d = work / f"{case}{r}n{n}"
                d.mkdir()
                runs[case].append(run_deck(
                    case, {**short_vars, "nsamples": n, "out": d / "samples.zarr"}, d))

    def marginal(case: str, key: str) -> list[float]:
        return [(b[key] - a[key]) / EXTRA_SAMPLES
                for a, b in zip(short[case], long[case], strict=True)]

    out: dict[str, Any] = {"protocol": short_vars, "stress_frame_every_steps": STRESS_STRIDE,
                           "repeats": repeats, "samples_per_long_run": 1 + EXTRA_SAMPLES}
    for case in cases:
        out[f"{case}_md_steps_per_s"] = round(
            statistics.median(x["steps"] / x["loop_s"] for x in long[case]), 1)
        out[f"{case}_wall_per_sample_s"] = round(statistics.median(marginal(case, "wall_s")), 3)
        out[f"{case}_cpu_per_sample_s"] = round(statistics.median(marginal(case, "cpu_s")), 3)
        fixed = [a["wall_s"] - m for a, m in zip(short[case], marginal(case, "wall_s"),
                                                 strict=True)]
        out[f"{case}_fixed_wall_s"] = round(statistics.median(fixed), 3)
    for case in ("production", "stress"):
        for key, name in (("wall_s", "wall"), ("cpu_s", "cpu")):
            out[f"ratio_{case}_{name}_per_sample"] = round(statistics.median(
                a / b for a, b in zip(marginal(case, key), marginal("off", key), strict=True)), 4)
        out[f"ratio_{case}_md_loop"] = round(statistics.median(
            a["loop_s"] / b["loop_s"] for a, b in zip(long[case], long["off"], strict=True)), 4)
    # self-timed: time spent inside the hooks, measured by the timed hooks in the same process
    nlong = 1 + EXTRA_SAMPLES
    off_sample = statistics.median(marginal("off", "wall_s"))
    for case in ("production", "stress"):
        runs = long[case]
        out[f"selftimed_{case}_ratio_md_loop"] = round(statistics.median(
            x["loop_s"] / (x["loop_s"] - x["hook_in_loop_s"]) for x in runs), 4)
        per_sample = statistics.median(
            (x["hook_in_loop_s"] + x["hook_between_runs_s"]) / nlong for x in runs)
        out[f"selftimed_{case}_hook_s_per_sample"] = round(per_sample, 4)
        out[f"selftimed_{case}_ratio_per_sample"] = round((off_sample + per_sample) / off_sample,
                                                          4)
    ncool = decks.quench_parameters(short_vars)["deck"]["ncool"]
    frames_per_sample = ncool // STRESS_STRIDE + 1
    for x in long["stress"]:
        if x["frames_written"] != nlong * frames_per_sample:
            raise RuntimeError(f"stress path wrote {x['frames_written']} frames, expected "
                               f"{nlong * frames_per_sample}")
    out["stress_frames_per_sample"] = frames_per_sample
    # the writer's CPU: all threads but LAMMPS' (the writer thread and zarr's IO threads, where
    # zarr does its writes), less the same in production (zarr writing the samples)
    out["stress_writer_thread_cpu_ms_per_frame"] = round(1e3 * statistics.median(
        s["helper_threads_cpu_s"] - p["helper_threads_cpu_s"]
        for s, p in zip(long["stress"], long["production"], strict=True)
    ) / (nlong * frames_per_sample), 3)
    out["stress_writer_own_thread_cpu_ms_per_frame"] = round(1e3 * statistics.median(
        x["writer_thread_cpu_s"] for x in long["stress"]) / (nlong * frames_per_sample), 3)
    out["stress_hook_ms_per_frame"] = round(1e3 * statistics.median(
        x["hook_in_loop_s"] for x in long["stress"]) / (nlong * frames_per_sample), 3)
    out["stress_frames_drain_s"] = round(statistics.median(
        x["frames_drain_s"] for x in long["stress"]), 4)
    out["stress_frame_writer"] = ("zarr API: one slice assignment per run of consecutive "
                                  "frames, one uncompressed chunk per frame; switch interval "
                                  "left at the interpreter's default")
    out["goal_production_ratio"] = 1.02
    out["goal_stress_ratio"] = 1.03
    return out


def raw_speed(work: Path) -> dict[str, Any]:
    res = {}
    for np_ in (1, 2):
        d = work / f"raw{np_}"
        d.mkdir()
        r = run_deck("off", {**short_protocol(), "out": d / "x.zarr"}, d, np_=np_)
        res[f"steps_per_s_{np_}rank"] = round(r["steps"] / r["loop_s"], 1)
    return res


def _preset(name: str) -> dict[str, Any]:
    from glasscam.decks import inputs_dir

    return tomllib.loads((inputs_dir() / "presets" / f"{name}.toml").read_text())["quench"]


def demo(work: Path, nsamples: int = 4) -> dict[str, Any]:
    preset = _preset("demo")
    variables = {**preset, "nsamples": nsamples}
    d = work / "demo"
    d.mkdir()
    r = run_deck("shipped", {**variables, "out": d / "samples.zarr"}, d, np_=2,
                 partitions="2x1")
    per_sample = r["wall_s"] / nsamples
    return {
        "demo_protocol": variables,
        "demo_wall_s": round(r["wall_s"], 2),
        "demo_samples_per_hour_2x1": round(3600 / per_sample, 1),
        "demo_wall_per_sample_s_2x1": round(per_sample, 2),
        "demo_preset_estimated_minutes": round(preset["nsamples"] * per_sample / 60, 1),
    }


def paper(steps_per_s: dict[str, float]) -> dict[str, Any]:
    preset = _preset("paper")
    p = decks.quench_parameters(preset)
    steps = p["nequil"] + p["deck"]["ncool"]
    one = steps / steps_per_s["steps_per_s_1rank"]
    two = steps / steps_per_s["steps_per_s_2rank"]
    return {
        "paper_md_steps_per_sample": steps,
        "paper_hours_per_sample_1rank": round(one / 3600, 3),
        "paper_samples_per_hour_1rank": round(3600 / one, 2),
        "paper_samples_per_hour_2rank_partition": round(3600 / two, 2),
        "paper_core_hours_5000_samples": round(5000 * one / 3600, 0),
    }


def main() -> None:
    repeats = int(os.environ.get("GLASSCAM_BENCH_REPEATS", "1" if quick() else "2"))
    natoms = short_protocol()["natoms"]
    with tempfile.TemporaryDirectory(prefix="bench_quench_") as tmp:
        work = Path(tmp)
        result: dict[str, Any] = {"natoms": natoms}
        result.update(overhead(repeats, work))
        speed = raw_speed(work)
        result.update(speed)
        result.update(paper(speed))
        result.update(demo(work, nsamples=2 if quick() else 4))
    result["note"] = (
        "ratios: hook on / hook off for the same MD (median of paired, interleaved runs); "
        "hook off = the no-Python deck generated from the production deck (same samples, "
        "seeds and MD), hook on = the production deck with its hooks timed by "
        "benchmarks/hooks. *_per_sample: marginal wall or CPU time of one more sample, from "
        f"runs of 1 and {1 + EXTRA_SAMPLES} samples (MD, records, snapshots, gridize, Zarr "
        "writes; the once-per-process costs - Python start, imports, store creation - are "
        "*_fixed_wall_s); cpu = user+sys of the process tree (includes the stress path's "
        "writer thread and zarr's IO threads). stress_writer_thread_cpu_ms_per_frame: CPU of "
        "the threads other than LAMMPS' (writer + zarr IO), stress less production, per frame; "
        "*_own_thread_*: the writer thread alone (zarr's IO threads do most of the writing). "
        "md_loop: LAMMPS loop time of the MD runs (fix callbacks included). "
        f"paper_*: from the {natoms}-atom steps/s. The benchmark ramp is faster than the "
        "paper's, so per-sample costs weigh more here."
    )
    write_result("quench", result)


if __name__ == "__main__":
    main()
