"""`glasscam run --preset tiny`: every stage through the CLI, the report's references, resume.

Real LAMMPS (2 partitions under mpirun), real training, real Dask LocalCluster: about a minute
on 2 cores for one run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

GLASSCAM = str(Path(sys.executable).parent / "glasscam")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def glasscam_run(out: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [GLASSCAM, "run", "--preset", "tiny", "--out", str(out), *extra],
        capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "run"
    glasscam_run(out)
    return out


@pytest.mark.mpi
def test_report_references_only_real_files(tiny_run: Path):
    page = (tiny_run / "report.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"#]+)"', page)
    pngs = [r for r in refs if r.endswith(".png")]
    csvs = [r for r in refs if r.endswith(".csv")]
    # every paper figure family is drawn: 1-2 maps, 3, 4, 5, 6, 7, 8, S6, S7, training curves
    for name in ("fig1_maps", "fig3_c_delta", "fig4_ensembles", "fig5_gamma", "fig6_violins",
                 "fig7_indicators", "fig8_c_alpha", "figS6_energy", "figS7_gr", "training_loss"):
        assert any(name in p for p in pngs), f"report has no {name} figure"
    for rel in pngs:
        data = (tiny_run / rel).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 5000, rel
    for name in ("table3_xi", "table4_ensembles", "table5_cmax", "tableS2_pairs_summary"):
        assert any(name in c for c in csvs), f"report does not list {name}.csv"
    for rel in csvs:
        with (tiny_run / rel).open() as fh:
            rows = list(csv.reader(fh))
        assert len(rows) >= 2 and all(len(r) == len(rows[0]) for r in rows), rel
    for rel in refs:
        assert (tiny_run / rel).exists(), f"report links to missing {rel}"
    # Table 5 has real correlation coefficients for all three indicators
    with (tiny_run / "tables" / "table5_cmax.csv").open() as fh:
        t5 = {r["indicator"]: float(r["c_max"]) for r in csv.DictReader(fh)}
    assert {"Gamma", "Upsilon", "Theta"} <= set(t5)
    # (their values on 4 replicas of N = 200 are not predictable: the planted-signal test
    # below checks what the correlate stage must find)
    assert all(np.isfinite(v) for v in t5.values()), t5
    assert "no placeholder" not in page.lower() and "not available" not in page
    exported = list((tiny_run / "export").glob("*.extxyz"))
    assert exported, "no OVITO export"
    head = exported[0].read_text().splitlines()
    assert int(head[0]) == len(head) - 2 and "Properties=species:S:1:pos:R:3" in head[1]


@pytest.mark.mpi
def test_tiny_network_learned_and_its_accuracy_is_recomputed(tiny_run: Path):
    """The tiny preset's store is learnable (94 % and 100 % measured on its 16 test items): a
    network that learned nothing sits near 50 %. The reported accuracy is recomputed twice,
    independently of the training code's own bookkeeping: from the logits that the Grad-CAM
    stage stored per item, and from the checkpoint's weights applied to the store's images."""
    import torch
    import zarr
    from glasscam.analysis.cnn.network import EnsembleCNN
    from glasscam.analysis.cnn.train import load_members

    metrics = json.loads((tiny_run / "model" / "metrics.json").read_text())
    test = metrics["test"]
    assert test["n"] == 16, test  # 8 test samples x 2 classes (split 4000/400/600 of 64)
    assert test["accuracy"] >= 14 / 16, test
    assert len(metrics["ensemble"]) == 3 and len(metrics["member_test_accuracy"]) == 3
    samples = zarr.open_group(tiny_run / "samples.zarr", mode="r")
    idx = np.flatnonzero(np.asarray(samples["split"][:]) == 2)
    cam = zarr.open_group(tiny_run / "gradcam.zarr", mode="r")
    model = EnsembleCNN([m for m, _ in load_members(tiny_run / "model")]).eval()
    hits = []
    for label, cls in enumerate(("liquid", "glass")):
        stored = np.asarray(cam[f"{cls}/logits"][:])[idx]
        with torch.no_grad():
            fresh = model(torch.from_numpy(np.asarray(samples[f"{cls}/image"][:])[idx])).numpy()
        np.testing.assert_allclose(stored, fresh, atol=1e-4, rtol=1e-4)
        right = stored.argmax(axis=1) == label
        np.testing.assert_array_equal(np.asarray(cam[f"{cls}/correct"][:])[idx], right)
        hits += right.tolist()
    assert test["accuracy"] == pytest.approx(np.mean(hits), abs=1e-12)


@pytest.mark.mpi
def test_correlate_stage_finds_indicators_planted_on_the_real_propensity(tiny_run: Path,
                                                                         tmp_path: Path):
    """The tiny run's stores with Γ, ϒ, Θ of each propensity configuration's sample replaced by
    affine functions of its real propensity Δ at three different outputs k (Γ and Θ
    decreasing, as the KAM orientation 1−Γ, ϒ, 1−Θ expects). With ξ_Δ fixed to 2, a grid
    point, the correlate stage must report for each: C_max = 1, ξ = 2, and δ* = δ of the
    planted output (averaged over configurations where the store has several)."""
    import dataclasses
    import shutil

    import zarr
    from glasscam.analysis.correlate.tables import CorrelateOptions, run_correlate

    run = tmp_path / "planted"
    run.mkdir()
    (prop,) = sorted(tiny_run.glob("propensity*.zarr"))
    for name in ("samples.zarr", "indicators.zarr", "gradcam.zarr", prop.name):
        shutil.copytree(tiny_run / name, run / name)
    p = zarr.open_group(run / prop.name, mode="r")
    cls = p.attrs.get("class", "glass")
    delta = np.atleast_2d(np.asarray(p["delta"][:], dtype=np.float64))  # [C, K]
    dprop = np.asarray(p["propensity"][:], dtype=np.float64).reshape(*delta.shape, -1)
    if "samples" in p:  # one store, C configurations
        configurations = [int(i) for i in np.asarray(p["samples"][:])]
    else:  # one configuration
        configurations = [int(p.attrs["sample"])]
    ok = np.flatnonzero(np.all(np.isfinite(delta) & (delta > 0), axis=0))
    assert len(ok) >= 3 and np.all(np.diff(delta[:, ok], axis=1) > 0), delta
    planted = {"Gamma": ok[-1], "Upsilon": ok[0], "Theta": ok[len(ok) // 2]}  # output k
    g = zarr.open_group(run / "gradcam.zarr", mode="r+")
    ind = zarr.open_group(run / "indicators.zarr", mode="r+")
    for c, sample in enumerate(configurations):
        g[f"{cls}/gamma"][sample] = (3.0 - 2.0 * dprop[c, planted["Gamma"]]).astype(np.float32)
        ind[f"{cls}/voronoi"][sample] = 0.5 + 4.0 * dprop[c, planted["Upsilon"]]
        ind[f"{cls}/ttop"][sample] = -dprop[c, planted["Theta"]]
    # the significance machinery (null draws, bootstraps) is not under test here: cheapest;
    # every output counts (the planted relation holds at any δ)
    have = {f.name for f in dataclasses.fields(CorrelateOptions)}
    extra = {k: v for k, v in {"null_draws": 19, "bootstrap": 10, "delta_min": 0.0}.items()
             if k in have}
    opts = CorrelateOptions(xi_grid=(0.0, 1.0, 2.0, 3.0), xi_delta=2.0, split="test", **extra)
    run_correlate(run, opts, echo=lambda s: None)
    with (run / "tables" / "table5_cmax.csv").open() as fh:
        t5 = {r["indicator"]: r for r in csv.DictReader(fh)}
    orientation = {"Gamma": "1-Gamma", "Upsilon": "Upsilon", "Theta": "1-Theta"}
    for name, k in planted.items():
        row = t5[name]
        assert row["correlated_as"] == orientation[name], row
        assert float(row["xi"]) == 2.0 and float(row["xi_delta"]) == 2.0, row
        assert float(row["c_max"]) == pytest.approx(1.0, abs=1e-9), row
        assert float(row["delta_star"]) == pytest.approx(delta[:, k].mean(), rel=1e-8), (row,
                                                                                         delta)


@pytest.mark.mpi
def test_interrupted_run_resumes_to_the_same_result(tiny_run: Path, tmp_path: Path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [GLASSCAM, "run", "--preset", "tiny", "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    marker = out / ".glasscam" / "stages" / "propensity.json"
    deadline = time.monotonic() + 600
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # now inside `train`
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / ".glasscam" / "stages" / "report.json").exists()
    again = glasscam_run(out)
    assert "quench: complete, skipped" in again.stdout
    assert "propensity: complete, skipped" in again.stdout
    for name in ("table5_cmax.csv", "table3_xi.csv", "fig6_pairs_per_sample.csv"):
        assert (out / "tables" / name).read_text() == (tiny_run / "tables" / name).read_text(), name


def test_wrong_preset_key_and_foreign_folder(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoch = 3\n")
    proc = subprocess.run([GLASSCAM, "run", "--preset", str(bad), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "epoch" in proc.stdout
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "run.json").write_text('{"system": "abm", "preset": "tiny"}')
    proc = subprocess.run([GLASSCAM, "run", "--preset", "tiny", "--out", str(tmp_path / "r2")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "abm" in proc.stdout
