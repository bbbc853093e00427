"""Dynamic propensity benchmark (issue 4): cost of the in-situ CRD at the log-spaced cadence,
memory vs the number of outputs, replica-steps/s on 1 and 2 ranks, and the projected cost of the
paper's protocol (30 replicas x 3e8 steps at N = 2000).

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


def sizes() -> dict[str, Any]:
    if quick():
        return {"side": 20, "overhead": {"nsteps": 2000, "noutputs": 16, "reps": 1},
                "memory": {"nsteps": 1000, "noutputs": (8, 64)},
                "throughput": {"nreplicas": 2, "nsteps": 1000, "noutputs": 16}}
    return {"side": 45,  # N = 2025 (the paper's N = 2000)
            "overhead": {"nsteps": 10000, "noutputs": 32, "reps": 2},
            "memory": {"nsteps": 2000, "noutputs": (8, 512)},
            "throughput": {"nreplicas": 2, "nsteps": 5000, "noutputs": 32}}


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
        "over the universe by benchmarks.hooks.propensity:finish (replica phase only)."
    )
    write_result("propensity", result)


if __name__ == "__main__":
    main()
