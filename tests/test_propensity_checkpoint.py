"""Checkpoints of long propensity replicas (``-var checkpoint M``) on the real LAMMPS: a replica
killed mid-run resumes from its last checkpoint and ends bit-identical to an uninterrupted one
with the same M; a bad checkpoint is discarded; the folder goes when the run completes.

Small (N = 256) glasses from ``glasscam.testing.make_reference_samples``; replicas of 6000
steps with a checkpoint every 1000. The deterministic kills inject the fault from outside the
production code: ``tests/checkpoint_kill/sitecustomize.py`` (put on PYTHONPATH, so the embedded
interpreter of ``lmp`` imports it at start-up) wraps the checkpoint writer so that the process
SIGKILLs itself right after the checkpoint at STEP is complete; one test kills from outside the
process instead, after the first checkpoint appears.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import INPUTS, lammps_command, run_lammps
from glasscam.insitu.isoconfigurational import checkpoint_folder
from glasscam.insitu.schema import open_propensity_store

from glasscam.testing import make_reference_samples

KAM = INPUTS / "kam" / "propensity.in"
CK = {"sample": 0, "nreplicas": 2, "temp": 0.6, "nsteps": 6000, "noutputs": 10,
      "checkpoint": 1000}
COMPARED = ("crd", "propensity", "delta", "stop", "reached", "done", "finished")


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> Path:
    return make_reference_samples(tmp_path_factory.mktemp("samples") / "samples.zarr",
                                  side=16, nsamples=1, not_done=(), seed=5)


def variables(samples: Path, out: Path, **change) -> dict[str, object]:
    v: dict[str, object] = {"samples": samples, **CK, "out": out, **change}
    return {k: x for k, x in v.items() if x is not None}


def text(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def assert_same_store(a: Path, b: Path) -> None:
    x, y = open_propensity_store(a), open_propensity_store(b)
    for name in COMPARED:
        assert np.array_equal(x[name][:], y[name][:], equal_nan=name in ("crd", "propensity",
                                                                         "delta")), name


def kill_at(point: str) -> dict[str, str]:
    """The environment that makes LAMMPS SIGKILL itself right after the checkpoint ``point``
    (``STEP`` or ``c<c>_s<s>.STEP``): tests/checkpoint_kill/sitecustomize.py."""
    here = str(Path(__file__).resolve().parent / "checkpoint_kill")
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, "GLASSCAM_KILL_AT_CHECKPOINT": point}


def killed_at(samples: Path, out: Path, step: int, **change) -> Path:
    """Run until the checkpoint at ``step`` is written, then SIGKILL (:func:`kill_at`)."""
    proc = run_lammps(KAM, variables(samples, out, **change), cwd=out.parent, check=False,
                      env=kill_at(str(step)))
    assert proc.returncode != 0, "the run ended before the kill"
    folder = Path(checkpoint_folder(out))
    doc = json.loads((folder / "c0_s0.json").read_text())
    assert doc["step"] == step and (folder / doc["restart"]).stat().st_size == doc["size"]
    assert not open_propensity_store(out)["done"][:].any()
    return folder


@pytest.fixture(scope="module")
def uninterrupted(samples, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("full") / "p.zarr"
    return out, run_lammps(KAM, variables(samples, out), cwd=out.parent)


# ------------------------------------------------------------------------------------------


def test_uninterrupted_run_leaves_no_checkpoint(uninterrupted) -> None:
    out, proc = uninterrupted
    assert "checkpoints every 1000 steps" in proc.stdout
    assert re.findall(r"(\d+) checkpoint\(s\) written", proc.stdout) == ["5", "5"]
    assert not Path(checkpoint_folder(out)).exists()
    assert open_propensity_store(out).attrs["parameters"]["checkpoint"] == 1000


def test_killed_at_a_checkpoint_resumes_bit_identical(samples, uninterrupted, tmp_path) -> None:
    """Deterministic: killed right after the checkpoint at step 3000 of replica 0; the resumed
    run reads it back (positions, velocities, image flags, the thermostat) and runs 3000 steps
    of replica 0 instead of 6000."""
    out = tmp_path / "p.zarr"
    killed_at(samples, out, 3000)
    proc = run_lammps(KAM, variables(samples, out), cwd=tmp_path)
    out_text = proc.stdout
    assert "configuration 0 replica 0: resuming from its checkpoint at step 3000" in out_text
    assert "Resetting global fix info from restart file" in out_text
    assert "(3000 run now, resumed from the checkpoint at step 3000)" in out_text
    assert_same_store(out, uninterrupted[0])
    assert not Path(checkpoint_folder(out)).exists()


def test_sigkill_after_the_first_checkpoint_resumes_bit_identical(samples, uninterrupted,
                                                                  tmp_path) -> None:
    """SIGKILL of the whole process group as soon as a checkpoint JSON exists."""
    out = tmp_path / "p.zarr"
    folder = Path(checkpoint_folder(out))
    proc = subprocess.Popen(lammps_command(KAM, variables(samples, out)), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if folder.is_dir() and any(p.suffix == ".json" for p in folder.iterdir()):
            break
        time.sleep(0.002)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    again = run_lammps(KAM, variables(samples, out), cwd=tmp_path)
    found = re.findall(r"resuming from its checkpoint at step (\d+)", again.stdout)
    assert found, again.stdout[-3000:]
    run_now = [int(x) for x in re.findall(r"done: 6000 steps in [^\n]*?\((\d+) run now",
                                          again.stdout)]
    assert run_now and all(n < 6000 for n in run_now)
    assert_same_store(out, uninterrupted[0])
    assert not folder.exists()


@pytest.mark.parametrize("damage,message", [
    ("truncate", "has 5000 bytes, the JSON recorded"),
    ("flip", "differs from the sha256 the JSON recorded"),
    ("foreign", "written for another parameter set"),
    ("no-restart", "is missing"),
    ("store-recreated", "the store lacks its CRD rows [0, 1, 2, 3, 4, 5, 6, 7]"),
])
def test_bad_checkpoint_is_discarded_and_the_replica_reruns(samples, uninterrupted, tmp_path,
                                                            damage, message) -> None:
    out = tmp_path / "p.zarr"
    folder = killed_at(samples, out, 2000)
    doc = json.loads((folder / "c0_s0.json").read_text())
    restart = folder / doc["restart"]
    if damage == "truncate":
        restart.write_bytes(restart.read_bytes()[:5000])
    elif damage == "flip":
        data = bytearray(restart.read_bytes())
        data[len(data) // 2] ^= 0x01
        restart.write_bytes(bytes(data))
    elif damage == "foreign":
        (folder / "c0_s0.json").write_text(json.dumps({**doc, "fingerprint": "0" * 64}))
    elif damage == "no-restart":
        restart.unlink()
    else:  # the store was deleted, the checkpoint folder beside it was not
        shutil.rmtree(out)
    proc = run_lammps(KAM, variables(samples, out), cwd=tmp_path)
    assert "configuration 0 replica 0: discarding its checkpoint" in proc.stdout
    assert message in proc.stdout, proc.stdout[-3000:]
    assert "the replica restarts from step 0" in proc.stdout
    assert "resuming from its checkpoint" not in proc.stdout
    assert "resumed from the checkpoint" not in proc.stdout  # replica 0 ran from step 0
    assert_same_store(out, uninterrupted[0])
    assert not folder.exists()


def test_resume_with_another_thermostat_fix_id_is_refused(samples, tmp_path) -> None:
    """A deck whose thermostat has another fix ID would not get the Nosé–Hoover state from
    the restart file: refused before the first step, naming the fixes."""
    out = tmp_path / "p.zarr"
    folder = killed_at(samples, out, 1000)
    edited = tmp_path / "propensity.in"
    deck = KAM.read_text()
    assert deck.count("fix           md all nvt") == 1
    edited.write_text(deck.replace("fix           md all nvt", "fix           nh all nvt"))
    proc = run_lammps(edited, variables(samples, out), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert "the deck defines fixes ['beat', 'flat', 'nh'], the checkpoint was written with " \
           "['beat', 'flat', 'md']" in text(proc), text(proc)[-2000:]
    assert (folder / "c0_s0.json").exists()


def test_resume_with_another_checkpoint_value_is_refused(samples, tmp_path) -> None:
    out = tmp_path / "p.zarr"
    folder = killed_at(samples, out, 1000)
    for value, stored in ((500, "500"), (None, "None")):
        proc = run_lammps(KAM, variables(samples, out, checkpoint=value), cwd=tmp_path,
                          check=False)
        assert proc.returncode != 0
        assert f"checkpoint: store has 1000, run asks {stored}" in text(proc), text(proc)[-2000:]
        assert "Setting up Verlet run" not in text(proc)
    assert (folder / "c0_s0.json").exists()  # untouched: the same command can still resume


def test_checkpoint_changes_the_last_bits_after_the_first_checkpoint(samples, uninterrupted,
                                                                     tmp_path) -> None:
    """With checkpoint M the trajectory equals the checkpoint-off one up to step M (the first
    full-setup boundary), and differs in the last bits after it (growing chaotically): that is
    why `checkpoint` is a store parameter."""
    out = tmp_path / "off.zarr"
    run_lammps(KAM, variables(samples, out, checkpoint=None), cwd=tmp_path)
    on, off = open_propensity_store(uninterrupted[0]), open_propensity_store(out)
    steps = np.asarray(on["steps"][:])
    before = steps <= CK["checkpoint"]
    assert before.any() and (~before).any()
    a, b = np.asarray(on["crd"][0]), np.asarray(off["crd"][0])
    np.testing.assert_array_equal(a[:, before], b[:, before])
    first_after = int(np.flatnonzero(~before)[0])
    assert not np.array_equal(a[:, first_after], b[:, first_after])
    np.testing.assert_allclose(a[:, first_after], b[:, first_after], rtol=0, atol=1e-4)
    assert off.attrs["parameters"]["checkpoint"] is None


def test_checkpoint_minutes_changes_nothing_but_the_files_written(samples, uninterrupted,
                                                                  tmp_path) -> None:
    """checkpoint_minutes 60: no restart file is due in this short run, the full-setup
    boundaries stay, the store equals the one that wrote every checkpoint; not a parameter."""
    out = tmp_path / "p.zarr"
    proc = run_lammps(KAM, variables(samples, out, checkpoint_minutes=60), cwd=tmp_path)
    assert "(written at most every 60 min)" in proc.stdout
    assert re.findall(r"(\d+) checkpoint\(s\) written", proc.stdout) == ["0", "0"]
    assert_same_store(out, uninterrupted[0])
    assert "checkpoint_minutes" not in open_propensity_store(out).attrs["parameters"]
    again = run_lammps(KAM, variables(samples, out, checkpoint_minutes=5), cwd=tmp_path)
    assert "0 replica(s) run now" in again.stdout


@pytest.mark.parametrize("change,message", [
    ({"checkpoint": -5}, "variable 'checkpoint' must be >= 1 steps"),
    ({"checkpoint": 2.5}, "'checkpoint' must be an integer"),
    ({"checkpoint": None, "checkpoint_minutes": 10},
     "variable 'checkpoint_minutes' is set but 'checkpoint' is not"),
    ({"checkpoint_minutes": -1}, "variable 'checkpoint_minutes' must be >= 0"),
])
def test_bad_checkpoint_variables_fail_before_md(samples, tmp_path, change, message) -> None:
    out = tmp_path / "p.zarr"
    proc = run_lammps(KAM, variables(samples, out, **change), cwd=tmp_path, check=False)
    assert proc.returncode != 0
    assert message in text(proc), text(proc)[-2000:]
    assert "Setting up Verlet run" not in text(proc)
    assert not out.exists()


def test_stale_files_are_tidied(samples, uninterrupted, tmp_path) -> None:
    """Leftovers of a kill during a checkpoint write (a temporary restart, an older restart
    no JSON names) and a checkpoint of a finished replica are removed; the valid one is used."""
    out = tmp_path / "p.zarr"
    folder = killed_at(samples, out, 2000)
    (folder / "c0_s0.2000.restart.tmp").write_bytes(b"partial")
    (folder / "c0_s0.1000.restart").write_bytes(b"old")
    (folder / "c0_s1.json.tmp").write_text("{")
    (folder / "notes.txt").write_text("not a checkpoint")
    proc = run_lammps(KAM, variables(samples, out), cwd=tmp_path)
    assert "removed 3 file(s)" in proc.stdout, proc.stdout[-3000:]
    assert "resuming from its checkpoint at step 2000" in proc.stdout
    assert_same_store(out, uninterrupted[0])
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]  # not ours: left
    assert "not removed: it holds files that are not checkpoints" in proc.stdout


# ------------------------------------------------------------------------------------------
# more ranks: one partition of 2 ranks; the δ-target stop on 2 partitions


@pytest.mark.mpi
def test_two_ranks_one_partition_resume_bit_identical(samples, tmp_path) -> None:
    """read_restart on 2 ranks keeps each rank's atom order: still bit-identical (against an
    uninterrupted 2-rank run: a replica's last bits depend on the ranks per partition)."""
    full, out = tmp_path / "full.zarr", tmp_path / "p.zarr"
    run_lammps(KAM, variables(samples, full), np=2, cwd=tmp_path)
    proc = run_lammps(KAM, variables(samples, out), np=2, cwd=tmp_path, check=False,
                      env=kill_at("2000"))
    assert proc.returncode != 0
    again = run_lammps(KAM, variables(samples, out), np=2, cwd=tmp_path)
    assert "resuming from its checkpoint at step 2000" in again.stdout
    assert_same_store(out, full)


@pytest.mark.mpi
def test_delta_stop_on_two_partitions_resumes_bit_identical(samples, tmp_path) -> None:
    """Pilot and followers on 2 partitions with a δ target, killed when follower 1 wrote its
    checkpoint at step 800 (the pilot is then past it, or done): resumed, the follower (and the
    pilot, if it was not done) continue from their checkpoints and follow the stop protocol as
    before; stop, reached, crd, Δ, δ equal the uninterrupted run's."""
    stop = {"nreplicas": 3, "nsteps": 6000, "noutputs": 12, "delta_stop": 0.09,
            "checkpoint": 200}
    full, out = tmp_path / "full.zarr", tmp_path / "p.zarr"
    run_lammps(KAM, variables(samples, full, **stop), np=2, partitions="2x1", cwd=tmp_path)
    ref = open_propensity_store(full)
    k = int(ref["stop"][0])
    assert k < stop["noutputs"] - 1 and int(ref["steps"][k]) > 800  # it stops after step 800
    proc = run_lammps(KAM, variables(samples, out, **stop), np=2, partitions="2x1",
                      cwd=tmp_path, check=False, env=kill_at("c0_s1.800"))
    assert proc.returncode != 0
    again = run_lammps(KAM, variables(samples, out, **stop), np=2, partitions="2x1",
                       cwd=tmp_path)
    assert "configuration 0 replica 1: resuming from its checkpoint at step 800" in text(again)
    assert_same_store(out, full)


def test_heartbeat_lines_and_the_trajectory_is_unchanged(samples, tmp_path) -> None:
    """The heartbeat fix prints step, δ so far and steps/s during a replica, and reading only
    the step it leaves the trajectory bit for bit as it is (called every 50 steps vs never
    within a segment)."""
    quiet = tmp_path / "quiet.zarr"
    beat = tmp_path / "beat.zarr"
    run_lammps(KAM, variables(samples, quiet, heartbeat=100000), cwd=tmp_path)
    proc = run_lammps(KAM, variables(samples, beat, heartbeat=50, heartbeat_seconds=0),
                      cwd=tmp_path)
    lines = re.findall(r"configuration 0 replica \d: step (\d+) of (\d+) \([\d.]+ %\), "
                       r"(?:δ so far [\d.e+-]+|no output yet), (\d+) steps/s", text(proc))
    assert len(lines) >= 10, text(proc)[-2000:]
    assert all(int(step) <= int(last) for step, last, _ in lines)
    assert any(float(rate) > 0 for *_, rate in lines)
    assert_same_store(quiet, beat)
