"""Gridization G (particles -> image) and its inverse G^-1 (grid map -> particles).

Pure array kernels: no I/O, no MPI. Both the in-situ hook (inside LAMMPS) and the offline
analysis (Grad-CAM inverse mapping) call these, so an image written in situ and a particle score
computed offline use exactly the same geometry.

Conventions (the paper's supplement, which fixes its own choice, is not available):

* The periodic box [0, Lx) x [0, Ly) is cut into an M x M grid; pixel (iy, ix) covers
  x in [ix hx, (ix+1) hx), y in [iy hy, (iy+1) hy) with hx = Lx/M, hy = Ly/M, and its centre is
  ((ix + 1/2) hx, (iy + 1/2) hy). Images are indexed ``image[channel, iy, ix]`` (row = y), so
  ``matplotlib.imshow(image[c], origin="lower")`` shows the box the usual way round.
* Channels: with ``channels=2`` species A (type 0) goes to channel 0 and B (type 1) to channel 1;
  with ``channels=1`` all particles share one channel.
* Deposition kernel ``"cic"`` (cloud in cell, the default): each particle spreads a unit weight
  bilinearly over the four pixel centres around it, periodically. ``"ngp"`` (nearest grid point)
  puts the whole unit into the pixel that contains the particle. Either way every channel of the
  image sums to the number of particles of that channel (the norm), and translating the whole
  configuration by exactly one pixel rolls the image by one pixel.
* Inverse mapping G^-1 uses the same kernel as a read-out: a particle's value is the weighted
  mean of the map over the pixels it was deposited into (weights sum to 1), i.e. periodic
  bilinear interpolation at the particle position for ``"cic"``. A constant map therefore gives a
  constant particle field, and the particle's own pixel always carries the largest weight
  (>= 1/4 in 2D, and >= each of the three others).
"""

from __future__ import annotations

import numpy as np

KERNELS = ("cic", "ngp")


def _check(positions: np.ndarray, box: np.ndarray, grid: int, kernel: str) -> tuple:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"positions must have shape (N, 2), got {pos.shape}")
    lengths = np.asarray(box, dtype=np.float64).reshape(-1)
    if lengths.shape != (2,) or not np.all(lengths > 0):
        raise ValueError(f"box must be two positive edge lengths (Lx, Ly), got {box!r}")
    if int(grid) != grid or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    if kernel not in KERNELS:
        raise ValueError(f"unknown gridization kernel {kernel!r}; choose one of {KERNELS}")
    if not np.all(np.isfinite(pos)):
        raise ValueError("positions contain NaN or inf")
    return pos, lengths


def deposition_weights(
    positions: np.ndarray, box: np.ndarray, grid: int, kernel: str = "cic"
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel indices and weights of every particle.

    Returns ``(flat_index, weight)``, both of shape (N, P) with P = 4 for ``"cic"`` and 1 for
    ``"ngp"``; ``flat_index = iy * M + ix`` and each row of ``weight`` sums to 1.
    """
    pos, lengths = _check(positions, box, grid, kernel)
    m = int(grid)
    # fractional pixel coordinates, periodic image taken first so any wrapped/unwrapped input
    # gives the same answer
    u = np.mod(pos, lengths) / lengths * m  # in [0, M)
    if kernel == "ngp":
        cell = np.floor(u).astype(np.int64) % m
        return (cell[:, 1] * m + cell[:, 0])[:, None], np.ones((len(pos), 1))
    u = u - 0.5  # measured from pixel centres
    lo = np.floor(u)
    frac = u - lo
    lo = lo.astype(np.int64)
    ix = np.stack([lo[:, 0], lo[:, 0] + 1, lo[:, 0], lo[:, 0] + 1], axis=1) % m
    iy = np.stack([lo[:, 1], lo[:, 1], lo[:, 1] + 1, lo[:, 1] + 1], axis=1) % m
    fx, fy = frac[:, 0:1], frac[:, 1:2]
    w = np.concatenate(
        [(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], axis=1
    )
    return iy * m + ix, w


def gridize(
    positions: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    grid: int = 64,
    channels: int = 2,
    kernel: str = "cic",
) -> np.ndarray:
    """G: a periodic 2D configuration -> float32 image of shape (channels, grid, grid)."""
    idx, w = deposition_weights(positions, box, grid, kernel)
    t = np.asarray(types).reshape(-1)
    if t.shape[0] != idx.shape[0]:
        raise ValueError(f"types has {t.shape[0]} entries but positions has {idx.shape[0]}")
    if channels == 1:
        chan = np.zeros_like(t, dtype=np.int64)
    elif channels == 2:
        if t.size and (t.min() < 0 or t.max() > 1):
            raise ValueError("types must be 0 (A) or 1 (B) for a 2-channel image")
        chan = t.astype(np.int64)
    else:
        raise ValueError(f"channels must be 1 or 2, got {channels!r}")
    m = int(grid)
    flat = (chan[:, None] * (m * m) + idx).reshape(-1)
    image = np.bincount(flat, weights=w.reshape(-1), minlength=channels * m * m)
    return image.reshape(channels, m, m).astype(np.float32)


def inverse_gridize(
    grid_map: np.ndarray, positions: np.ndarray, box: np.ndarray, kernel: str = "cic"
) -> np.ndarray:
    """G^-1: an (M, M) map (e.g. a Grad-CAM map) -> one float64 value per particle."""
    gmap = np.asarray(grid_map, dtype=np.float64)
    if gmap.ndim != 2 or gmap.shape[0] != gmap.shape[1]:
        raise ValueError(f"grid_map must be a square (M, M) array, got {gmap.shape}")
    idx, w = deposition_weights(positions, box, gmap.shape[0], kernel)
    return np.sum(gmap.reshape(-1)[idx] * w, axis=1)
