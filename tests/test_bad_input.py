"""Issue 12, bad input: every command stops at once, names the file or field, touches nothing.

Each case is a real command (``lmp`` with a shipped deck, or ``glasscam ...``) given one bad
input: a bad deck variable, a store of another kind or schema, a bad option, a model and a
store that do not fit, NaN positions, a truncated ``zarr.json``, chunk or checkpoint, a missing
file, a half-created store, ... It must exit non-zero within seconds, its message must name
the file or the field at fault, and every store or model folder involved must be
byte-identical before and after (sha256 of every file under it; corruption is found by reading,
never repaired by a command that only reads). The inputs are built once per module (a small
synthetic samples store, a model trained for one epoch on it, a tiny real quench store, an
indicators store) and copied for each case.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import INPUTS, lammps_command
from killpoints import cli_option

GLASSCAM = str(Path(sys.executable).parent / "glasscam")
ENV = {**os.environ, "COLUMNS": "1000", "OMP_NUM_THREADS": "1"}
LIMIT_S = 30  # "within seconds", on a shared 2-core machine (torch alone imports in ~3 s)
INDICATORS_PER_TASK = cli_option("indicators", "--samples-per-task", "--batch-size")
QUENCH = INPUTS / "kam" / "quench.in"
PROPENSITY = INPUTS / "kam" / "propensity.in"
QUENCH_VARS: dict[str, object] = {
    "nsamples": 1, "natoms": 64, "rate": 0.2, "nequil": 200, "nrecord": 100,
    "nthermo": 100000, "grid": 8, "tdamp": 0.05,
}


# ----------------------------------------------------------------------------------------------
# inputs, built once


@pytest.fixture(scope="module")
def originals(tmp_path_factory) -> dict[str, Path]:
    from glasscam.analysis.cnn.train import TrainConfig, train
    from glasscam.analysis.structure.indicators import run_indicators

    from glasscam.testing import synthetic_samples_store

    folder = tmp_path_factory.mktemp("originals")
    samples = folder / "samples.zarr"
    synthetic_samples_store(samples, nsamples=12, natoms=64, grid=8, seed=3)
    samples16 = folder / "samples16.zarr"
    synthetic_samples_store(samples16, nsamples=12, natoms=64, grid=16, seed=3)
    model = folder / "model"
    train(samples, model, TrainConfig(epochs=1, batch_size=8, seed=0, threads=1))
    indicators = folder / "indicators.zarr"
    run_indicators(samples, indicators, scheduler="serial", system="kam", echo=lambda _: None)
    quench = folder / "quench.zarr"
    proc = subprocess.run(lammps_command(QUENCH, {"out": quench, **QUENCH_VARS}), cwd=folder,
                          env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"samples": samples, "samples16": samples16, "model": model,
            "indicators": indicators, "quench": quench}


class Inputs:
    """Per-case copies of the module's inputs (``get(name)`` copies on first use)."""

    def __init__(self, originals: dict[str, Path], folder: Path):
        self.originals = originals
        self.folder = folder
        self.copies: dict[str, Path] = {}

    def get(self, name: str) -> Path:
        if name not in self.copies:
            src = self.originals[name]
            dst = self.folder / src.name
            shutil.copytree(src, dst)
            self.copies[name] = dst
        return self.copies[name]

    @property
    def tmp(self) -> Path:
        return self.folder


# ----------------------------------------------------------------------------------------------
# corruptions


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def chunk_of(store: Path, array: str, sample: int) -> Path:
    """The first chunk file of ``array``'s sample (chunks are one sample long)."""
    root = zarr.open_group(str(store), mode="r")
    arr = root[array]
    key = arr.metadata.encode_chunk_key((sample,) + (0,) * (arr.ndim - 1))
    path = store / array / key
    assert path.is_file(), path
    return path


def first_of_split(store: Path, split: int) -> int:
    return int(np.flatnonzero(zarr.open_group(str(store), mode="r")["split"][:] == split)[0])


def unschema(store: Path) -> Path:
    """Remove ``schema`` from the root attributes: a creation interrupted (older glasscam)."""
    meta = json.loads((store / "zarr.json").read_text())
    meta["attributes"].pop("schema")
    (store / "zarr.json").write_text(json.dumps(meta))
    return store


def _without(store: Path, array: str) -> Path:
    shutil.rmtree(store / array)
    return store


def nan_position(store: Path, cls: str, sample: int, atom: int) -> Path:
    root = zarr.open_group(str(store), mode="r+")
    pos = np.asarray(root[f"{cls}/positions"][sample])
    pos[atom, 0] = np.nan
    root[f"{cls}/positions"][sample] = pos
    return store


# ----------------------------------------------------------------------------------------------
# the cases


@dataclass
class Case:
    argv: list[str]
    expect: list[str]  # substrings of the message (whitespace-normalised)
    involved: list[Path] = field(default_factory=list)  # must be byte-identical afterwards
    # the bad input is found only while computing: an output created before that may stay
    # (it is resumable); otherwise nothing new may appear beside the inputs (no output, no
    # lock file, no creation folder)
    late: bool = False


def lmp(deck: Path, variables: dict[str, object]) -> list[str]:
    return lammps_command(deck, variables)


def quench(inp: Inputs, out: Path | None = None, **change: object) -> list[str]:
    return lmp(QUENCH, {"out": out or inp.tmp / "new.zarr", **QUENCH_VARS, **change})


def glasscam(*args: object) -> list[str]:
    return [GLASSCAM, *map(str, args)]


def train(inp: Inputs, samples: Path | None = None, out: Path | None = None,
          *extra: object) -> list[str]:
    return glasscam("train", "--samples", samples or inp.get("samples"), "--out",
                    out or inp.tmp / "newmodel", "--epochs", 1, "--batch-size", 8,
                    "--threads", 1, "--device", "cpu", *extra)


def gradcam(inp: Inputs, samples: Path | None = None, model: Path | None = None,
            out: Path | None = None, *extra: object) -> list[str]:
    return glasscam("gradcam", "--samples", samples or inp.get("samples"), "--model",
                    model or inp.get("model"), "--out", out or inp.tmp / "gc.zarr",
                    "--threads", 1, "--device", "cpu", *extra)


def indicators(inp: Inputs, samples: Path | None = None, out: Path | None = None,
               *extra: object) -> list[str]:
    return glasscam("indicators", "--samples", samples or inp.get("samples"), "--out",
                    out or inp.tmp / "ind.zarr", "--scheduler", "serial", *extra)


def preset_file(inp: Inputs, text: str) -> Path:
    path = inp.tmp / "custom.toml"
    path.write_text(text)
    return path


def _truncated_checkpoint(inp: Inputs) -> Path:
    model = inp.get("model")
    truncate(model / "checkpoint.pt")
    return model


def _truncated_image_chunk(inp: Inputs) -> tuple[Path, Path]:
    samples = inp.get("samples")
    chunk = chunk_of(samples, "glass/image", first_of_split(samples, 0))
    truncate(chunk)
    return samples, chunk


def _truncated_positions_chunk(inp: Inputs) -> tuple[Path, Path]:
    samples = inp.get("samples")
    chunk = chunk_of(samples, "liquid/positions", 5)
    truncate(chunk)
    return samples, chunk


def _case_deck_store_other_parameters(inp: Inputs) -> Case:
    store = inp.get("quench")
    return Case(quench(inp, store, rate=0.25), ["rate: store has 0.2, run asks 0.25", str(store)],
                [store])


def _case_deck_store_shrinks(inp: Inputs) -> Case:
    store = inp.get("quench")
    return Case(quench(inp, store, nsamples=0), ["nsamples must be >= 1"], [store])


def _case_deck_truncated_root(inp: Inputs) -> Case:
    store = inp.get("quench")
    truncate(store / "zarr.json")
    return Case(quench(inp, store), [str(store / "zarr.json")], [store])


def _case_deck_truncated_array_meta(inp: Inputs) -> Case:
    store = inp.get("quench")
    truncate(store / "glass" / "image" / "zarr.json")
    return Case(quench(inp, store), ["glass/image/zarr.json"], [store])


def _case_deck_truncated_chunk(inp: Inputs) -> Case:
    """A resume verifies the store first: a damaged done sample is named (and redone)."""
    store = inp.get("quench")
    # asking for one more sample makes the run resume (and grow) the store
    chunk = chunk_of(store, "glass/positions", 0)
    truncate(chunk)
    return Case(quench(inp, store, rate=0.3), [str(store), "rate"], [store])


def _case_deck_another_kind(inp: Inputs) -> Case:
    store = inp.get("indicators")
    return Case(quench(inp, store), [str(store), "'schema' is 'glasscam.indicators/"], [store])


def _case_deck_not_a_store(inp: Inputs) -> Case:
    folder = inp.tmp / "notastore"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    return Case(quench(inp, folder), [str(folder), "not a Zarr store"], [folder])


def _case_propensity_missing_samples(inp: Inputs) -> Case:
    missing = inp.tmp / "missing.zarr"
    argv = lmp(PROPENSITY, {"samples": missing, "sample": 0, "nreplicas": 2, "temp": 0.6,
                            "nsteps": 100, "noutputs": 4, "out": inp.tmp / "prop.zarr"})
    return Case(argv, [str(missing)])


def _case_propensity_samples_of_another_kind(inp: Inputs) -> Case:
    store = inp.get("indicators")
    argv = lmp(PROPENSITY, {"samples": store, "sample": 0, "nreplicas": 2, "temp": 0.6,
                            "nsteps": 100, "noutputs": 4, "out": inp.tmp / "prop.zarr"})
    return Case(argv, [str(store), "'schema'"], [store])


def _case_train_truncated_checkpoint(inp: Inputs) -> Case:
    model = _truncated_checkpoint(inp)
    return Case(train(inp, None, model), [str(model / "checkpoint.pt")],
                [model, inp.get("samples")])


def _case_train_other_settings(inp: Inputs) -> Case:
    model = inp.get("model")
    return Case(train(inp, None, model, "--lr", "0.01"), ["train_config.lr", "checkpoint.pt"],
                [model, inp.get("samples")])


def _case_train_truncated_chunk(inp: Inputs) -> Case:
    samples, chunk = _truncated_image_chunk(inp)
    return Case(train(inp, samples), [str(chunk)], [samples], late=True)


def _case_gradcam_truncated_chunk(inp: Inputs) -> Case:
    samples, chunk = _truncated_image_chunk(inp)
    return Case(gradcam(inp, samples, None, None, "--split", "all"), [str(chunk)],
                [samples, inp.get("model")], late=True)


def _case_indicators_truncated_chunk(inp: Inputs) -> Case:
    samples, chunk = _truncated_positions_chunk(inp)
    return Case(indicators(inp, samples, None, "--system", "kam"), [str(chunk)], [samples],
                late=True)


def _case_verify_truncated_chunk(inp: Inputs) -> Case:
    samples, chunk = _truncated_positions_chunk(inp)
    return Case(glasscam("verify", samples), [str(chunk), "sample 5"], [samples])


def _case_gradcam_out_of_another_kind(inp: Inputs) -> Case:
    store = inp.get("indicators")
    return Case(gradcam(inp, None, None, store), [str(store), "'schema'"],
                [store, inp.get("samples"), inp.get("model")])


def _case_indicators_out_other_parameters(inp: Inputs) -> Case:
    store = inp.get("indicators")
    return Case(indicators(inp, None, store, "--system", "abm"), [str(store), "system"],
                [store, inp.get("samples")])


def _case_indicators_nan_positions(inp: Inputs) -> Case:
    samples = nan_position(inp.get("samples"), "glass", 3, 7)
    return Case(indicators(inp, samples, None, "--system", "kam"),
                [str(samples), "glass/positions", "sample 3"], [samples], late=True)


def _case_gradcam_nan_positions(inp: Inputs) -> Case:
    samples = nan_position(inp.get("samples"), "liquid", 2, 0)
    return Case(gradcam(inp, samples, None, None, "--split", "all"),
                [str(samples), "liquid/positions", "sample 2"], [samples, inp.get("model")],
                late=True)


def _case_run_unknown_key(inp: Inputs) -> Case:
    preset = preset_file(inp, '[run]\nsystem = "kam"\n[train]\nepoch = 3\n')
    return Case(glasscam("run", "--preset", preset, "--out", inp.tmp / "run"),
                ["epoch", "[train]"])


def _case_run_unknown_table(inp: Inputs) -> Case:
    preset = preset_file(inp, '[run]\nsystem = "kam"\n[trian]\nepochs = 3\n')
    return Case(glasscam("run", "--preset", preset, "--out", inp.tmp / "run"), ["trian"])


def _case_run_unknown_deck_variable(inp: Inputs) -> Case:
    preset = preset_file(inp, '[run]\nsystem = "kam"\n[quench]\nnsample = 3\n')
    return Case(glasscam("run", "--preset", preset, "--out", inp.tmp / "run"), ["nsample"])


CASES: dict[str, Callable[[Inputs], Case]] = {
    # ---- quench deck variables (lmp -in quench.in -var ...)
    "deck-unknown-variable": lambda i: Case(quench(i, nsample=5), ["nsample"]),
    "deck-natoms-not-an-integer": lambda i: Case(quench(i, natoms="two"),
                                                 ["'natoms' must be an integer"]),
    "deck-rate-zero": lambda i: Case(quench(i, rate=0), ["rate must be > 0"]),
    "deck-grid-1": lambda i: Case(quench(i, grid=1), ["grid must be >= 4"]),
    "deck-nsamples-zero": lambda i: Case(quench(i, nsamples=0), ["nsamples must be >= 1"]),
    "deck-negative-temperature": lambda i: Case(quench(i, TG=-0.05), ["TG=-0.05"]),
    "deck-unknown-kernel": lambda i: Case(quench(i, kernel="sinc"), ["kernel", "'sinc'"]),
    "deck-channels-3": lambda i: Case(quench(i, channels=3), ["channels must be 1 or 2"]),
    "deck-fracA-above-1": lambda i: Case(quench(i, fracA=1.5), ["fracA"]),
    "deck-negative-dt": lambda i: Case(quench(i, dt=-0.005), ["dt"]),
    "deck-store-other-parameters": _case_deck_store_other_parameters,
    "deck-store-nsamples-zero": _case_deck_store_shrinks,
    "deck-store-of-another-kind": _case_deck_another_kind,
    "deck-store-truncated-zarr-json": _case_deck_truncated_root,
    "deck-store-truncated-array-metadata": _case_deck_truncated_array_meta,
    "deck-store-truncated-chunk-and-other-rate": _case_deck_truncated_chunk,
    "deck-out-is-not-a-store": _case_deck_not_a_store,
    "propensity-missing-samples": _case_propensity_missing_samples,
    "propensity-samples-of-another-kind": _case_propensity_samples_of_another_kind,
    # ---- glasscam train
    "train-epochs-0": lambda i: Case(glasscam("train", "--samples", i.get("samples"), "--out",
                                              i.tmp / "m", "--epochs", 0), ["epochs"],
                                     [i.get("samples")]),
    "train-batch-size-0": lambda i: Case(train(i, None, None, "--batch-size", 0),
                                         ["batch-size"], [i.get("samples")]),
    "train-samples-of-another-kind": lambda i: Case(
        train(i, i.get("indicators")), [str(i.get("indicators")), "'schema'"],
        [i.get("indicators")]),
    "train-samples-missing": lambda i: Case(train(i, i.tmp / "nowhere.zarr"),
                                            [str(i.tmp / "nowhere.zarr")]),
    "train-samples-half-created": lambda i: Case(
        train(i, unschema(i.get("samples"))), [str(i.get("samples")), "'schema'"],
        [i.get("samples")]),
    "train-truncated-checkpoint": _case_train_truncated_checkpoint,
    "train-resume-other-settings": _case_train_other_settings,
    "train-truncated-image-chunk": _case_train_truncated_chunk,
    "train-bad-conv-channels": lambda i: Case(train(i, None, None, "--conv-channels", "8,16"),
                                              ["'8,16'"], [i.get("samples")]),
    # ---- glasscam gradcam
    "gradcam-wrong-split": lambda i: Case(gradcam(i, None, None, None, "--split", "tset"),
                                          ["'tset'"], [i.get("samples"), i.get("model")]),
    "gradcam-wrong-target": lambda i: Case(gradcam(i, None, None, None, "--target", "gas"),
                                           ["'gas'"], [i.get("samples"), i.get("model")]),
    "gradcam-grid-mismatch": lambda i: Case(
        gradcam(i, i.get("samples16")), ["grid size M", str(i.get("samples16"))],
        [i.get("samples16"), i.get("model")]),
    "gradcam-truncated-checkpoint": lambda i: Case(
        gradcam(i, None, _truncated_checkpoint(i)),
        [str(i.get("model") / "checkpoint.pt")], [i.get("samples"), i.get("model")]),
    "gradcam-model-missing": lambda i: Case(gradcam(i, None, i.tmp / "nomodel"),
                                            [str(i.tmp / "nomodel")], [i.get("samples")]),
    "gradcam-out-of-another-kind": _case_gradcam_out_of_another_kind,
    "gradcam-truncated-image-chunk": _case_gradcam_truncated_chunk,
    "gradcam-nan-positions": _case_gradcam_nan_positions,
    # ---- glasscam indicators
    "indicators-nan-positions": _case_indicators_nan_positions,
    "indicators-wrong-split": lambda i: Case(indicators(i, None, None, "--split", "vall"),
                                             ["'vall'"], [i.get("samples")]),
    "indicators-unknown-system": lambda i: Case(indicators(i, None, None, "--system", "lj"),
                                                ["'lj'"], [i.get("samples")]),
    "indicators-samples-per-task-0": lambda i: Case(
        indicators(i, None, None, "--system", "kam", INDICATORS_PER_TASK, 0),
        [INDICATORS_PER_TASK.lstrip("-")], [i.get("samples")]),
    "indicators-samples-of-another-kind": lambda i: Case(
        indicators(i, i.get("indicators")), [str(i.get("indicators")), "'schema'"],
        [i.get("indicators")]),
    "indicators-out-other-parameters": _case_indicators_out_other_parameters,
    "indicators-truncated-positions-chunk": _case_indicators_truncated_chunk,
    "indicators-samples-half-created": lambda i: Case(
        indicators(i, unschema(i.get("samples")), None, "--system", "kam"),
        [str(i.get("samples")), "'schema'"], [i.get("samples")]),
    "gradcam-samples-missing-array": lambda i: Case(
        gradcam(i, _without(i.get("samples"), "glass/box")), ["glass/box"],
        [i.get("samples"), i.get("model")]),
    "indicators-samples-truncated-zarr-json": lambda i: Case(
        indicators(i, i.get("samples")), [str(i.get("samples") / "zarr.json")],
        [truncate(i.get("samples") / "zarr.json").parent]),
    # ---- glasscam run
    "run-unknown-preset": lambda i: Case(glasscam("run", "--preset", "nope", "--out",
                                                  i.tmp / "run"), ["'nope'"]),
    "run-unknown-preset-key": _case_run_unknown_key,
    "run-unknown-preset-table": _case_run_unknown_table,
    "run-unknown-deck-variable-in-preset": _case_run_unknown_deck_variable,
    "run-wrong-stage": lambda i: Case(glasscam("run", "--preset", "tiny", "--out", i.tmp / "run",
                                               "--stage", "trian"), ["trian"]),
    # ---- glasscam verify (a read: names the damage, changes nothing)
    "verify-truncated-chunk": _case_verify_truncated_chunk,
    "verify-not-a-store": lambda i: Case(glasscam("verify", i.tmp), [str(i.tmp)]),
}


def digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (or of ``path`` itself)."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in files}


def test_the_matrix_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_naming_it_and_changes_nothing(name, originals, tmp_path):
    inp = Inputs(originals, tmp_path)
    case = CASES[name](inp)
    before = {str(p): digest(p) for p in case.involved}
    entries = set(os.listdir(tmp_path))
    t0 = time.monotonic()
    try:
        proc = subprocess.run(case.argv, cwd=tmp_path, env=ENV, capture_output=True, text=True,
                              timeout=2 * LIMIT_S)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"still running after {err.timeout} s: {case.argv}")
    elapsed = time.monotonic() - t0
    output = (proc.stdout or "") + (proc.stderr or "")
    message = " ".join(output.split())
    problems = []
    if proc.returncode == 0:
        problems.append("accepted (exit 0)")
    if elapsed > LIMIT_S:
        problems.append(f"refused only after {elapsed:.1f} s")
    missing = [e for e in case.expect if " ".join(e.split()) not in message]
    if missing:
        problems.append(f"the message does not name {missing}")
    if "Traceback" in output and not name.startswith(("deck-", "propensity-")):
        problems.append("a traceback instead of a message")
    after = {str(p): digest(p) for p in case.involved}
    for path in before:
        changed = sorted(k for k in set(before[path]) | set(after[path])
                         if before[path].get(k) != after[path].get(k))
        if changed:
            problems.append(f"{path} was modified: {changed[:6]}")
    new = sorted(set(os.listdir(tmp_path)) - entries)
    if case.late:
        new = [e for e in new if e.endswith(".lock") or ".creating-" in e]
    if new:
        problems.append(f"created {new}")
    assert not problems, "; ".join(problems) + f"\n{output[-3000:]}"
