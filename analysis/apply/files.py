"""`glasscam apply` on files: every frame of an input file scored by a trained model into
``OUT/<name>.zarr`` (schema ``glasscam.applied/1``, resumable frame by frame), then written as
``OUT/<name>.extxyz`` (ASE and OVITO read it) and ``OUT/<name>.lammpstrj`` (a LAMMPS dump).

Columns of both text outputs, per particle: ``id``, ``type`` (1 = A, 2 = B), the position,
``gamma`` (Γ, bare), ``gamma_cg`` (Γ coarse-grained at ξ), and with ``--indicators``
``voronoi`` (ϒ) and ``ttop`` (Θ). Extended XYZ species are the element placeholders ``Ni`` (A)
and ``P`` (B) (the Kob–Andersen mixture models Ni80P20; the ``type`` column is authoritative);
its per-frame info carries ``p_glass``, ``step`` and ``frame``. The dump carries P(glass) of the
frame in a constant per-atom column ``p_glass`` (a dump has no per-frame field).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from glasscam.analysis.apply.explain import ModelInputError, TrainedModel
from glasscam.analysis.apply.read import Frame, read_configurations
from glasscam.insitu.integrity import file_sha256


def output_name(path: Path, taken: set[str]) -> str:
    """``OUT/<stem>`` for an input, made unique when two inputs share a stem."""
    stem = path.name.split(".")[0] or "input"
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}-{k}"
    taken.add(name)
    return name


def _check_frames(frames: Sequence[Frame], model: TrainedModel) -> int:
    grids = {model.grid_for(f.species, f.box, f.where) for f in frames}
    sizes = {f.natoms for f in frames}
    if len(sizes) > 1 or len(grids) > 1:
        raise ModelInputError(
            f"{frames[0].source}: frames differ in particle number {sorted(sizes)} or grid "
            f"{sorted(grids)}; split the file (one store holds frames of one size)")
    return grids.pop()


def apply_file(
    model: TrainedModel,
    path: str | os.PathLike,
    out: str | os.PathLike,
    name: str | None = None,
    types: Mapping[str, str] | str | None = None,
    indicators: bool = False,
    xi: float | None = None,
    fmt: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score every frame of ``path`` into ``out/<name>.zarr``, then write the text outputs."""
    from glasscam.analysis.paper import PAPER
    from glasscam.insitu import integrity
    from glasscam.insitu.lock import OutputLock
    from glasscam.insitu.schema import create_applied_store, open_applied_store

    src = Path(path).resolve()
    frames = read_configurations(src, types, fmt)
    grid = _check_frames(frames, model)
    g = model.geometry
    if xi is None:
        xi = float(PAPER["xi"].get(g.system, PAPER["xi"]["kam"])["structural"])
    out_dir = Path(out).resolve()
    name = name or output_name(src, set())
    store = out_dir / f"{name}.zarr"
    params = {
        "input": str(src), "input_sha256": file_sha256(src), "model": str(model.path),
        "checkpoints": [c["path"] for c in model.checkpoints],
        "checkpoint_sha256": [file_sha256(Path(c["path"])) for c in model.checkpoints],
        "frames": len(frames), "natoms": frames[0].natoms, "grid": grid,
        "members": len(model.networks), "xi": float(xi), "indicators": bool(indicators),
        "types": dict(types) if isinstance(types, Mapping) else types,
        "kernel": g.kernel,
    }
    with OutputLock(store, what="applied store"):
        root, created = integrity.open_or_create(
            store, lambda tmp: create_applied_store(tmp, params),
            lambda p: open_applied_store(p, mode="r+", expect=params), "applied store", echo)
        if not created:
            integrity.check_and_repair(root, str(store), echo)
        done = np.asarray(root["done"][:], dtype=bool)
        todo = np.flatnonzero(~done).tolist()
        if len(todo) < len(frames):
            echo(f"{store}: {len(frames) - len(todo)} of {len(frames)} frames already done")
        unit = next(iter(integrity.units_of(root)))
        for n, k in enumerate(todo, 1):
            f = frames[k]
            r = model.explain(f.positions, f.species, f.box, indicators, xi, f.where)
            values = {
                "positions": r.positions, "types": f.species, "ids": f.ids, "box": f.box,
                "step": f.step, "p_glass": r.p_glass, "logits": r.logits, "cam": r.cam,
                "gamma": r.gamma, "gamma_cg": r.gamma_cg, "gamma_members": r.gamma_members,
                "voronoi": np.nan if r.voronoi is None else r.voronoi,
                "ttop": np.nan if r.ttop is None else r.ttop,
            }
            integrity.write_units(root, unit, [k], {p: np.asarray(v)[None] for p, v in
                                                    values.items()})
            echo(f"{src.name}: frame {k + 1}/{len(frames)} ({n}/{len(todo)} now): "
                 f"P(glass) = {r.p_glass:.4f}")
        xyz = write_extxyz(root, out_dir / f"{name}.extxyz")
        dump = write_dump(root, out_dir / f"{name}.lammpstrj")
    return {"input": str(src), "store": str(store), "extxyz": str(xyz), "dump": str(dump),
            "frames": len(frames), "computed": len(todo),
            "p_glass": np.asarray(root["p_glass"][:]).tolist()}


def _columns(root, k: int) -> dict[str, np.ndarray]:
    cols = {"gamma": np.asarray(root["gamma"][k]), "gamma_cg": np.asarray(root["gamma_cg"][k])}
    if root.attrs["parameters"].get("indicators"):
        cols |= {"voronoi": np.asarray(root["voronoi"][k]), "ttop": np.asarray(root["ttop"][k])}
    return cols


def write_extxyz(root, path: Path) -> Path:
    """Every frame of an applied store as extended XYZ, in glasscam's one convention
    (:func:`glasscam.analysis.report.export.extxyz_frame`: 9 significant digits, ``Ni``/``P``
    placeholders, integer ``type`` and ``id``); ASE is the test oracle that reads it back."""
    from glasscam.analysis.report.export import extxyz_frame
    from glasscam.insitu.integrity import write_atomically

    buf = io.StringIO()
    for k in range(root["done"].shape[0]):
        buf.write(extxyz_frame(
            root["positions"][k], np.asarray(root["types"][k]), root["box"][k],
            _columns(root, k), np.asarray(root["ids"][k]),
            {"p_glass": float(root["p_glass"][k]), "step": int(root["step"][k]), "frame": k}))
    text = buf.getvalue()
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def write_dump(root, path: Path) -> Path:
    """Every frame of an applied store as a LAMMPS text dump (``read_dump`` and OVITO read
    it)."""
    from glasscam.insitu.integrity import write_atomically

    buf = io.StringIO()
    for k in range(root["done"].shape[0]):
        species = np.asarray(root["types"][k])
        box = np.asarray(root["box"][k])
        cols = _columns(root, k)
        n = len(species)
        step = int(root["step"][k])
        buf.write(f"ITEM: TIMESTEP\n{max(step, k)}\nITEM: NUMBER OF ATOMS\n{n}\n"
                  f"ITEM: BOX BOUNDS pp pp pp\n0 {float(box[0])!r}\n0 {float(box[1])!r}\n-0.5 0.5\n"
                  f"ITEM: ATOMS id type x y {' '.join(cols)} p_glass\n")
        table = np.column_stack([
            np.asarray(root["ids"][k]), species + 1, np.asarray(root["positions"][k]),
            *cols.values(), np.full(n, float(root["p_glass"][k]))])
        fmt = ["%d", "%d", "%.9g", "%.9g"] + ["%.9g"] * len(cols) + ["%.9g"]
        np.savetxt(buf, table, fmt=fmt)
    text = buf.getvalue()
    return write_atomically(path, lambda tmp: tmp.write_text(text))
