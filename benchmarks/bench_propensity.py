"""Dynamic propensity benchmark (issues 4, 11): cost of the in-situ CRD at the log-spaced
cadence, memory vs the number of outputs, replica-steps/s on 1 and 2 ranks, the projected cost of
the paper's protocol (30 replicas x 3e8 steps at N = 2000), and the saving of the δ-target stop
(``-var delta_stop``) against the paper's fixed 3e8 steps at equal δ coverage.

The decks are generated from the shipped production deck (:mod:`benchmarks.decks`):

* **observed**: the production deck with its hooks timed (:mod:`benchmarks.hooks.propensity`),
  which also reduces over the universe the replica phase's wall time, the replica-steps and
  the peak RSS per rank, and writes them as JSON; LAMMPS/Python start-up is excluded.
* **baseline** (MD without observation): the generated no-Python deck, the same replicas
  (reference glass from a data file, the production run's velocity seeds, the same potential
  and thermostat), each one plain ``run nsteps post no``; its time is LAMMPS' loop time.

The overhead ratio is the observed replica's wall time (``run_replica``: the log-spaced
``run N upto`` segments, the gathers, the CRD and its Zarr writes) over the baseline's MD loop
time for the same replica. ``python -m benchmarks.run propensity`` or ``make bench``;
``GLASSCAM_BENCH_QUICK=1``: N = 400 and short replicas (a smoke run).

δ-target stop (``delta_stop``): a pilot and one follower replica (2 partitions x 1 rank) of a
glass at T = 1.5 T* (the model table's T*), run by the production deck with ``delta_stop`` =
the largest target (3; 1 in quick mode) and a dense log grid (10 % apart) up to a cap; the
steps at which the pilot's δ first reaches each of δ = 0.3, 1, 3 come from its stored rows.
The number of MD steps needed to reach a δ is intensive (it does not grow with N, finite-size
effects aside), so it is measured at a small N (256 quick, 400 full, 2 cores) and the cost at
N = 2000 is scaled from the measured steps/s by N (MD cost ∝ N). The saving is 3e8 / (the step
of the first output of the paper preset's grid, 64 log-spaced outputs up to 3e8, at which the
pilot's δ ≥ target). The glass is a quickly made one (cooled 0.6 → 0.05 over 2e4 steps, rate
≈ 5.5e-3 per τ, 5.5x the paper's): better annealed glasses age more slowly and need more steps.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import decks
from benchmarks.common import quick, run_lammps, write_result

PAPER = {"nreplicas": 30, "nsteps": 3e8}
PAPER_GRID = {"nsteps": 300_000_000, "noutputs": 64}  # the paper preset's output steps


def sizes() -> dict[str, Any]:
    if quick():
        return {"side": 20, "overhead": {"nsteps": 2000, "noutputs": 16, "reps": 1},
                "memory": {"nsteps": 1000, "noutputs": (8, 64)},
                "throughput": {"nreplicas": 2, "nsteps": 1000, "noutputs": 16},
                "delta_stop": {"side": 16, "target": 1.0, "cap": 3_000_000}}
    return {"side": 45,  # N = 2025 (the paper's N = 2000)
            "overhead": {"nsteps": 10000, "noutputs": 32, "reps": 2},
            "memory": {"nsteps": 2000, "noutputs": (8, 512)},
            "throughput": {"nreplicas": 2, "nsteps": 5000, "noutputs": 32},
            "delta_stop": {"side": 20, "target": 3.0, "cap": 30_000_000}}


def delta_stop_saving(tmpd: Path, side: int, target: float, cap: int) -> dict[str, Any]:
    """Steps the δ-target stop needs vs the paper's fixed 3e8 (module docstring)."""
    import math

    import numpy as np
    from glasscam.analysis.paper import DELTA_TARGETS
    from glasscam.insitu import systems
    from glasscam.insitu.cage import log_steps
    from glasscam.insitu.schema import open_propensity_store

    from glasscam.testing import make_reference_samples

    kam = systems.get("kam")
    temp = round(1.5 * kam.t_star, 4)
    samples = make_reference_samples(tmpd / "stop_samples.zarr", side=side, nsamples=1,
                                      not_done=(), nmelt=2000, ncool=20000, seed=11)
    noutputs = 1 + math.ceil(math.log(cap) / math.log(1.1))
    out = tmpd / "stop.zarr"
    work = tmpd / "stop.run"
    work.mkdir()
    variables = {"samples": samples, "configurations": "0,", "nreplicas": 2, "temp": temp,
                 "nsteps": cap, "noutputs": noutputs, "delta_stop": target, "out": out}
    r = run_lammps(decks.production_deck("kam", "propensity.in"), variables, work, np_=2,
                   partitions="2x1")
    store = open_propensity_store(out)
    steps = np.asarray(store["steps"][:])
    stop = int(store["stop"][0])
    pilot = np.asarray(store["crd"][0, 0, : stop + 1], dtype=np.float64).mean(axis=1)
    ensemble = np.asarray(store["delta"][0, : stop + 1])
    grid = log_steps(PAPER_GRID["nsteps"], PAPER_GRID["noutputs"])
    per_target = {}
    for t in [x for x in DELTA_TARGETS if x <= target]:
        hit = np.flatnonzero(pilot >= t)
        if hit.size == 0:
            per_target[str(t)] = {"reached": False}
            continue
        k = int(hit[0])
        s = int(steps[k])
        on_grid = int(grid[np.searchsorted(grid, s)]) if s <= grid[-1] else None
        per_target[str(t)] = {
            "reached": True,
            "pilot_output": k,
            "steps": s,
            "ensemble_delta_there": float(ensemble[k]),
            "steps_on_paper_grid": on_grid,
            "saving_vs_fixed_3e8": PAPER_GRID["nsteps"] / on_grid if on_grid else None,
        }
    # partition 0's log: its replica's `run upto` segments (1 rank = 1 core)
    rate = r.steps / r.loop_s if r.loop_s > 0 else float("nan")
    n = side * side
    rate_2000 = rate * n / 2000
    reached = per_target.get(str(target), {})
    stop_steps = reached.get("steps_on_paper_grid") or int(steps[stop])
    ns = PAPER["nreplicas"]
    return {
        "model": "kam", "temp": temp, "t_star": kam.t_star, "natoms": n, "target": target,
        "cap": cap, "noutputs": noutputs, "replicas": 2, "partitions": "2x1",
        "stop_output": stop, "stop_step": int(steps[stop]),
        "reached_by_ensemble": bool(store["reached"][0]),
        "pilot_delta_at_stop": float(pilot[stop]), "ensemble_delta_at_stop": float(ensemble[stop]),
        "per_target": per_target,
        "wall_s": round(r.wall_s, 2),
        "md_steps_per_s_per_core": round(rate, 1),
        "at_n2000": {
            "steps_per_s_per_core_scaled": round(rate_2000, 1),
            "core_hours_fixed_3e8": ns * PAPER_GRID["nsteps"] / rate_2000 / 3600,
            "core_hours_delta_stop": ns * stop_steps / rate_2000 / 3600,
            "per": f"one configuration, {ns} replicas",
        },
    }


def run_observed(samples: Path, out: Path, np_: int = 1, partitions: str | None = None,
                 **var: Any) -> dict[str, Any]:
    """The production deck, hooks timed; the JSON of benchmarks.hooks.propensity:finish."""
    work = out.parent / f"{out.stem}.run"
    work.mkdir()
    deck = decks.write(decks.instrumented_propensity(), work / "propensity_timed.in")
    timing = work / "timing.json"
    base = {"samples": samples, "sample": 0, "temp": 0.45, "out": out, "timing": timing, **var}
    r = run_lammps(deck, base, work, np_=np_, partitions=partitions)
    res = json.loads(timing.read_text())
    crd = [float(x) for x in re.findall(r"CRD\+write ([\d.]+) s over", r.output)]
    res["crd_write_s"] = crd
    return res


def run_baseline(samples: Path, out: Path, **var: Any) -> dict[str, Any]:
    """The generated no-Python deck (1 rank); the MD loop time of each replica."""
    work = out.parent / f"{out.stem}.run"
    work.mkdir()
    variables = {"samples": samples, "sample": 0, "temp": 0.45, "out": out, **var}
    data = decks.write_reference_data(decks.propensity_parameters(variables),
                                      work / "reference.data")
    deck = decks.write(decks.nopython_propensity(variables, data), work / "propensity_nopy.in")
    r = run_lammps(deck, variables, work)
    if out.exists():
        raise RuntimeError(f"the no-Python propensity deck wrote {out}")
    return {"replica_loop_s": [s for s, _ in r.loops], "steps": [n for _, n in r.loops]}


def main() -> None:
    from glasscam.testing import make_reference_samples

    size = sizes()
    side = size["side"]
    result: dict[str, Any] = {"natoms": side * side, "model": "kam", "temp": 0.45}
    with tempfile.TemporaryDirectory(prefix="bench_propensity_") as tmp:
        tmpd = Path(tmp)
        samples = make_reference_samples(
            tmpd / "s.zarr", side=side, nsamples=1, not_done=(), nmelt=1000, ncool=1000
        )
        n = 0

        def out() -> Path:
            nonlocal n
            n += 1
            return tmpd / f"p{n}.zarr"

        # 1. overhead of the CRD hooks at the log-spaced cadence (1 replica, 1 rank)
        oh = size["overhead"]
        with_crd, without, crd_cost = [], [], []
        for _ in range(oh["reps"]):
            kw = {"nreplicas": 1, "nsteps": oh["nsteps"], "noutputs": oh["noutputs"]}
            r = run_observed(samples, out(), **kw)
            with_crd.append(round(r["hooks"]["run_replica"]["seconds"], 4))
            crd_cost.append(r["crd_write_s"][0] / oh["noutputs"])
            b = run_baseline(samples, out(), **kw)
            if b["steps"] != [oh["nsteps"]]:
                raise RuntimeError(f"baseline ran {b['steps']} steps, expected {oh['nsteps']}")
            without.append(round(b["replica_loop_s"][0], 4))
        t_with, t_without = min(with_crd), min(without)
        result["overhead"] = {
            **oh,
            "wall_with_crd_s": with_crd,
            "wall_without_s": without,
            "ratio": t_with / t_without,
            "goal": 1.03,
            "per_output_s": min(crd_cost),
            "steps_per_s_without": oh["nsteps"] / t_without,
        }

        # 2. memory per rank vs number of outputs
        mem = {}
        for k in size["memory"]["noutputs"]:
            r = run_observed(samples, out(), nreplicas=1, nsteps=size["memory"]["nsteps"],
                             noutputs=k)
            mem[str(k)] = round(r["peak_rss_mib"], 1)
        result["peak_rss_mib_vs_noutputs"] = mem

        # 3. replica-steps/s on 1 and 2 ranks
        thr = {}
        kw = size["throughput"]
        thr["1 rank"] = round(run_observed(samples, out(), **kw)["replica_steps_per_s"], 1)
        thr["2 ranks, 2x1 partitions"] = round(
            run_observed(samples, out(), np_=2, partitions="2x1", **kw)["replica_steps_per_s"], 1
        )
        thr["2 ranks, 1 partition"] = round(
            run_observed(samples, out(), np_=2, **kw)["replica_steps_per_s"], 1
        )
        result["replica_steps_per_s"] = thr

        # 5. the δ-target stop vs the paper's fixed 3e8 steps (issue 11)
        result["delta_stop"] = delta_stop_saving(tmpd, **size["delta_stop"])

    # 4. the paper's protocol, per core (at the 1-rank rate and the best 2-rank rate per core)
    total = PAPER["nreplicas"] * PAPER["nsteps"]
    per_core = {
        "1 rank": thr["1 rank"],
        "2x1 partitions (per core)": thr["2 ranks, 2x1 partitions"] / 2,
    }
    result["paper_protocol"] = {
        **PAPER,
        "replica_steps": total,
        "core_hours": {k: total / v / 3600 for k, v in per_core.items()},
        "wall_days_on_30_cores_30x1": total / (30 * per_core["2x1 partitions (per core)"]) / 86400,
    }
    result["note"] = (
        "overhead.ratio: observed replica wall (run_replica of the production hooks: log-spaced "
        "run segments, gathers, CRD, Zarr writes) / MD loop time of the same replica in the "
        "generated no-Python deck (one plain run). replica_steps_per_s and peak RSS: reduced "
        "over the universe by benchmarks.hooks.propensity:finish (replica phase only). "
        "delta_stop: per_target[t].saving_vs_fixed_3e8 = 3e8 / the first step of the paper "
        "preset's 64-output grid at which the pilot's delta >= t (steps measured at natoms, "
        "intensive; cost at N = 2000 scaled by N); a quickly cooled glass (module docstring)."
    )
    write_result("propensity", result)


if __name__ == "__main__":
    main()
