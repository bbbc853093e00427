"""Standard-format exports of configurations: extended XYZ (ASE, OVITO) and LAMMPS data files.

One extended-XYZ convention for everything glasscam writes (``glasscam apply``, the report's
``RUN/export/``, ``glasscam export``), written by :func:`extxyz_frame`:

* species: the element placeholders ``Ni`` = A and ``P`` = B (the Kob–Andersen mixture models
  Ni80P20; :data:`glasscam.analysis.apply.read.SPECIES_SYMBOLS`), so ASE reads every frame;
  the integer ``type`` column (1 = A, 2 = B, as LAMMPS types) is authoritative, and ``id``
  (1…N unless the configuration has its own IDs);
* positions ``pos`` (z = 0, 2D) and one real column per field, all with 9 significant digits
  (ASE's own writer keeps 8 decimals, too few for Γ ~ 1e-4);
* the periodic box in ``Lattice`` (``pbc="T T F"``) and per-frame info keys.

Columns of the run exports (the same names for liquid and glass; NaN where a field was not
computed for a sample): ``gamma`` (Γ, bare), ``voronoi`` (ϒ), ``ttop`` (Θ), as ``glasscam apply``
names them; the Fig. 1 export adds ``<field>_cg`` (coarse-grained at ξ and normalised) and
``propensity_<target>`` / ``propensity_<target>_cg`` (Δ at the output closest to the δ target
``0p3``, ``1``, ``3``) with the δ actually reached in the info key
``propensity_<target>_delta`` (a target not reached has no column). Per-frame info:
``class``, ``sample``, ``split``, ``p_glass`` (the network's P(glass), when Grad-CAM ran) and
``misclassified`` (T when the network got the sample's class wrong: left out of the paper's
per-sample statistics, footnote 2).

:func:`write_lammps_data` writes one configuration as a LAMMPS data file (``atom_style
atomic``, 2D box with z in [-0.5, 0.5]) that ``read_data`` reads back to the same positions;
masses (1.0, Lennard-Jones units) are written unless asked not to, and the model's pair
coefficients are written as comments, or as a ``PairIJ Coeffs`` section that needs the
``pair_style`` defined before ``read_data``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: species index (0 = A, 1 = B) -> extended-XYZ element placeholder; one mapping, documented in
#: glasscam.analysis.apply.read (which reads it back)
from glasscam.analysis.apply.read import SPECIES_SYMBOLS

SYMBOLS = tuple(SPECIES_SYMBOLS[s] for s in ("A", "B"))
#: the per-particle columns of every run export, in order (glasscam apply's names)
FIELD_COLUMNS = ("gamma", "voronoi", "ttop")


def _info_value(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "T" if value else "F"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return repr(float(value))
    text = str(value).replace('"', "'")
    return f'"{text}"' if (not text or any(c in text for c in " =,\t")) else text


def _check_name(name: str) -> None:
    if not name or not name.replace("_", "").isalnum() or name[0].isdigit():
        raise ValueError(f"column or info name {name!r} must be alphanumeric/underscore and "
                         "start with a letter (extended XYZ)")


def extxyz_frame(
    positions: np.ndarray,
    species: np.ndarray,
    box: np.ndarray,
    columns: Mapping[str, np.ndarray] | None = None,
    ids: np.ndarray | None = None,
    info: Mapping[str, Any] | None = None,
) -> str:
    """One frame of glasscam's extended XYZ (see the module doc): ``species`` 0 = A, 1 = B;
    integer columns stay integers (``I``), the others are real (``R``, 9 significant digits)."""
    pos = np.asarray(positions, dtype=np.float64)
    species = np.asarray(species)
    n = len(pos)
    if species.shape != (n,):
        raise ValueError(f"species has shape {species.shape}, expected ({n},)")
    if species.size and not np.isin(species, (0, 1)).all():
        raise ValueError(f"species must be 0 (A) or 1 (B), got {sorted(set(species.tolist()))}")
    ids = np.arange(1, n + 1) if ids is None else np.asarray(ids)
    cols: dict[str, np.ndarray] = {}
    for name, values in (columns or {}).items():
        _check_name(name)
        arr = np.asarray(values)
        if arr.shape != (n,):
            raise ValueError(f"column {name!r} has shape {arr.shape}, expected ({n},)")
        cols[name] = arr
    for name in info or {}:
        _check_name(name)
    kinds = {name: "I" if np.issubdtype(a.dtype, np.integer) else "R" for name, a in cols.items()}
    props = ":".join(["species:S:1:pos:R:3:type:I:1:id:I:1",
                      *(f"{c}:{kinds[c]}:1" for c in cols)])
    lx, ly = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(2))
    extra = "".join(f" {k}={_info_value(v)}" for k, v in (info or {}).items())
    out = io.StringIO()
    out.write(f"{n}\nLattice=\"{lx!r} 0.0 0.0 0.0 {ly!r} 0.0 0.0 0.0 1.0\" "
              f"Properties={props}{extra} pbc=\"T T F\"\n")
    for i in range(n):
        s = int(species[i])
        vals = "".join(f" {int(c[i])}" if kinds[name] == "I" else f" {float(c[i]):.9g}"
                       for name, c in cols.items())
        out.write(f"{SYMBOLS[s]} {pos[i, 0]:.9g} {pos[i, 1]:.9g} 0 {s + 1} {int(ids[i])}{vals}\n")
    return out.getvalue()


def write_extxyz(
    path: str | Path,
    positions: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    fields: Mapping[str, np.ndarray],
    info: Mapping[str, Any] | None = None,
    ids: np.ndarray | None = None,
) -> Path:
    """One frame as ``path`` (written atomically): species ``types`` (0 = A, 1 = B), one real
    column per field."""
    from glasscam.insitu.integrity import write_atomically

    text = extxyz_frame(positions, types, box, fields, ids, info)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda tmp: tmp.write_text(text))


# --------------------------------------------------------------------------------------------
# the run folder's samples


def _network_verdict(gradcam, cls: str, idx: int) -> dict[str, Any]:
    """P(glass) and whether the network got the sample wrong, from gradcam.zarr."""
    if gradcam is None or "done" not in gradcam[cls] or not bool(gradcam[f"{cls}/done"][idx]):
        return {}
    logits = np.asarray(gradcam[f"{cls}/logits"][idx], dtype=np.float64)
    p = np.exp(logits - logits.max())
    return {"p_glass": float(p[-1] / p.sum()),
            "misclassified": not bool(gradcam[f"{cls}/correct"][idx])}


def sample_columns(inp, cls: str, idx: int) -> dict[str, np.ndarray]:
    """The bare per-particle fields of one stored sample, always the same columns
    (:data:`FIELD_COLUMNS`): NaN where a stage did not compute the field for it."""
    n = int(inp.natoms)
    out = {name: np.full(n, np.nan) for name in FIELD_COLUMNS}
    g = inp.gradcam
    if g is not None and "done" in g[cls] and bool(g[f"{cls}/done"][idx]):
        out["gamma"] = np.asarray(g[f"{cls}/{inp.gradcam_field}"][idx], dtype=np.float64)
    ind = inp.indicators
    if bool(ind[f"{cls}/done"][idx]):
        for name in ("voronoi", "ttop"):
            out[name] = np.asarray(ind[f"{cls}/{name}"][idx], dtype=np.float64)
    return out


def frame_info(inp, cls: str, idx: int, split: str = "") -> dict[str, Any]:
    """Per-frame info of a run export: class, sample, split, the network's verdict."""
    info: dict[str, Any] = {"class": cls, "sample": int(idx)}
    if split:
        info["split"] = split
    verdict = _network_verdict(inp.gradcam, cls, idx)
    info.update(verdict)
    if "misclassified" not in verdict:
        info["misclassified"] = False
    return info


def export_samples(inp, out_dir: str | Path, split: str = "test") -> list[Path]:
    """``out_dir/<class>_<sample>.extxyz`` for every done sample of ``split`` of a run
    (``inp``: :func:`glasscam.analysis.correlate.tables.open_inputs`)."""
    from glasscam.analysis.stage import select_samples

    written = []
    for cls in ("glass", "liquid"):
        for idx in select_samples(inp.samples, cls, split, str(inp.samples_path)):
            i = int(idx)
            pos = np.asarray(inp.samples[f"{cls}/positions"][i], dtype=np.float64)
            types = np.asarray(inp.samples[f"{cls}/types"][i])
            box = np.asarray(inp.samples[f"{cls}/box"][i], dtype=np.float64)
            written.append(write_extxyz(Path(out_dir) / f"{cls}_{i}.extxyz", pos, types, box,
                                        sample_columns(inp, cls, i),
                                        frame_info(inp, cls, i, split)))
    return written


# --------------------------------------------------------------------------------------------
# LAMMPS data file


def _pair_lines(system: str | None) -> list[str]:
    """The model's ``pair_style``/``pair_coeff`` commands (glasscam.insitu.systems), or []."""
    if not system:
        return []
    from glasscam.insitu import systems

    try:
        return systems.get(system).pair_commands()
    except ValueError:
        return []


def write_lammps_data(
    path: str | Path,
    positions: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    ids: np.ndarray | None = None,
    system: str | None = None,
    masses: bool = True,
    pair_coeffs: bool = False,
    title: str = "glasscam configuration",
    comments: Sequence[str] = (),
) -> Path:
    """One 2D configuration as a LAMMPS data file (``atom_style atomic``, types 1 = A, 2 = B).

    Positions are written with 17 significant digits (read back exactly). The box is
    [0, Lx) × [0, Ly) × [-0.5, 0.5] (a deck reading it sets ``dimension 2`` first). ``masses``:
    a ``Masses`` section (1.0, Lennard-Jones units); ``pair_coeffs``: a ``PairIJ Coeffs``
    section of ``system``'s potential (the deck must issue the ``pair_style`` line before
    ``read_data``); otherwise the ``pair_style``/``pair_coeff`` commands are written as comments.
    """
    from glasscam.insitu.integrity import write_atomically

    pos = np.asarray(positions, dtype=np.float64)
    species = np.asarray(types).astype(np.int64)
    n = len(pos)
    if pos.ndim != 2 or pos.shape[1] != 2 or species.shape != (n,):
        raise ValueError(f"positions must be [N, 2] and types [N]; got {pos.shape} and "
                         f"{species.shape}")
    if n and not np.isin(species, (0, 1)).all():
        raise ValueError(f"types must be 0 (A) or 1 (B), got {sorted(set(species.tolist()))}")
    lx, ly = (float(v) for v in np.asarray(box, dtype=np.float64).reshape(2))
    wrapped = np.mod(pos, [lx, ly])
    wrapped[wrapped >= [lx, ly]] = 0.0
    ids = np.arange(1, n + 1) if ids is None else np.asarray(ids, dtype=np.int64)
    pair = _pair_lines(system)
    title = " ".join(title.split())
    out = io.StringIO()
    out.write(f"LAMMPS data file: {title} (glasscam; types 1 = A, 2 = B; atom_style atomic)\n\n")
    out.write(f"{n} atoms\n2 atom types\n\n")
    out.write(f"0.0 {lx!r} xlo xhi\n0.0 {ly!r} ylo yhi\n-0.5 0.5 zlo zhi\n\n")
    for line in comments:
        out.write(f"# {line}\n")
    if pair and not pair_coeffs:
        out.write(f"# the {system} potential (glasscam.insitu.systems), for your deck:\n")
        out.write("".join(f"#   {line}\n" for line in pair))
    if comments or (pair and not pair_coeffs):
        out.write("\n")
    if masses:
        out.write("Masses\n\n1 1.0\n2 1.0\n\n")
    if pair_coeffs:
        if not pair:
            raise ValueError(f"no pair coefficients for system {system!r}: give a model of "
                             "the table (kam, abm)")
        style = pair[0].split()[1]
        out.write(f"PairIJ Coeffs # {style}\n\n")
        out.write("".join(" ".join(line.split()[1:]) + "\n" for line in pair[1:]))
        out.write("\n")
    out.write("Atoms # atomic\n\n")
    for i in range(n):
        out.write(f"{int(ids[i])} {int(species[i]) + 1} {float(wrapped[i, 0])!r} "
                  f"{float(wrapped[i, 1])!r} 0.0\n")
    text = out.getvalue()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def export_lammps_data(
    samples: str | Path,
    sample: int,
    cls: str,
    out: str | Path,
    masses: bool = True,
    pair_coeffs: bool = False,
) -> Path:
    """A stored sample (``cls`` liquid or glass) of a samples store as a LAMMPS data file."""
    from glasscam.analysis.structure.indicators import system_of
    from glasscam.insitu.schema import CLASSES, open_samples_store

    if cls not in CLASSES:
        raise ValueError(f"class {cls!r}: choose one of {list(CLASSES)}")
    root = open_samples_store(samples)
    nsamples = int(root[f"{cls}/done"].shape[0])
    if not 0 <= sample < nsamples:
        raise ValueError(f"{samples}: sample {sample} out of range (0…{nsamples - 1})")
    if not bool(root[f"{cls}/done"][sample]):
        raise ValueError(f"{samples}: field '{cls}/done' is False for sample {sample}")
    params = dict(root.attrs["parameters"])
    try:
        system = system_of(params, str(samples))
    except ValueError:
        system = None
    pos = np.asarray(root[f"{cls}/positions"][sample], dtype=np.float64)
    types = np.asarray(root[f"{cls}/types"][sample])
    box = np.asarray(root[f"{cls}/box"][sample], dtype=np.float64)
    temp = params.get("TL" if cls == "liquid" else "TG")
    what = f"{cls} sample {sample} of {Path(samples).resolve()}"
    notes = [what]
    if temp is not None and not (isinstance(temp, float) and math.isnan(temp)):
        notes.append(f"snapshot at T = {temp} ({'T_L' if cls == 'liquid' else 'T_G'})")
    return write_lammps_data(out, pos, types, box, system=system, masses=masses,
                             pair_coeffs=pair_coeffs, title=f"{cls} sample {sample}",
                             comments=notes)
