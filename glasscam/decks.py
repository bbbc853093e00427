"""The shipped LAMMPS decks and presets (package data of ``glasscam.inputs``).

They are found with :mod:`importlib.resources`, so an installed wheel, an editable install and
a source checkout all answer the same way. :func:`copy_decks` puts a copy where a user wants
one, for the LAMMPS idiom::

    glasscam decks .  &&  mpirun -np 4 lmp -partition 4x1 -in kam/quench.in -var out s.zarr
"""

from __future__ import annotations

import filecmp
import os
import shutil
from importlib import resources
from pathlib import Path

SYSTEMS = ("kam", "abm")
DECKS = ("quench.in", "propensity.in", "aging.in")
PRESETS = "presets"
SLURM = "slurm"  # SLURM batch scripts of every stage (templates)


class DeckError(ValueError):
    """A deck, preset or inputs folder is missing, or a copy would overwrite an edited file."""


def packaged_inputs() -> Path:
    """The folder of the decks and presets that ship with this installation."""
    folder = resources.files("glasscam.inputs")
    path = Path(str(folder))
    if not path.is_dir():  # not a plain folder (a zip import): unsupported for LAMMPS decks
        raise DeckError(f"glasscam's decks are not in a folder on disk ({folder})")
    return path


def inputs_dir(inputs: str | os.PathLike | None = None) -> Path:
    """``inputs`` (a user's copy, checked) or the packaged folder."""
    if inputs is None:
        return packaged_inputs()
    path = Path(inputs).resolve()
    if not path.is_dir():
        raise DeckError(f"{path}: inputs folder does not exist (option --inputs)")
    return path


def deck_path(system: str, deck: str, inputs: str | os.PathLike | None = None) -> Path:
    """``<inputs>/<system>/<deck>`` (e.g. ``kam/quench.in``), which must exist."""
    if system not in SYSTEMS:
        raise DeckError(f"unknown system {system!r}; choose one of {SYSTEMS}")
    path = inputs_dir(inputs) / system / deck
    if not path.is_file():
        raise DeckError(f"{path}: deck does not exist")
    return path


def preset_names(inputs: str | os.PathLike | None = None) -> list[str]:
    return sorted(p.stem for p in (inputs_dir(inputs) / PRESETS).glob("*.toml"))


def shipped_files(inputs: str | os.PathLike | None = None) -> list[Path]:
    """Every deck and preset, relative to the inputs folder."""
    root = inputs_dir(inputs)
    files = [Path(system) / deck for system in SYSTEMS for deck in DECKS]
    files += [Path(PRESETS) / f"{name}.toml" for name in preset_names(inputs)]
    files += sorted(p.relative_to(root) for p in (root / SLURM).glob("*.sbatch"))
    missing = [str(f) for f in files if not (root / f).is_file()]
    if missing:
        raise DeckError(f"{root}: missing {missing} (a broken installation?)")
    return files


def copy_decks(dest: str | os.PathLike, force: bool = False) -> list[Path]:
    """Copy every deck and preset into ``dest`` (``dest/kam/quench.in`` ...).

    A file that already exists with the same content is left as it is; one that differs (an
    edited deck) is never overwritten unless ``force``: the error names every such file and
    nothing is copied. Returns the paths written.
    """
    src = packaged_inputs()
    dest = Path(dest)
    files = shipped_files()
    edited = [
        dest / f for f in files
        if (dest / f).exists() and not filecmp.cmp(src / f, dest / f, shallow=False)
    ]
    if edited and not force:
        raise DeckError(
            "refusing to overwrite edited file(s) "
            + ", ".join(str(p) for p in edited)
            + " (they differ from the shipped decks); pass --force to overwrite them"
        )
    written = []
    for f in files:
        target = dest / f
        if target.exists() and target not in edited:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / f, target)
        written.append(target)
    return written
