"""The benchmark decks and hooks (benchmarks/), run for real at tiny sizes.

The instrumentation lives in benchmarks/ only: the decks are generated from the production
decks (benchmarks/decks.py), the timed hooks wrap the production ones (benchmarks/hooks/).
These tests check that the no-Python decks run the same MD as the hooked ones and write
nothing, that the timed hooks count what the protocol implies, that the stress path writes
every frame, and that a changed production deck breaks the generation loudly.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("benchmarks") is None:  # not on sys.path: load the package only
    _spec = importlib.util.spec_from_file_location(
        "benchmarks", REPO / "benchmarks" / "__init__.py",
        submodule_search_locations=[str(REPO / "benchmarks")],
    )
    sys.modules["benchmarks"] = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(sys.modules["benchmarks"])

from benchmarks import common, decks  # noqa: E402

TINY = {"natoms": 200, "rate": 0.05, "nequil": 100, "nrecord": 100, "nthermo": 100000,
        "grid": 16, "tdamp": 0.05, "nsamples": 2}
STRIDE = 100


def last_thermo_rows(log: str) -> list[str]:
    """The thermo row printed just before each 'Loop time' line (the state at each run's end)."""
    lines = log.splitlines()
    return [lines[i - 1].split() for i, line in enumerate(lines) if line.startswith("Loop time")]


@pytest.fixture(scope="module")
def quench_runs(tmp_path_factory) -> dict[str, tuple[Path, common.LammpsRun]]:
    """The timed deck, the stress deck and the no-Python deck, 2 tiny samples each."""
    runs = {}
    for kind in ("timed", "stress", "nopython"):
        d = tmp_path_factory.mktemp(kind)
        variables = {**TINY, "out": d / "samples.zarr"}
        if kind == "nopython":
            text = decks.nopython_quench(TINY)
        else:
            text = decks.instrumented_quench(stress=kind == "stress")
            variables["timing"] = d / "timing.json"
        if kind == "stress":
            variables.update(framestride=STRIDE, frames=d / "frames.zarr")
        deck = decks.write(text, d / "deck.in")
        runs[kind] = (d, common.run_lammps(deck, variables, d, timeout=120))
    return runs


def test_nopython_quench_runs_the_same_md_and_writes_nothing(quench_runs):
    from glasscam.insitu import schema

    d_hook, hooked = quench_runs["timed"]
    d_off, off = quench_runs["nopython"]
    deck = (d_off / "deck.in").read_text()
    assert not re.search(r"^\s*insitu\b", deck, re.MULTILINE)
    assert "pair_coeff" in deck  # the model table's potential, written at generation time
    # per sample: minimisation, equilibration, liquid cooling, glass cooling
    assert hooked.log.count("Loop time") == off.log.count("Loop time") == 4 * TINY["nsamples"]
    assert hooked.loops and [n for _, n in hooked.loops] == [n for _, n in off.loops]
    # same samples, seeds and potential: the same trajectory, row for row
    assert last_thermo_rows(hooked.log) == last_thermo_rows(off.log)
    assert not (d_off / "samples.zarr").exists()
    assert not list(d_off.glob("*.zarr*"))
    done = schema.open_samples_store(d_hook / "samples.zarr")["glass/done"][:]
    assert done.all() and len(done) == TINY["nsamples"]


def test_nopython_quench_refuses_other_variables(quench_runs, tmp_path):
    d_off, _ = quench_runs["nopython"]
    with pytest.raises(RuntimeError, match="generated for"):
        common.run_lammps(d_off / "deck.in", {**TINY, "natoms": 300}, tmp_path, timeout=60)


def test_timed_hooks_count_what_the_protocol_implies(quench_runs):
    p = decks.quench_parameters(TINY)
    n, ncool, nliquid = TINY["nsamples"], p["deck"]["ncool"], p["deck"]["nliquid"]
    # fix insitu: every nrecord steps of the cooling and at its setup (once per step); the
    # glass run's setup at step nliquid is an extra call unless nliquid is a record step
    records = n * (ncool // TINY["nrecord"] + 1 + (nliquid % TINY["nrecord"] != 0))
    expected = {"setup": 1, "next": n + 1, "start": n, "record": records, "snapshot": 2 * n,
                "finish": 1}
    for kind in ("timed", "stress"):
        d, _ = quench_runs[kind]
        timing = json.loads((d / "timing.json").read_text())
        calls = {k: timing[k]["calls"] for k in expected}
        assert calls == expected, kind
        assert all(timing[k]["seconds"] > 0 for k in expected)
        assert timing["helper_threads_cpu"]["seconds"] >= 0
    assert "frame" not in json.loads((quench_runs["timed"][0] / "timing.json").read_text())


def test_stress_path_writes_every_frame(quench_runs):
    import zarr

    d, run = quench_runs["stress"]
    p = decks.quench_parameters(TINY)
    per_sample = p["deck"]["ncool"] // STRIDE + 1
    nframes = TINY["nsamples"] * per_sample
    timing = json.loads((d / "timing.json").read_text())
    assert timing["frames_written"] == {"frames": nframes, "taken": nframes}
    image = zarr.open_group(d / "frames.zarr", mode="r")["image"]
    assert image.shape == (nframes, 2, TINY["grid"], TINY["grid"])
    assert image.chunks == (1, 2, TINY["grid"], TINY["grid"])
    sums = np.asarray(image[:]).sum(axis=(2, 3))
    # every frame holds all atoms: each channel sums to its species count (unwritten: 0)
    counts = np.array([p["deck"]["nA"], p["deck"]["nB"]], dtype=np.float64)
    np.testing.assert_allclose(sums, np.broadcast_to(counts, sums.shape), atol=1e-3)
    # the frames do not change the MD
    assert last_thermo_rows(run.log) == last_thermo_rows(quench_runs["timed"][1].log)


def test_propensity_observed_and_baseline(tmp_path):
    from glasscam.testing import make_reference_samples

    samples = make_reference_samples(tmp_path / "s.zarr", side=12, nsamples=1, not_done=(),
                                     nmelt=300, ncool=300)
    variables = {"samples": samples, "sample": 0, "temp": 0.45, "nreplicas": 2, "nsteps": 400,
                 "noutputs": 6}
    d = tmp_path / "observed"
    d.mkdir()
    deck = decks.write(decks.instrumented_propensity(), d / "deck.in")
    observed = common.run_lammps(
        deck, {**variables, "out": d / "p.zarr", "timing": d / "t.json"}, d, timeout=120)
    result = json.loads((d / "t.json").read_text())
    assert result["replica_steps"] == 2 * 400
    assert result["hooks"]["run_replica"]["calls"] == 2
    assert result["hooks"]["next_replica"]["calls"] == 3
    assert result["replica_steps_per_s"] > 0 and result["peak_rss_mib"] > 10
    assert (d / "p.zarr").exists()

    b = tmp_path / "baseline"
    b.mkdir()
    params = decks.propensity_parameters({**variables, "out": b / "p.zarr"})
    data = decks.write_reference_data(params, b / "ref.data")
    text = decks.nopython_propensity({**variables, "out": b / "p.zarr"}, data)
    assert not re.search(r"^\s*insitu\b", text, re.MULTILINE)
    base = common.run_lammps(decks.write(text, b / "deck.in"), {**variables, "out": b / "p.zarr"},
                             b, timeout=120)
    assert [n for _, n in base.loops] == [400, 400]  # one plain run per replica
    assert not (b / "p.zarr").exists()
    # the same replicas (reference, seeds, potential): the same state at the end of each
    ends = [row for row in last_thermo_rows(observed.log) if row[0] == "400"]
    assert len(ends) == 2 and ends == last_thermo_rows(base.log)


def test_generation_fails_loudly_on_a_changed_deck(tmp_path):
    source = decks.production_deck("kam", "quench.in")
    text = source.read_text()
    changed = tmp_path / "quench.in"
    # a hook the benchmark does not know: neither a timed twin nor a no-Python equivalent
    changed.write_text(text.replace(
        "insitu glasscam.insitu.quench:finish",
        "insitu glasscam.insitu.quench:audit\ninsitu glasscam.insitu.quench:finish"))
    with pytest.raises(decks.DeckGenerationError, match="audit"):
        decks.instrumented_quench(source=changed)
    with pytest.raises(decks.DeckGenerationError, match="audit"):
        decks.nopython_quench(TINY, source=changed)
    # a hook that disappeared: the substitution finds nothing
    changed.write_text(re.sub(r"^insitu\s+glasscam\.insitu\.quench:start\s*$", "", text,
                              flags=re.MULTILINE))
    with pytest.raises(decks.DeckGenerationError, match="start"):
        decks.nopython_quench(TINY, source=changed)
    prop = decks.production_deck("kam", "propensity.in").read_text()
    changed.write_text(prop.replace("glasscam.insitu.isoconfigurational:", "elsewhere:"))
    with pytest.raises(decks.DeckGenerationError):
        decks.instrumented_propensity(source=changed)


def test_quick_runs_never_overwrite_the_committed_results(monkeypatch):
    monkeypatch.setenv("GLASSCAM_BENCH_QUICK", "1")
    monkeypatch.delenv("GLASSCAM_BENCH_RESULTS", raising=False)
    assert common.results_dir().resolve() != common.RESULTS.resolve()
    monkeypatch.setenv("GLASSCAM_BENCH_RESULTS", str(common.RESULTS))
    with pytest.raises(RuntimeError, match="must not overwrite"):
        common.write_result("quench", {})
