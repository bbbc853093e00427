"""The liquid/glass classifier of the paper (§3.1; DESIGN §5).

Three convolutional layers, each followed by a rectified linear unit, with circular padding (the
box is periodic) and no pooling; then a fully connected layer, a dropout layer and the output
fully connected layer. Option ``head="gap"`` (not the paper's) averages the last feature maps
over the grid before the first dense layer, so the network takes any M: the CAM is then the
class activation map of Zhou et al. (2016), and a model trained on one box size scores another
at the same pixel size. With either head the dense layers are linear in A^m, so the Grad-CAM
weights do not depend on the input and the map of a configuration translated by whole pixels
is the translated map. The network returns the class scores y_C *before* softmax (logits), as
Grad-CAM needs; softmax is applied only outside the model (:func:`probabilities`).

Class order is :data:`glasscam.insitu.schema.CLASSES` = ("liquid", "glass"): logit 0 is liquid, 1
is glass.

The paper's hyper-parameters are in its (unavailable) Supplementary Material. The defaults of
:class:`CNNConfig` are ours, documented in ``docs/cnn.md``: 3x3 kernels, 16/32/64 channels, a
64-wide hidden FC layer, dropout 0.5. The text lists no activation between the two FC layers
(Keras' ``Dense`` default is linear), so there is none here either.

Circular padding is a custom autograd function (:func:`circular_pad2d`): it computes exactly
what ``nn.Conv2d(padding_mode="circular")`` computes, but its backward pass folds the halo back
with a few edge additions instead of the slice-and-scatter of the generic ``F.pad`` backward
(measured: the generic path made up a quarter of a training step on the CPU).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from glasscam.insitu.schema import CLASSES
from torch import nn

GLASS = CLASSES.index("glass")
LIQUID = CLASSES.index("liquid")
#: the module whose output is A^m, the feature maps Grad-CAM uses (last conv layer, after ReLU)
GRADCAM_LAYER = "act3"
#: the classifier heads (:attr:`CNNConfig.head`)
HEADS = ("fc", "gap")


@dataclass(frozen=True)
class CNNConfig:
    """Architecture of :class:`GlassCNN` (stored in every checkpoint)."""

    channels: int = 2  # C, input channels (one per species)
    grid: int = 64  # M, input is C x M x M
    conv_channels: tuple[int, int, int] = (16, 32, 64)
    kernel_size: int = 3
    fc_width: int = 64
    dropout: float = 0.5
    # "fc": the paper's dense head on the flattened M x M maps (fixes the input size);
    # "gap": global average pooling of the maps, then the same two dense layers: any M (a
    # model trained at N = 500 scores N = 2000 at the same pixel size)
    head: str = "fc"
    nclasses: int = len(CLASSES)
    # per-channel input standardisation x -> (x - mean_c) / std_c, fixed numbers (the train
    # split's statistics, set by `glasscam train --standardize`); None: raw images
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "conv_channels", tuple(int(c) for c in self.conv_channels))
        if (self.input_mean is None) != (self.input_std is None):
            raise ValueError("input_mean and input_std must be given together")
        if self.input_mean is not None and self.input_std is not None:
            mean = tuple(float(v) for v in self.input_mean)
            std = tuple(float(v) for v in self.input_std)
            if len(mean) != self.channels or len(std) != self.channels:
                raise ValueError(
                    f"input_mean/input_std need one value per channel ({self.channels}), "
                    f"got {len(mean)}/{len(std)}"
                )
            if not all(v > 0 for v in std):
                raise ValueError(f"input_std must be positive, got {std}")
            object.__setattr__(self, "input_mean", mean)
            object.__setattr__(self, "input_std", std)
        if len(self.conv_channels) != 3:
            raise ValueError(f"conv_channels must have 3 entries, got {self.conv_channels}")
        if self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same-size output), got {self.kernel_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["conv_channels"] = list(self.conv_channels)
        for key in ("input_mean", "input_std"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CNNConfig:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class _CircularPad2d(torch.autograd.Function):
    """Periodic halo of width p on the last two axes (same values as F.pad(..., "circular"))."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, p: int) -> torch.Tensor:  # type: ignore[override]
        ctx.p = p
        b, c, h, w = x.shape
        out = x.new_empty((b, c, h + 2 * p, w + 2 * p))
        out[:, :, p : h + p, p : w + p] = x
        out[:, :, :p, p : w + p] = x[:, :, h - p :, :]
        out[:, :, h + p :, p : w + p] = x[:, :, :p, :]
        out[:, :, :, :p] = out[:, :, :, w : w + p]
        out[:, :, :, w + p :] = out[:, :, :, p : 2 * p]
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        p = ctx.p
        g = grad.clone()
        h, w = g.shape[2] - 2 * p, g.shape[3] - 2 * p
        # fold the columns first (they include the corner rows), then the rows
        g[:, :, :, w : w + p] += g[:, :, :, :p]
        g[:, :, :, p : 2 * p] += g[:, :, :, w + p :]
        g[:, :, h : h + p, :] += g[:, :, :p, :]
        g[:, :, p : 2 * p, :] += g[:, :, h + p :, :]
        return g[:, :, p : h + p, p : w + p], None


def circular_pad2d(x: torch.Tensor, p: int) -> torch.Tensor:
    """Pad the last two axes of a 4-D tensor periodically by ``p`` on each side."""
    if p == 0:
        return x
    if p > min(x.shape[-2:]):
        raise ValueError(f"circular padding {p} exceeds the map size {tuple(x.shape[-2:])}")
    return _CircularPad2d.apply(x, p)


class CircularConv2d(nn.Conv2d):
    """A stride-1 'same' convolution on a periodic grid (circular padding of kernel_size // 2).

    Same parameters and same output as ``nn.Conv2d(..., padding=k // 2,
    padding_mode="circular")``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=0)
        self.halo = kernel_size // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(circular_pad2d(x, self.halo), self.weight, self.bias)


class GlassCNN(nn.Module):
    """conv1-act1-conv2-act2-conv3-act3 (circular, no pooling) -> fc -> dropout -> output.

    With ``config.input_mean/input_std`` set, images are first standardised per channel by
    those fixed numbers (non-trainable, not in the state dict: they live in the config), so
    every caller (training, evaluation, Grad-CAM) feeds the same raw images."""

    def __init__(self, config: CNNConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or CNNConfig()
        if config.input_mean is not None and config.input_std is not None:
            shape = (1, config.channels, 1, 1)
            mean = torch.tensor(config.input_mean, dtype=torch.float32).reshape(shape)
            scale = 1.0 / torch.tensor(config.input_std, dtype=torch.float32).reshape(shape)
            self.register_buffer("input_mean", mean, persistent=False)
            self.register_buffer("input_scale", scale, persistent=False)
        else:
            self.input_mean = self.input_scale = None
        c1, c2, c3 = config.conv_channels
        k = config.kernel_size
        self.conv1 = CircularConv2d(config.channels, c1, k)
        self.act1 = nn.ReLU(inplace=True)  # in place: the conv output is not needed again
        self.conv2 = CircularConv2d(c1, c2, k)
        self.act2 = nn.ReLU(inplace=True)
        self.conv3 = CircularConv2d(c2, c3, k)
        self.act3 = nn.ReLU()  # its output is A^m, the Grad-CAM feature maps
        pooled = c3 if config.head == "gap" else c3 * config.grid * config.grid
        self.fc = nn.Linear(pooled, config.fc_width)
        self.dropout = nn.Dropout(config.dropout)
        self.output = nn.Linear(config.fc_width, config.nclasses)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """A^m: the activations of the last convolutional layer, shape [B, c3, M, M]."""
        if self.input_mean is not None:
            x = (x - self.input_mean) * self.input_scale
        x = self.act1(self.conv1(x))
        x = self.act2(self.conv2(x))
        return self.act3(self.conv3(x))

    def head(self, a: torch.Tensor) -> torch.Tensor:
        """Class scores y_C (logits) from the feature maps."""
        pooled = a.mean(dim=(2, 3)) if self.config.head == "gap" else torch.flatten(a, 1)
        return self.output(self.dropout(self.fc(pooled)))

    @property
    def any_size(self) -> bool:
        """Whether the network takes images of any M x M (the "gap" head)."""
        return self.config.head == "gap"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [B, nclasses] (no softmax) of images [B, C, M, M] (any M with "gap")."""
        c, m = self.config.channels, self.config.grid
        ok = x.ndim == 4 and x.shape[1] == c and (
            x.shape[2] == x.shape[3] >= 1 if self.any_size else x.shape[2:] == (m, m))
        if not ok:
            size = "M, M (any M)" if self.any_size else f"{m}, {m}"
            raise ValueError(
                f"input of shape {tuple(x.shape)}: this network takes [B, {c}, {size}] images"
            )
        return self.head(self.feature_maps(x))


class EnsembleCNN(nn.Module):
    """K independently seeded networks as one classifier: the mean of their class
    probabilities. ``forward`` returns log of that mean (a valid logit vector: its softmax is
    the mean probability), so training-time evaluation code applies unchanged."""

    def __init__(self, members: list[GlassCNN]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = torch.stack([torch.softmax(m(x), dim=-1) for m in self.members])
        return torch.log(probs.mean(dim=0))


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over classes: the probability of each class (applied outside the network)."""
    return torch.softmax(logits, dim=-1)


def tune_host_allocator() -> bool:
    """Keep freed activation buffers in the process heap (glibc only; returns whether it did).

    Activations of a 64 x 64 batch of 32 are ~32 MB each, above glibc's mmap threshold: every
    allocation was a fresh mmap whose pages the kernel zeroes on first touch (measured: ~1e5
    page faults and ~0.37 s of system time per training step, a quarter of the step). With mmap
    off for malloc and no heap trimming, those buffers are reused. This changes where memory
    comes from, not what is computed. Set GLASSCAM_NO_MALLOC_TUNING=1 to skip.
    """
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or os.environ.get("GLASSCAM_NO_MALLOC_TUNING"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        ok = libc.mallopt(m_mmap_max, 0) == 1
        ok &= libc.mallopt(m_trim_threshold, 1 << 30) == 1
        return bool(ok)
    except (OSError, AttributeError):
        return False


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; otherwise the named torch device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device
