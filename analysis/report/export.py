"""Export configurations with per-particle fields as extended XYZ (OVITO reads the header)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

SPECIES = ("A", "B")


def write_extxyz(
    path: str | Path,
    positions: np.ndarray,
    types: np.ndarray,
    box: np.ndarray,
    fields: Mapping[str, np.ndarray],
    comment: str = "",
) -> Path:
    """One frame: species, x y z (z = 0, 2D) and one real column per field."""
    pos = np.asarray(positions, dtype=float)
    n = len(pos)
    for name, values in fields.items():
        if np.asarray(values).shape != (n,):
            raise ValueError(f"field {name!r} has shape {np.shape(values)}, expected ({n},)")
        if not name.replace("_", "").isalnum():
            raise ValueError(f"field name {name!r} must be alphanumeric/underscore for extxyz")
    lx, ly = (float(v) for v in np.asarray(box).reshape(2))
    props = "species:S:1:pos:R:3" + "".join(f":{name}:R:1" for name in fields)
    header = (
        f'Lattice="{lx:.8g} 0 0 0 {ly:.8g} 0 0 0 1" Properties={props} pbc="T T F"'
        + (f' Comment="{comment}"' if comment else "")
    )
    cols = [np.asarray(v, dtype=float) for v in fields.values()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fh.write(f"{n}\n{header}\n")
        for i in range(n):
            extra = "".join(f" {c[i]:.6g}" for c in cols)
            fh.write(f"{SPECIES[int(types[i])]} {pos[i, 0]:.6f} {pos[i, 1]:.6f} 0.0{extra}\n")
    return path
