"""Factories of small, real stores for tests, benchmarks and trying things out.

Nothing here is used by the production path: these write real ``glasscam.samples/3`` stores
(through the schema module) from stand-in configurations, so that a test of the CNN, the
Grad-CAM stage or the propensity deck needs no quench.

* :func:`synthetic_samples_store` — liquid = uniform random positions, glass = a jittered
  square lattice: two structures a network tells apart at once (no LAMMPS).
* :func:`make_reference_samples` — small quickly-made glasses of a model of the table (one
  serial ``lmp`` run each), for the propensity deck.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from glasscam.analysis.dynamics.propensity import read_dump
from glasscam.insitu import integrity
from glasscam.insitu.schema import CLASSES


def synthetic_configuration(
    cls: str, natoms: int, box: float, rng: np.random.Generator, fraction_a: float = 0.65
) -> tuple[np.ndarray, np.ndarray]:
    """A stand-in configuration: ``liquid`` = uniform random positions, ``glass`` = a jittered
    square lattice with vacancies and a random offset (a different structure, easy to tell)."""
    types = (rng.random(natoms) >= fraction_a).astype(np.int8)
    if cls == "liquid":
        pos = rng.random((natoms, 2)) * box
    elif cls == "glass":
        n = int(np.ceil(np.sqrt(natoms)))
        a = box / n
        ij = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
        sites = ij[rng.permutation(len(ij))[:natoms]]
        pos = (sites + 0.5) * a + rng.normal(scale=0.08 * a, size=(natoms, 2))
        pos += rng.random(2) * box
    else:
        raise ValueError(f"unknown class {cls!r}")
    return np.mod(pos, box).astype(np.float32), types


def synthetic_samples_store(
    path: str | os.PathLike,
    nsamples: int = 32,
    natoms: int = 256,
    grid: int = 32,
    channels: int = 2,
    seed: int = 1,
    density: float = 1.2,
    kernel: str = "cic",
):
    """Write a real ``glasscam.samples/3`` store of synthetic configurations; return its root."""
    from glasscam.insitu.gridize import gridize
    from glasscam.insitu.schema import create_samples_store

    box = float(np.sqrt(natoms / density))
    params = {
        "system": "synthetic",
        "nsamples": nsamples,
        "natoms": natoms,
        "channels": channels,
        "grid": grid,
        "ncool": 1,
        "seed": seed,
        "density": density,
        "kernel": kernel,
    }
    root = create_samples_store(path, params)
    rng = np.random.default_rng(seed)
    for cls in CLASSES:
        pos_all = np.empty((nsamples, natoms, 2), np.float32)
        types_all = np.empty((nsamples, natoms), np.int8)
        images = np.empty((nsamples, channels, grid, grid), np.float32)
        for s in range(nsamples):
            pos, types = synthetic_configuration(cls, natoms, box, rng)
            pos_all[s], types_all[s] = pos, types
            images[s] = gridize(pos, types, (box, box), grid, channels, kernel)
        grp = root[cls]
        grp["positions"][:] = pos_all
        grp["types"][:] = types_all
        grp["box"][:] = np.full((nsamples, 2), box)
        grp["image"][:] = images
        grp["seed"][:] = seed * 100000 + np.arange(nsamples)
        grp["done"][:] = True
    integrity.seal(root)  # the checksums a real writer records
    return root


_GLASS_DECK = """\
units lj
dimension 2
boundary p p p
atom_style atomic
atom_modify map array
lattice sq 1.2
region box block 0 ${M} 0 ${M} -0.5 0.5
create_box 2 box
create_atoms 1 box
set type 1 type/ratio 2 ${fb} ${seed}
mass * 1.0
include ${potential}
neighbor 0.3 bin
fix flat all enforce2d
timestep 0.005
velocity all create 2.0 ${seed} dist gaussian mom yes rot no
fix md all nvt temp 2.0 2.0 0.5
run ${nmelt}
unfix md
fix md all nvt temp 0.6 0.05 0.5
run ${ncool}
minimize 0 1e-8 10000 100000
write_dump all custom ${dump} id type x y modify sort id format float %.17g
"""


def make_reference_samples(
    path: str | os.PathLike,
    side: int = 16,
    nsamples: int = 3,
    not_done: Sequence[int] = (1,),
    seed: int = 5,
    model: str = "kam",
    nmelt: int = 2000,
    ncool: int = 2000,
    lmp: str | None = None,
) -> Path:
    """A small ``glasscam.samples/3`` store of quickly made glasses (not the paper's quench).

    ``side``² particles on a square lattice at ρ = 1.2, random types (KAM 65:35, ABM 50:50),
    melted at T = 2, cooled 0.6 → 0.05 over ``ncool`` steps and minimised (one serial ``lmp``
    run per sample, so atom IDs do not depend on a rank count). Samples in ``not_done`` are left
    not done. Both classes get the same configuration (enough for the propensity path, which
    reads ``glass``).
    """
    import subprocess
    import sys
    import tempfile

    from glasscam.insitu import systems
    from glasscam.insitu.schema import create_samples_store

    system = systems.get(model)
    lmp = lmp or str(Path(sys.executable).parent / "lmp")
    n = side * side
    params = {
        "nsamples": nsamples,
        "natoms": n,
        "channels": 2,
        "grid": 8,
        "ncool": 1,
        "seed": seed,
        "model": system.name,
        **system.potential_parameters(),
        "note": "glasscam.testing.make_reference_samples (test glass)",
    }
    root = create_samples_store(path, params)
    with tempfile.TemporaryDirectory() as tmp:
        deck = Path(tmp) / "glass.in"
        deck.write_text(_GLASS_DECK)
        pot = Path(tmp) / "potential.in"
        pot.write_text("\n".join(system.pair_commands()) + "\n")
        for s in range(nsamples):
            if s in set(not_done):
                continue
            dump = Path(tmp) / f"g{s}.dump"
            cmd = [lmp, "-nocite", "-log", "none", "-screen", "none", "-in", str(deck)]
            for k, v in {
                "M": side,
                "seed": seed + s,
                "dump": dump,
                "nmelt": nmelt,
                "ncool": ncool,
                "potential": pot,
                "fb": 1.0 - system.fraction_a,
            }.items():
                cmd += ["-var", k, str(v)]
            subprocess.run(cmd, check=True, capture_output=True, text=True)
            step, cols, data = next(read_dump(dump))
            lines = dump.read_text().splitlines()
            lx = float(lines[5].split()[1]) - float(lines[5].split()[0])
            ly = float(lines[6].split()[1]) - float(lines[6].split()[0])
            order = np.argsort(data[:, cols.index("id")])
            xy = data[order][:, [cols.index("x"), cols.index("y")]]
            xy = np.mod(xy, [lx, ly]).astype(np.float32)
            xy[xy >= np.float32(lx)] = 0.0
            types = (data[order][:, cols.index("type")] - 1).astype(np.int8)
            for cls in ("liquid", "glass"):
                g = root[cls]
                g["positions"][s] = xy
                g["types"][s] = types
                g["box"][s] = [lx, ly]
                g["seed"][s] = seed + s
                g["done"][s] = True
    integrity.seal(root)  # the checksums a real writer records
    return Path(path)


# ---- oracles: freud (the field's reference implementation) -------------------------------------


def freud_voronoi(positions: np.ndarray, box) -> tuple[np.ndarray, np.ndarray]:
    """freud's periodic Voronoi areas and directed neighbour pairs (sorted), for the tests."""
    import freud

    from glasscam.insitu.geometry import check_configuration

    pos, lengths = check_configuration(positions, box)
    fbox = freud.box.Box.from_box([lengths[0], lengths[1]])
    pts = np.zeros((len(pos), 3))
    pts[:, :2] = pos - lengths / 2
    vor = freud.locality.Voronoi().compute((fbox, pts))
    nl = vor.nlist
    pairs = np.stack([nl.query_point_indices, nl.point_indices], axis=1).astype(np.int64)
    pairs = np.unique(pairs, axis=0)
    return np.asarray(vor.volumes, dtype=np.float64), pairs


def freud_voronoi_cage(positions: np.ndarray, box):
    """The Voronoi cage of the cage-relative displacement, from freud's neighbour list."""
    from glasscam.insitu.cage import cage_from_pairs

    _, pairs = freud_voronoi(positions, box)
    return cage_from_pairs(len(positions), pairs[:, 0], pairs[:, 1], definition="voronoi")


# ---- propensity stores (glasscam.propensity/3) from given CRD values ----------------------------


def propensity_store_from_crd(
    path: str | os.PathLike,
    positions: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    crd: np.ndarray,
    steps: Sequence[int],
    samples: Sequence[int],
    temperature: float = 0.45,
    dt: float = 0.005,
    delta_stop: float | None = None,
    stop: Sequence[int] | None = None,
    source: str = "synthetic",
) -> Path:
    """A complete ``glasscam.propensity/3`` store of C configurations from given |CRD| values.

    ``positions`` [C, N, 2], ``types`` [C, N], ``box`` [C, 2], ``crd`` [C, Ns, K, N] (rows beyond
    ``stop[c]`` are ignored and stored as NaN; ``stop`` defaults to K − 1), ``samples`` the
    sample index of each configuration. propensity, delta and reached are computed as the
    in-situ path computes them (:func:`glasscam.insitu.isoconfigurational.
    configuration_propensity`), so readers and the correlate stage can be tested on planted
    fields without LAMMPS.
    """
    from glasscam.insitu.isoconfigurational import configuration_propensity
    from glasscam.insitu.schema import create_propensity_store

    crd = np.asarray(crd, dtype=np.float32)
    nconf, ns, k_all, n = crd.shape
    stops = np.full(nconf, k_all - 1) if stop is None else np.asarray(stop, dtype=np.int64)
    params = {
        "configurations": [int(i) for i in samples], "nreplicas": ns, "noutputs": k_all,
        "natoms": n, "temp": float(temperature), "dt": float(dt), "delta_stop": delta_stop,
        "samples": source, "class": "glass", "note": "glasscam.testing.propensity_store_from_crd",
    }
    ref = {"positions": np.asarray(positions, dtype=np.float32),
           "types": np.asarray(types, dtype=np.int8), "box": np.asarray(box, dtype=np.float64)}
    root = create_propensity_store(path, params, ref, np.asarray(steps), dt)
    rows = crd.copy()
    for c in range(nconf):
        rows[c, :, stops[c] + 1 :] = np.nan
    root["crd"][...] = rows
    root["stop"][:] = stops
    root["done"][...] = True
    prop_all = np.full((nconf, k_all, n), np.nan, dtype=np.float32)
    delta_all = np.full((nconf, k_all), np.nan)
    reached = np.zeros(nconf, dtype=bool)
    for c in range(nconf):
        prop, delta = configuration_propensity(root["crd"], c, ns, int(stops[c]))
        prop_all[c, : stops[c] + 1], delta_all[c, : stops[c] + 1] = prop, delta
        reached[c] = delta_stop is not None and delta[-1] >= delta_stop
    root["propensity"][...] = prop_all
    root["reached"][:] = reached
    root["delta"][...] = delta_all
    root["finished"][:] = True
    integrity.seal(root)  # the checksums a real writer records
    root.attrs.update({"source": source, "class": "glass", "samples": [int(i) for i in samples],
                       "temperature": float(temperature), "nreplicas": ns, "dt": float(dt),
                       "delta_stop": delta_stop})
    return Path(path)
