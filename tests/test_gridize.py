"""Gridization G and its inverse (glasscam.insitu.gridize): the properties DESIGN §5 asks for."""

from __future__ import annotations

import numpy as np
import pytest
from glasscam.insitu.gridize import deposition_weights, gridize, inverse_gridize


def config(n: int = 300, box=(11.0, 13.0), seed: int = 0):
    rng = np.random.default_rng(seed)
    box = np.asarray(box, dtype=float)
    pos = rng.random((n, 2)) * box
    types = (rng.random(n) < 0.35).astype(np.int8)
    return pos, types, box


@pytest.mark.parametrize("kernel", ["cic", "ngp"])
@pytest.mark.parametrize("axis,shift", [(0, 1), (1, 1), (0, -1), (1, 3)])
def test_translation_by_whole_pixels_rolls_the_image(kernel, axis, shift):
    pos, types, box = config()
    m = 16
    image = gridize(pos, types, box, grid=m, kernel=kernel)
    moved = pos.copy()
    moved[:, axis] += shift * box[axis] / m  # positions not wrapped: G must wrap them itself
    image2 = gridize(moved, types, box, grid=m, kernel=kernel)
    # image[c, iy, ix]: x is the last axis, y the middle one
    expected = np.roll(image, shift, axis=2 if axis == 0 else 1)
    np.testing.assert_allclose(image2, expected, atol=2e-5)


def test_image_is_not_invariant_under_a_fraction_of_a_pixel():
    pos, types, box = config()
    image = gridize(pos, types, box, grid=16)
    moved = pos + np.array([0.5 * box[0] / 16, 0.0])
    assert not np.allclose(gridize(moved, types, box, grid=16), image, atol=1e-3)


@pytest.mark.parametrize("kernel", ["cic", "ngp"])
def test_each_channel_integrates_to_its_particle_count(kernel):
    pos, types, box = config(n=517)
    image = gridize(pos, types, box, grid=32, channels=2, kernel=kernel)
    assert image.shape == (2, 32, 32) and image.dtype == np.float32
    assert image.min() >= 0
    np.testing.assert_allclose(image.sum(axis=(1, 2)), np.bincount(types, minlength=2), rtol=1e-5)
    one = gridize(pos, types, box, grid=32, channels=1, kernel=kernel)
    assert one.shape == (1, 32, 32)
    np.testing.assert_allclose(one[0], image.sum(axis=0), atol=1e-5)


def test_periodic_images_of_a_position_give_the_same_image():
    pos, types, box = config()
    shifted = pos + np.array([2 * box[0], -3 * box[1]])
    np.testing.assert_allclose(gridize(shifted, types, box), gridize(pos, types, box), atol=1e-4)


def test_a_particle_on_a_pixel_centre_fills_that_pixel_only():
    box = np.array([8.0, 8.0])
    pos = np.array([[(3 + 0.5) * 1.0, (5 + 0.5) * 1.0]])  # pixel ix=3, iy=5 with M=8
    image = gridize(pos, np.array([1]), box, grid=8)
    assert image[1, 5, 3] == pytest.approx(1.0)
    assert image.sum() == pytest.approx(1.0) and image[0].sum() == 0


def test_cic_weights_are_bilinear_and_periodic_at_the_edge():
    box = np.array([4.0, 4.0])
    pos = np.array([[0.0, 0.0]])  # on the corner of four pixel centres, across the boundary
    idx, w = deposition_weights(pos, box, 4)
    assert sorted(idx[0].tolist()) == sorted([0, 3, 12, 15])
    np.testing.assert_allclose(w[0], 0.25)


def test_inverse_of_constant_map_is_constant_and_weights_sum_to_one():
    pos, _, box = config()
    for kernel in ("cic", "ngp"):
        values = inverse_gridize(np.full((16, 16), 2.5), pos, box, kernel=kernel)
        np.testing.assert_allclose(values, 2.5)
        _, w = deposition_weights(pos, box, 16, kernel)
        np.testing.assert_allclose(w.sum(axis=1), 1.0)


def test_inverse_own_pixel_dominates():
    pos, _, box = config()
    idx, w = deposition_weights(pos, box, 16, "cic")
    own = np.floor(np.mod(pos, box) / box * 16).astype(int)
    own_flat = own[:, 1] * 16 + own[:, 0]
    for i in range(len(pos)):
        mine = w[i][idx[i] == own_flat[i]].sum()
        assert mine >= 0.25 - 1e-12
        assert mine >= w[i][idx[i] != own_flat[i]].max(initial=0.0) - 1e-12


def test_inverse_is_bilinear_interpolation_of_a_linear_map():
    # a map linear in x (inside one period, away from the wrap) is read back exactly
    m, box = 16, np.array([16.0, 16.0])
    centres = np.arange(m) + 0.5
    gmap = np.tile(centres, (m, 1))  # value = x of the pixel centre
    rng = np.random.default_rng(1)
    pos = np.column_stack([rng.uniform(1.0, 15.0, 50), rng.uniform(0, 16, 50)])
    np.testing.assert_allclose(inverse_gridize(gmap, pos, box), pos[:, 0], atol=1e-12)


def test_inverse_is_the_adjoint_of_gridize():
    # <G(x) , map> == sum_i G^-1(map)_i: the same weights deposit and read out
    pos, types, box = config()
    rng = np.random.default_rng(2)
    gmap = rng.random((16, 16))
    image = gridize(pos, np.zeros_like(types), box, grid=16, channels=1)[0].astype(np.float64)
    assert (image * gmap).sum() == pytest.approx(inverse_gridize(gmap, pos, box).sum(), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"kernel": "tsc"}, "kernel"),
        ({"channels": 3}, "channels"),
        ({"grid": 0}, "grid"),
    ],
)
def test_bad_arguments_are_named(kwargs, match):
    pos, types, box = config(n=10)
    with pytest.raises(ValueError, match=match):
        gridize(pos, types, box, **kwargs)


def test_bad_types_and_positions_are_rejected():
    pos, types, box = config(n=10)
    with pytest.raises(ValueError, match="types"):
        gridize(pos, types + 1, box)
    bad = pos.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        gridize(bad, types, box)
    with pytest.raises(ValueError, match="box"):
        gridize(pos, types, np.array([1.0, -1.0]))
