"""Nothing lost, nothing stale (issue 12): atomic creation, half-created stores, locks, checksums,
`glasscam verify [--repair]`, growing a samples store, corruption errors that name the file.

Real LAMMPS quench runs (the FAST protocol of test_quench, N = 200) and real Zarr stores."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import BIN, INPUTS, run_lammps
from glasscam.insitu import integrity, schema
from glasscam.insitu.lock import OutputLock, OutputLockedError, lock_path

from glasscam.testing import synthetic_samples_store

KAM = INPUTS / "kam" / "quench.in"
FAST = {"natoms": 200, "rate": 0.2, "nequil": 200, "nrecord": 100, "nthermo": 100000,
        "grid": 16, "tdamp": 0.05}
GLASSCAM = str(BIN / "glasscam")


def quench(out: Path, nsamples: int, cwd: Path, check: bool = True):
    return run_lammps(KAM, {"out": out, "nsamples": nsamples, **FAST}, cwd=cwd, check=check)


def written(proc) -> list[int]:
    return sorted(int(i) for i in re.findall(r"sample (\d+) written", proc.stdout))


def arrays(path: Path) -> dict[str, np.ndarray]:
    root = zarr.open_group(str(path), mode="r")
    return {name: np.asarray(arr[...]) for name, arr in root.arrays()} | {
        f"{g}/{name}": np.asarray(arr[...])
        for g, grp in root.groups() for name, arr in grp.arrays()
    }


def assert_equal_stores(a: Path, b: Path) -> None:
    xa, xb = arrays(a), arrays(b)
    assert sorted(xa) == sorted(xb)
    for name in xa:
        assert xa[name].shape == xb[name].shape, name
        assert np.array_equal(xa[name], xb[name], equal_nan=xa[name].dtype.kind == "f"), name


def file_digests(path: Path) -> dict[str, tuple[int, str]]:
    return {str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes())
                                       .hexdigest())
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fresh4(tmp_path_factory) -> Path:
    """An uninterrupted FAST quench of 4 samples."""
    d = tmp_path_factory.mktemp("fresh4")
    quench(d / "samples.zarr", 4, d)
    return d / "samples.zarr"


# ---------------------------------------------------------------------------------------------
# locks


def test_second_lock_is_refused_naming_the_holder(tmp_path):
    out = tmp_path / "x.zarr"
    with OutputLock(out, what="samples store", command="first writer"):
        with pytest.raises(OutputLockedError) as err:
            OutputLock(out, what="samples store").acquire()
        text = str(err.value)
        assert str(out) in text and f"pid {os.getpid()}" in text and "first writer" in text
        assert err.value.holder["pid"] == os.getpid()
    assert not lock_path(out).exists()  # released and removed
    with OutputLock(out):  # free again
        pass


def test_lock_of_a_killed_holder_is_free(tmp_path):
    out = tmp_path / "y.zarr"
    code = ("import sys, time; from glasscam.insitu.lock import OutputLock; "
            f"lock = OutputLock({str(out)!r}).acquire(); print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(OutputLockedError, match=f"pid {proc.pid}"):
            OutputLock(out).acquire()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
    with OutputLock(out):  # the kernel released the dead holder's flock
        assert json.loads(lock_path(out).read_text())["pid"] == os.getpid()


def test_two_quench_launches_second_refused_naming_the_holder(tmp_path, fresh4):
    out = tmp_path / "samples.zarr"
    cmd = [str(BIN / "lmp"), "-nocite", "-log", "none", "-in", str(KAM), "-var", "out", str(out),
           "-var", "nsamples", "4", *[a for k, v in FAST.items() for a in ("-var", k, str(v))]]
    first = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not lock_path(out).exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        holder = json.loads(lock_path(out).read_text() or "{}")
        t0 = time.monotonic()
        second = quench(out, 4, tmp_path, check=False)
        assert time.monotonic() - t0 < 30
        assert second.returncode != 0
        text = second.stdout + second.stderr
        assert "being written by another process" in text and str(out) in text
        assert f"pid {holder['pid']}" in text
        first_out, _ = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert first.returncode == 0, first_out[-3000:]
    assert written(subprocess.CompletedProcess([], 0, first_out)) == [0, 1, 2, 3]
    assert_equal_stores(fresh4, out)
    assert integrity.verify(zarr.open_group(str(out), mode="r")) == []


# ---------------------------------------------------------------------------------------------
# creation


def test_atomic_creation_leaves_nothing_when_interrupted(tmp_path):
    out = tmp_path / "s.zarr"

    def build(tmp: str) -> None:
        zarr.open_group(tmp, mode="w-").create_group("liquid")
        raise KeyboardInterrupt  # killed half-way

    with pytest.raises(KeyboardInterrupt):
        integrity.create_store_atomically(out, build)
    assert not out.exists() and not integrity.creating_siblings(out)
    # a leftover of a SIGKILLed creation is removed by the next writer
    leftover = tmp_path / ".s.zarr.creating-deadbeef"
    (leftover / "liquid").mkdir(parents=True)
    logs: list[str] = []
    root, created = integrity.open_or_create(
        out, lambda tmp: synthetic_samples_store(tmp, nsamples=3, natoms=32, grid=8),
        schema.open_samples_store, log=logs.append)
    assert created and not leftover.exists() and "interrupted" in logs[0]
    assert root.attrs["schema"] == schema.SAMPLES_SCHEMA


def half_created(path: Path) -> None:
    """What an older glasscam left when killed during creation: root and arrays, no schema."""
    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    root.create_group("liquid").create_array("positions", shape=(3, 4, 2), dtype="f4")
    root.attrs["parameters"] = {"nsamples": 3}


def test_half_created_samples_store_is_recreated_by_the_quench(tmp_path, fresh4):
    out = tmp_path / "samples.zarr"
    half_created(out)
    proc = quench(out, 4, tmp_path)
    assert "creation was interrupted" in proc.stdout
    assert written(proc) == [0, 1, 2, 3]
    assert_equal_stores(fresh4, out)


def test_half_created_indicators_store_is_recreated(tmp_path):
    from glasscam.analysis.structure.indicators import Indicators

    samples = tmp_path / "samples.zarr"
    synthetic_samples_store(samples, nsamples=4, natoms=64, grid=8)
    ref = tmp_path / "ref.zarr"
    Indicators(samples, ref, system="kam").run(echo=lambda _: None)
    out = tmp_path / "ind.zarr"
    half_created(out)
    logs: list[str] = []
    Indicators(samples, out, system="kam").run(echo=logs.append)
    assert any("creation was interrupted" in m for m in logs)
    assert_equal_stores(ref, out)


# ---------------------------------------------------------------------------------------------
# checksums, verify, repair, resume


def plant_damage(store: Path) -> dict[int, str]:
    """Damage three samples in three ways; return sample -> what."""
    truncated = store / "liquid" / "image" / "c" / "1" / "0" / "0" / "0"
    truncated.write_bytes(truncated.read_bytes()[:7])
    (store / "glass" / "particle_energy" / "c" / "2" / "0").unlink()
    # a valid chunk with the wrong content (sample 0's positions in sample 3's place)
    shutil.copy(store / "glass" / "positions" / "c" / "0" / "0" / "0",
                store / "glass" / "positions" / "c" / "3" / "0" / "0")
    return {1: "liquid/image", 2: "glass/particle_energy", 3: "glass/positions"}


def test_verify_finds_every_planted_damage_and_repair_redoes_exactly_them(tmp_path, fresh4):
    store = tmp_path / "samples.zarr"
    shutil.copytree(fresh4, store)
    planted = plant_damage(store)
    proc = subprocess.run([GLASSCAM, "verify", str(store)], capture_output=True, text=True)
    assert proc.returncode == 1
    found = {int(m.group(1)): m.group(2) for m in
             re.finditer(r"DAMAGED .*: sample (\d+) \(\w+/done\): (\S+):", proc.stdout)}
    assert found == planted
    assert "chunk file missing" in proc.stdout and "unreadable" in proc.stdout
    assert "/liquid/image/c/1/0/0/0" in proc.stdout  # the file is named
    untouched = {k: v for k, v in file_digests(store).items() if "/c/0" in k}

    proc = subprocess.run([GLASSCAM, "verify", "--repair", str(store)], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    root = schema.open_samples_store(store)
    assert np.flatnonzero(~schema.done_samples(root)).tolist() == [1, 2, 3]
    rerun = quench(store, 4, tmp_path)
    assert written(rerun) == [1, 2, 3]  # exactly the damaged ones
    assert_equal_stores(fresh4, store)
    assert {k: v for k, v in file_digests(store).items() if "/c/0" in k} == untouched
    assert subprocess.run([GLASSCAM, "verify", str(store)], capture_output=True).returncode == 0


def test_resume_verifies_and_redoes_a_damaged_sample(tmp_path, fresh4):
    store = tmp_path / "samples.zarr"
    shutil.copytree(fresh4, store)
    (store / "glass" / "particle_energy" / "c" / "2" / "0").unlink()
    proc = quench(store, 4, tmp_path)
    assert "damaged, will be redone" in proc.stdout and "sample 2" in proc.stdout
    assert written(proc) == [2]
    assert_equal_stores(fresh4, store)


def test_verify_of_a_run_folder_and_of_a_non_store(tmp_path, fresh4):
    shutil.copytree(fresh4, tmp_path / "samples.zarr")
    ok = subprocess.run([GLASSCAM, "verify", str(tmp_path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK (8 done units checked)" in ok.stdout
    (tmp_path / "empty").mkdir()
    bad = subprocess.run([GLASSCAM, "verify", str(tmp_path / "empty")], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "no *.zarr store" in bad.stderr


# ---------------------------------------------------------------------------------------------
# growing a samples store


def test_grow_adds_samples_without_touching_the_first(tmp_path, fresh4):
    grown = tmp_path / "grown.zarr"
    shutil.copytree(fresh4, grown)
    before = file_digests(grown)
    proc = quench(grown, 6, tmp_path)
    assert written(proc) == [4, 5]
    fresh6 = tmp_path / "fresh6.zarr"
    quench(fresh6, 6, tmp_path)
    assert_equal_stores(fresh6, grown)  # a grown store equals one made with 6 at once
    after = file_digests(grown)
    per_sample = re.compile(r"/c/[0-3](/0)*$")
    kept = {k: v for k, v in before.items() if per_sample.search(k) and "split" not in k}
    assert kept and all(after[k] == v for k, v in kept.items()), "a first sample was rewritten"
    assert schema.open_samples_store(grown).attrs["parameters"]["nsamples"] == 6
    # shrinking is refused, naming the field; nothing changes
    frozen = file_digests(grown)
    proc = quench(grown, 3, tmp_path, check=False)
    assert proc.returncode != 0
    assert "nsamples: store has 6, run asks 3" in proc.stdout + proc.stderr
    assert file_digests(grown) == frozen


def test_an_interrupted_grow_is_completed(tmp_path, fresh4):
    store = tmp_path / "samples.zarr"
    shutil.copytree(fresh4, store)
    root = zarr.open_group(str(store), mode="r+")
    root["liquid/positions"].resize((6, *root["liquid/positions"].shape[1:]))  # killed here
    proc = quench(store, 6, tmp_path)
    assert written(proc) == [4, 5]
    root = schema.open_samples_store(store)
    assert schema.done_samples(root).all() and root["glass/image"].shape[0] == 6


# ---------------------------------------------------------------------------------------------
# corruption errors name the file


def test_truncated_root_metadata_is_named(tmp_path):
    store = tmp_path / "s.zarr"
    synthetic_samples_store(store, nsamples=3, natoms=32, grid=8)
    meta = store / "zarr.json"
    meta.write_text(meta.read_text()[:40])
    with pytest.raises(schema.CorruptStoreError, match=re.escape(str(meta))):
        schema.open_samples_store(store)
    proc = subprocess.run([GLASSCAM, "indicators", "--samples", str(store), "--out",
                           str(tmp_path / "i.zarr"), "--system", "kam"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and str(meta) in proc.stdout + proc.stderr
    assert not (tmp_path / "i.zarr").exists()


def test_truncated_chunk_read_by_a_stage_names_file_and_sample(tmp_path):
    from glasscam.analysis.structure.indicators import Indicators

    store = tmp_path / "s.zarr"
    synthetic_samples_store(store, nsamples=4, natoms=64, grid=8)
    chunk = store / "glass" / "positions" / "c" / "2" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:5])
    with pytest.raises(schema.CorruptStoreError) as err:
        Indicators(store, tmp_path / "i.zarr", system="kam").run(echo=lambda _: None)
    text = str(err.value)
    assert str(chunk) in text and "sample 2" in text and "glasscam verify" in text


def test_truncated_checkpoint_is_named(tmp_path):
    import torch
    from glasscam.analysis.cnn.train import load_checkpoint

    ckpt = tmp_path / "checkpoint.pt"
    torch.save({"format": "x", "w": torch.zeros(1000)}, ckpt)
    ckpt.write_bytes(ckpt.read_bytes()[:300])
    with pytest.raises(schema.CorruptStoreError, match=re.escape(str(ckpt))):
        load_checkpoint(ckpt)
