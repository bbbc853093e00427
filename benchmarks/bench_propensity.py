"""Dynamic propensity benchmark (issue 4): cost of the in-situ CRD at the log-spaced cadence,
memory vs the number of outputs, replica-steps/s on 1 and 2 ranks, and the projected cost of the
paper's protocol (30 replicas x 3e8 steps at N = 2000).

Numbers come from the log lines of ``glasscam.insitu.isoconfigurational`` (wall time of each replica's MD incl.
the CRD hooks, peak RSS per rank, replica-steps/s over the replica phase), so LAMMPS/Python
start-up is excluded. ``python -m benchmarks.run propensity`` or ``make bench``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import write_result

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DECK = REPO / "inputs" / "kam" / "propensity.in"

SIDE = 45  # N = 2025 (the paper's N = 2000)
OVERHEAD = {"nsteps": 10000, "noutputs": 32, "reps": 2}
PAPER = {"nreplicas": 30, "nsteps": 3e8}


def run_deck(samples: Path, out: Path, np_: int = 1, partitions: str | None = None, **var) -> str:
    cmd = [str(BIN / "mpirun"), "-np", str(np_)] if np_ > 1 or partitions else []
    cmd += [str(BIN / "lmp"), "-nocite", "-log", "none", "-screen", "none"]
    if partitions:
        cmd += ["-partition", partitions]
    cmd += ["-in", str(DECK)]
    base = {"samples": samples, "sample": 0, "temp": 0.45, "out": out, **var}
    for k, v in base.items():
        cmd += ["-var", k, str(v)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=out.parent, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return proc.stdout


def parse(out: str) -> dict[str, Any]:
    rep = [float(x) for x in re.findall(r"replica \d+ .*?: \d+ steps in ([\d.]+) s", out)]
    crd = [float(x) for x in re.findall(r"CRD\+write ([\d.]+) s over", out)]
    m = re.search(
        r"timing: (\d+) replica-steps in ([\d.]+) s wall \(([\d.]+) replica-steps/s\).*"
        r"peak RSS per rank ([\d.]+) MiB",
        out,
    )
    res: dict[str, Any] = {"replica_wall_s": rep, "crd_write_s": crd}
    if m:
        res.update(
            replica_steps=int(m.group(1)),
            phase_wall_s=float(m.group(2)),
            replica_steps_per_s=float(m.group(3)),
            peak_rss_mib=float(m.group(4)),
        )
    return res


def main() -> None:
    from glasscam.testing import make_reference_samples

    result: dict[str, Any] = {"natoms": SIDE * SIDE, "model": "kam", "temp": 0.45}
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        samples = make_reference_samples(
            tmpd / "s.zarr", side=SIDE, nsamples=1, not_done=(), nmelt=1000, ncool=1000
        )
        n = 0

        def out() -> Path:
            nonlocal n
            n += 1
            return tmpd / f"p{n}.zarr"

        # 1. overhead of the CRD hooks at the log-spaced cadence (1 replica, 1 rank)
        with_crd, without = [], []
        crd_cost = []
        for _ in range(OVERHEAD["reps"]):
            kw = {"nreplicas": 1, "nsteps": OVERHEAD["nsteps"], "noutputs": OVERHEAD["noutputs"]}
            r = parse(run_deck(samples, out(), **kw))
            with_crd.append(r["replica_wall_s"][0])
            crd_cost.append(r["crd_write_s"][0] / OVERHEAD["noutputs"])
            r = parse(run_deck(samples, out(), observe="no", **kw))
            without.append(r["replica_wall_s"][0])
        t_with, t_without = min(with_crd), min(without)
        result["overhead"] = {
            **OVERHEAD,
            "wall_with_crd_s": with_crd,
            "wall_without_s": without,
            "ratio": t_with / t_without,
            "goal": 1.03,
            "per_output_s": min(crd_cost),
            "steps_per_s_without": OVERHEAD["nsteps"] / t_without,
        }

        # 2. memory per rank vs number of outputs
        mem = {}
        for k in (8, 512):
            r = parse(run_deck(samples, out(), nreplicas=1, nsteps=2000, noutputs=k))
            mem[str(k)] = r["peak_rss_mib"]
        result["peak_rss_mib_vs_noutputs"] = mem

        # 3. replica-steps/s on 1 and 2 ranks
        thr = {}
        kw = {"nreplicas": 2, "nsteps": 5000, "noutputs": 32}
        thr["1 rank"] = parse(run_deck(samples, out(), **kw))["replica_steps_per_s"]
        thr["2 ranks, 2x1 partitions"] = parse(
            run_deck(samples, out(), np_=2, partitions="2x1", **kw)
        )["replica_steps_per_s"]
        thr["2 ranks, 1 partition"] = parse(run_deck(samples, out(), np_=2, **kw))[
            "replica_steps_per_s"
        ]
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
    write_result("propensity", result)


if __name__ == "__main__":
    main()
