"""The model table: the one place where the two glass formers of the paper are written down.

Every number that defines a model lives here and nowhere else: the quench and propensity decks
get their potential from :func:`potential` (a hook that issues ``pair_style`` and
``pair_coeff``), their default composition, density and temperatures from :func:`define`; the
propensity setup checks a samples store against :meth:`System.potential_parameters`; the
Tong–Tanaka order parameter reads :attr:`System.diameters`; the cutoff cage of the
cage-relative displacement reads :meth:`System.sigma_matrix`. Values marked * in DESIGN §3 are
assumptions (the paper's Table 1 is an image); the reasons are in the field comments.

Species: type 0 (stores) = LAMMPS type 1 = A, type 1 = LAMMPS type 2 = B.
Units: Lennard-Jones (σ_AA = ε_AA = m = k_B = 1 for KAM).
Potential: ``lj/smooth/linear`` (force and energy continuous at the cutoff), cutoff
``cutoff`` · σ_ij for every pair.

Import-light (no numpy at import time): the decks call it inside every MPI rank.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from glasscam.insitu.deck import InputError

PAIR_STYLE = "lj/smooth/linear"
SPECIES = ("A", "B")


@dataclass(frozen=True)
class System:
    """One glass-forming binary mixture of the paper (§2.2, Table 1)."""

    name: str
    title: str
    sigma: tuple[tuple[float, float], tuple[float, float]]  # σ_ij, [[AA, AB], [AB, BB]]
    epsilon: tuple[tuple[float, float], tuple[float, float]]  # ε_ij
    cutoff: float  # r_c = cutoff · σ_ij
    fraction_a: float  # number fraction of species A
    density: float  # ρ = N / L²
    t_high: float  # equilibration temperature before the quench
    t_liquid: float  # T_L: the liquid snapshot
    t_glass: float  # T_G: the glass snapshot
    t_star: float  # T*: propensity runs at T* … 1.5 T* (paper §4.3)
    diameters: tuple[float, float]  # additive diameters (σ_A, σ_B) of the TT-OP (paper §3.4)

    # ---- the potential, as LAMMPS needs it and as stores record it -----------------------
    def sigma_matrix(self):
        """σ_ij as a 2 × 2 float64 array."""
        import numpy as np

        return np.array(self.sigma, dtype=np.float64)

    def potential_parameters(self) -> dict[str, float]:
        """The fields a store records to say which potential made it (compared on reuse)."""
        (saa, sab), (_, sbb) = self.sigma
        (eaa, eab), (_, ebb) = self.epsilon
        return {
            "sigmaAA": saa, "sigmaAB": sab, "sigmaBB": sbb,
            "epsAA": eaa, "epsAB": eab, "epsBB": ebb,
            "cutoff": self.cutoff,
        }

    def pair_commands(self) -> list[str]:
        """``pair_style`` and the three ``pair_coeff`` commands (LAMMPS types 1 = A, 2 = B)."""
        cut = [[self.cutoff * s for s in row] for row in self.sigma]
        lines = [f"pair_style {PAIR_STYLE} {_num(max(max(row) for row in cut))}"]
        for i, j in ((0, 0), (0, 1), (1, 1)):
            lines.append(
                f"pair_coeff {i + 1} {j + 1} {_num(self.epsilon[i][j])} "
                f"{_num(self.sigma[i][j])} {_num(cut[i][j])}"
            )
        return lines

    def deck_defaults(self) -> dict[str, float]:
        """Deck variables a quench deck takes from the table unless given with ``-var``."""
        return {
            "fracA": self.fraction_a,
            "rho": self.density,
            "Thigh": self.t_high,
            "TL": self.t_liquid,
            "TG": self.t_glass,
        }


def _num(x: float) -> str:
    """Shortest text that reads back as the same float (what LAMMPS parses)."""
    return repr(float(x))


SYSTEMS: dict[str, System] = {
    "kam": System(
        name="kam",
        title="2D Kob–Andersen mixture (non-additive)",
        sigma=((1.0, 0.8), (0.8, 0.88)),
        epsilon=((1.0, 1.5), (1.5, 0.5)),
        cutoff=2.5,
        # * 65 % of the σ = 1, ε = 1 species, as the standard 2D KA (Brüning et al. 2009); the
        #   authors' later code (MD-for-ML) makes σ = 0.88 the majority: -var fracA 0.35
        fraction_a=0.65,
        density=1.2,  # *
        t_high=4.0,
        t_liquid=0.8,
        t_glass=0.05,
        t_star=0.37,
        # additive convention of the paper for the TT-OP: σ_AB = (1 + 0.88)/2 = 0.94
        diameters=(1.0, 0.88),
    ),
    "abm": System(
        name="abm",
        title="2D additive binary mixture",
        sigma=((5.0 / 6.0, 1.0), (1.0, 7.0 / 6.0)),
        epsilon=((1.0, 1.0), (1.0, 1.0)),
        cutoff=2.5,
        fraction_a=0.5,  # *
        density=1.2,  # *
        t_high=4.0,
        t_liquid=2.0,
        t_glass=0.05,
        t_star=1.0,
        diameters=(5.0 / 6.0, 7.0 / 6.0),
    ),
}


def get(name: str, field: str = "model", where: str = "") -> System:
    """The system called ``name`` (case-insensitive); a ValueError names ``field`` otherwise."""
    key = str(name).strip().lower()
    try:
        return SYSTEMS[key]
    except KeyError:
        prefix = f"{where}: " if where else ""
        raise UnknownSystemError(
            f"{prefix}{field} = {name!r} is not a model of the table; choose one of "
            f"{sorted(SYSTEMS)} (glasscam.insitu.systems)"
        ) from None


class UnknownSystemError(InputError):
    """A model name that is not in the table."""


def check_potential(
    recorded: Mapping[str, Any], system: System, where: str, what: str = "store"
) -> None:
    """Refuse a store whose recorded model or potential differs from ``system``'s.

    ``recorded`` is the store's ``parameters``; the error names the first differing field.
    """
    model = recorded.get("model", recorded.get("system"))
    if model is None:
        raise PotentialMismatchError(
            f"{where}: the {what} records no 'model' parameter; cannot tell which potential "
            "made it"
        )
    if str(model).lower() != system.name:
        raise PotentialMismatchError(
            f"{where}: field 'model' of the {what} is {model!r}, this run is {system.name!r} "
            f"({system.title}); use a samples store of the same model"
        )
    for key, value in system.potential_parameters().items():
        if key not in recorded:
            raise PotentialMismatchError(
                f"{where}: the {what} records no potential field '{key}' (made before the model "
                "table?); cannot check that it used this potential"
            )
        if abs(float(recorded[key]) - value) > 1e-12 * max(1.0, abs(value)):
            raise PotentialMismatchError(
                f"{where}: field '{key}' of the {what} is {recorded[key]!r}, the {system.name} "
                f"model table says {value!r}; the store was made with another potential"
            )


class PotentialMismatchError(InputError):
    """A store was made with another model or potential than the one a run uses."""


# ---- hooks (``insitu glasscam.insitu.systems:NAME model kam``) ------------------------------


def define(lmp, step: int, model: str) -> None:
    """Define the table's deck defaults (fracA, rho, Thigh, TL, TG) as ``index`` variables.

    An ``index`` variable that already exists (given with ``-var``) is left as it is: this is
    LAMMPS's own rule for redefining index variables, so command-line overrides win.
    """
    system = get(model, "model", "insitu glasscam.insitu.systems:define")
    for name, value in system.deck_defaults().items():
        lmp.command(f"variable {name} index {_num(value)}")


def potential(lmp, step: int, model: str) -> None:
    """Issue the table's ``pair_style`` and ``pair_coeff`` commands (after ``create_box``)."""
    system = get(model, "model", "insitu glasscam.insitu.systems:potential")
    for line in system.pair_commands():
        lmp.command(line)
