"""Grad-CAM on the last convolutional layer and particle scores Γ (paper §3.2; DESIGN §5).

For class C (glass by default) and the feature maps A^m of the last convolutional layer (the
output of its ReLU, :data:`glasscam.analysis.cnn.network.GRADCAM_LAYER`)::

    w_m = (1/Z) sum_kl dy_C / dA^m_kl,      L^C = ReLU(sum_m w_m A^m)        (Z = M * M)

with y_C the class score before softmax. The network has no pooling and 'same' circular
convolutions, so L^C is an M x M map on the same grid as the input image; no upsampling is
needed. The particle score is Γ_i = G^-1(L^C)(r_i) (:func:`glasscam.insitu.gridize.inverse_gridize`
with
the store's gridization kernel). Γ is written bare; coarse-graining and normalisation to [0, 1]
are the correlate stage's job.

:func:`grad_cam` is batched (the samples of a batch are independent in eval mode, so one backward
pass of sum_b y_C(b) gives every sample's gradient), and only the network's head is
differentiated: the hook on the layer cuts the graph there and the parameters are frozen for the
duration of the call. Hooks are removed and the parameters' ``requires_grad`` and the training
mode restored on exit, even on error.

The same stage writes the rivals of Grad-CAM (:mod:`glasscam.analysis.cnn.attribution`, issue
16): ``GradCAM(..., method=, layer=, randomize=)`` writes one store per method × layer (×
randomisation), each of schema ``glasscam.gradcam/3`` with ``method`` (and, where it applies,
``randomize``, ``ig_steps``) added to its parameters; the paper's Grad-CAM on ``act3`` of the
trained network keeps exactly the parameters (and the arrays) it always had.
:func:`run_attributions` writes the paper's store and the others beside it
(:func:`glasscam.analysis.cnn.attribution.store_path`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from glasscam.analysis.cnn import attribution as attr
from glasscam.analysis.cnn.network import GLASS, GRADCAM_LAYER, resolve_device, tune_host_allocator
from glasscam.analysis.stage import SampleStage, StageInputError, select_samples
from glasscam.insitu.gridize import inverse_gridize
from glasscam.insitu.integrity import file_sha256
from glasscam.insitu.schema import (
    CLASSES,
    SchemaError,
    create_gradcam_store,
    open_gradcam_store,
)
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


class GradCAM(SampleStage):
    """Grad-CAM maps, logits and Γ of every selected sample (the stage of ``gradcam.zarr``)."""

    name = "gradcam"
    inputs = ("image", "positions", "box")
    create = staticmethod(create_gradcam_store)
    open = staticmethod(open_gradcam_store)
    transient = ("_models",)

    def __init__(self, samples, model_dir, out, split: str = "test", target: str = "glass",
                 device: str = "auto", method: str = attr.DEFAULT_METHOD,
                 layer: str | None = None, randomize: str | None = None,
                 ig_steps: int = attr.IG_STEPS, randomize_seed: int = 0):
        from glasscam.analysis.cnn.train import CHECKPOINT, load_checkpoint, member_folders

        super().__init__(samples, out, split)
        if target not in CLASSES:
            raise StageInputError(f"unknown target class {target!r}; choose one of {CLASSES}")
        self.target = target
        try:
            spec = attr.method(method)
            if spec.is_cam:
                self.layer = attr.check_layer(layer or GRADCAM_LAYER)
            elif layer not in (None, attr.INPUT_LAYER):
                raise ValueError(f"{method} is an input-space attribution: it has no layer "
                                 f"(got {layer!r})")
            else:
                self.layer = attr.INPUT_LAYER
            self.randomize = attr.randomization_tag(randomize)
            attr.gauss_legendre(ig_steps)
        except ValueError as err:
            raise StageInputError(str(err)) from None
        self.method, self.is_cam = spec.name, spec.is_cam
        self.ig_steps, self.randomize_seed = int(ig_steps), int(randomize_seed)
        if not self.is_cam:  # the adjoint of the deposition reads each particle's species
            self.inputs = (*type(self).inputs, "types")
        self.device = str(resolve_device(device))
        self.checkpoints = [os.path.abspath(f / CHECKPOINT) for f in member_folders(model_dir)]
        self.checkpoint = self.checkpoints[0]
        ckpts = [load_checkpoint(c) for c in self.checkpoints]
        ckpt = ckpts[0]
        if self.randomize == attr.SHUFFLED and not all(c.get("shuffled_labels") for c in ckpts):
            raise StageInputError(
                f"{model_dir}: not networks trained on shuffled labels (their checkpoints lack "
                "field 'shuffled_labels'); make them with glasscam.analysis.cnn.attribution."
                "train_shuffled_labels, or `glasscam gradcam --randomize shuffled-labels`")
        self.config = ckpt["model_config"]
        for other, path in zip(ckpts[1:], self.checkpoints[1:], strict=True):
            if (other["model_config"]["grid"], other["model_config"]["channels"]) != (
                    self.config["grid"], self.config["channels"]):
                raise SchemaError(f"{path}: an ensemble member of another image size than "
                                  f"{self.checkpoint}")
        image = self.source["liquid/image"]
        for name, want, have in (("grid size M", self.config["grid"], image.shape[-1]),
                                 ("channels C", self.config["channels"], image.shape[1])):
            if int(want) != int(have):
                raise SchemaError(
                    f"{self.samples}: arrays 'liquid/image', 'glass/image' have {name} = {have} "
                    f"(image shape {tuple(image.shape[1:])}), but the model {self.checkpoint} "
                    f"expects {name} = {want}"
                )
        self.kernel = str(self.samples_parameters.get("kernel", "cic"))
        self.compute_s = 0.0
        self._provenance = self._model_provenance(ckpt)
        if len(ckpts) > 1:
            self._provenance["members"] = [
                {"checkpoint": path, "sha256": file_sha256(path), "seed": c["train_config"]["seed"]}
                for path, c in zip(self.checkpoints, ckpts, strict=True)
            ]

    def _model_provenance(self, ckpt: dict) -> dict[str, Any]:
        from glasscam.analysis.cnn.train import METRICS

        folder = Path(self.checkpoint).parent
        metrics_path = (folder.parent if len(self.checkpoints) > 1 else folder) / METRICS
        test_acc = None
        if metrics_path.exists():
            test_acc = json.loads(metrics_path.read_text()).get("test", {}).get("accuracy")
        return {
            "checkpoint": self.checkpoint,
            "sha256": file_sha256(self.checkpoint),
            "epochs_trained": int(ckpt["epoch"]),
            "model_config": ckpt["model_config"],
            "train_config": ckpt["train_config"],
            "trained_on": ckpt.get("samples"),
            "test_accuracy": test_acc,
            "torch": str(torch.__version__),
            "device": self.device,
        }

    @property
    def paper_protocol(self) -> bool:
        """The paper's Grad-CAM on the last conv layer of the trained network."""
        return (self.method == attr.DEFAULT_METHOD and self.layer == GRADCAM_LAYER
                and self.randomize is None)

    def parameters(self) -> dict[str, Any]:
        params = {
            "samples": self.samples,
            "model": self.checkpoint if len(self.checkpoints) == 1 else self.checkpoints,
            "members": len(self.checkpoints),
            "split": self.split,
            "target_class": self.target,
            "layer": self.layer,
            "kernel": self.kernel,
            "grid": int(self.config["grid"]),
        }
        if self.paper_protocol:  # exactly what gradcam.zarr always had
            return params
        params["method"] = self.method
        if self.method == "integrated-gradients":
            params.update(ig_steps=self.ig_steps, ig_baseline=attr.IG_BASELINE)
        if self.randomize is not None:
            params["randomize"] = self.randomize
            if self.randomize.startswith("cascade:"):
                params["randomize_seed"] = self.randomize_seed
        return params

    def provenance(self) -> dict[str, Any]:
        return self._provenance

    def update_provenance(self, root) -> None:
        root.attrs["model"] = json.loads(json.dumps(self._provenance))

    def setup(self) -> None:
        from glasscam.analysis.cnn.train import load_model

        tune_host_allocator()
        if self.randomize is not None and self.randomize.startswith("cascade:"):
            step = self.randomize.split(":", 1)[1]
            self._models = [
                attr.randomize_cascade(load_model(Path(c).parent, "cpu")[0], step,
                                       self.randomize_seed, k).to(self.device).eval()
                for k, c in enumerate(self.checkpoints)]
        else:
            self._models = [load_model(Path(c).parent, self.device)[0] for c in self.checkpoints]

    def _attribute(self, model, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = CLASSES.index(self.target)
        if self.method == attr.DEFAULT_METHOD:  # the paper's kernel, unchanged
            return grad_cam(model, x, target, model.get_submodule(self.layer))
        return attr.attribute(model, x, self.method, target,
                              self.layer if self.is_cam else None, self.ig_steps)

    def compute(self, cls: str, inputs) -> dict[str, np.ndarray]:
        """The attribution of every member; Γ, the map and the class probability are the
        members' means (one member: the paper's single network, unchanged)."""
        t0 = time.perf_counter()
        x = torch.from_numpy(np.ascontiguousarray(inputs["image"])).to(self.device)
        maps, logits = [], []
        for model in self._models:
            map_t, logits_t = self._attribute(model, x)
            maps.append(map_t.float().cpu().numpy())
            logits.append(logits_t.float())
        self.compute_s += time.perf_counter() - t0
        if self.is_cam:
            cams = maps
            members = np.stack([
                np.stack([
                    particle_scores(cam[k], inputs["positions"][k], inputs["box"][k],
                                    self.kernel)
                    for k in range(len(cam))
                ]) for cam in cams
            ], axis=1).astype(np.float32)  # [B, E, N]
        else:  # [B, C, M, M] maps: the channel sum is shown, Γ reads the particle's species
            cams = [m.sum(axis=1) for m in maps]
            members = np.stack([
                np.stack([
                    attr.particle_attribution(amap[k], inputs["positions"][k],
                                              inputs["types"][k], inputs["box"][k],
                                              self.kernel)
                    for k in range(len(amap))
                ]) for amap in maps
            ], axis=1).astype(np.float32)
        if len(logits) == 1:
            out_logits = logits[0].cpu().numpy()
        else:  # log of the mean class probability: softmax of it is the ensemble's prediction
            probs = torch.stack([torch.softmax(lg, dim=-1) for lg in logits]).mean(dim=0)
            out_logits = torch.log(probs).cpu().numpy()
        return {
            "cam": np.mean(cams, axis=0),
            "gamma": members.mean(axis=1),
            "gamma_members": members,
            "logits": out_logits,
            "correct": out_logits.argmax(1) == CLASSES.index(cls),
        }

    def _run(self, backend, batch_size, workers, threads_per_worker, progress, echo):
        summary = super()._run(backend, batch_size, workers, threads_per_worker, progress, echo)
        if summary["samples"] and summary["mode"] == "serial":  # still under the store's lock
            import zarr

            cost = {"ms_per_sample": 1e3 * self.compute_s / summary["samples"],
                    "images": int(summary["samples"]), "members": len(self.checkpoints),
                    "device": self.device, "threads": torch.get_num_threads(),
                    "what": "attribution of every member, from images to maps, batched "
                            f"{batch_size}; the read-out to particles not included"}
            if self.method == "integrated-gradients":
                cost["ig_steps"] = self.ig_steps
            zarr.open_group(self.out, mode="r+").attrs["cost"] = cost
        return summary


def run_gradcam(
    samples: str | os.PathLike,
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    split: str = "test",
    batch_size: int = 64,
    device: str = "auto",
    target: str = "glass",
    reporter: Any | None = None,
    method: str = attr.DEFAULT_METHOD,
    layer: str | None = None,
    randomize: str | None = None,
    ig_steps: int = attr.IG_STEPS,
    randomize_seed: int = 0,
) -> dict[str, Any]:
    """Grad-CAM (or the attribution ``method`` at ``layer``, of the trained network or of a
    ``randomize``-d one) and Γ for every done sample (both classes) of ``split`` into ``out``.

    Resumable: an existing store with the same parameters keeps its done samples. Returns a
    summary (items computed, misclassified items, ms per sample).
    """
    stage = GradCAM(samples, model_dir, out, split, target, device, method=method, layer=layer,
                    randomize=randomize, ig_steps=ig_steps, randomize_seed=randomize_seed)
    started = False

    def progress(done: int, total: int) -> None:
        nonlocal started
        if reporter is None:
            return
        if not started:
            reporter.start(total)
            started = True
        reporter.advance(done - getattr(progress, "last", 0))
        progress.last = done  # type: ignore[attr-defined]

    selected = sum(
        len(select_samples(stage.source, cls, split, stage.samples)) for cls in CLASSES
    )
    summary = stage.run("serial", batch_size, progress=progress, echo=lambda _: None)
    root = open_gradcam_store(out)
    wrong = []
    for cls in CLASSES:
        grp = root[cls]
        mask = np.asarray(grp["done"][:]) & ~np.asarray(grp["correct"][:])
        wrong += [{"class": cls, "sample": int(s)} for s in np.flatnonzero(mask)]
    items = summary["samples"]
    return {
        "out": str(out),
        "items": int(items),
        "already_done": int(selected - items),
        "misclassified": wrong,
        "wall_s": summary["wall_s"],
        "gradcam_ms_per_sample": 1e3 * stage.compute_s / max(items, 1),
        "wall_ms_per_sample": 1e3 * summary["wall_s"] / max(items, 1),
        "device": stage.device,
        "method": stage.method,
        "layer": stage.layer,
        "randomize": stage.randomize,
    }


def attribution_plan(methods: str | list[str] | None = None, layers: str | list[str] | None = None,
                     randomize: str | list[str] | None = None,
                     ) -> list[tuple[str, str | None, str | None]]:
    """(method, layer, randomisation) of every store asked for: each method (``all``: every
    one of :data:`glasscam.analysis.cnn.attribution.METHODS`) at each layer (CAMs only;
    ``all``: act1, act2, act3), of the trained network, then of each randomisation
    (``cascade`` = every step of the cascade, ``cascade:<module>``, ``shuffled-labels``).
    Raises ValueError naming a bad name."""
    names = attr.split_list(methods) or [attr.DEFAULT_METHOD]
    if "all" in names:
        names = list(attr.METHODS)
    for name in names:
        attr.method(name)
    lays = attr.split_list(layers) or [GRADCAM_LAYER]
    if "all" in lays:
        lays = list(attr.LAYERS)
    lays = list(dict.fromkeys(attr.check_layer(x) for x in lays))
    rands: list[str | None] = [None]
    for r in attr.split_list(randomize):
        if r == "cascade":
            rands += [f"cascade:{step}" for step in attr.CASCADE]
        else:
            rands.append(attr.randomization_tag(r))
    plan: list[tuple[str, str | None, str | None]] = []
    for rand in dict.fromkeys(rands):
        for name in dict.fromkeys(names):
            for lay in (lays if attr.METHODS[name].is_cam else [None]):
                plan.append((name, lay, rand))
    return plan


def shuffled_model_path(out: str | os.PathLike) -> Path:
    """Where the shuffled-label networks of a run go: beside the paper's store ``out``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_model_{attr.SHUFFLED}")


def run_attributions(
    samples: str | os.PathLike,
    model_dir: str | os.PathLike,
    out: str | os.PathLike,
    methods: str | list[str] | None = None,
    layers: str | list[str] | None = None,
    randomize: str | list[str] | None = None,
    split: str = "test",
    batch_size: int = 64,
    device: str = "auto",
    target: str = "glass",
    ig_steps: int = attr.IG_STEPS,
    reporter_for: Any | None = None,
    echo: Any = print,
) -> list[dict[str, Any]]:
    """Every store of :func:`attribution_plan`: ``out`` is the paper's Grad-CAM store
    (``gradcam.zarr``), the others go beside it
    (:func:`glasscam.analysis.cnn.attribution.store_path`). A shuffled-label randomisation
    first trains (or resumes) the shuffled-label networks in :func:`shuffled_model_path`.
    ``reporter_for(description)`` gives the progress reporter of one store. Every option is
    checked before anything is computed. Returns the summaries of :func:`run_gradcam`."""
    plan = attribution_plan(methods, layers, randomize)
    attr.gauss_legendre(ig_steps)
    summaries = []
    shuffled = None
    for name, layer, rand in plan:
        path = attr.store_path(out, name, layer, rand)
        model = model_dir
        if rand == attr.SHUFFLED:
            if shuffled is None:
                shuffled = attr.train_shuffled_labels(samples, model_dir, shuffled_model_path(out),
                                                      device, echo)
            model = shuffled
        what = name + (f" {layer}" if layer else "") + (f" [{rand}]" if rand else "")
        reporter = reporter_for(what) if reporter_for is not None else None
        summaries.append(run_gradcam(samples, model, path, split=split, batch_size=batch_size,
                                     device=device, target=target, reporter=reporter,
                                     method=name, layer=layer, randomize=rand,
                                     ig_steps=ig_steps))
    return summaries
