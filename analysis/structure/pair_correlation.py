"""Two-body structure: the radial distribution function g(r) (paper Supplementary Fig. S7)."""

from __future__ import annotations

import numpy as np


def radial_distribution(
    positions: np.ndarray, box: np.ndarray, r_max: float = 5.0, bins: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """g(r) of one periodic 2D configuration (all species), with freud.

    Returns (bin centres, g). ``r_max`` must stay below half the shorter box edge.
    """
    import freud

    lx, ly = (float(v) for v in np.asarray(box).reshape(2))
    if not 0 < r_max < 0.5 * min(lx, ly):
        raise ValueError(f"r_max = {r_max} must be in (0, {0.5 * min(lx, ly):g}) for box {lx}x{ly}")
    fbox = freud.box.Box.from_box([lx, ly], dimensions=2)
    pts = np.zeros((len(positions), 3), dtype=np.float32)
    pts[:, :2] = np.asarray(positions) - [lx / 2, ly / 2]
    rdf = freud.density.RDF(bins=bins, r_max=r_max)
    rdf.compute(system=(fbox, fbox.wrap(pts)))
    return np.asarray(rdf.bin_centers), np.asarray(rdf.rdf)


def mean_radial_distribution(
    frames: list[tuple[np.ndarray, np.ndarray]], r_max: float = 5.0, bins: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """g(r) averaged over several (positions, box) frames."""
    if not frames:
        raise ValueError("no frames to average g(r) over")
    total = None
    r = None
    for positions, box in frames:
        r, g = radial_distribution(positions, box, r_max, bins)
        total = g if total is None else total + g
    return r, total / len(frames)
