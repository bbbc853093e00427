"""Tong-Tanaka order parameter (TT-OP) Θ (paper §3.4, DESIGN §5).

    Θ_o = (1/N_o) Σ_{(i,j)} |θ¹_ij − θ²_ij|

over the N_o pairs (i, j) of Voronoi neighbours of o that are adjacent to each other around o,
i.e. over the Delaunay triangles (o, i, j) containing o (their number equals the number of
neighbours N_o). θ¹_ij is the angle at o in the actual configuration; θ²_ij is the ideal angle
at o of the triangle whose sides are the contact distances (σ_o+σ_i)/2, (σ_o+σ_j)/2 and
(σ_i+σ_j)/2 (law of cosines), σ the additive diameter of each species. Angles are in radians.

Diameters: the model table's ``diameters`` (:mod:`glasscam.insitu.systems`) — for the KAM the
additive convention of the paper (σ_AB = (σ_A + σ_B)/2, not the simulation's non-additive
σ_AB); the ABM is additive already.
"""

from __future__ import annotations

import numpy as np
from glasscam.insitu import systems
from glasscam.insitu.geometry import PeriodicVoronoi, check_configuration


def diameters_for(system: str) -> np.ndarray:
    """Additive diameters (σ_A, σ_B) of a model system ('kam' or 'abm'), from the model table
    (:mod:`glasscam.insitu.systems`)."""
    return np.asarray(systems.get(system, "system").diameters, dtype=np.float64)


def ideal_angle_table(diameters: np.ndarray) -> np.ndarray:
    """θ²[t_o, t_i, t_j]: ideal angle at o (radians) for every triple of species."""
    sig = np.asarray(diameters, dtype=np.float64).reshape(-1)
    if sig.ndim != 1 or not np.all(sig > 0):
        raise ValueError(f"diameters must be positive, got {diameters!r}")
    so, si, sj = np.meshgrid(sig, sig, sig, indexing="ij")
    a = (so + si) / 2
    b = (so + sj) / 2
    c = (si + sj) / 2
    return np.arccos(np.clip((a * a + b * b - c * c) / (2 * a * b), -1.0, 1.0))


class TongTanaka:
    """TT-OP Θ per particle (freud-like: ``compute()`` returns self, result in ``.order``).

    Parameters
    ----------
    diameters:
        additive diameter of each species, indexed by type (e.g. ``diameters_for("kam")``).
    """

    def __init__(self, diameters: np.ndarray | tuple[float, ...]) -> None:
        self.diameters = np.asarray(diameters, dtype=np.float64).reshape(-1)
        self._table = ideal_angle_table(self.diameters)
        self._order: np.ndarray | None = None
        self.voronoi: PeriodicVoronoi | None = None

    def compute(
        self,
        positions: np.ndarray,
        types: np.ndarray,
        box: np.ndarray,
        voronoi: PeriodicVoronoi | None = None,
    ) -> TongTanaka:
        """Compute Θ; pass an already computed ``voronoi`` of the same frame to reuse it."""
        pos, lengths = check_configuration(positions, box, types)
        t = np.asarray(types)
        if t.size and (t.min() < 0 or t.max() >= len(self.diameters)):
            raise ValueError(
                f"types must be in [0, {len(self.diameters)}), got range [{t.min()}, {t.max()}]"
            )
        if voronoi is None:
            voronoi = PeriodicVoronoi().compute(pos, lengths)
        self.voronoi = voronoi
        f = voronoi.fan
        t = t.astype(np.intp)
        vl, vr = f.vec_left, f.vec_right
        cross = vl[:, 0] * vr[:, 1] - vl[:, 1] * vr[:, 0]
        dot = vl[:, 0] * vr[:, 0] + vl[:, 1] * vr[:, 1]
        theta1 = np.arctan2(np.abs(cross), dot)
        theta2 = self._table[t[f.center], t[f.left], t[f.right]]
        n = len(pos)
        total = np.bincount(f.center, weights=np.abs(theta1 - theta2), minlength=n)
        count = np.bincount(f.center, minlength=n)
        self._order = total / count
        return self

    @property
    def order(self) -> np.ndarray:
        """Θ per particle, shape (N,), radians."""
        if self._order is None:
            raise RuntimeError("call compute() first")
        return self._order


def tong_tanaka(
    positions: np.ndarray, types: np.ndarray, box: np.ndarray, diameters: np.ndarray
) -> np.ndarray:
    """Θ per particle (radians) of one periodic 2D configuration."""
    return TongTanaka(diameters).compute(positions, types, box).order
