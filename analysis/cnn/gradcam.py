"""Grad-CAM on the last convolutional layer and particle scores Γ (paper §3.2; DESIGN §5).

For class C (glass by default) and the feature maps A^m of the last convolutional layer (the
output of its ReLU, :data:`glasscam.analysis.cnn.network.GRADCAM_LAYER`)::

    w_m = (1/Z) sum_kl dy_C / dA^m_kl,      L^C = ReLU(sum_m w_m A^m)        (Z = M * M)

with y_C the class score before softmax. The network has no pooling and 'same' circular
convolutions, so L^C is an M x M map on the same grid as the input image; no upsampling is
needed. The particle score is Γ_i = G^-1(L^C)(r_i) (:func:`glasscam.insitu.gridize.inverse_gridize` with
the store's gridization kernel). Γ is written bare; coarse-graining and normalisation to [0, 1]
are the correlate stage's job.

:func:`grad_cam` is batched (the samples of a batch are independent in eval mode, so one backward
pass of sum_b y_C(b) gives every sample's gradient), and only the network's head is
differentiated: the hook on the layer cuts the graph there and the parameters are frozen for the
duration of the call. Hooks are removed and the parameters' ``requires_grad`` and the training
mode restored on exit, even on error.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from glasscam.analysis.cnn.network import GLASS, GRADCAM_LAYER, resolve_device, tune_host_allocator
from glasscam.insitu.gridize import inverse_gridize
from glasscam.insitu.schema import CLASSES, create_gradcam_store, open_gradcam_store
from torch import nn


def grad_cam(
    model: nn.Module,
    images: torch.Tensor,
    target: int = GLASS,
    layer: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps [B, M, M] of class ``target`` and the logits [B, K] of ``images``."""
    layer = layer if layer is not None else model.get_submodule(GRADCAM_LAYER)
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        a = output.detach().requires_grad_(True)  # cut the graph: differentiate the head only
        captured["A"] = a
        return a

    was_training = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    handle = layer.register_forward_hook(hook)
    try:
        model.eval()
        for p, _ in frozen:
            p.requires_grad_(False)
        with torch.enable_grad():
            logits = model(images)
            a = captured["A"]
            (grads,) = torch.autograd.grad(logits[:, target].sum(), a)
        weights = grads.mean(dim=(2, 3))  # w_m = (1/Z) sum_kl dy_C/dA^m_kl, shape [B, m]
        # sum_m w_m A^m as a batched matrix product (no [B, m, M, M] temporary)
        b, m, h, w = a.shape
        cam = torch.bmm(weights.unsqueeze(1), a.detach().reshape(b, m, h * w)).reshape(b, h, w)
        cam = torch.relu(cam)
        return cam, logits.detach()
    finally:
        handle.remove()
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)


def particle_scores(
    cam: np.ndarray, positions: np.ndarray, box: np.ndarray, kernel: str = "cic"
) -> np.ndarray:
    """Γ_i = G^-1(L)(r_i): the map read out at every particle with the gridization kernel."""
    return inverse_gridize(cam, positions, box, kernel)


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_gradcam(
    samples: str | os.PathLike,
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "test",
    batch_size: int = 64,
    device: str = "auto",
    target: str = "glass",
    prefetch: int = 4,
    reporter: Any | None = None,
) -> dict[str, Any]:
    """Grad-CAM and Γ for every done sample (both classes) of ``split`` into ``out``.

    Resumable: an existing store with the same parameters keeps its done samples. Returns a
    summary (items computed, misclassified items, ms per sample).
    """
    from glasscam.analysis.cnn.data import SplitImages
    from glasscam.analysis.cnn.train import METRICS, load_model

    if target not in CLASSES:
        raise ValueError(f"unknown target class {target!r}; choose one of {CLASSES}")
    dev = resolve_device(device)
    tune_host_allocator()
    model, ckpt = load_model(model_dir, dev)
    cfg = model.config
    data = SplitImages(
        samples, split, cfg.grid, cfg.channels, what=f"the model {ckpt['path']}"
    )
    sparams = data.parameters
    natoms = int(data.root["liquid/positions"].shape[1])
    kernel = str(sparams.get("kernel", "cic"))
    params = {
        "samples": os.path.abspath(data.path),
        "model": os.path.abspath(ckpt["path"]),
        "split": split,
        "target_class": target,
        "layer": GRADCAM_LAYER,
        "kernel": kernel,
        "nsamples": data.nsamples,
        "natoms": natoms,
        "grid": cfg.grid,
    }
    metrics_path = Path(ckpt["path"]).parent / METRICS
    test_acc = None
    if metrics_path.exists():
        test_acc = json.loads(metrics_path.read_text()).get("test", {}).get("accuracy")
    provenance = {
        "checkpoint": os.path.abspath(ckpt["path"]),
        "sha256": _sha256(ckpt["path"]),
        "epochs_trained": int(ckpt["epoch"]),
        "model_config": ckpt["model_config"],
        "train_config": ckpt["train_config"],
        "trained_on": ckpt.get("samples"),
        "test_accuracy": test_acc,
        "torch": str(torch.__version__),
        "device": str(dev),
    }
    out = Path(out)
    if out.exists():
        root = open_gradcam_store(out, mode="r+", expect=params)
        root.attrs["model"] = json.loads(json.dumps(provenance))
    else:
        root = create_gradcam_store(out, params, provenance)

    done = {c: np.asarray(root[f"{cls}/done"][:]) for c, cls in enumerate(CLASSES)}
    codes = data.codes
    cls_of, smp_of = np.divmod(codes, data.nsamples)
    todo = codes[~np.array([done[c][s] for c, s in zip(cls_of, smp_of, strict=True)], bool)]
    target_idx = CLASSES.index(target)
    if reporter is not None:
        reporter.start(len(todo))
    t0 = time.perf_counter()
    compute_s = 0.0
    loader = data.batches(batch_size, codes=todo, prefetch=prefetch)
    for batch in loader:
        t1 = time.perf_counter()
        x = torch.from_numpy(batch.images).to(dev, non_blocking=True)
        cam_t, logits_t = grad_cam(model, x, target_idx)
        cam, logits = cam_t.float().cpu().numpy(), logits_t.float().cpu().numpy()
        compute_s += time.perf_counter() - t1
        correct = logits.argmax(1) == batch.labels
        for c, cls in enumerate(CLASSES):
            sel = np.flatnonzero(batch.classes == c)
            if sel.size == 0:
                continue
            order = sel[np.argsort(batch.samples[sel], kind="stable")]
            idx = batch.samples[order]
            grp = root[cls]
            positions = data.root[f"{cls}/positions"].get_orthogonal_selection((idx,))
            boxes = data.root[f"{cls}/box"].get_orthogonal_selection((idx,))
            gamma = np.stack(
                [
                    particle_scores(cam[i], positions[j], boxes[j], kernel)
                    for j, i in enumerate(order)
                ]
            ).astype(np.float32)
            grp["cam"].set_orthogonal_selection((idx,), cam[order])
            grp["gamma"].set_orthogonal_selection((idx,), gamma)
            grp["logits"].set_orthogonal_selection((idx,), logits[order])
            grp["correct"].set_orthogonal_selection((idx,), correct[order])
            grp["done"].set_orthogonal_selection((idx,), np.ones(len(idx), bool))  # last
        if reporter is not None:
            reporter.advance(len(batch.labels))
    wall = time.perf_counter() - t0

    wrong = []
    for cls in CLASSES:
        grp = root[cls]
        mask = np.asarray(grp["done"][:]) & ~np.asarray(grp["correct"][:])
        wrong += [{"class": cls, "sample": int(s)} for s in np.flatnonzero(mask)]
    return {
        "out": str(out),
        "items": int(len(todo)),
        "already_done": int(len(codes) - len(todo)),
        "misclassified": wrong,
        "wall_s": wall,
        "gradcam_ms_per_sample": 1e3 * compute_s / max(len(todo), 1),
        "wall_ms_per_sample": 1e3 * wall / max(len(todo), 1),
        "device": str(dev),
    }
