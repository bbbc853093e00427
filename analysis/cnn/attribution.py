"""Which attribution sees the dynamics? Grad-CAM and its rivals, raw and batched (issue 16).

Every method is a pure torch kernel over a batch of images [B, C, M, M] of the network's own
input (the raw CIC density images: standardisation, where the model has it, happens inside the
network), for one target class (glass unless told otherwise). Maps are **raw**: no per-sample
min–max, no rescaling; the only non-linearities are the ones in each paper's formula. The
paper's protocol normalises only later, after coarse-graining, in the correlate stage.

Class activation maps at a convolutional layer ``layer`` (:data:`LAYERS`: ``act1``, ``act2``,
``act3`` = the output of the ReLU after conv1, conv2, conv3; the paper's is ``act3``). With
A^m the feature maps of the layer and g^m = ∂y_C/∂A^m (y_C the class score before softmax)::

    gradcam     Selvaraju et al. 2017 (the paper)  w_m = (1/Z) Σ_kl g^m_kl,  L = ReLU(Σ_m w_m A^m)
    gradcam++   Chattopadhay et al. 2018           α^m_kl = g² / (2 g² + Σ_ab A^m_ab g³) (0 where
                                                   the denominator is 0), w_m = Σ_kl α^m_kl
                                                   ReLU(g^m_kl),  L = ReLU(Σ_m w_m A^m)
    hirescam    Draelos & Carin 2020               L = ReLU(Σ_m g^m ⊙ A^m)
    xgradcam    Fu et al. 2020                     w_m = Σ_kl A^m_kl g^m_kl / Σ_ab A^m_ab (0 for
                                                   an all-zero A^m),  L = ReLU(Σ_m w_m A^m)
    layercam    Jiang et al. 2021                  L = ReLU(Σ_m ReLU(g^m) ⊙ A^m)

Grad-CAM++ is written, as in its paper's closed form and in pytorch-grad-cam, for an output
exp(y_C): the per-sample factor exp(y_C) of its weights is left out (it is a positive number
per image, overflows for large logits, and every later statistic is per configuration and
scale-free). Each network layer keeps its 'same' circular padding and there is no pooling, so
every CAM lives on the input grid (no upsampling at any layer).

Input-space attributions, maps [C, M, M] on the input image x, with g = ∂y_C/∂x::

    saliency              Simonyan et al. 2014      |g|
    input-x-gradient      Shrikumar et al. 2016     x ⊙ g
    integrated-gradients  Sundararajan et al. 2017  (x − x̄) ⊙ ∫_0^1 g(x̄ + α (x − x̄)) dα

Integrated gradients: the integral is Gauss–Legendre quadrature with ``steps`` nodes on [0, 1]
(captum's default rule; :data:`IG_STEPS` = 32 by default), and the baseline x̄ is the
**uniform image of the same composition and density** (:func:`uniform_baseline`: every pixel
of channel c holds that image's mean of channel c, so each channel holds the same number of
particles). A zero image is a poor baseline for density images: "no particles at all" is far
outside anything the network was trained on (every image has ρ = 1.2), so the path crosses
images of every density and the attribution measures where particles *are* rather than how
they are *arranged*. The uniform image is the structureless fluid at the same density (and,
by translation invariance, the mean image of the ensemble), so IG attributes the difference
between this configuration's structure and no structure: completeness reads y_C(x) − y_C(x̄)
(tested on a small non-linear network: 32 nodes reproduce it within 1 %).

Particles (the gridization's adjoint). A CAM is one map on the grid: Γ_i = G⁻¹(L)(r_i) as for
the paper's Grad-CAM (:func:`glasscam.insitu.gridize.inverse_gridize`). An input-space map has
one channel per species, and the gridization deposits particle i only into the channel of its
own species with the weights w_ip of its kernel, image[c_i, p] += w_ip. Its adjoint reads each
particle from its own species' channel: Γ_i = Σ_p w_ip map[c_i, p] (:func:`particle_attribution`)
— a particle is never scored with the attribution of the other species' density at its site.
The ``cam`` array stored for an input-space method is the channel sum Σ_c map[c] (what a pixel
contributes over both species), for display; Γ is not G⁻¹ of it when C = 2.

Sanity checks (Adebayo et al. 2018): :func:`randomize_cascade` re-draws the weights of the
network from the top (``output``, ``fc``, ``conv3``, ``conv2``, ``conv1``: :data:`CASCADE`)
down to a given module, with each module's own seeded default initialisation, so step k keeps
the random weights of steps < k; :func:`train_shuffled_labels` trains each network of a model
folder again, same architecture, hyper-parameters and initial weights, on the train split with
its labels permuted.

All kernels are batched (the samples of a batch are independent in eval mode, so one backward
pass of Σ_b y_C(b) gives every sample's gradient), freeze the parameters for the call and
restore the parameters' ``requires_grad``, the training mode and remove their hooks on exit,
even on error. captum is the oracle of the tests only; nothing here imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from glasscam.analysis.cnn.network import GLASS, GRADCAM_LAYER
from glasscam.insitu.gridize import deposition_weights, inverse_gridize
from glasscam.insitu.integrity import file_sha256, write_text_atomically
from torch import nn

#: the convolutional layers a CAM can use: the output of the ReLU after each conv layer
LAYERS: tuple[str, ...] = ("act1", "act2", "act3")
#: the module whose output is A^m in the paper (last conv layer)
DEFAULT_LAYER = GRADCAM_LAYER
#: what an input-space method records as its layer
INPUT_LAYER = "input"
#: Gauss–Legendre nodes of integrated gradients (see the module docstring)
IG_STEPS = 32
#: integrated gradients' baseline (the uniform image of the same composition and density)
IG_BASELINE = "uniform"
#: cascading randomisation, top layer first (Adebayo et al. 2018)
CASCADE: tuple[str, ...] = ("output", "fc", "conv3", "conv2", "conv1")
#: the network trained again on permuted labels
SHUFFLED = "shuffled-labels"
#: images per forward/backward pass of integrated gradients (steps x batch are chunked)
IG_CHUNK = 256


@dataclass(frozen=True)
class Method:
    """One attribution method of :data:`METHODS`."""

    name: str
    kind: str  # "cam" (a map at a conv layer) or "input" (a map on the input image)
    reference: str
    slug: str  # its part of a store name (file-system safe)

    @property
    def is_cam(self) -> bool:
        return self.kind == "cam"


# ---- class activation maps: kernels of (A, g) -------------------------------------------------


def gradcam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM: ReLU(Σ_m mean_kl(g^m) A^m) of A, g [B, m, M, M] -> [B, M, M]."""
    weights = g.mean(dim=(2, 3))  # w_m = (1/Z) sum_kl dy_C/dA^m_kl, shape [B, m]
    b, m, h, w = a.shape
    # sum_m w_m A^m as a batched matrix product (no [B, m, M, M] temporary)
    cam = torch.bmm(weights.unsqueeze(1), a.reshape(b, m, h * w)).reshape(b, h, w)
    return torch.relu(cam)


def _weighted(a: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    b, m, h, w = a.shape
    return torch.relu(torch.bmm(weights.unsqueeze(1), a.reshape(b, m, h * w)).reshape(b, h, w))


def gradcam_pp_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ (closed form for exp(y_C), the per-sample factor exp(y_C) left out)."""
    g2 = g * g
    g3 = g2 * g
    denom = 2.0 * g2 + a.sum(dim=(2, 3), keepdim=True) * g3
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, 1.0), 0.0)
    weights = (alpha * torch.relu(g)).sum(dim=(2, 3))
    return _weighted(a, weights)


def hirescam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """HiResCAM: ReLU(Σ_m g^m ⊙ A^m) (equals Grad-CAM when g is constant over the grid)."""
    return torch.relu((g * a).sum(dim=1))


def xgradcam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """XGrad-CAM: weights Σ_kl A g / Σ_ab A (0 for an all-zero feature map)."""
    total = a.sum(dim=(2, 3))
    num = (a * g).sum(dim=(2, 3))
    weights = torch.where(total != 0, num / torch.where(total != 0, total, 1.0), 0.0)
    return _weighted(a, weights)


def layercam_map(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """LayerCAM: ReLU(Σ_m ReLU(g^m) ⊙ A^m)."""
    return torch.relu((torch.relu(g) * a).sum(dim=1))


CAM_KERNELS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "gradcam": gradcam_map,
    "gradcam++": gradcam_pp_map,
    "hirescam": hirescam_map,
    "xgradcam": xgradcam_map,
    "layercam": layercam_map,
}

#: every method, in the order of the tables (``glasscam gradcam --method NAME``)
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("gradcam", "cam", "Selvaraju et al. 2017 (the paper)", "gradcam"),
    Method("gradcam++", "cam", "Chattopadhay et al. 2018", "gradcampp"),
    Method("hirescam", "cam", "Draelos & Carin 2020", "hirescam"),
    Method("xgradcam", "cam", "Fu et al. 2020", "xgradcam"),
    Method("layercam", "cam", "Jiang et al. 2021", "layercam"),
    Method("saliency", "input", "Simonyan et al. 2014", "saliency"),
    Method("input-x-gradient", "input", "Shrikumar et al. 2016", "input-x-gradient"),
    Method("integrated-gradients", "input", "Sundararajan et al. 2017",
           "integrated-gradients"),
)}
DEFAULT_METHOD = "gradcam"


def method(name: str) -> Method:
    """The :class:`Method` called ``name``; a ValueError listing the names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown attribution method {name!r}; choose one of "
                         f"{', '.join(METHODS)}") from None


def check_layer(name: str) -> str:
    """A CAM layer name (``act1``..``act3``; ``conv1``..``conv3`` mean the same: the ReLU
    output of that convolution)."""
    if name.startswith("conv") and name[4:] in ("1", "2", "3"):
        name = "act" + name[4:]
    if name not in LAYERS:
        raise ValueError(f"unknown layer {name!r}; choose one of {', '.join(LAYERS)} (the "
                         "ReLU output of conv1, conv2, conv3)")
    return name


# ---- the shared machinery ---------------------------------------------------------------------


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the call; both restored on exit, even on error."""
    was_training = model.training
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.eval()
        for p, _ in frozen:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)


def layer_gradients(
    model: nn.Module, images: torch.Tensor, target: int = GLASS, layer: str = DEFAULT_LAYER,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, ∂y_target/∂A, logits) at ``layer`` for a batch: A, g [B, m, M, M], logits [B, K].

    A forward hook replaces the layer's output by a detached leaf, so only what lies above the
    layer is differentiated (the same cut as :func:`glasscam.analysis.cnn.gradcam.grad_cam`)."""
    module = model.get_submodule(check_layer(layer))
    captured: dict[str, torch.Tensor] = {}

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        a = output.detach().requires_grad_(True)
        captured["A"] = a
        return a

    handle = module.register_forward_hook(hook)
    try:
        with _frozen(model), torch.enable_grad():
            logits = model(images)
            a = captured["A"]
            (grads,) = torch.autograd.grad(logits[:, target].sum(), a)
        return a.detach(), grads, logits.detach()
    finally:
        handle.remove()


def input_gradients(model: nn.Module, images: torch.Tensor, target: int = GLASS,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(∂y_target/∂x [B, C, M, M], logits [B, K]) at the images x."""
    with _frozen(model), torch.enable_grad():
        x = images.detach().clone().requires_grad_(True)
        logits = model(x)
        (grads,) = torch.autograd.grad(logits[:, target].sum(), x)
    return grads, logits.detach()


def cam(model: nn.Module, images: torch.Tensor, name: str = DEFAULT_METHOD,
        target: int = GLASS, layer: str = DEFAULT_LAYER) -> tuple[torch.Tensor, torch.Tensor]:
    """The class activation map ``name`` [B, M, M] at ``layer`` and the logits [B, K]."""
    kernel = CAM_KERNELS.get(name)
    if kernel is None:
        raise ValueError(f"{name!r} is not a class activation map; choose one of "
                         f"{', '.join(CAM_KERNELS)}")
    a, g, logits = layer_gradients(model, images, target, layer)
    return kernel(a, g), logits


def saliency(model: nn.Module, images: torch.Tensor, target: int = GLASS,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """|∂y_target/∂x| [B, C, M, M] and the logits."""
    grads, logits = input_gradients(model, images, target)
    return grads.abs(), logits


def input_x_gradient(model: nn.Module, images: torch.Tensor, target: int = GLASS,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """x ⊙ ∂y_target/∂x [B, C, M, M] and the logits."""
    grads, logits = input_gradients(model, images, target)
    return images * grads, logits


def uniform_baseline(images: torch.Tensor) -> torch.Tensor:
    """The structureless image of the same composition and density: every pixel of channel c
    holds the image's mean over the pixels of channel c (each channel keeps its sum)."""
    return images.mean(dim=(2, 3), keepdim=True).expand_as(images).contiguous()


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes α and weights of Gauss–Legendre quadrature on [0, 1] (captum's scaling)."""
    if int(steps) != steps or steps < 1:
        raise ValueError(f"integrated gradients needs steps >= 1, got {steps!r}")
    x, w = np.polynomial.legendre.leggauss(int(steps))
    return 0.5 * (1.0 + x), 0.5 * w


def integrated_gradients(
    model: nn.Module, images: torch.Tensor, target: int = GLASS, steps: int = IG_STEPS,
    baseline: torch.Tensor | str = IG_BASELINE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x − x̄) ⊙ Σ_s w_s ∂y_target/∂x (x̄ + α_s (x − x̄)) [B, C, M, M] and the logits of x.

    ``baseline``: ``"uniform"`` (:func:`uniform_baseline`, the default), ``"zero"``, or a
    tensor of the images' shape. The steps × batch images go through the network in chunks of
    at most :data:`IG_CHUNK` images."""
    alphas, weights = gauss_legendre(steps)
    if isinstance(baseline, str):
        if baseline == "uniform":
            base = uniform_baseline(images)
        elif baseline == "zero":
            base = torch.zeros_like(images)
        else:
            raise ValueError(f"unknown baseline {baseline!r}; choose 'uniform' or 'zero'")
    else:
        base = baseline.to(images.dtype).expand_as(images)
    diff = images - base
    total = torch.zeros_like(images)
    b = images.shape[0]
    per = max(1, IG_CHUNK // max(b, 1))
    with _frozen(model), torch.enable_grad():
        for start in range(0, len(alphas), per):
            a_chunk = alphas[start:start + per]
            w_chunk = weights[start:start + per]
            scaled = torch.cat([base + float(a) * diff for a in a_chunk]).requires_grad_(True)
            logits = model(scaled)
            (grads,) = torch.autograd.grad(logits[:, target].sum(), scaled)
            grads = grads.reshape(len(a_chunk), *images.shape)
            wt = torch.as_tensor(w_chunk, dtype=grads.dtype, device=grads.device)
            total += (grads * wt.reshape(-1, 1, 1, 1, 1)).sum(dim=0)
    with _frozen(model), torch.no_grad():
        logits_x = model(images)
    return diff * total, logits_x


def attribute(
    model: nn.Module, images: torch.Tensor, name: str = DEFAULT_METHOD, target: int = GLASS,
    layer: str | None = None, steps: int = IG_STEPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw map of method ``name`` ([B, M, M] for a CAM, [B, C, M, M] on the input) and
    the logits [B, K] of ``images``. ``layer``: a CAM's layer (default the paper's, ``act3``);
    ``steps``: integrated gradients' nodes."""
    m = method(name)
    if m.is_cam:
        return cam(model, images, name, target, layer or DEFAULT_LAYER)
    if layer not in (None, INPUT_LAYER):
        raise ValueError(f"{name} is an input-space attribution: it has no layer (got {layer!r})")
    if name == "saliency":
        return saliency(model, images, target)
    if name == "input-x-gradient":
        return input_x_gradient(model, images, target)
    return integrated_gradients(model, images, target, steps)


# ---- particles: the gridization's adjoint ----------------------------------------------------


def particle_attribution(
    amap: np.ndarray, positions: np.ndarray, types: np.ndarray | None, box: np.ndarray,
    kernel: str = "cic",
) -> np.ndarray:
    """Γ_i of a map: G⁻¹ of an [M, M] map; for a [C, M, M] input-space map the adjoint of the
    per-species deposition, Γ_i = Σ_p w_ip map[c_i, p] with c_i the channel of particle i's
    species (channel 0 for everyone when C = 1)."""
    amap = np.asarray(amap, dtype=np.float64)
    if amap.ndim == 2:
        return inverse_gridize(amap, positions, box, kernel)
    if amap.ndim != 3 or amap.shape[1] != amap.shape[2]:
        raise ValueError(f"an attribution map must be [M, M] or [C, M, M], got {amap.shape}")
    channels, m = amap.shape[0], amap.shape[1]
    idx, w = deposition_weights(positions, box, m, kernel)
    if channels == 1:
        chan = np.zeros(len(idx), dtype=np.int64)
    else:
        if types is None:
            raise ValueError("a multi-channel map needs the particle types")
        chan = np.asarray(types, dtype=np.int64).reshape(-1)
        if chan.shape[0] != idx.shape[0] or chan.min() < 0 or chan.max() >= channels:
            raise ValueError(f"types must be {len(idx)} values in [0, {channels})")
    flat = amap.reshape(channels, m * m)
    return np.sum(flat[chan[:, None], idx] * w, axis=1)


def display_map(amap: torch.Tensor) -> torch.Tensor:
    """The [B, M, M] map stored as ``cam``: a CAM itself; an input-space map summed over its
    channels."""
    return amap if amap.ndim == 3 else amap.sum(dim=1)


# ---- store names -------------------------------------------------------------------------------


def randomization_tag(randomize: str | None) -> str | None:
    """Normalised randomisation: None, ``cascade:<module>`` or ``shuffled-labels``."""
    if randomize in (None, "", "none"):
        return None
    if randomize == SHUFFLED:
        return SHUFFLED
    if randomize.startswith("cascade:") and randomize.split(":", 1)[1] in CASCADE:
        return randomize
    raise ValueError(f"unknown randomisation {randomize!r}; choose cascade (every step), "
                     f"cascade:<{'|'.join(CASCADE)}> or {SHUFFLED}")


def store_name(name: str = DEFAULT_METHOD, layer: str | None = None,
               randomize: str | None = None, base: str = "gradcam") -> str:
    """The store of one method × layer (× randomisation): ``gradcam.zarr`` for the paper's
    Grad-CAM on ``act3`` of the trained network, otherwise ``gradcam_<method>[_<layer>]
    [_<randomisation>].zarr`` (the layer only when not ``act3``; ``gradcampp`` for
    ``gradcam++``; ``cascade-conv3``, ``shuffled-labels``)."""
    m = method(name)
    lay = check_layer(layer or DEFAULT_LAYER) if m.is_cam else INPUT_LAYER
    tag = randomization_tag(randomize)
    if m.name == DEFAULT_METHOD and lay == DEFAULT_LAYER and tag is None:
        return f"{base}.zarr"
    parts = [m.slug]
    if m.is_cam and lay != DEFAULT_LAYER:
        parts.append(lay)
    if tag is not None:
        parts.append(tag.replace(":", "-"))
    return f"{base}_{'_'.join(parts)}.zarr"


def store_path(out: str | os.PathLike, name: str = DEFAULT_METHOD, layer: str | None = None,
               randomize: str | None = None) -> Path:
    """Where a method's store goes when ``out`` is the paper's store (``…/gradcam.zarr``):
    ``out`` itself for the paper's Grad-CAM, otherwise beside it, named by :func:`store_name`
    with ``out``'s stem as the base."""
    out = Path(out)
    name_ = store_name(name, layer, randomize, base=out.stem)
    return out if name_ == f"{out.stem}.zarr" else out.with_name(name_)


# ---- sanity checks: randomised weights ----------------------------------------------------------


def _module_seed(seed: int, member: int, module: str) -> int:
    text = f"glasscam.randomize/{int(seed)}/{int(member)}/{module}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def randomize_cascade(model: nn.Module, down_to: str, seed: int = 0, member: int = 0,
                      ) -> nn.Module:
    """Re-draw, in place, the weights of the modules of :data:`CASCADE` from the top
    (``output``) down to ``down_to`` included, each by its own default initialisation
    (``reset_parameters``) from a seed of (seed, member, module): the same module gets the same
    random weights at every step of the cascade. The model should be on the CPU (the CPU
    generator is used, forked: the global RNG state is not touched). Returns the model."""
    if down_to not in CASCADE:
        raise ValueError(f"unknown cascade step {down_to!r}; choose one of {CASCADE}")
    for name in CASCADE[: CASCADE.index(down_to) + 1]:
        module = model.get_submodule(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_module_seed(seed, member, name))
            module.reset_parameters()
    return model


def shuffled_label_table(nsamples: int, samples: np.ndarray, seed: int) -> np.ndarray:
    """Label of every item code (class * nsamples + sample) of the train split: the true
    labels (half liquid, half glass) permuted by a generator of ``seed``; -1 elsewhere."""
    codes = np.concatenate([c * nsamples + np.asarray(samples) for c in range(2)])
    labels = np.repeat(np.arange(2), len(samples))
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5AFE]))
    table = np.full(2 * nsamples, -1, dtype=np.int64)
    table[codes] = labels[rng.permutation(len(labels))]
    return table


def train_shuffled_labels(
    samples: str | os.PathLike, model_dir: str | os.PathLike, out: str | os.PathLike,
    device: str = "auto", echo: Callable[[str], None] = print,
) -> Path:
    """Train every network of ``model_dir`` again on permuted labels into ``out`` (the same
    layout: one network, or ``ensemble.json`` and ``member<k>/``): same model configuration
    (with its input standardisation), same training configuration and seed (so the same initial
    weights and item order), the labels of the train split permuted (:func:`shuffled_label_table`
    from the member's seed). Checkpointed after every epoch in the format of ``glasscam
    train`` (``load_model`` reads it) and resumed; a checkpoint made from another network is
    refused, naming it. ``metrics.json`` records the accuracy on the shuffled train labels and
    on the true test labels (≈ 50 % when the network learned nothing real). Returns ``out``."""
    from glasscam.analysis.cnn.train import ENSEMBLE, ENSEMBLE_FORMAT, member_folders
    from glasscam.insitu.lock import OutputLock

    out = Path(out)
    folders = member_folders(model_dir)
    with OutputLock(out, what="shuffled-label model folder"):
        out.mkdir(parents=True, exist_ok=True)
        if len(folders) > 1:
            names = [f.name for f in folders]
            manifest = {"format": ENSEMBLE_FORMAT, "members": names,
                        "shuffled_labels_of": os.path.abspath(model_dir)}
            write_text_atomically(out / ENSEMBLE, json.dumps(manifest, indent=2) + "\n")
            for folder in folders:
                _train_one_shuffled(samples, folder, out / folder.name, device, echo)
        else:
            _train_one_shuffled(samples, folders[0], out, device, echo)
    return out


def _train_one_shuffled(samples, source: Path, out: Path, device: str, echo) -> None:
    from dataclasses import asdict

    from glasscam.analysis.cnn.data import SplitImages
    from glasscam.analysis.cnn.network import CNNConfig, GlassCNN, resolve_device
    from glasscam.analysis.cnn.train import (
        CHECKPOINT,
        CHECKPOINT_FORMAT,
        METRICS,
        TrainConfig,
        _atomic_save,
        epoch_lr,
        evaluate,
        load_checkpoint,
        make_optimizer,
        train_step,
    )
    from glasscam.insitu.schema import SchemaError

    src = load_checkpoint(source)
    src_sha = file_sha256(src["path"])
    fields = TrainConfig.__dataclass_fields__
    config = TrainConfig(**{k: v for k, v in src["train_config"].items() if k in fields})
    model_config = CNNConfig.from_dict(src["model_config"])
    dev = resolve_device(device)
    if config.threads:
        torch.set_num_threads(int(config.threads))
    train_set = SplitImages(samples, "train", model_config.grid, model_config.channels)
    test_set = SplitImages(samples, "test", model_config.grid, model_config.channels)
    table = shuffled_label_table(train_set.nsamples, train_set.samples, config.seed)
    origin = {"checkpoint": str(src["path"]), "sha256": src_sha, "seed": int(config.seed)}
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model = GlassCNN(model_config).to(dev)
    optimizer = make_optimizer(model.parameters(), config, dev)
    loss_fn = nn.CrossEntropyLoss()
    ckpt_path = out / CHECKPOINT
    start, history = 0, []
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        if ckpt.get("shuffled_labels") != origin:
            raise SchemaError(
                f"{ckpt_path}: field 'shuffled_labels' is {ckpt.get('shuffled_labels')!r}, "
                f"this run trains from {origin}; the model it was made from changed: delete "
                f"{out} (the shuffled-label networks) and run again")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng_cpu"])
        start, history = int(ckpt["epoch"]), list(ckpt["history"])
    if start < config.epochs:
        echo(f"shuffled labels: training {out} from {source} on permuted labels (epochs "
             f"{start + 1}..{config.epochs})")
    t0 = time.perf_counter()
    for epoch in range(start, config.epochs):
        model.train()
        for group in optimizer.param_groups:
            group["lr"] = epoch_lr(config, epoch)
        correct = seen = 0
        loss_sum = 0.0
        for batch in train_set.batches(config.batch_size, shuffle=True, seed=config.seed,
                                       epoch=epoch, prefetch=config.prefetch,
                                       augment=config.augment):
            labels = table[batch.classes * train_set.nsamples + batch.samples]
            x = torch.from_numpy(batch.images).to(dev)
            y = torch.from_numpy(labels).to(dev)
            batch_loss, batch_correct = train_step(model, optimizer, loss_fn, x, y)
            loss_sum += batch_loss
            correct += batch_correct
            seen += len(y)
        history.append({"epoch": epoch + 1, "train_loss_shuffled": loss_sum / seen,
                        "train_accuracy_shuffled": correct / seen})
        _atomic_save({
            "format": CHECKPOINT_FORMAT, "model_config": model_config.to_dict(),
            "train_config": asdict(config), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "rng_cpu": torch.get_rng_state(),
            "rng_cuda": None, "epoch": epoch + 1, "history": history,
            "wall_s": time.perf_counter() - t0, "samples": os.path.abspath(train_set.path),
            "shuffled_labels": origin, "torch": str(torch.__version__),
        }, ckpt_path)
    if not (out / METRICS).exists() or start < config.epochs:
        test = evaluate(model, test_set, config.batch_size, dev, config.prefetch)
        metrics = {"shuffled_labels": origin, "epochs_run": len(history),
                   "train_accuracy_shuffled": history[-1]["train_accuracy_shuffled"]
                   if history else None,
                   "test": {k: test[k] for k in ("n", "accuracy", "per_class_accuracy",
                                                 "confusion_matrix")},
                   "history": history}
        write_text_atomically(out / METRICS, json.dumps(metrics, indent=2) + "\n")
        echo(f"shuffled labels: {out} trained ({len(history)} epochs; true-label test "
             f"accuracy {100 * test['accuracy']:.0f} %)")


# ---- options -----------------------------------------------------------------------------


def split_list(text: str | Sequence[str] | None) -> list[str]:
    """A comma-separated option value (or a list) as a list of stripped non-empty items."""
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    return [str(s).strip() for s in items if str(s).strip()]
