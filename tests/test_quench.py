"""Quench decks + in-situ hooks, run for real (`lmp` with the glasscam plugin, small N).

FAST runs (N = 200, rate 0.2) check bookkeeping: partitions, bit-for-bit identity, resume,
errors. The schema runs (N = 500, rate 0.05) also check the physics of the snapshots.
"""

from __future__ import annotations

import hashlib
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
from glasscam.insitu import schema
from glasscam.insitu.deck import InputError
from glasscam.insitu.gridize import gridize
from glasscam.insitu.quench import lammps_seeds, parse_parameters, sample_seed

KAM = INPUTS / "kam" / "quench.in"
ABM = INPUTS / "abm" / "quench.in"
FAST = {
    "natoms": 200,
    "rate": 0.2,
    "nequil": 200,
    "nrecord": 100,
    "nthermo": 100000,
    "grid": 16,
    "tdamp": 0.05,
}
NFAST = 6


def store_files(path: Path) -> dict[str, tuple[int, str]]:
    """relative path -> (mtime_ns, sha1) of every file of a store."""
    return {
        str(p.relative_to(path)): (p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def sample_files(path: Path, index: int) -> dict[str, tuple[int, str]]:
    """The chunk files of one sample (chunk key ``c/<index>[/0...]``)."""
    pat = re.compile(rf"(^|/)c/{index}(/0)*$")
    return {k: v for k, v in store_files(path).items() if pat.search(k)}


def assert_same_samples(a: Path, b: Path, indices) -> None:
    ra, rb = schema.open_samples_store(a), schema.open_samples_store(b)
    for cls in (*schema.CLASSES, "cooling"):
        for name in ra[cls].array_keys():
            for i in indices:
                x, y = ra[f"{cls}/{name}"][i], rb[f"{cls}/{name}"][i]
                assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), f"{cls}/{name}[{i}]"


def output(proc, cwd: Path | None = None) -> str:
    text = (proc.stdout or "") + (proc.stderr or "")
    if cwd is not None:
        for screen in sorted(cwd.glob("screen*")) + sorted(cwd.glob("log*")):
            text += screen.read_text(errors="replace")
    return text


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """FAST KAM run on one rank, NFAST samples."""
    d = tmp_path_factory.mktemp("ref")
    out = d / "samples.zarr"
    run_lammps(KAM, {"out": out, "nsamples": NFAST, **FAST}, cwd=d)
    return out


# ----------------------------------------------------------------------------------------------
# schema and physics


@pytest.mark.parametrize(
    "deck,model,frac_a,t_liquid", [(KAM, "kam", 0.65, 0.8), (ABM, "abm", 0.5, 2.0)]
)
def test_store_schema_and_snapshot_physics(tmp_path, deck, model, frac_a, t_liquid):
    out = tmp_path / "samples.zarr"
    n, m, ns = 500, 32, 2
    proc = run_lammps(
        deck,
        {"out": out, "nsamples": ns, "natoms": n, "rate": 0.05, "tdamp": 0.05, "nequil": 1000,
         "nrecord": 500, "grid": m, "seed": 7},
        cwd=tmp_path,
    )
    assert proc.stdout.count("glasscam quench: sample") == ns
    root = schema.open_samples_store(out)  # validates every array's dtype and shape
    params = root.attrs["parameters"]
    assert root.attrs["schema"] == schema.SAMPLES_SCHEMA
    assert {"lammps", "zarr", "numpy"} <= set(root.attrs["versions"])
    assert params["model"] == model and params["natoms"] == n and params["nsamples"] == ns
    assert params["rate"] == 0.05 and params["seed"] == 7 and params["TL"] == t_liquid
    np.testing.assert_array_equal(root["split"][:], schema.split_assignment(ns, 7))
    assert schema.done_samples(root).all()
    box_len = np.sqrt(n / 1.2)
    for cls, target in (("liquid", t_liquid), ("glass", 0.05)):
        g = root[cls]
        assert g["positions"].shape == (ns, n, 2) and g["positions"].dtype == np.float32
        assert g["image"].shape == (ns, 2, m, m) and g["image"].dtype == np.float32
        assert g["types"].dtype == np.int8 and g["box"].dtype == np.float64
        np.testing.assert_allclose(g["box"][:], box_len, rtol=1e-12)
        pos = g["positions"][:]
        assert pos.min() >= 0 and np.all(pos < g["box"][:][:, None, :].astype(np.float32))
        types = g["types"][:]
        assert set(np.unique(types)) == {0, 1}
        assert np.all((types == 0).sum(axis=1) == round(frac_a * n))
        temps = g["temperature"][:]
        assert np.all(np.abs(temps / target - 1) < 0.10), f"{cls} T = {temps}, target {target}"
        np.testing.assert_array_equal(g["seed"][:], [sample_seed(7, i) for i in range(ns)])
        for i in range(ns):
            # the image written in situ is G of the stored configuration
            np.testing.assert_allclose(
                g["image"][i], gridize(pos[i], types[i], g["box"][i], grid=m), atol=1e-5
            )
            np.testing.assert_allclose(
                g["image"][i].sum(axis=(1, 2)), np.bincount(types[i]), rtol=1e-5
            )
    # same particles, same identities in both snapshots
    np.testing.assert_array_equal(root["liquid/types"][:], root["glass/types"][:])
    assert np.all(root["glass/potential_energy"][:] < root["liquid/potential_energy"][:])
    c = root["cooling"]
    target = c["target_temperature"][:]
    assert target.shape == (ns, params["ncool"]) and not np.isnan(target).any()
    np.testing.assert_allclose(target[:, 0], 4.0)
    np.testing.assert_allclose(target[:, -1], 0.05)
    assert np.all(np.diff(target, axis=1) < 0)
    assert not np.isnan(c["potential_energy"][:]).any()
    # crystallisation shows as a jump in E(T) (paper: the energy-temperature curve is checked
    # for jumps): none in any sample, at one-row or three-row resolution; the same record with
    # a planted drop of 0.3 per particle below T = 0.5 has one, where it was planted
    pe = c["potential_energy"][:]
    for i in range(ns):
        for span in (1, 3):
            assert energy_jumps(target[i], pe[i], span=span).size == 0, (i, span, pe[i])
        k = int(np.flatnonzero(target[i] < 0.5)[0])
        planted = pe[i] - 0.3 * (np.arange(len(pe[i])) >= k)
        np.testing.assert_array_equal(energy_jumps(target[i], planted), [k - 1])


def test_deck_variables_and_shared_protocol():
    texts = {d: d.read_text() for d in (KAM, ABM)}
    for deck, text in texts.items():
        for name, default in [("out", None), ("nsamples", None), ("natoms", "2000"),
                              ("seed", "1"), ("rate", None), ("nequil", None), ("grid", "64"),
                              ("channels", "2"), ("dt", None)]:
            m = re.search(rf"^variable\s+{name}\s+index\s+(\S+)", text, re.M)
            assert m, f"{deck}: deck variable '{name}' (index style) missing"
            if default is not None:
                assert m.group(1) == default, f"{deck}: {name} default {m.group(1)}"
            assert re.search(rf"^#\s+{name}\b", text, re.M) or name in ("out",), name
    protocols = [t.split("# ==== protocol", 1)[1] for t in texts.values()]
    assert protocols[0] == protocols[1], "the protocol part of the decks must stay identical"
    # the model is the table's: no potential, composition, density or temperature literal
    for deck, text in texts.items():
        code = "\n".join(line.split("#")[0] for line in text.splitlines())
        assert "pair_coeff" not in code and "pair_style" not in code, deck
        for name in ("fracA", "rho", "Thigh", "TL", "TG", "sigmaAA", "epsAB"):
            assert not re.search(rf"^variable\s+{name}\s", code, re.M), (deck, name)
        assert "glasscam.insitu.systems:define model ${model}" in code
        assert "glasscam.insitu.systems:potential model ${model}" in code


def test_seeds_are_deterministic_distinct_and_valid():
    seeds = [sample_seed(1, i) for i in range(1000)]
    assert seeds == [sample_seed(1, i) for i in range(1000)]
    assert len(set(seeds)) == 1000 and sample_seed(2, 0) != seeds[0]
    for s in seeds[:100]:
        triple = lammps_seeds(s)
        assert len(set(triple)) == 3 and all(1 <= x < 2**30 for x in triple)


def test_parameters_are_checked():
    kw = {"out": "x", "model": "kam", "nsamples": "2", "natoms": "200", "seed": "1",
          "rate": "0.2", "nequil": "10", "dt": "0.005", "tdamp": "0.5", "fracA": "0.65",
          "rho": "1.2", "Thigh": "4.0", "TL": "0.8", "TG": "0.05", "grid": "16",
          "channels": "2", "kernel": "cic", "nrecord": "100"}
    p = parse_parameters(kw)
    # cooling steps from the rate: (4.0 - 0.8) / (0.2 * 0.005) = 3200, (0.8 - 0.05) / 0.001 = 750
    assert (p["nliquid"], p["nglass"]) == (3200, 750)
    assert p["ncool"] == 41 and p["natomsA"] == 130
    # the potential is the model table's, recorded with the parameters
    assert (p["sigmaAB"], p["epsAB"], p["cutoff"]) == (0.8, 1.5, 2.5)
    with pytest.raises(InputError, match="'bogus'"):
        parse_parameters({**kw, "bogus": "1"})
    with pytest.raises(InputError, match="'sigmaAA'"):  # no longer a keyword: the table's
        parse_parameters({**kw, "sigmaAA": "1"})
    with pytest.raises(InputError, match="'natoms' must be an integer"):
        parse_parameters({**kw, "natoms": "two"})
    with pytest.raises(InputError, match="not set: rate"):
        parse_parameters({k: v for k, v in kw.items() if k != "rate"})
    with pytest.raises(InputError, match="rate must be > 0"):
        parse_parameters({**kw, "rate": "0"})
    with pytest.raises(InputError, match="grid must be >= 4"):
        parse_parameters({**kw, "grid": "1"})
    with pytest.raises(InputError, match="model = 'kma' is not a model"):
        parse_parameters({**kw, "model": "kma"})
    # integers are exact: a 63-bit seed survives, an integral 2e2 is accepted, 2.5 is not
    assert parse_parameters({**kw, "seed": "123456789012345678"})["seed"] == 123456789012345678
    assert parse_parameters({**kw, "natoms": "2e2"})["natoms"] == 200
    with pytest.raises(InputError, match="'natoms' must be an integer, got '200.5'"):
        parse_parameters({**kw, "natoms": "200.5"})


# ----------------------------------------------------------------------------------------------
# parallel runs


@pytest.mark.mpi
def test_two_partitions_give_bit_for_bit_the_samples_of_one(reference, tmp_path):
    out = tmp_path / "samples.zarr"
    proc = run_lammps(KAM, {"out": out, "nsamples": NFAST, **FAST}, np=2, partitions="2x1",
                      cwd=tmp_path)
    text = output(proc, tmp_path)
    written = re.findall(r"quench: sample (\d+) written", text)
    assert sorted(map(int, written)) == list(range(NFAST)), "each sample once, by some partition"
    assert schema.done_samples(schema.open_samples_store(out)).all()
    assert_same_samples(reference, out, range(NFAST))


@pytest.mark.mpi
def test_two_ranks_in_one_partition(tmp_path):
    out = tmp_path / "samples.zarr"
    run_lammps(KAM, {"out": out, "nsamples": 2, **FAST}, np=2, cwd=tmp_path)
    root = schema.open_samples_store(out)
    assert schema.done_samples(root).all()
    for cls in schema.CLASSES:
        pos, box = root[f"{cls}/positions"][:], root[f"{cls}/box"][:]
        assert np.all(pos >= 0) and np.all(pos < box[:, None, :].astype(np.float32))
        assert np.all((root[f"{cls}/types"][:] == 0).sum(axis=1) == 130)
        assert np.isfinite(root[f"{cls}/potential_energy"][:]).all()
    # domain decomposition changes summation order and atom IDs, not the sample's seed
    np.testing.assert_array_equal(root["glass/seed"][:], [sample_seed(1, i) for i in range(2)])


def test_sigkill_then_resume_finishes_only_the_missing_samples(reference, tmp_path):
    out = tmp_path / "samples.zarr"
    variables = {"out": out, "nsamples": NFAST, **FAST}
    # own session: `lmp` is a launcher that runs the LAMMPS binary as its child, and the whole
    # process group must die at once, as with a node failure or `scancel -s KILL`
    proc = subprocess.Popen(lammps_command(KAM, variables), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    done_dir = out / "glass" / "done" / "c"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if done_dir.is_dir() and len(os.listdir(done_dir)) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run finished before it could be killed; slow it down"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    root = schema.open_samples_store(out)
    done_before = np.flatnonzero(schema.done_samples(root)).tolist()
    assert 2 <= len(done_before) < NFAST
    # nothing marked done is torn: done samples equal the uninterrupted run's
    assert_same_samples(reference, out, done_before)
    before = {i: sample_files(out, i) for i in done_before}
    assert all(len(files) > 15 for files in before.values())

    proc2 = run_lammps(KAM, variables, cwd=tmp_path)
    written = sorted(int(i) for i in re.findall(r"sample (\d+) written", proc2.stdout))
    assert written == sorted(set(range(NFAST)) - set(done_before)), "only the missing ones"
    root = schema.open_samples_store(out)
    assert schema.done_samples(root).all()
    assert_same_samples(reference, out, range(NFAST))
    for i in done_before:
        assert sample_files(out, i) == before[i], f"sample {i} was rewritten"


# ----------------------------------------------------------------------------------------------
# bad input: LAMMPS stops, names the problem, the store is untouched


def deck(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "in.test"
    path.write_text(body)
    return path


def test_missing_module_is_named(tmp_path):
    proc = run_lammps(deck(tmp_path, "insitu insitu.no_such_module:setup\n"), check=False,
                      cwd=tmp_path)
    assert proc.returncode != 0
    assert "insitu.no_such_module" in output(proc)


def test_unknown_hook_keyword_is_named(tmp_path):
    body = "insitu glasscam.insitu.quench:snapshot class glass colour blue\n"
    proc = run_lammps(deck(tmp_path, body), check=False, cwd=tmp_path)
    assert proc.returncode != 0
    assert "unknown keyword(s) 'colour'" in output(proc)


def test_exception_inside_a_hook_during_a_run_stops_lammps(tmp_path):
    body = """
units lj
dimension 2
atom_style atomic
atom_modify map array
region box block 0 5 0 5 -0.5 0.5
create_box 1 box
create_atoms 1 random 10 1 NULL
mass 1 1.0
pair_style lj/cut 2.5
pair_coeff 1 1 1.0 1.0
fix 1 all nve
fix 2d all enforce2d
fix rec all insitu 5 glasscam.insitu.quench:record
run 20
"""
    proc = run_lammps(deck(tmp_path, body), check=False, cwd=tmp_path)
    assert proc.returncode != 0
    assert "called before glasscam.insitu.quench:setup" in output(proc)


@pytest.mark.parametrize(
    "change,message",
    [({"rate": 0.25}, "rate: store has 0.2, run asks 0.25"),
     ({"natoms": 210}, "natoms: store has 200, run asks 210")],
)
def test_parameter_mismatch_stops_every_partition(reference, tmp_path, change, message):
    out = tmp_path / "samples.zarr"
    shutil.copytree(reference, out)
    before = store_files(out)
    proc = run_lammps(KAM, {"out": out, "nsamples": NFAST, **FAST, **change}, np=2,
                      partitions="2x1", check=False, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert message in output(proc, tmp_path)
    assert store_files(out) == before


def test_store_with_another_schema_is_refused(reference, tmp_path):
    import json

    out = tmp_path / "samples.zarr"
    shutil.copytree(reference, out)
    meta = json.loads((out / "zarr.json").read_text())
    meta["attributes"]["schema"] = "glasscam.samples/0"
    (out / "zarr.json").write_text(json.dumps(meta))
    before = store_files(out)
    proc = run_lammps(KAM, {"out": out, "nsamples": NFAST, **FAST}, check=False, cwd=tmp_path)
    assert proc.returncode != 0
    assert "attribute 'schema' is 'glasscam.samples/0'" in output(proc)
    assert store_files(out) == before


# ----------------------------------------------------------------------------------------------
# crystallisation check: jumps in the cooling curve E(T)


def energy_jumps(temperature, energy, span: int = 1, window: int = 6,
                 factor: float = 7.0) -> np.ndarray:
    """Rows k where the cooling curve E(T) jumps between records k and k + span.

    The typical slope dE/dT at each point of the cooling is the running median of the
    one-row slopes over ±window rows (it follows the heat capacity; records need not be evenly
    spaced in T: the last one is the end of the ramp). A record's instantaneous potential
    energy fluctuates by σ_E ∝ T/√N, so the departure of each span-row change of E from the
    typical slopes' prediction is divided by T and compared with its robust spread over the
    whole record (1.4826 · median absolute deviation): a jump departs by more than ``factor``
    spreads. (64 smooth tiny-preset records, N = 200: largest departure 4.6 spreads.)
    """
    t = np.asarray(temperature, dtype=np.float64)
    e = np.asarray(energy, dtype=np.float64)
    dt = np.diff(t)
    slope = np.diff(e) / dt
    typical = np.array([np.median(slope[max(0, k - window):k + window + 1])
                        for k in range(len(slope))])
    change = e[span:] - e[:-span]
    expected = np.convolve(typical * dt, np.ones(span), mode="valid")
    x = (change - expected) / (0.5 * (t[span:] + t[:-span]))
    spread = 1.4826 * np.median(np.abs(x - np.median(x)))
    return np.flatnonzero(np.abs(x - np.median(x)) > factor * spread)


def synthetic_cooling(seed: int, n: int = 80, noise: float = 0.05):
    """E(T) of a smooth cooling (T 4 -> 0.05, slope growing on cooling) with fluctuations
    σ_E = noise · T per record."""
    rng = np.random.default_rng(seed)
    t = np.linspace(4.0, 0.05, n)
    return t, -3.3 + 0.75 * t + 0.03 * t**2 + noise * t * rng.normal(size=n)


def test_energy_jump_detector_on_synthetic_cooling_curves():
    planted_k = 70  # T = 0.55
    for seed in range(20):
        t, e = synthetic_cooling(seed)
        for span in (1, 3):
            assert energy_jumps(t, e, span=span).size == 0, (seed, span)
        # an abrupt drop between rows 69 and 70 (the one-row noise there is 0.04) ...
        drop = e - 0.4 * (np.arange(len(e)) >= planted_k)
        np.testing.assert_array_equal(energy_jumps(t, drop), [planted_k - 1])
        # ... and one spread over three records, seen at three-row resolution
        ramp = e - 0.5 * np.clip((np.arange(len(e)) - planted_k + 2) / 3, 0, 1)
        assert planted_k - 2 in energy_jumps(t, ramp, span=3), seed
    # a jump up is a jump too; a steeper but smooth curve (larger slope) is not
    t, e = synthetic_cooling(0)
    np.testing.assert_array_equal(energy_jumps(t, e + 0.4 * (t < t[planted_k - 1])),
                                  [planted_k - 1])
    assert energy_jumps(t, 3 * e).size == 0
