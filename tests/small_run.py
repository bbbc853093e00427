"""A small, complete run folder for the report and export tests, built in-process in ~20–40 s.

Every store is real and every analysis stage is the real one, run through the CLI (typer's
runner, in this process): a ``glasscam.samples/3`` store of 24 stand-in liquid/glass pairs of the
KAM model table (N = 128, a cooling record per sample), ``glasscam train`` (2 networks, 3 epochs),
``glasscam gradcam``, ``glasscam indicators`` (serial scheduler), a ``glasscam.propensity/3``
store of two glass test configurations with planted |CRD| (:data:`DELTAS`: the first
configuration stops at δ = 0.55, the second reaches 0.85, which stands for the target δ ≈ 1
under its own value; δ ≈ 0.3 is met at 0.26; δ ≈ 3 is never reached), ``glasscam correlate``
(a small ξ grid, 20 null draws) and ``glasscam report``. Only the quench and the propensity
MD are stand-ins (they need LAMMPS runs of minutes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

NATOMS = 128
NSAMPLES = 24
GRID = 12
NCOOL = 20
TEMPERATURE = 0.6
#: δ of the planted propensity outputs; configuration 0 stops after STOP0 (δ = 0.55)
DELTAS = np.array([0.12, 0.17, 0.26, 0.37, 0.55, 0.85])
STOP0 = 4


def _cli(*args: object) -> str:
    from glasscam.analysis.cli import app
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [str(a) for a in args])
    if result.exit_code != 0:
        raise AssertionError(f"glasscam {' '.join(map(str, args))} exited {result.exit_code}:\n"
                             f"{result.output[-4000:]}\n{result.exception!r}")
    return result.output


def samples_store(path: Path, seed: int = 3) -> Path:
    """A real samples store of the KAM model's parameters with stand-in configurations."""
    from glasscam.insitu import integrity
    from glasscam.insitu.gridize import gridize
    from glasscam.insitu.schema import CLASSES, create_samples_store

    from glasscam.testing import synthetic_configuration

    density = 1.2
    box = float(np.sqrt(NATOMS / density))
    params = {"system": "kam", "model": "kam", "nsamples": NSAMPLES, "natoms": NATOMS,
              "channels": 2, "grid": GRID, "ncool": NCOOL, "seed": seed, "rho": density,
              "kernel": "cic", "TL": 0.8, "TG": 0.05}
    root = create_samples_store(path, params)
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        grp = root[cls]
        pos_all = np.empty((NSAMPLES, NATOMS, 2), np.float32)
        types_all = np.empty((NSAMPLES, NATOMS), np.int8)
        images = np.empty((NSAMPLES, 2, GRID, GRID), np.float32)
        for s in range(NSAMPLES):
            pos, types = synthetic_configuration(cls, NATOMS, box, rng)
            pos_all[s], types_all[s] = pos, types
            images[s] = gridize(pos, types, (box, box), GRID, 2, "cic")
        grp["positions"][:] = pos_all
        grp["types"][:] = types_all
        grp["box"][:] = np.full((NSAMPLES, 2), box)
        grp["image"][:] = images
        grp["particle_energy"][:] = rng.normal(-3.0, 0.3, (NSAMPLES, NATOMS)).astype(np.float32)
        grp["seed"][:] = seed * 100000 + np.arange(NSAMPLES)
        grp["done"][:] = True
    ramp = np.linspace(4.0, 0.05, NCOOL)
    root["cooling/target_temperature"][:] = np.tile(ramp, (NSAMPLES, 1))
    root["cooling/temperature"][:] = np.tile(ramp, (NSAMPLES, 1))
    root["cooling/potential_energy"][:] = (-3.35 + 0.85 * ramp
                                           + rng.normal(0, 0.02, (NSAMPLES, NCOOL)))
    integrity.seal(root)
    return path


def propensity_store(run: Path) -> Path:
    """Two glass test configurations, 6 replicas, |CRD| planted on a smooth field of x."""
    import zarr
    from glasscam.analysis.stage import select_samples

    from glasscam.testing import propensity_store_from_crd

    samples = zarr.open_group(str(run / "samples.zarr"), mode="r")
    picks = select_samples(samples, "glass", "test", "samples.zarr")[:2]
    pos = np.stack([samples["glass/positions"][int(i)] for i in picks])
    types = np.stack([samples["glass/types"][int(i)] for i in picks])
    box = np.stack([samples["glass/box"][int(i)] for i in picks])
    rng = np.random.default_rng(7)
    ns, k = 6, len(DELTAS)
    field = 1.0 + 0.6 * np.sin(2 * np.pi * pos[..., 0] / box[:, None, 0])  # [C, N]
    noise = rng.gamma(4.0, 0.25, (len(picks), ns, k, NATOMS))
    crd = DELTAS[None, None, :, None] * field[:, None, None, :] * noise
    crd /= crd.mean(axis=(1, 3), keepdims=True) / DELTAS[None, None, :, None]  # δ exact
    steps = np.round(np.geomspace(100, 20000, k)).astype(np.int64)
    return propensity_store_from_crd(
        run / f"propensity_T{TEMPERATURE:g}.zarr", pos, types, box, crd, steps,
        [int(i) for i in picks], temperature=TEMPERATURE, stop=[STOP0, k - 1],
        source=str(run / "samples.zarr"))


def build_small_run(run: Path, correlate: bool = True, report: bool = True) -> Path:
    """The run folder (see the module doc); returns it. Without ``correlate`` it stops after
    the indicators (no propensity store, no tables, no report)."""
    run.mkdir(parents=True, exist_ok=True)
    samples = samples_store(run / "samples.zarr")
    (run / "run.json").write_text(json.dumps({"system": "kam", "preset": "small-test",
                                              "created": "2026-01-01T00:00:00"}))
    (run / "preset.json").write_text(json.dumps({"run": {"system": "kam"}}))
    _cli("train", "--samples", samples, "--out", run / "model", "--epochs", 3, "--ensemble", 2,
         "--batch-size", 16, "--dropout", 0.0, "--threads", 1, "--conv-channels", "4,8,8",
         "--fc-width", 16)
    _cli("gradcam", "--samples", samples, "--model", run / "model", "--out",
         run / "gradcam.zarr", "--split", "test", "--threads", 1)
    _cli("indicators", "--samples", samples, "--out", run / "indicators.zarr", "--scheduler",
         "serial", "--split", "test")
    if not correlate:
        return run
    propensity_store(run)
    _cli("correlate", "--run", run, "--xi-grid", "0,1,2", "--null-draws", 20, "--bootstrap",
         10)
    stages = run / ".glasscam" / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    # written out of pipeline order on purpose: the report lists them in pipeline order
    for name, wall in (("report", 4.2), ("correlate", 61.0), ("quench", 5400.0),
                       ("train", 125.0)):
        (stages / f"{name}.json").write_text(json.dumps({
            "stage": name, "commands": [f"glasscam {name}"], "wall_s": wall,
            "finished": "2026-01-01T00:00:00"}))
    if report:
        _cli("report", "--run", run)
    return run
