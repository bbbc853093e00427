"""Tong-Tanaka order parameter: lattices with known values and hand-computed configurations."""

from __future__ import annotations

import numpy as np
import pytest
from glasscam.analysis.structure.tong_tanaka import (
    TongTanaka,
    diameters_for,
    ideal_angle_table,
    tong_tanaka,
)


def centered_rect_lattice(nx: int, ny: int, a: float, h: float):
    """Rows at height j*h, alternate rows shifted by a/2 (h = a*sqrt(3)/2: triangular)."""
    assert ny % 2 == 0
    i, j = np.meshgrid(np.arange(nx), np.arange(ny), indexing="ij")
    x = (i + 0.5 * (j % 2)) * a
    y = j * h
    pos = np.stack([x.ravel(), y.ravel()], axis=1) + [0.1, 0.2]
    return pos, np.array([nx * a, ny * h])


def test_ideal_angles_equal_particles_are_60_degrees():
    table = ideal_angle_table([1.0, 1.0])
    np.testing.assert_allclose(table, np.pi / 3)
    kam = ideal_angle_table(diameters_for("kam"))
    # A at o with two B: sides 0.94, 0.94 and 0.88
    assert kam[0, 1, 1] == pytest.approx(2 * np.arcsin(0.44 / 0.94))


@pytest.mark.parametrize("a", [1.0, 0.94])
def test_triangular_lattice_of_equal_particles_gives_zero(a):
    pos, box = centered_rect_lattice(10, 12, a, a * np.sqrt(3) / 2)
    types = np.zeros(len(pos), dtype=np.int8)
    theta = tong_tanaka(pos, types, box, [a, 0.5])
    np.testing.assert_allclose(theta, 0.0, atol=1e-12)


def test_isosceles_lattice_hand_value():
    # neighbours at (±1, 0), (±1/2, ±h): angles around o are β, π−2β, β, β, π−2β, β with
    # β = atan2(h, 1/2); so Θ = (4|β − π/3| + 2|π − 2β − π/3|)/6 = (4/3)|β − π/3|
    h = 1.0
    pos, box = centered_rect_lattice(8, 10, 1.0, h)
    theta = tong_tanaka(pos, np.zeros(len(pos), dtype=int), box, [1.0, 1.0])
    beta = np.arctan2(h, 0.5)
    np.testing.assert_allclose(theta, 4 / 3 * abs(beta - np.pi / 3), rtol=1e-12)


def test_single_b_impurity_in_a_triangular_lattice_hand_value():
    sa, sb = diameters_for("kam")
    pos, box = centered_rect_lattice(8, 8, 1.0, np.sqrt(3) / 2)
    types = np.zeros(len(pos), dtype=np.int8)
    b = 27
    types[b] = 1
    theta = TongTanaka(diameters_for("kam")).compute(pos, types, box).order
    # at B: six (B, A, A) triangles with ideal apex angle 2 asin(σA / (σA + σB))
    assert theta[b] == pytest.approx(abs(np.pi / 3 - 2 * np.arcsin(sa / (sa + sb))), rel=1e-12)
    # each A touching B: 2 of its 6 triangles contain B, ideal angle acos(σA / (σA + σB))
    d = pos - pos[b]
    d -= box * np.round(d / box)
    near = np.flatnonzero(np.isclose(np.hypot(*d.T), 1.0))
    assert len(near) == 6
    want = 2 / 6 * abs(np.pi / 3 - np.arccos(sa / (sa + sb)))
    np.testing.assert_allclose(theta[near], want, rtol=1e-12)
    rest = np.setdiff1d(np.arange(len(pos)), np.r_[near, b])
    np.testing.assert_allclose(theta[rest], 0.0, atol=1e-12)


def test_random_configuration_is_positive_and_translation_invariant():
    rng = np.random.default_rng(3)
    length = np.sqrt(500 / 1.2)
    pos = rng.uniform(0, length, (500, 2))
    types = (rng.random(500) < 0.35).astype(np.int8)
    box = np.array([length, length])
    theta = tong_tanaka(pos, types, box, diameters_for("abm"))
    assert np.all(theta > 0) and np.all(theta < np.pi)
    np.testing.assert_allclose(
        tong_tanaka(pos + [5.5, -2.25], types, box, diameters_for("abm")), theta, rtol=1e-9
    )


def test_bad_types_are_rejected():
    pos, box = centered_rect_lattice(4, 4, 1.0, np.sqrt(3) / 2)
    with pytest.raises(ValueError, match="types"):
        tong_tanaka(pos, np.full(len(pos), 2), box, [1.0, 0.88])
    with pytest.raises(ValueError, match="types"):
        tong_tanaka(pos, np.zeros(3), box, [1.0, 0.88])
