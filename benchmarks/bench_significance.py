"""Selection-aware null: cost of ``translation_null`` per configuration (issue 11).

The null of one indicator on one configuration: 1000 random torus translations, the maximum
over the ξ grid 0, 1, …, 10 and over K = 32 outputs, N = 2000 particles at the KAM density
(ρ = 1.2, L = 40.8), on one core (OMP_NUM_THREADS = 1 set before numpy is imported, and the
process pinned to one CPU where the OS allows it). Goal: ≤ 30 s per configuration.

Reported: CPU time (process time: on a shared machine the wall time also counts waiting for a
core) and wall time, split into the field set-up (FFT convolutions) and the draws, for the
default grid spacing and, in the full run, a sweep of the spacing. The frame is a perturbed
square lattice (the cost does not depend on the structure, only on N, L and the grids); the
indicator is white noise and the targets are random fields.

``--quick``: 200 draws (times scaled to 1000 draws) and no sweep.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import time  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import quick, write_result  # noqa: E402

RHO = 1.2
N = 2000
XIS = np.arange(0.0, 11.0)
OUTPUTS = 32
GOAL_S = 30.0


def frame(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n)))
    length = np.sqrt(n / RHO)
    a = length / side
    g = np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n] + 0.5
    pos = np.mod((g + rng.normal(0, 0.2, g.shape)) * a, length)
    return pos[rng.permutation(n)], np.array([length, length])


def pin_one_core() -> int | None:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return cpu
    except (AttributeError, OSError):
        return None


def timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def one_null(pos, box, values, targets, draws: int, spacing: float) -> dict:
    from glasscam.analysis.correlate.significance import TranslatedField, translation_null

    # the set-up alone (the null builds the same field once)
    field, setup_cpu, setup_wall = timed(lambda: TranslatedField(values, pos, box, XIS,
                                                                 spacing=spacing))
    res, cpu, wall = timed(lambda: translation_null(values, pos, box, targets, XIS, draws=draws,
                                                    rng=1, spacing=spacing))
    scale = 1000 / draws
    per_draw_cpu = (cpu - setup_cpu) / draws
    return {
        "spacing": spacing,
        "grid": list(field.shape),
        "draws_run": draws,
        "setup_cpu_s": round(setup_cpu, 4),
        "setup_wall_s": round(setup_wall, 4),
        "per_draw_cpu_ms": round(per_draw_cpu * 1e3, 3),
        "cpu_s_per_1000_draws": round(setup_cpu + per_draw_cpu * 1000, 3),
        "wall_s_per_1000_draws": round(setup_wall + (wall - setup_wall) * scale, 3),
        "null_mean": round(res.null_mean, 4),
        "null_p95": round(res.null_p95, 4),
    }


def main() -> None:
    from glasscam.analysis.correlate.significance import TranslatedField, gaussian_random_field

    cpu = pin_one_core()
    pos, box = frame(N, 1)
    TranslatedField(np.ones(N), pos, box, [0.0, 1.0])  # warm-up: imports, FFT plans
    rng = np.random.default_rng(2)
    values = rng.normal(size=N)
    targets = gaussian_random_field(pos, box, 3.0, size=OUTPUTS, rng=rng, spacing=0.25)
    draws = 200 if quick() else 1000
    result: dict = {
        "load_average_at_start": list(os.getloadavg()),
        "pinned_cpu": cpu,
        "n": N,
        "box": float(box[0]),
        "xis": XIS.tolist(),
        "outputs": OUTPUTS,
        "goal_s_per_configuration": GOAL_S,
    }
    main_run = one_null(pos, box, values, targets, draws, 0.15)
    result["default_spacing"] = main_run
    result["seconds_per_configuration_cpu"] = main_run["cpu_s_per_1000_draws"]
    result["meets_goal"] = main_run["cpu_s_per_1000_draws"] <= GOAL_S
    if not quick():
        result["spacing_sweep"] = [one_null(pos, box, values, targets, 300, h)
                                   for h in (0.25, 0.2, 0.1)]
    result["load_average_at_end"] = list(os.getloadavg())
    write_result("significance", result)


if __name__ == "__main__":
    main()
