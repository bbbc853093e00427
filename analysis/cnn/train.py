"""Training the liquid/glass CNN (paper §3.1, §4.1, Table 2).

``train(samples, out, config)`` trains :class:`glasscam.analysis.cnn.network.GlassCNN` on the
``train`` split of a
samples store, validates on ``val`` after every epoch, checkpoints after every epoch, and when all
epochs are done evaluates ``test`` and writes ``out/metrics.json``:

* ``history``: per epoch train/val loss and accuracy, wall time, samples/s, data-wait fraction;
* ``test``: accuracy, ``per_class_accuracy`` and the confusion matrix (rows: true class, columns:
  predicted class, order ``CLASSES``) = the paper's Table 2;
* ``test.misclassified`` (also top-level ``misclassified``): every test item the network gets
  wrong (class, sample, p_glass). As in the paper's footnote 2, later
  per-sample distributions leave them out (``gradcam.zarr`` flags them).
* wall time, samples/s, device, hyper-parameters, versions.

Checkpoint ``out/checkpoint.pt`` holds only tensors and plain containers (it loads with
``torch.load(..., weights_only=True)``): model config and weights, optimizer state, torch RNG
state, epochs done, history. Running the same command again resumes after the last completed
epoch; on the CPU a resumed run ends with the same weights as an uninterrupted one (the item order
of epoch e is drawn from (seed, e), and the dropout RNG state is restored). GPU runs use cuDNN
autotuning and are not bit-reproducible.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from glasscam.analysis.cnn.data import SplitImages
from glasscam.analysis.cnn.network import (
    CNNConfig,
    EnsembleCNN,
    GlassCNN,
    probabilities,
    resolve_device,
    tune_host_allocator,
)
from glasscam.insitu import integrity
from glasscam.insitu.lock import OutputLock
from glasscam.insitu.schema import CLASSES, CorruptStoreError, SchemaError
from torch import nn

CHECKPOINT_FORMAT = "glasscam.cnn/1"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.json"
ENSEMBLE = "ensemble.json"  # a model folder of K members: member0/, member1/, ...
ENSEMBLE_FORMAT = "glasscam.cnn-ensemble/1"
# may change between a run and its resumption
_RESUMABLE = frozenset({"epochs", "device", "threads", "prefetch"})


@dataclass
class TrainConfig:
    """Optimisation settings (the paper's values are in its unavailable supplement; ours in
    docs/cnn.md)."""

    epochs: int = 250
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    prefetch: int = 4
    augment: bool = False  # random periodic translations + square symmetries of train images
    standardize: bool = False  # per-channel input standardisation with train-split statistics
    lr_schedule: str = "constant"  # or "cosine": lr * (1 + cos(pi * epoch / epochs)) / 2
    optimizer: str = "adam"  # adam (L2 weight decay), adamw (decoupled), sgd (momentum 0.9)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of {OPTIMIZERS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"unknown lr_schedule {self.lr_schedule!r}; choose one of {LR_SCHEDULES}"
            )
        for name, value, minimum in (("epochs", self.epochs, 1),
                                     ("batch_size", self.batch_size, 1),
                                     ("prefetch", self.prefetch, 1)):
            if int(value) != value or value < minimum:
                raise ValueError(f"--{name.replace('_', '-')} must be an integer >= {minimum}, "
                                 f"got {value!r}")
        if not self.lr > 0 or not self.weight_decay >= 0:
            raise ValueError(f"--lr must be > 0 and --weight-decay >= 0, got {self.lr!r}, "
                             f"{self.weight_decay!r}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads!r}")


LR_SCHEDULES = ("constant", "cosine")
OPTIMIZERS = ("adam", "adamw", "sgd")


def make_optimizer(
    params: Any, config: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    """The optimizer of ``config`` (fused kernels on CPU/CUDA for the Adam variants)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay
        )
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    fused = device.type in ("cpu", "cuda")
    return cls(params, lr=config.lr, weight_decay=config.weight_decay, fused=fused)


def epoch_lr(config: TrainConfig, epoch: int) -> float:
    """Learning rate of epoch ``epoch`` (0-based): a function of the epoch only, so a resumed
    run continues the same schedule."""
    if config.lr_schedule == "cosine":
        return config.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(config.epochs, 1)))
    return config.lr


def channel_statistics(data: SplitImages, batch_size: int = 64) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation over every pixel of every image of a split
    (float64 sums over the streamed batches)."""
    total = np.zeros(data.channels)
    total_sq = np.zeros(data.channels)
    count = 0
    for batch in data.batches(batch_size, shuffle=False):
        x = batch.images.astype(np.float64)
        total += x.sum(axis=(0, 2, 3))
        total_sq += np.square(x).sum(axis=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    if not np.all(std > 0):
        raise SchemaError(
            f"{data.path}: arrays 'liquid/image', 'glass/image' of split {data.split!r} are "
            f"constant in some channel (std {std.tolist()}); cannot standardise"
        )
    return mean.tolist(), std.tolist()


class Reporter:
    """Progress callbacks of :func:`train` (no-ops; the CLI draws rich progress bars)."""

    def start_epoch(self, epoch: int, epochs: int, nbatches: int) -> None: ...

    def advance(self, n: int = 1) -> None: ...

    def end_epoch(self, record: dict[str, Any]) -> None: ...

    def message(self, text: str) -> None: ...


def train_step(model: nn.Module, optimizer: Any, loss_fn: Any, x: torch.Tensor,
               y: torch.Tensor) -> tuple[float, int]:
    """One optimiser step on a batch: (summed loss, number classified right) before the step."""
    optimizer.zero_grad(set_to_none=True)
    logits = model(x)
    loss = loss_fn(logits, y)
    loss.backward()
    optimizer.step()
    return float(loss.detach()) * len(y), int((logits.detach().argmax(1) == y).sum())


def _atomic_save(obj: Any, path: Path) -> None:
    integrity.write_atomically(path, lambda tmp: torch.save(obj, tmp))


def _atomic_json(obj: Any, path: Path) -> None:
    integrity.write_text_atomically(path, json.dumps(obj, indent=2) + "\n")


def _read_json(path: Path) -> Any:
    """A JSON file of a model folder; a damaged one is named, with what to do."""
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise CorruptStoreError(
            f"{path}: not valid JSON ({err}); the file is truncated or damaged: delete the "
            "model folder's damaged file and rerun `glasscam train` with the same options"
        ) from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint (file or model folder) safely (``weights_only=True``) and check it."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"{path}: no checkpoint here (run `glasscam train` first)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CorruptStoreError(
            f"{path}: cannot be read ({type(err).__name__}: {str(err)[:200]}); the checkpoint "
            "is truncated or damaged. Delete it (and metrics.json beside it) and rerun "
            "`glasscam train` with the same options: training restarts from epoch 0"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SchemaError(f"{path}: field 'format' is {found!r}, expected {CHECKPOINT_FORMAT!r}")
    ckpt["path"] = str(path)
    return ckpt


def load_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[GlassCNN, dict]:
    """The trained network (eval mode) and its checkpoint dict (of one network)."""
    ckpt = load_checkpoint(path)
    model = GlassCNN(CNNConfig.from_dict(ckpt["model_config"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def member_folders(path: str | os.PathLike) -> list[Path]:
    """The network folders of a model folder: itself (one network) or its ensemble members."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    manifest = path / ENSEMBLE
    if not manifest.exists():
        if not (path / CHECKPOINT).exists():
            raise FileNotFoundError(f"{path}: no {CHECKPOINT} or {ENSEMBLE} here "
                                    "(run `glasscam train` first)")
        return [path]
    try:
        meta = json.loads(manifest.read_text())
    except json.JSONDecodeError as err:
        raise SchemaError(f"{manifest}: not valid JSON ({err}); rerun `glasscam train`") from None
    if meta.get("format") != ENSEMBLE_FORMAT or not meta.get("members"):
        raise SchemaError(f"{manifest}: field 'format' is {meta.get('format')!r}, expected "
                          f"{ENSEMBLE_FORMAT!r} with a list 'members'")
    return [path / m for m in meta["members"]]


def load_members(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> list[tuple[GlassCNN, dict]]:
    """Every network of a model folder (one, or the K members of an ensemble), eval mode."""
    return [load_model(folder, device) for folder in member_folders(path)]


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    data: SplitImages,
    batch_size: int,
    device: torch.device,
    prefetch: int = 4,
) -> dict[str, Any]:
    """Loss, accuracy, confusion matrix and per-item predictions of ``model`` on one split."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    total_loss, labels, preds, pglass, classes, samples = 0.0, [], [], [], [], []
    for batch in data.batches(batch_size, shuffle=False, prefetch=prefetch):
        x = torch.from_numpy(batch.images).to(device, non_blocking=True)
        y = torch.from_numpy(batch.labels).to(device)
        logits = model(x)
        total_loss += float(loss_fn(logits, y))
        preds.append(logits.argmax(1).cpu().numpy())
        pglass.append(probabilities(logits)[:, CLASSES.index("glass")].float().cpu().numpy())
        labels.append(batch.labels)
        classes.append(batch.classes)
        samples.append(batch.samples)
    y_true, y_pred = np.concatenate(labels), np.concatenate(preds)
    n = len(CLASSES)
    confusion = np.zeros((n, n), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    wrong = np.flatnonzero(y_true != y_pred)
    smp, pg = np.concatenate(samples), np.concatenate(pglass)
    return {
        "n": int(len(y_true)),
        "loss": total_loss / len(y_true),
        "accuracy": float(np.mean(y_true == y_pred)),
        "classes": list(CLASSES),
        "per_class_accuracy": {
            cls: float(confusion[i, i] / max(confusion[i].sum(), 1))
            for i, cls in enumerate(CLASSES)
        },
        "confusion_matrix": confusion.tolist(),
        "misclassified": [
            {
                "class": CLASSES[int(y_true[i])],
                "sample": int(smp[i]),
                "predicted": CLASSES[int(y_pred[i])],
                "p_glass": float(pg[i]),
            }
            for i in wrong
        ],
    }


def _check_resume(ckpt: dict, model_config: CNNConfig, config: TrainConfig, where: Path) -> None:
    stored_model = ckpt["model_config"]
    diffs = [
        f"model_config.{k}: checkpoint has {stored_model.get(k)!r}, run asks {v!r}"
        for k, v in model_config.to_dict().items()
        if stored_model.get(k) != v
    ]
    stored_train = ckpt["train_config"]
    defaults = asdict(TrainConfig())  # settings added later: a checkpoint without them used these
    diffs += [
        f"train_config.{k}: checkpoint has {stored_train.get(k, defaults[k])!r}, run asks {v!r}"
        for k, v in asdict(config).items()
        if stored_train.get(k, defaults[k]) != v
        and (k not in _RESUMABLE or (k == "epochs" and config.lr_schedule != "constant"))
    ]
    if diffs:
        raise SchemaError(
            f"{where}: cannot resume, the existing checkpoint was made with other settings ("
            + "; ".join(diffs)
            + "). Use another --out folder or the original settings."
        )


def train(
    samples: str | os.PathLike,
    out: str | os.PathLike,
    config: TrainConfig | None = None,
    model_config: CNNConfig | None = None,
    reporter: Reporter | None = None,
    stop_after_epoch: int | None = None,
) -> dict[str, Any]:
    """Train (or resume training) and return the metrics written to ``out/metrics.json``.

    ``model_config`` defaults to :class:`CNNConfig` with the store's C and M.
    ``stop_after_epoch`` ends the run after that many epochs are done, as if it were killed
    there (checkpoint written, no test evaluation). The model folder is locked for the run
    (:mod:`glasscam.insitu.lock`): a second ``train`` into it is refused, naming this one.
    """
    with OutputLock(out, what="model folder"):
        integrity.sweep_leftovers(out)  # temporary files of a write that was killed
        return _train(samples, out, config, model_config, reporter, stop_after_epoch)


def _train(
    samples: str | os.PathLike,
    out: str | os.PathLike,
    config: TrainConfig | None,
    model_config: CNNConfig | None,
    reporter: Reporter | None,
    stop_after_epoch: int | None,
) -> dict[str, Any]:
    config = config or TrainConfig()
    reporter = reporter or Reporter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    device = resolve_device(config.device)
    tune_host_allocator()
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    train_set = SplitImages(samples, "train")
    if model_config is None:
        model_config = CNNConfig(channels=train_set.channels, grid=train_set.grid)
    model_config = CNNConfig.from_dict(model_config.to_dict())
    if config.standardize and model_config.input_mean is None:
        mean, std = channel_statistics(train_set, config.batch_size)
        model_config = CNNConfig.from_dict(
            {**model_config.to_dict(), "input_mean": mean, "input_std": std}
        )
    val_set = SplitImages(samples, "val", model_config.grid, model_config.channels)
    test_set = SplitImages(samples, "test", model_config.grid, model_config.channels)
    if (train_set.grid, train_set.channels) != (model_config.grid, model_config.channels):
        raise SchemaError(
            f"{train_set.path}: arrays 'liquid/image', 'glass/image' are "
            f"{train_set.channels}x{train_set.grid}x{train_set.grid}, the model config asks "
            f"{model_config.channels}x{model_config.grid}x{model_config.grid}"
        )

    torch.manual_seed(config.seed)
    model = GlassCNN(model_config).to(device)
    optimizer = make_optimizer(model.parameters(), config, device)
    loss_fn = nn.CrossEntropyLoss()

    ckpt_path = out / CHECKPOINT
    history: list[dict[str, Any]] = []
    start_epoch, wall_before = 0, 0.0
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        _check_resume(ckpt, model_config, config, ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        if device.type == "cuda" and ckpt.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(ckpt["rng_cuda"])
        start_epoch, history = int(ckpt["epoch"]), list(ckpt["history"])
        wall_before = float(ckpt["wall_s"])
        reporter.message(f"resuming {ckpt_path} after epoch {start_epoch}")

    t_run = time.perf_counter()
    end_epoch = config.epochs if stop_after_epoch is None else min(config.epochs, stop_after_epoch)
    for epoch in range(start_epoch, end_epoch):
        model.train()
        loader = train_set.batches(
            config.batch_size,
            shuffle=True,
            seed=config.seed,
            epoch=epoch,
            prefetch=config.prefetch,
            augment=config.augment,
        )
        reporter.start_epoch(epoch, config.epochs, len(loader))
        lr = epoch_lr(config, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        for batch in loader:
            x = torch.from_numpy(batch.images).to(device, non_blocking=True)
            y = torch.from_numpy(batch.labels).to(device, non_blocking=True)
            batch_loss, batch_correct = train_step(model, optimizer, loss_fn, x, y)
            loss_sum += batch_loss
            correct += batch_correct
            seen += len(y)
            reporter.advance()
        train_s = time.perf_counter() - t0
        val = evaluate(model, val_set, config.batch_size, device, config.prefetch)
        epoch_s = time.perf_counter() - t0
        record = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "train_s": train_s,
            "epoch_s": epoch_s,
            "samples_per_s": seen / train_s,
            "data_wait_fraction": loader.wait_s / train_s,
        }
        history.append(record)
        _atomic_save(
            {
                "format": CHECKPOINT_FORMAT,
                "model_config": model_config.to_dict(),
                "train_config": asdict(config),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
                "epoch": epoch + 1,
                "history": history,
                "wall_s": wall_before + time.perf_counter() - t_run,
                "samples": os.path.abspath(train_set.path),
                "store_parameters": json.dumps(train_set.parameters),
                "torch": str(torch.__version__),
            },
            ckpt_path,
        )
        reporter.end_epoch(record)

    done = len(history)
    if done < config.epochs:
        return {"complete": False, "epochs_run": done, "history": history}

    test = evaluate(model, test_set, config.batch_size, device, config.prefetch)
    train_time = sum(r["train_s"] for r in history)
    trained = sum(r["samples_per_s"] * r["train_s"] for r in history)
    metrics = {
        "complete": True,
        "samples": os.path.abspath(train_set.path),
        "checkpoint": str(ckpt_path.resolve()),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "model_config": model_config.to_dict(),
        "train_config": asdict(config),
        "n_train": len(train_set),
        "n_val": len(val_set),
        "n_test": len(test_set),
        "epochs_run": len(history),
        "history": history,
        "wall_s": wall_before + time.perf_counter() - t_run,
        "samples_per_s": trained / train_time if train_time > 0 else None,
        "data_wait_fraction": (
            sum(r["data_wait_fraction"] * r["train_s"] for r in history) / train_time
            if train_time > 0
            else None
        ),
        "test": test,
        "misclassified": test["misclassified"],
    }
    _atomic_json(metrics, out / METRICS)
    return metrics


def train_ensemble(
    samples: str | os.PathLike,
    out: str | os.PathLike,
    members: int = 1,
    config: TrainConfig | None = None,
    model_config: CNNConfig | None = None,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train ``members`` independently seeded networks (seeds ``seed``, ``seed + 1``, ...).

    One member is the paper's protocol and keeps the single-network layout (``out`` holds the
    checkpoint). K > 1 members go to ``out/member<k>/`` (each resumable on its own) and
    ``out/metrics.json`` holds the ensemble's test evaluation (mean class probability of the
    members) with every member's own test accuracy.
    """
    config = config or TrainConfig()
    reporter = reporter or Reporter()
    if members < 1:
        raise ValueError(f"--ensemble must be >= 1, got {members}")
    out = Path(out)
    if members == 1:
        return train(samples, out, config, model_config, reporter)
    with OutputLock(out, what="model folder"):
        integrity.sweep_leftovers(out)  # the members' folders included
        return _train_ensemble(samples, out, members, config, model_config, reporter)


def _train_ensemble(samples, out: Path, members: int, config: TrainConfig,
                    model_config: CNNConfig | None, reporter: Reporter) -> dict[str, Any]:
    if (out / CHECKPOINT).exists():
        raise SchemaError(f"{out}: holds a single network ({CHECKPOINT}); an ensemble of "
                          f"{members} needs another --out folder")
    names = [f"member{k}" for k in range(members)]
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / ENSEMBLE
    if manifest.exists():
        have = _read_json(manifest).get("members", [])
        if have != names:
            raise SchemaError(f"{manifest}: field 'members' is {have}, this run asks for "
                              f"{members} members; use another --out folder")
    _atomic_json({"format": ENSEMBLE_FORMAT, "members": names, "seeds":
                  [config.seed + k for k in range(members)]}, manifest)
    member_metrics = []
    for k, name in enumerate(names):
        reporter.message(f"ensemble member {k + 1}/{members} (seed {config.seed + k})")
        metrics = _train(samples, out / name, replace(config, seed=config.seed + k),
                         model_config, reporter, None)
        if not metrics["complete"]:
            return {"complete": False, "members_done": k}
        member_metrics.append(metrics)
    device = resolve_device(config.device)
    ensemble = EnsembleCNN([m for m, _ in load_members(out, device)])
    first = member_metrics[0]
    test_set = SplitImages(samples, "test", first["model_config"]["grid"],
                           first["model_config"]["channels"])
    test = evaluate(ensemble, test_set, config.batch_size, device, config.prefetch)
    train_time = sum(m["wall_s"] for m in member_metrics)
    metrics = {
        **{k: v for k, v in first.items() if k not in ("test", "misclassified", "checkpoint")},
        "ensemble": names,
        "checkpoints": [m["checkpoint"] for m in member_metrics],
        "member_test_accuracy": [m["test"]["accuracy"] for m in member_metrics],
        "samples_per_s": float(np.mean([m["samples_per_s"] for m in member_metrics])),
        "wall_s": train_time,
        "test": test,
        "misclassified": test["misclassified"],
    }
    _atomic_json(metrics, out / METRICS)
    return metrics
