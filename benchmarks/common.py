"""Helpers shared by the benchmarks: machine description, result files, running ``lmp``.

Environment (``python -m benchmarks.run --quick --results DIR`` sets them):

* ``GLASSCAM_BENCH_QUICK=1`` — reduced sizes (a smoke run of every code path in a minute or
  so); its numbers are not the committed ones.
* ``GLASSCAM_BENCH_RESULTS=DIR`` — where ``<name>.json`` goes; default ``benchmarks/results``
  (the committed results), or a temporary folder for a quick run: a reduced-size run never
  overwrites the committed files.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE = Path(__file__).resolve().parent
RESULTS = PACKAGE / "results"
BIN = Path(sys.executable).parent
LOOP = re.compile(r"Loop time of ([0-9.eE+-]+) on (\d+) procs for (\d+) steps")


def quick() -> bool:
    """Reduced sizes (``GLASSCAM_BENCH_QUICK``)."""
    return os.environ.get("GLASSCAM_BENCH_QUICK", "").strip().lower() not in ("", "0", "no")


def results_dir() -> Path:
    """Where the result files go (see the module docstring)."""
    chosen = os.environ.get("GLASSCAM_BENCH_RESULTS", "").strip()
    if chosen:
        return Path(chosen)
    if quick():
        return Path(tempfile.gettempdir()) / "glasscam-bench-quick"
    return RESULTS


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = ""
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": commit,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_result(name: str, result: dict[str, Any]) -> Path:
    """Write ``<results_dir()>/<name>.json`` (with the machine) and print it."""
    folder = results_dir()
    if quick() and folder.resolve() == RESULTS.resolve():
        raise RuntimeError(f"a quick (reduced-size) run must not overwrite {RESULTS}: "
                           "choose another GLASSCAM_BENCH_RESULTS")
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), **({"quick": True} if quick() else {}),
               **result}
    path = folder / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload, indent=2))
    print(f"wrote {path}", flush=True)
    return path


# ---- running lmp ---------------------------------------------------------------------------


def lammps_env(work: Path) -> dict[str, str]:
    """Environment for ``lmp`` whose embedded Python can import ``benchmarks.hooks``.

    ``work/pylib`` holds a link to this package and goes first on ``PYTHONPATH`` (as the plugin
    tests do for their hook module): only ``benchmarks`` is added, so an installed ``glasscam``
    is never shadowed by the source folders of a checkout.
    """
    lib = work / "pylib"
    link = lib / "benchmarks"
    if not link.exists():
        lib.mkdir(parents=True, exist_ok=True)
        link.symlink_to(PACKAGE, target_is_directory=True)
    path = os.pathsep.join(p for p in (str(lib), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


@dataclass
class LammpsRun:
    wall_s: float  # of the whole lmp process (start-up included)
    cpu_s: float  # user + sys of the process tree
    output: str  # stdout + stderr
    log: str  # the log file (partition 0's with -partition)
    loops: list[tuple[float, int]] = field(default_factory=list)  # MD runs: (loop s, steps)

    @property
    def loop_s(self) -> float:
        return sum(s for s, _ in self.loops)

    @property
    def steps(self) -> int:
        return sum(n for _, n in self.loops)


def md_loops(log: str) -> list[tuple[float, int]]:
    """(loop time, steps) of every MD ``run`` in a LAMMPS log (minimisations left out)."""
    lines = log.splitlines()
    loops = []
    for i, line in enumerate(lines):
        m = LOOP.search(line)
        if m and "Minimization stats" not in "\n".join(lines[i + 1:i + 4]):
            loops.append((float(m.group(1)), int(m.group(3))))
    return loops


def run_lammps(deck: Path, variables: dict[str, Any], cwd: Path, np_: int = 1,
               partitions: str | None = None, timeout: float | None = None) -> LammpsRun:
    """Run ``[mpirun -np NP] lmp [-partition P] -in deck -var ...`` in ``cwd``; raise on error."""
    log = cwd / "log.lammps"
    cmd = [str(BIN / "mpirun"), "-np", str(np_)] if np_ > 1 or partitions else []
    cmd += [str(BIN / "lmp"), "-nocite", "-screen", "none", "-log", str(log)]
    if partitions:
        cmd += ["-partition", partitions]
    cmd += ["-in", str(deck)]
    for k, v in variables.items():
        cmd += ["-var", k, str(v)]
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=lammps_env(cwd),
                          timeout=timeout)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    output = proc.stdout + proc.stderr
    logs = [log] if not partitions else sorted(cwd.glob("log.lammps.*"))
    text = logs[0].read_text(errors="replace") if logs and logs[0].exists() else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-3000:]}\n"
                           f"--- log ---\n{text[-3000:]}")
    return LammpsRun(wall_s=wall, cpu_s=cpu, output=output, log=text, loops=md_loops(text))
