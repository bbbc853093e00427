"""A trained model applied to any configuration: P(glass), the Grad-CAM map and Γ (paper §3.2),
with the checks that make the numbers mean what they meant in training.

:func:`load_model` gives a :class:`TrainedModel` (one network or an ensemble). Its
:meth:`TrainedModel.explain` takes positions, species and a box and returns an
:class:`Explanation`. Before anything is computed the configuration is checked against the
model's training data (:class:`TrainingGeometry`, from the samples-store parameters recorded in
the checkpoint):

* **density** within 1 % of the training density, and the **composition** (fraction of A)
  within 0.02 of it: another density or mixture is another system;
* **pixel size**: the image is gridized at the training pixel size L/M. The paper's dense head
  ("fc") fixes M, so the box must be the training box; the "gap" head takes any M: the box is
  gridized into M' = round(L / pixel) pixels, refused when that changes the pixel size by more
  than 1 %. A square box only (the gridization uses one M for both axes). The gap head's
  Grad-CAM weights scale as 1/M'^2 (dy/dA = W/M'^2); the map is multiplied by (M'/M)^2 so that
  Γ does not depend on the size of the box: a box tiled 2 x 2 gives the tiled map.

Positions are wrapped and cast to float32 before gridization, exactly as the quench hook does
(``image == gridize(float32 positions)``), so a stored sample written out by LAMMPS and read back
gives the image the network was trained on and the same Γ as ``glasscam gradcam``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DENSITY_TOLERANCE = 0.01  # relative
COMPOSITION_TOLERANCE = 0.02  # absolute, in the fraction of A
PIXEL_TOLERANCE = 0.01  # relative


class ModelInputError(ValueError):
    """A configuration the model cannot score as trained; the message gives the numbers."""


@dataclass(frozen=True)
class TrainingGeometry:
    """What the model was trained on (from the samples store's parameters)."""

    system: str
    natoms: int
    density: float
    fraction_a: float | None
    grid: int
    channels: int
    kernel: str

    @property
    def box(self) -> float:
        return math.sqrt(self.natoms / self.density)

    @property
    def pixel(self) -> float:
        return self.box / self.grid

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> TrainingGeometry:
        from glasscam.insitu import systems

        raw = ckpt.get("store_parameters")
        params = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        where = ckpt.get("path", "checkpoint")
        if not params:
            raise ModelInputError(f"{where}: the checkpoint records no training-data parameters "
                                  "(field 'store_parameters'); retrain it with this glasscam")
        name = str(params.get("model") or params.get("system") or "unknown")
        table = systems.SYSTEMS.get(name)
        density = params.get("rho", params.get("density", table.density if table else None))
        frac = params.get("fracA", table.fraction_a if table else None)
        if density is None:
            raise ModelInputError(f"{where}: field 'store_parameters' gives no density")
        cfg = ckpt["model_config"]
        return cls(system=name, natoms=int(params["natoms"]), density=float(density),
                   fraction_a=None if frac is None else float(frac), grid=int(cfg["grid"]),
                   channels=int(cfg["channels"]), kernel=str(params.get("kernel", "cic")))


@dataclass
class Explanation:
    """What the model says about one configuration."""

    p_glass: float  # ensemble-mean probability of the glass class
    logits: np.ndarray  # f4 [2] (ensemble: log of the mean class probability)
    cam: np.ndarray  # f4 [M', M'] Grad-CAM map of the glass class (members' mean)
    gamma: np.ndarray  # f4 [N] Γ_i = G^-1(L)(r_i) (members' mean), bare
    gamma_members: np.ndarray  # f4 [E, N]
    gamma_cg: np.ndarray  # f4 [N] Γ coarse-grained at xi (not normalised)
    xi: float
    grid: int
    positions: np.ndarray  # f4 [N, 2] as gridized
    voronoi: np.ndarray | None = None  # f8 [N] ϒ
    ttop: np.ndarray | None = None  # f8 [N] Θ
    extra: dict[str, Any] = field(default_factory=dict)


class TrainedModel:
    """One trained network or an ensemble, ready to explain configurations."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        from glasscam.analysis.cnn.network import resolve_device
        from glasscam.analysis.cnn.train import CHECKPOINT, load_members

        self.path = Path(path).resolve()
        self.device = resolve_device(device)
        members = load_members(self.path, self.device)
        self.networks = [m for m, _ in members]
        self.checkpoints = [c for _, c in members]
        first = self.checkpoints[0]
        self.head = str(first["model_config"].get("head", "fc"))
        self.geometry = TrainingGeometry.from_checkpoint(first)
        for c in self.checkpoints[1:]:
            if c["model_config"] != first["model_config"]:
                raise ModelInputError(f"{c['path']}: an ensemble member of another architecture "
                                      f"than {self.path / CHECKPOINT}")

    @property
    def any_size(self) -> bool:
        return self.head == "gap"

    def __repr__(self) -> str:
        g = self.geometry
        return (f"TrainedModel({str(self.path)!r}: {len(self.networks)} network(s), head "
                f"{self.head}, {g.system} N={g.natoms} rho={g.density:g} grid {g.grid} pixel "
                f"{g.pixel:.4f})")

    # ---- checks ------------------------------------------------------------------------------
    def grid_for(self, species: np.ndarray, box: np.ndarray, where: str = "configuration"
                 ) -> int:
        """The grid M' for a configuration (raises :class:`ModelInputError` with the numbers)."""
        g = self.geometry
        lx, ly = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(2))
        n = len(species)
        rho = n / (lx * ly)
        if abs(rho / g.density - 1) > DENSITY_TOLERANCE:
            raise ModelInputError(
                f"{where}: density {rho:.5g} (N = {n}, box {lx:.6g} x {ly:.6g}), the model was "
                f"trained at {g.density:.5g} ({g.system}); more than "
                f"{DENSITY_TOLERANCE:.0%} apart")
        if g.fraction_a is not None and n:
            frac = float(np.mean(np.asarray(species) == 0))
            if abs(frac - g.fraction_a) > COMPOSITION_TOLERANCE:
                raise ModelInputError(
                    f"{where}: fraction of species A {frac:.4f}, the model was trained at "
                    f"{g.fraction_a:.4f} ({g.system}); check the type mapping (--types)")
        if abs(lx / ly - 1) > 1e-6:
            raise ModelInputError(f"{where}: box {lx:.6g} x {ly:.6g} is not square; the "
                                  "gridization uses one M for both axes")
        if not self.any_size:
            if abs(lx / g.box - 1) > PIXEL_TOLERANCE:
                raise ModelInputError(
                    f"{where}: box L = {lx:.6g} (N = {n}), the model's dense head ('fc', the "
                    f"paper's) fixes the image at {g.grid} x {g.grid} pixels of a box "
                    f"L = {g.box:.6g} (N = {g.natoms}); retrain with `glasscam train --head "
                    "gap` to score other box sizes")
            return g.grid
        grid = max(4, round(lx / g.pixel))
        if abs((lx / grid) / g.pixel - 1) > PIXEL_TOLERANCE:
            raise ModelInputError(
                f"{where}: box L = {lx:.6g} is {lx / g.pixel:.3f} training pixels "
                f"({g.pixel:.5g}); the nearest grid M' = {grid} would change the pixel size "
                f"by {abs((lx / grid) / g.pixel - 1):.2%} (> {PIXEL_TOLERANCE:.0%})")
        return grid

    # ---- the work ----------------------------------------------------------------------------
    def explain(self, positions: np.ndarray, types: np.ndarray, box: Any,
                indicators: bool = False, xi: float | None = None,
                where: str = "configuration") -> Explanation:
        """P(glass), Grad-CAM map, Γ (bare, and coarse-grained at ``xi``; default the
        paper's structural ξ of the system) and, with ``indicators``, ϒ and Θ.

        ``types``: species 0 = A, 1 = B (see :func:`glasscam.read_configuration` for files)."""
        import torch
        from glasscam.analysis.cnn.gradcam import grad_cam, particle_scores
        from glasscam.analysis.correlate.coarse_grain import coarse_grain
        from glasscam.analysis.paper import PAPER
        from glasscam.insitu.geometry import wrap
        from glasscam.insitu.gridize import gridize
        from glasscam.insitu.schema import CLASSES

        species = np.asarray(types).astype(np.int8)
        lengths = np.asarray(box, dtype=np.float64).reshape(-1)
        if lengths.size == 1:
            lengths = np.repeat(lengths, 2)
        pos64 = np.asarray(positions, dtype=np.float64)
        if pos64.ndim != 2 or pos64.shape[1] != 2 or len(pos64) != len(species):
            raise ModelInputError(f"{where}: positions must be [N, 2] and types [N], got "
                                  f"{pos64.shape} and {species.shape}")
        if not np.isfinite(pos64).all():
            raise ModelInputError(f"{where}: positions contain NaN or inf")
        if ((species < 0) | (species > 1)).any():
            raise ModelInputError(f"{where}: types must be 0 (A) or 1 (B)")
        g = self.geometry
        grid = self.grid_for(species, lengths, where)
        pos = wrap(pos64, lengths).astype(np.float32)  # as stored by the quench hook
        pos[pos >= lengths.astype(np.float32)] = 0.0
        image = gridize(pos, species, lengths, grid, g.channels, g.kernel)
        x = torch.from_numpy(np.ascontiguousarray(image[None], dtype=np.float32)).to(self.device)
        glass = CLASSES.index("glass")
        cams, logits = [], []
        # with the gap head dy/dA_kl = W / M'^2, so the Grad-CAM weights (their pixel mean)
        # scale as 1/M'^2: rescale to the training grid, so that Γ of a local environment does
        # not depend on the size of the box around it (identity at the training size)
        size_factor = (grid / g.grid) ** 2
        for net in self.networks:
            cam_t, logits_t = grad_cam(net, x, glass)
            cams.append(cam_t[0].float().cpu().numpy() * np.float32(size_factor))
            logits.append(logits_t[0].float())
        members = np.stack([particle_scores(c, pos, lengths, g.kernel) for c in cams]
                           ).astype(np.float32)
        if len(logits) == 1:
            out_logits = logits[0].cpu().numpy()
        else:
            probs = torch.stack([torch.softmax(lg, dim=-1) for lg in logits]).mean(dim=0)
            out_logits = torch.log(probs).cpu().numpy()
        p_glass = float(torch.softmax(torch.from_numpy(out_logits).double(), dim=-1)[glass])
        gamma = members.mean(axis=0)
        if xi is None:
            xi = float(PAPER["xi"].get(g.system, PAPER["xi"]["kam"])["structural"])
        gamma_cg = coarse_grain(gamma.astype(np.float64), pos.astype(np.float64), lengths, xi)
        result = Explanation(
            p_glass=p_glass, logits=out_logits.astype(np.float32),
            cam=np.mean(cams, axis=0).astype(np.float32), gamma=gamma,
            gamma_members=members, gamma_cg=np.asarray(gamma_cg, dtype=np.float32), xi=float(xi),
            grid=grid, positions=pos,
        )
        if indicators:
            from glasscam.analysis.structure.indicators import compute_sample
            from glasscam.analysis.structure.tong_tanaka import diameters_for

            system = g.system if g.system in ("kam", "abm") else "kam"
            result.voronoi, result.ttop = compute_sample(pos.astype(np.float64), species,
                                                         lengths, diameters_for(system))
        return result


def load_model(path: str | os.PathLike, device: str = "cpu") -> TrainedModel:
    """A trained model folder (``glasscam train --out``), one network or an ensemble."""
    return TrainedModel(path, device)
