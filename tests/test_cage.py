"""Pure kernels of the dynamic propensity (glasscam.insitu.cage) and the offline helpers
(glasscam.analysis.dynamics.propensity): no LAMMPS."""

from __future__ import annotations

import numpy as np
import pytest
from glasscam.analysis.dynamics import propensity as ap
from glasscam.insitu import cage as kernels

from glasscam.testing import freud_voronoi_cage

SIGMA_KAM = np.array([[1.0, 0.8], [0.8, 0.88]])


def random_config(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    side = np.sqrt(n / 1.2)
    box = np.array([side, side])
    return rng.uniform(0, side, (n, 2)), box, (rng.random(n) < 0.35).astype(np.int64)


@pytest.mark.parametrize("n,seed", [(30, 0), (256, 1), (2000, 2)])
def test_voronoi_cage_matches_freud(n: int, seed: int) -> None:
    pos, box, _ = random_config(n, seed)
    ours = kernels.voronoi_cage(pos, box)
    ref = freud_voronoi_cage(pos, box)
    np.testing.assert_array_equal(ours.indptr, ref.indptr)
    np.testing.assert_array_equal(ours.indices, ref.indices)


def test_cage_contains_self_and_is_symmetric() -> None:
    pos, box, types = random_config(300, 3)
    for cage in (kernels.voronoi_cage(pos, box), kernels.cutoff_cage(pos, box, types, SIGMA_KAM)):
        rows = np.repeat(np.arange(cage.n), np.diff(cage.indptr))
        pairs = set(zip(rows.tolist(), cage.indices.tolist(), strict=True))
        assert all((i, i) in pairs for i in range(cage.n))
        assert all((j, i) in pairs for i, j in pairs)
        assert len(pairs) == len(rows)  # no duplicates
        if cage.definition == "voronoi":
            # Euler on the torus: a periodic 2D Voronoi tessellation has exactly 6 edges per
            # cell on average (3 cells per vertex), so 6 neighbours + self
            assert cage.counts.mean() == pytest.approx(7.0, abs=1e-12)
        else:
            assert 4 <= cage.counts.mean() <= 9  # 2D: ~6 neighbours + self


def test_cutoff_cage_by_hand() -> None:
    # three particles on a line in a big box: 0-1 at 1.0, 1-2 at 1.3, types A, A, B
    pos = np.array([[5.0, 5.0], [6.0, 5.0], [7.3, 5.0]])
    types = np.array([0, 0, 1])
    cage = kernels.cutoff_cage(pos, [20.0, 20.0], types, SIGMA_KAM, factor=1.4)
    # 0-1: 1.0 < 1.4; 1-2: 1.3 > 1.4*0.8 = 1.12 -> not neighbours; 0-2: 2.3 no
    assert cage.indices[cage.indptr[0] : cage.indptr[1]].tolist() == [0, 1]
    assert cage.indices[cage.indptr[2] : cage.indptr[3]].tolist() == [2]
    # across the periodic boundary
    pos = np.array([[0.2, 5.0], [19.5, 5.0]])
    cage = kernels.cutoff_cage(pos, [20.0, 20.0], np.array([0, 0]), SIGMA_KAM)
    assert cage.indices[cage.indptr[0] : cage.indptr[1]].tolist() == [0, 1]


def test_rigid_translation_has_zero_crd() -> None:
    pos, box, _ = random_config(500, 4)
    cage = kernels.voronoi_cage(pos, box)
    shift = np.array([3.7, -12.25])  # more than a box length: unwrapped coordinates
    c = kernels.crd_from_positions(pos + shift, pos, cage)
    assert np.abs(c).max() < 1e-12


def test_crd_of_one_moving_particle() -> None:
    pos, box, _ = random_config(200, 5)
    cage = kernels.voronoi_cage(pos, box)
    dr = np.zeros_like(pos)
    dr[7] = [0.3, 0.4]
    c = kernels.crd(dr, cage)
    assert c[7] == pytest.approx(0.5 * (1 - 1 / cage.counts[7]))
    members = cage.indices[cage.indptr[7] : cage.indptr[8]]
    for j in members[members != 7]:  # its neighbours see it in their cage, if symmetric
        assert c[j] == pytest.approx(0.5 / cage.counts[j])
    outside = np.setdiff1d(np.arange(200), np.concatenate([members, [7]]))
    assert np.all(c[outside] == 0)


def test_crd_stack_matches_frames() -> None:
    pos, box, _ = random_config(100, 6)
    cage = kernels.voronoi_cage(pos, box)
    dr = np.random.default_rng(0).normal(size=(3, 4, 100, 2))
    stacked = kernels.crd(dr, cage)
    assert stacked.shape == (3, 4, 100)
    np.testing.assert_array_equal(stacked[2, 1], kernels.crd(dr[2, 1], cage))


def test_unwrap() -> None:
    x = np.array([[0.5, 9.5]])
    img = np.array([[2, -1]])
    np.testing.assert_allclose(kernels.unwrap(x, img, [10.0, 10.0]), [[20.5, -0.5]])


def test_single_replica_propensity_is_its_crd() -> None:
    crd = np.random.default_rng(1).random((1, 5, 50)).astype(np.float32)
    prop, delta = kernels.propensity_from_crd(crd)
    np.testing.assert_array_equal(prop, crd[0])
    np.testing.assert_allclose(delta, crd[0].astype(np.float64).mean(axis=1))


def test_accumulator_is_order_independent_and_exact() -> None:
    rng = np.random.default_rng(2)
    crd = (rng.random((7, 4, 64)) * 3).astype(np.float32)
    a = kernels.PropensityAccumulator(4, 64)
    for s in range(7):
        for k in range(4):
            a.add(k, crd[s, k])
    b = kernels.PropensityAccumulator(4, 64)
    for s in rng.permutation(7):
        b.add_replica(crd[s])
    np.testing.assert_array_equal(a.sum, b.sum)
    prop, delta = kernels.propensity_from_sums(a.sum, a.count)
    prop2, delta2 = kernels.propensity_from_crd(crd)
    np.testing.assert_array_equal(prop, prop2)
    np.testing.assert_array_equal(delta, delta2)
    np.testing.assert_allclose(delta, crd.astype(np.float64).mean(axis=(0, 2)))


def test_log_steps() -> None:
    s = kernels.log_steps(1000, 10)
    assert s[0] == 1 and s[-1] == 1000 and np.all(np.diff(s) > 0)
    ratios = s[4:] / s[3:-1]
    assert np.allclose(ratios, ratios.mean(), rtol=0.1)  # log-spaced away from the start
    np.testing.assert_array_equal(kernels.log_steps(5, 5), [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(kernels.log_steps(3 * 10**8, 1), [3 * 10**8])
    with pytest.raises(ValueError, match="do not fit"):
        kernels.log_steps(5, 6)
    big = kernels.log_steps(3 * 10**8, 100, first=10)
    assert big[0] == 10 and big[-1] == 3 * 10**8 and len(np.unique(big)) == 100


def test_replica_seeds() -> None:
    seeds = [kernels.replica_seed(1, s) for s in range(100)]
    assert len(set(seeds)) == 100
    assert all(1 <= x < 2**31 - 1 for x in seeds)
    assert seeds == [kernels.replica_seed(1, s) for s in range(100)]
    assert seeds[0] != kernels.replica_seed(2, 0)


# ------------------------------------------------------------------------------------------
# glasscam.analysis.dynamics.propensity


def write_dump(path, frames: dict[int, np.ndarray], box, shuffle_seed: int = 0) -> None:
    rng = np.random.default_rng(shuffle_seed)
    with open(path, "w") as fh:
        for step, xy in frames.items():
            n = len(xy)
            order = rng.permutation(n)
            fh.write(f"ITEM: TIMESTEP\n{step}\nITEM: NUMBER OF ATOMS\n{n}\n")
            fh.write(f"ITEM: BOX BOUNDS pp pp pp\n0 {box[0]}\n0 {box[1]}\n-0.5 0.5\n")
            fh.write("ITEM: ATOMS id type xu yu\n")
            for i in order:
                fh.write(f"{i + 1} 1 {float(xy[i, 0])!r} {float(xy[i, 1])!r}\n")


def test_recompute_from_dumps(tmp_path) -> None:
    pos, box, _ = random_config(120, 7)
    rng = np.random.default_rng(3)
    steps = [1, 10, 100]
    cage = kernels.voronoi_cage(pos, box)
    dumps, expect = [], []
    for s in range(3):
        frames = {0: pos}
        walk = pos.copy()
        for st in steps:
            walk = walk + rng.normal(scale=0.1, size=pos.shape)
            frames[st] = walk
        frames[5] = walk  # extra frames are ignored
        path = tmp_path / f"r{s}.lammpstrj"
        write_dump(path, frames, box, shuffle_seed=s)
        dumps.append(path)
        expect.append([kernels.crd_from_positions(frames[st], pos, cage) for st in steps])
    crd, prop, delta = ap.recompute_from_dumps(dumps, steps, pos, box)
    np.testing.assert_allclose(crd, np.array(expect, dtype=np.float32), rtol=1e-6)
    np.testing.assert_allclose(prop, np.mean(expect, axis=0), rtol=1e-5)
    assert delta.shape == (3,)
    with pytest.raises(ValueError, match="no frames at output steps"):
        ap.recompute_from_dumps(dumps, [1, 2], pos, box)


def test_ensemble_splits() -> None:
    sp = ap.ensemble_splits(100)
    assert list(sp) == ["e30A", "e30B", "e30C", "e100"]
    subsets = [set(sp[k].tolist()) for k in ("e30A", "e30B", "e30C")]
    assert all(len(x) == 30 for x in subsets)
    assert not (subsets[0] & subsets[1]) and not (subsets[1] & subsets[2])
    assert not (subsets[0] & subsets[2])
    assert len(sp["e100"]) == 100
    rnd = ap.ensemble_splits(100, seed=4)
    assert set(rnd["e30A"].tolist()) != subsets[0]
    with pytest.raises(ValueError, match="need 90 replicas"):
        ap.ensemble_splits(60)


def test_ensemble_propensity_from_store(tmp_path) -> None:
    from glasscam.insitu.schema import create_propensity_store

    ns, k, n = 10, 3, 20
    params = {"nreplicas": ns, "noutputs": k, "natoms": n}
    ref = {"positions": np.zeros((n, 2)), "types": np.zeros(n), "box": np.ones(2)}
    store = create_propensity_store(tmp_path / "p.zarr", params, ref, np.arange(1, k + 1), 0.005)
    crd = np.random.default_rng(0).random((ns, k, n)).astype(np.float32)
    store["crd"][...] = crd
    store["done"][...] = True
    prop, delta = ap.ensemble_propensity(store, [1, 3, 5])
    np.testing.assert_array_equal(prop, kernels.propensity_from_crd(crd[[1, 3, 5]])[0])
    ens = ap.ensembles(tmp_path / "p.zarr", size=3, count=3)
    assert set(ens) == {"e3A", "e3B", "e3C", "e10"}
    np.testing.assert_array_equal(ens["e10"][1], kernels.propensity_from_crd(crd)[1])
    store["done"][4] = False
    with pytest.raises(ValueError, match=r"replicas \[4\] are not done"):
        ap.ensemble_propensity(store, [3, 4])


def test_outputs_at_deltas() -> None:
    delta = np.array([0.01, 0.1, 0.25, 0.4, 0.9, 1.2, 2.5, 3.4, np.nan])
    assert ap.outputs_at_deltas(delta) == {0.3: 2, 1.0: 4, 3.0: 7}
    with pytest.raises(ValueError):
        ap.output_at_delta(np.full(3, np.nan), 1.0)


# ------------------------------------------------------------------------------------------
# a real LAMMPS trajectory: Galilean invariance of the CRD through the dump path

_DRIFT_DECK = """\
units lj
dimension 2
boundary p p p
atom_style atomic
atom_modify map array
lattice sq 1.2
region box block 0 16 0 16 -0.5 0.5
create_box 2 box
create_atoms 1 box
set type 1 type/ratio 2 0.35 4321
mass * 1.0
include ${potential}
neighbor 0.3 bin
fix flat all enforce2d
timestep 0.005
velocity all create 2.0 8765 dist gaussian mom yes rot no
fix md all nvt temp 2.0 0.5 0.5
run 1000
unfix md
set group all image 0 0 0
reset_timestep 0
velocity all create 0.5 1234 dist gaussian mom yes rot no
velocity all set ${vx} ${vy} NULL sum yes units box
fix md all nve
dump d all custom 100 ${dump} id type xu yu
dump_modify d sort id format float %.17g
run 400
displace_atoms all move 20.5 -7.25 0 units box
write_dump all custom ${dump}.moved id type xu yu modify sort id format float %.17g
"""


def test_crd_of_a_real_lammps_trajectory_ignores_a_uniform_drift(tmp_path) -> None:
    """Two NVE runs from the same supercooled KAM liquid (N = 256), one with the same extra
    velocity v added to every atom. Unwrapped dumps: the plain displacements differ by v·t
    (more than a box length by the end), the cage-relative displacements (read back through
    read_dump / replica_crd_from_dump) agree to 1e-9, and a rigid `displace_atoms` has zero
    CRD."""
    from conftest import run_lammps
    from glasscam.insitu import systems

    pot = tmp_path / "potential.in"
    pot.write_text("\n".join(systems.get("kam").pair_commands()) + "\n")
    deck = tmp_path / "drift.in"
    deck.write_text(_DRIFT_DECK)
    v = np.array([9.0, -6.0])
    dumps = {}
    for name, vel in (("still", (0.0, 0.0)), ("drift", v)):
        dumps[name] = tmp_path / f"{name}.dump"
        run_lammps(deck, {"potential": pot, "dump": dumps[name], "vx": vel[0], "vy": vel[1]},
                   cwd=tmp_path)
    frames = {k: ap.read_unwrapped(p) for k, p in dumps.items()}
    step0, cols, first = next(ap.read_dump(dumps["still"]))
    assert step0 == 0 and cols == ["id", "type", "xu", "yu"] and len(first) == 256
    ref = frames["still"][0]
    np.testing.assert_array_equal(frames["drift"][0], ref)  # same start, only v differs
    with open(dumps["still"]) as fh:
        bounds = [fh.readline() for _ in range(7)][5:7]
    box = np.array([float(b.split()[1]) - float(b.split()[0]) for b in bounds])
    assert np.all(ref >= 0) and np.all(ref < box)
    cage = kernels.voronoi_cage(ref, box)
    steps = [100, 200, 300, 400]
    dt = 0.005
    for s in steps:
        plain_still = frames["still"][s] - ref
        plain_drift = frames["drift"][s] - ref
        # the drift is in the unwrapped coordinates, across the periodic boundary
        np.testing.assert_allclose(plain_drift - plain_still,
                                   np.broadcast_to(v * s * dt, ref.shape), rtol=0, atol=1e-9)
    assert np.linalg.norm(v) * steps[-1] * dt > box.max()
    crd_still = ap.replica_crd_from_dump(dumps["still"], steps, cage)
    crd_drift = ap.replica_crd_from_dump(dumps["drift"], steps, cage)
    assert crd_still.shape == (len(steps), 256)
    # the dump path returns float32: agreement to its resolution (an ulp or two)
    np.testing.assert_allclose(crd_drift, crd_still, rtol=0,
                               atol=2 * float(np.spacing(crd_still.max())))
    exact_still = [kernels.crd_from_positions(frames["still"][s], ref, cage) for s in steps]
    exact_drift = [kernels.crd_from_positions(frames["drift"][s], ref, cage) for s in steps]
    np.testing.assert_allclose(exact_drift, exact_still, rtol=0, atol=1e-9)
    # the liquid really moved: CRDs of order 0.1, growing with time
    assert crd_still[-1].mean() > 0.05 and crd_still[-1].mean() > crd_still[0].mean()
    # a rigid translation by displace_atoms: plain displacement (20.5, -7.25), CRD zero
    moved = ap.read_unwrapped(f"{dumps['drift']}.moved")[steps[-1]]
    last = frames["drift"][steps[-1]]
    np.testing.assert_allclose(moved - last, np.broadcast_to([20.5, -7.25], ref.shape), atol=1e-9)
    assert np.abs(kernels.crd_from_positions(moved, last, cage)).max() < 1e-9
