"""The convention every in-situ hook follows: how a deck talks to Python and back.

* :class:`InputError` — the one error class for bad deck variables, bad keywords and unusable
  input stores (a ``ValueError``); its message names the hook or file and the field.
* :func:`parse_keywords` — the one keyword parser: deck strings → typed values, unknown or
  missing keywords named. Integers are parsed exactly (``123456789012345678`` survives;
  ``2e5`` is accepted only because it is an exact integer), floats must be finite.
* :func:`set_variable` — the one way to hand a value back to the deck (a ``string`` variable
  the deck declares).
* :func:`gather` — the one way to gather the atoms of a partition: positions (wrapped into
  [0, L) or unwrapped with the image flags), types (0 = A, 1 = B) and box, sorted by atom ID,
  on the partition's rank 0.

Import-light: numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

import numpy as np
from glasscam.insitu.geometry import wrap


class InputError(ValueError):
    """Bad deck variable, hook keyword or input store; raised before any MD step if possible."""


# ---- keywords ----------------------------------------------------------------------------


def exact_int(text: Any, name: str, where: str) -> int:
    """``text`` as an int, exactly (no float round trip); ``2e5`` is 200000, ``2.5`` an error."""
    if isinstance(text, bool):
        raise InputError(f"{where}: '{name}' must be an integer, got {text!r}")
    if isinstance(text, int):
        return text
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise InputError(f"{where}: '{name}' must be an integer, got {text!r}") from None
    if not value.is_finite() or value != value.to_integral_value():
        raise InputError(f"{where}: '{name}' must be an integer, got {text!r}")
    return int(value)


def finite_float(text: Any, name: str, where: str) -> float:
    try:
        value = float(str(text).strip())
    except ValueError:
        raise InputError(f"{where}: '{name}' must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise InputError(f"{where}: '{name}' must be finite, got {text!r}")
    return value


_CONVERT: dict[type, Callable[[Any, str, str], Any]] = {
    int: exact_int,
    float: finite_float,
    str: lambda text, name, where: str(text),
}


def parse_keywords(
    kw: Mapping[str, Any],
    types: Mapping[str, type],
    where: str,
    required: tuple[str, ...] = (),
    defaults: Mapping[str, Any] | None = None,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Typed values of the hook keywords ``kw`` (deck strings).

    ``types`` maps every known keyword to ``int``, ``float`` or ``str``; ``required`` must be
    present (a value of ``none`` or empty counts as absent); ``defaults`` fills the others;
    ``extra`` names keywords that are accepted but not converted (returned as given).
    """
    unknown = sorted(set(kw) - set(types) - set(extra))
    if unknown:
        raise InputError(
            f"{where}: unknown keyword(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted({*types, *extra})) or '(none)'}"
        )
    absent = [k for k in required if str(kw.get(k, "")).strip().lower() in ("", "none")]
    if absent:
        raise InputError(
            f"{where}: required variable(s) not set: {', '.join(absent)} (pass -var NAME VALUE)"
        )
    out: dict[str, Any] = {}
    for name, typ in types.items():
        if name in kw and str(kw[name]).strip().lower() not in ("", "none"):
            out[name] = _CONVERT[typ](kw[name], name, where)
        elif defaults is not None and name in defaults:
            out[name] = defaults[name]
    for name in extra:
        if name in kw:
            out[name] = kw[name]
    return out


def check(conditions: list[tuple[bool, str]], where: str) -> None:
    """Raise :class:`InputError` with the message of the first condition that is False."""
    for ok, message in conditions:
        if not ok:
            raise InputError(f"{where}: {message}")


# ---- deck variables ------------------------------------------------------------------------


def set_variable(lmp, name: str, value: Any) -> None:
    """Set the deck's ``string`` variable ``name`` (the deck must declare it)."""
    if lmp.set_string_variable(name, str(value)) != 0:
        raise InputError(
            f"cannot set LAMMPS variable '{name}': the deck must declare it as a string-style "
            f"variable (variable {name} string ...) and not pass it with -var"
        )


# ---- atoms ---------------------------------------------------------------------------------


@dataclass
class Frame:
    """A gathered configuration, sorted by atom ID (partition rank 0 only)."""

    positions: np.ndarray  # float64 [N, 2]: wrapped into [0, L) or unwrapped
    types: np.ndarray  # int8 [N], 0 = A, 1 = B
    box: np.ndarray  # float64 [2] edge lengths
    lo: np.ndarray  # float64 [2] lower box corner
    ids: np.ndarray  # int64 [N] atom IDs (sorted)
    computes: dict[str, np.ndarray]  # float64 [N] per-atom compute vectors, by compute ID


def _image_decoder(lmp) -> tuple[int, int, int]:
    size = int(lmp.extract_setting("imageint"))
    bits = 10 if size == 4 else 21
    return bits, (1 << bits) - 1, 1 << (bits - 1)


def gather(lmp, comm, unwrapped: bool = False, computes: tuple[str, ...] = ()) -> Frame | None:
    """The partition's atoms on its rank 0 (``None`` on the other ranks). Collective.

    ``unwrapped``: positions x + image · L (continuous trajectories, the CRD); otherwise
    positions wrapped into [0, L) in float64 (the LAMMPS coordinates can lie slightly outside
    the box between re-neighbourings). ``computes``: IDs of per-atom vector computes of the
    deck to gather as well (current on this step, e.g. ``pe/atom`` right after a run, whose
    last step is a thermo step).
    """
    import lammps
    from mpi4py import MPI

    nlocal = int(lmp.extract_global("nlocal"))
    boxlo, boxhi = lmp.extract_box()[:2]
    lo = np.array(boxlo[:2], dtype=np.float64)
    box = np.array(boxhi[:2], dtype=np.float64) - lo
    local = np.empty((nlocal, 4 + len(computes)), dtype=np.float64)
    for col, name in enumerate(computes, start=4):
        if not lmp.has_id("compute", name):
            raise InputError(
                f"the deck defines no compute '{name}' (a per-atom vector, e.g. "
                f"'compute {name} all pe/atom'), which this hook gathers"
            )
        values = lmp.numpy.extract_compute(name, lammps.LMP_STYLE_ATOM, lammps.LMP_TYPE_VECTOR)
        local[:, col] = np.asarray(values, dtype=np.float64)[:nlocal] if nlocal else 0.0
    if nlocal:
        local[:, 0] = np.asarray(lmp.numpy.extract_atom("id", nelem=nlocal), dtype=np.int64)
        local[:, 1] = np.asarray(lmp.numpy.extract_atom("type", nelem=nlocal), dtype=np.int64)
        x = np.asarray(lmp.numpy.extract_atom("x", nelem=nlocal, dim=3))[:, :2]
        if unwrapped:
            img = np.asarray(lmp.numpy.extract_atom("image", nelem=nlocal)).astype(np.int64)
            bits, mask, imax = _image_decoder(lmp)
            local[:, 2] = x[:, 0] + ((img & mask) - imax) * box[0]
            local[:, 3] = x[:, 1] + (((img >> bits) & mask) - imax) * box[1]
        else:
            local[:, 2:4] = x
    counts = comm.gather(nlocal, root=0)
    if comm.Get_rank() != 0:
        comm.Gatherv(local, None, root=0)
        return None
    width = local.shape[1]
    buf = np.empty((int(sum(counts)), width), dtype=np.float64)
    comm.Gatherv(local, [buf, np.asarray(counts) * width, None, MPI.DOUBLE], root=0)
    buf = buf[np.argsort(buf[:, 0], kind="stable")]
    pos = buf[:, 2:4].copy()
    if not unwrapped:
        pos = wrap(pos - lo, box)
    return Frame(
        positions=pos,
        types=(buf[:, 1] - 1).astype(np.int8),
        box=box,
        lo=lo,
        ids=buf[:, 0].astype(np.int64),
        computes={name: buf[:, col].copy() for col, name in enumerate(computes, start=4)},
    )


def wrap_float32(positions: np.ndarray, box: np.ndarray) -> np.ndarray:
    """float32 positions in [0, L), also after rounding to float32 (what the stores hold)."""
    u = np.asarray(positions, dtype=np.float64)
    u32 = u.astype(np.float32)
    box32 = np.asarray(box).astype(np.float32)
    u32 = np.where(u32 >= box32, np.float32(0.0), u32)  # rounded up onto L: it is 0 mod L
    return np.ascontiguousarray(u32, dtype=np.float32)


# ---- the command line's -var against the deck ---------------------------------------------


def command_line() -> list[str]:
    """This process's arguments (Linux ``/proc``; empty elsewhere or when unreadable)."""
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def deck_names(text: str) -> set[str]:
    """Variables a deck knows: declared (``variable NAME style ...``), referenced (``${NAME}``,
    ``$N``, ``v_NAME``), and the model-table defaults that ``glasscam.insitu.systems:define``
    declares."""
    import re

    names = set(re.findall(r"^\s*variable\s+(\w+)", text, re.M))
    names |= set(re.findall(r"\$\{(\w+)\}", text)) | set(re.findall(r"\bv_(\w+)", text))
    names |= set(re.findall(r"\$([A-Za-z0-9])(?![{\w])", text))
    if "glasscam.insitu.systems:define" in text:
        from glasscam.insitu.systems import SYSTEMS

        for system in SYSTEMS.values():
            names |= set(system.deck_defaults())
    return names


def check_variables(where: str, argv: list[str] | None = None) -> None:
    """Refuse a ``-var NAME value`` the deck (``-in DECK``) never uses: a misspelt variable
    (``-var nsample 5``) would otherwise be ignored and the run use the default. Does nothing
    when the deck is unknown (LAMMPS driven from Python, input on stdin)."""
    import difflib
    import os

    argv = command_line() if argv is None else argv
    deck = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-in", "-i")), None)
    if deck is None or not os.path.isfile(deck):
        return
    with open(deck, errors="replace") as fh:
        known = deck_names(fh.read())
    given = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("-var", "-v")]
    unknown = [g for g in given if g not in known]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hints.append(f"'{name}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
        raise InputError(
            f"{where}: -var {', '.join(hints)}: not a variable of the deck {deck}; it would be "
            "ignored and the default used")
