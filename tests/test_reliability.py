"""Issue 12, "nothing lost, nothing stale": every writer killed at many points, then resumed.

Each writer runs in a child process through ``tests/killpoints.py``, which counts the writes of
the process (zarr 3.1's ``LocalStore`` key writes; ``os.replace`` commits for ``glasscam
train``) and sends itself SIGKILL at the n-th one: just before it, just after it, or in its
middle (a half-written temporary file, not renamed). An uninterrupted run recorded through the
same wrapper names every write, so a kill point is chosen by what is written (store creation in
the hidden ``.<name>.creating-*`` sibling, the first chunk, between a sample's chunks and its
``done``, ...). After each kill the same command, run for real (``lmp`` / ``glasscam``),
resumes, and

* finishes: every sample (epoch) is done, ``glasscam verify`` passes;
* the output is bit-identical to the uninterrupted run's (every array's values and metadata,
  every attribute but the informational timestamps; for a model: weights, optimizer, RNG
  state, loss history);
* nothing done before the kill is written again (its chunk files keep their inode and mtime;
  the quench prints "sample i written" exactly for the missing samples; the epochs of the
  checkpoint keep their history records);
* nothing stale is left: no ``.creating-*`` sibling, no lock file, no claims folder, no
  half-written temporary file.

Writers: the quench deck (real LAMMPS in the wrapper's interpreter, tiny N), ``glasscam
indicators`` and ``glasscam gradcam`` (SampleStage), ``glasscam train`` (one network and an
ensemble). The default run has a representative 10 kill points; ``-m slow`` runs all of them.

Concurrency: a second launch on the output of a running one (held at a write by the wrapper's
gate) is refused at once, naming the output, the holder's pid and host; the first then finishes
with the uninterrupted result.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from conftest import INPUTS, MPIRUN, lammps_command
from glasscam.insitu import integrity, schema
from killpoints import cli_option

TESTS = Path(__file__).resolve().parent
KILLPOINTS = str(TESTS / "killpoints.py")
PY = sys.executable
GLASSCAM = str(Path(sys.executable).parent / "glasscam")
# wide console (messages on one line), one thread each: reproducible and light on 2 cores
ENV = {**os.environ, "COLUMNS": "1000", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
TIMEOUT = 300
# exit status of a process that SIGKILLed itself; mpirun (Hydra) exits 9 when a rank did
KILLED = (-signal.SIGKILL, signal.SIGKILL)

QUENCH_DECK = INPUTS / "kam" / "quench.in"
QUENCH_VARS: dict[str, object] = {
    "nsamples": 3, "natoms": 64, "rate": 0.2, "nequil": 200, "nrecord": 100,
    "nthermo": 100000, "grid": 8, "tdamp": 0.05,
}
INDICATORS_PER_TASK = cli_option("indicators", "--samples-per-task", "--batch-size")
SYNTHETIC = {"nsamples": 12, "natoms": 64, "grid": 8, "seed": 3}

# ----------------------------------------------------------------------------------------------
# the writers


@dataclass(frozen=True)
class Writer:
    """A command that writes ``product`` in a run folder: through the wrapper (``mode`` and its
    arguments) and for real (the argv a user types)."""

    name: str
    product: str
    target: str  # the write primitive killpoints.py counts: zarr | replace
    args: Callable[[Path, dict[str, Path]], list[str]]  # killpoints.py mode + arguments
    real: Callable[[Path, dict[str, Path]], list[str]]
    launcher: tuple[str, ...] = ()  # e.g. mpirun -np 2 (every rank counts its own writes)
    reference: str = ""  # the writer whose uninterrupted output this one's must equal

    @property
    def same_as(self) -> str:
        return self.reference or self.name

    @property
    def is_store(self) -> bool:
        return self.target == "zarr"


def _quench_args(out: Path, _inputs: dict[str, Path]) -> list[str]:
    args = ["lammps", str(QUENCH_DECK), "-var", "out", str(out)]
    for key, value in QUENCH_VARS.items():
        args += ["-var", key, str(value)]
    return args


def _quench_real(out: Path, _inputs: dict[str, Path]) -> list[str]:
    return lammps_command(QUENCH_DECK, {"out": out, **QUENCH_VARS})


def _quench_mpi_args(out: Path, inputs: dict[str, Path]) -> list[str]:
    return [*_quench_args(out, inputs), "-partition", "2x1"]


def _quench_mpi_real(out: Path, _inputs: dict[str, Path]) -> list[str]:
    return lammps_command(QUENCH_DECK, {"out": out, **QUENCH_VARS}, np=2, partitions="2x1")


def _indicators(out: Path, inputs: dict[str, Path]) -> list[str]:
    return ["indicators", "--samples", str(inputs["samples"]), "--out", str(out),
            "--scheduler", "serial", INDICATORS_PER_TASK, "3", "--system", "kam"]


def _gradcam(out: Path, inputs: dict[str, Path]) -> list[str]:
    return ["gradcam", "--samples", str(inputs["samples"]), "--model", str(inputs["model"]),
            "--out", str(out), "--split", "all", "--batch-size", "4", "--threads", "1",
            "--device", "cpu"]


def _train(out: Path, inputs: dict[str, Path]) -> list[str]:
    return ["train", "--samples", str(inputs["samples"]), "--out", str(out), "--epochs", "3",
            "--batch-size", "8", "--threads", "1", "--device", "cpu", "--seed", "3",
            "--prefetch", "2"]


def _ensemble(out: Path, inputs: dict[str, Path]) -> list[str]:
    return ["train", "--samples", str(inputs["samples"]), "--out", str(out), "--epochs", "2",
            "--batch-size", "8", "--threads", "1", "--device", "cpu", "--seed", "3",
            "--ensemble", "2"]


def _cli(build):
    return lambda out, inputs: ["cli", *build(out, inputs)]


def _real(build):
    return lambda out, inputs: [GLASSCAM, *build(out, inputs)]


WRITERS: dict[str, Writer] = {
    "quench": Writer("quench", "samples.zarr", "zarr", _quench_args, _quench_real),
    # two partitions: samples are bit-for-bit those of one rank (tests/test_quench.py)
    "quench-mpi": Writer("quench-mpi", "samples.zarr", "zarr", _quench_mpi_args,
                         _quench_mpi_real, (MPIRUN, "-np", "2"), "quench"),
    "indicators": Writer("indicators", "indicators.zarr", "zarr", _cli(_indicators),
                         _real(_indicators)),
    "gradcam": Writer("gradcam", "gradcam.zarr", "zarr", _cli(_gradcam), _real(_gradcam)),
    "train": Writer("train", "model", "replace", _cli(_train), _real(_train)),
    "ensemble": Writer("ensemble", "model", "replace", _cli(_ensemble), _real(_ensemble)),
}

# ----------------------------------------------------------------------------------------------
# kill points


@dataclass(frozen=True)
class At:
    """A write of the uninterrupted run: the ``occurrence``-th (0-based; negative from the end)
    whose path (relative to the run folder, ``.creating-*`` for the hidden creation folder)
    matches ``pattern``; or the write at ``fraction`` of all writes; or number ``n``."""

    pattern: str | None = None
    occurrence: int = 0
    fraction: float | None = None
    n: int | None = None

    def resolve(self, record: list[str]) -> int:
        if self.n is not None:
            return self.n
        if self.fraction is not None:
            return max(1, min(len(record), round(self.fraction * len(record))))
        hits = [i for i, path in enumerate(record, 1) if re.search(self.pattern, path)]
        assert hits, f"no write matches {self.pattern!r} in the reference run"
        return hits[self.occurrence]


@dataclass(frozen=True)
class Kill:
    at: At
    when: str  # before | after | torn
    # a second kill, during the first resume (its n-th write), before the final resume
    again: int | None = None


CREATING = r"^\.[^/]+\.creating-\*/"
KILL_POINTS: dict[str, dict[str, Kill]] = {
    "quench": {
        "create-first-before": Kill(At(CREATING, 0), "before"),
        "create-first-after": Kill(At(CREATING, 0), "after"),
        "create-split-after": Kill(At(CREATING + r"split/c/0$"), "after"),
        "create-mid-torn": Kill(At(CREATING, 40), "torn"),
        "create-last-before": Kill(At(CREATING, -1), "before"),
        "create-last-after": Kill(At(CREATING, -1), "after"),  # built, not yet renamed
        "first-chunk-before": Kill(At(r"^samples\.zarr/liquid/positions/c/0/"), "before"),
        "first-chunk-torn": Kill(At(r"^samples\.zarr/liquid/positions/c/0/"), "torn"),
        "liquid-checksum-before-done": Kill(At(r"liquid/checksum/c/0/"), "after"),
        "liquid-done-glass-not": Kill(At(r"liquid/done/c/1$"), "after"),
        "cooling-torn": Kill(At(r"cooling/temperature/c/1/"), "torn"),
        "glass-checksum-before-done": Kill(At(r"glass/checksum/c/1/"), "after"),
        "glass-done-before": Kill(At(r"glass/done/c/1$"), "before"),
        "glass-done-torn": Kill(At(r"glass/done/c/1$"), "torn"),
        "glass-done-after": Kill(At(r"glass/done/c/1$"), "after"),
        "last-write-after": Kill(At(r"glass/done/c/2$"), "after"),
        "three-quarters-before": Kill(At(fraction=0.75), "before"),
        "created-then-recreation-killed": Kill(At(CREATING, -1), "after", again=10),
        "mid-sample-then-resume-killed": Kill(At(r"glass/checksum/c/1/"), "after", again=5),
    },
    # universe rank 0 creates the store and takes samples like partition 1: its writes begin
    # as one rank's do (creation, then its first sample, whichever that is)
    "quench-mpi": {
        "create-mid-torn": Kill(At(CREATING, 30), "torn"),
        "create-last-after": Kill(At(CREATING, -1), "after"),
        "first-sample-checksum-before-done": Kill(At(r"glass/checksum/c/0/"), "after"),
    },
    "indicators": {
        "create-first-before": Kill(At(CREATING, 0), "before"),
        "create-last-after": Kill(At(CREATING, -1), "after"),
        "first-chunk-torn": Kill(At(r"liquid/voronoi/c/0/"), "torn"),
        "checksum-before-done": Kill(At(r"liquid/checksum/c/2/"), "after"),
        "done-mid-batch": Kill(At(r"liquid/done/c/1$"), "after"),
        "glass-chunk-before": Kill(At(r"glass/ttop/c/5/"), "before"),
        "six-tenths-torn": Kill(At(fraction=0.6), "torn"),
        "last-write-after": Kill(At(n=None, pattern=r".", occurrence=-1), "after"),
    },
    "gradcam": {
        "create-mid-before": Kill(At(CREATING, 20), "before"),
        "create-last-after": Kill(At(CREATING, -1), "after"),
        "provenance-rewrite-before": Kill(At(r"^gradcam\.zarr/zarr\.json$"), "before"),
        "checksum-before-done": Kill(At(r"liquid/checksum/c/3/"), "after"),
        "members-torn": Kill(At(r"glass/gamma_members/c/6/"), "torn"),
        "glass-done-before": Kill(At(r"glass/done/c/9$"), "before"),
        "last-write-after": Kill(At(pattern=r".", occurrence=-1), "after"),
    },
    "train": {
        "epoch1-before": Kill(At(n=1), "before"),
        "epoch1-torn": Kill(At(n=1), "torn"),
        "epoch1-after": Kill(At(n=1), "after"),
        "epoch2-torn": Kill(At(n=2), "torn"),
        "epoch3-after": Kill(At(n=3), "after"),
        "metrics-before": Kill(At(r"metrics\.json$"), "before"),
        "metrics-torn": Kill(At(r"metrics\.json$"), "torn"),
        "metrics-after": Kill(At(r"metrics\.json$"), "after"),
    },
    "ensemble": {
        "manifest-torn": Kill(At(r"ensemble\.json$"), "torn"),
        "member0-complete": Kill(At(r"member0/metrics\.json$"), "after"),
        "member1-epoch1-before": Kill(At(r"member1/checkpoint\.pt$"), "before"),
        "ensemble-metrics-before": Kill(At(r"^model/metrics\.json$"), "before"),
    },
}
DEFAULT_POINTS = {
    ("quench", "create-first-before"), ("quench", "create-last-after"),
    ("quench", "first-chunk-torn"), ("quench", "glass-checksum-before-done"),
    ("quench", "last-write-after"), ("indicators", "checksum-before-done"),
    ("gradcam", "create-last-after"), ("gradcam", "checksum-before-done"),
    ("gradcam", "glass-done-before"), ("train", "epoch1-after"), ("train", "metrics-torn"),
}


def _point_params():
    for writer, points in KILL_POINTS.items():
        for label, _ in points.items():
            marks = () if (writer, label) in DEFAULT_POINTS else (pytest.mark.slow,)
            if writer.endswith("-mpi"):
                marks += (pytest.mark.mpi,)
            yield pytest.param(writer, label, id=f"{writer}-{label}", marks=marks)


# ----------------------------------------------------------------------------------------------
# running


def run(argv: list[str], cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def wrapped(writer: Writer, out: Path, inputs: dict[str, Path], *options: str) -> list[str]:
    return [*writer.launcher, PY, KILLPOINTS, "--target", writer.target, *options, "--",
            *writer.args(out, inputs)]


def text_of(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout or "") + (proc.stderr or "")


def ok(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{what} exited {proc.returncode}\n{text_of(proc)[-6000:]}"
    return proc


def read_record(path: Path, folder: Path) -> list[str]:
    """The paths written, in order (relative to ``folder``; creation folder as ``-*``)."""
    rows = []
    for line in path.read_text().splitlines():
        n, written = line.split("\t", 1)
        rows.append((int(n), os.path.relpath(written, folder)))
    rows.sort()
    assert [n for n, _ in rows] == list(range(1, len(rows) + 1))
    return [re.sub(r"\.creating-[0-9a-f]+", ".creating-*", p) for _, p in rows]


def written_samples(text: str) -> list[int]:
    return [int(i) for i in re.findall(r"glasscam quench: sample (\d+) written", text)]


# ----------------------------------------------------------------------------------------------
# comparing outputs


# informational attributes that legitimately differ between two runs: attribute -> its keys
# that do (None: all of it): when a run started, what the last run cost (time per sample)
VOLATILE_ATTRS: dict[str, tuple[str, ...] | None] = {"provenance": ("started",), "cost": None}


def _normalise_attrs(attrs: dict[str, Any]) -> dict[str, Any]:
    attrs = json.loads(json.dumps(attrs))
    for name, keys in VOLATILE_ATTRS.items():
        if keys is None:
            attrs.pop(name, None)
        elif isinstance(attrs.get(name), dict):
            for key in keys:
                attrs[name].pop(key, None)
    return attrs


def store_content(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Every array's values, and every node's metadata (JSON, volatile attributes dropped)."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, str] = {}

    def walk(group, prefix: str) -> None:
        meta[prefix or "/"] = json.dumps(_normalise_attrs(dict(group.attrs)), sort_keys=True)
        for name, node in sorted(group.members()):
            key = f"{prefix}{name}"
            if isinstance(node, zarr.Array):
                arrays[key] = np.asarray(node[...])
                meta[key] = json.dumps(node.metadata.to_dict(), sort_keys=True, default=str)
            else:
                walk(node, key + "/")

    walk(zarr.open_group(str(path), mode="r"), "")
    return arrays, meta


def assert_same_store(ref: Path, out: Path) -> None:
    a_arrays, a_meta = store_content(ref)
    b_arrays, b_meta = store_content(out)
    assert sorted(a_meta) == sorted(b_meta), "the stores have different nodes"
    for key in a_meta:
        assert a_meta[key] == b_meta[key], f"metadata of {key!r} differs"
    for key, a in a_arrays.items():
        b = b_arrays[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), f"values of {key!r} differ"


TIMING = {"train_s", "epoch_s", "samples_per_s", "data_wait_fraction", "wall_s"}


def _strip(obj: Any, folder: Path) -> Any:
    """JSON-like ``obj`` without timings, with ``folder`` written as <out>."""
    if isinstance(obj, dict):
        return {k: _strip(v, folder) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list | tuple):
        return [_strip(v, folder) for v in obj]
    if isinstance(obj, str):
        return obj.replace(str(folder.resolve()), "<out>").replace(str(folder), "<out>")
    return obj


def _deep_equal(a: Any, b: Any, where: str) -> None:
    import torch

    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for k in a:
            _deep_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _deep_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def network_folders(model: Path) -> list[Path]:
    members = sorted(p for p in model.glob("member*") if p.is_dir())
    return members or [model]


def assert_same_model(ref: Path, out: Path) -> None:
    import torch

    assert [p.name for p in network_folders(ref)] == [p.name for p in network_folders(out)]
    for a_dir, b_dir in zip(network_folders(ref), network_folders(out), strict=True):
        a = torch.load(a_dir / "checkpoint.pt", weights_only=True)
        b = torch.load(b_dir / "checkpoint.pt", weights_only=True)
        a.pop("wall_s"), b.pop("wall_s")
        a["history"], b["history"] = _strip(a["history"], ref), _strip(b["history"], out)
        _deep_equal(a, b, f"{b_dir.name}/checkpoint.pt")
    for name in ("metrics.json", "ensemble.json"):
        files = [p for p in ref.rglob(name)]
        for fa in files:
            fb = out / fa.relative_to(ref)
            assert fb.exists(), fb
            _deep_equal(_strip(json.loads(fa.read_text()), ref),
                        _strip(json.loads(fb.read_text()), out), str(fb.relative_to(out)))


def assert_same_output(writer: Writer, ref: Path, out: Path) -> None:
    (assert_same_store if writer.is_store else assert_same_model)(ref, out)


# ----------------------------------------------------------------------------------------------
# what a kill leaves, what a resume must keep


def completed_files(writer: Writer, out: Path) -> dict[str, Any]:
    """What must not be written again: the chunk files (inode, mtime) of every complete unit
    (a quench sample is complete when both classes are done), or the checkpoint history of
    the epochs done."""
    if not writer.is_store:
        import torch

        found = {}
        for folder in network_folders(out) if out.exists() else []:
            ckpt = folder / "checkpoint.pt"
            if ckpt.exists():
                history = torch.load(ckpt, weights_only=True)["history"]
                found[str(folder.relative_to(out))] = history
        return found
    if not (out / "zarr.json").exists():
        return {}
    root = zarr.open_group(str(out), mode="r")
    units = schema.units_of(root)
    files: dict[str, Any] = {}
    for unit in units:
        done = np.asarray(root[unit.done][...], dtype=bool)
        if writer.same_as == "quench":
            done = schema.done_samples(root)
        for idx in np.flatnonzero(done):
            for path in (*unit.covers, unit.checksum, unit.done):
                for f in integrity.chunk_files(str(out), root[path], (int(idx),)):
                    st = os.stat(f) if os.path.exists(f) else None
                    files[f] = (st.st_ino, st.st_mtime_ns) if st else None
    return files


def assert_kept(writer: Writer, out: Path, before: dict[str, Any]) -> None:
    if writer.is_store:
        now = {f: (os.stat(f).st_ino, os.stat(f).st_mtime_ns) if os.path.exists(f) else None
               for f in before}
        rewritten = sorted(f for f in before if now[f] != before[f])
        assert not rewritten, f"written again after the kill: {rewritten[:5]}"
        return
    import torch

    for folder, history in before.items():
        now = torch.load(out / folder / "checkpoint.pt", weights_only=True)["history"]
        assert now[: len(history)] == history, f"{folder}: epochs done before the kill redone"


def assert_complete(writer: Writer, out: Path) -> None:
    if writer.is_store:
        root = zarr.open_group(str(out), mode="r")
        for unit in schema.units_of(root):
            done = np.asarray(root[unit.done][...], dtype=bool)
            assert done.all(), f"{unit.done}: not done {np.flatnonzero(~done).tolist()}"
        assert_verifies(out)
    else:
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["complete"] is True
        for folder in network_folders(out):
            import torch

            ckpt = torch.load(folder / "checkpoint.pt", weights_only=True)
            assert ckpt["epoch"] == ckpt["train_config"]["epochs"]


def assert_verifies(out: Path) -> None:
    from glasscam.analysis.cli import app
    from typer.testing import CliRunner

    res = CliRunner().invoke(app, ["verify", str(out)])
    assert res.exit_code == 0 and "OK" in res.output, res.output


def leftovers(folder: Path, product: str, temporaries: bool = True) -> list[str]:
    """What a finished writer must not leave: anything beside its product in the run folder
    (creation folders, locks, claims); with ``temporaries``, also half-written temporary files
    inside it (zarr's ``*.partial``, train's ``.*.tmp``)."""
    stray = [p.name for p in folder.iterdir() if p.name != product]
    inside = folder / product
    if inside.exists() and temporaries:
        stray += [str(p.relative_to(folder)) for p in inside.rglob("*")
                  if p.name.endswith((".partial", ".tmp")) or ".creating-" in p.name]
    return sorted(stray)


# ----------------------------------------------------------------------------------------------
# fixtures: inputs and the uninterrupted runs


@dataclass
class Reference:
    out: Path
    record: list[str]
    text: str


class References:
    """The uninterrupted run of each writer (through the wrapper, counting writes), checked
    against the real command's output; computed on first use."""

    def __init__(self, factory):
        self.factory = factory
        self.cache: dict[str, Reference] = {}
        self._inputs: dict[str, Path] | None = None

    @property
    def inputs(self) -> dict[str, Path]:
        if self._inputs is None:
            from glasscam.analysis.cnn.train import TrainConfig, train

            from glasscam.testing import synthetic_samples_store

            folder = self.factory.mktemp("inputs")
            samples = folder / "samples.zarr"
            synthetic_samples_store(samples, **SYNTHETIC)
            model = folder / "model"
            train(samples, model, TrainConfig(epochs=1, batch_size=8, seed=0, threads=1))
            self._inputs = {"samples": samples, "model": model}
        return self._inputs

    def get(self, name: str) -> Reference:
        if name not in self.cache:
            writer = WRITERS[name]
            folder = self.factory.mktemp(f"ref-{name}")
            run_dir = folder / "run"
            run_dir.mkdir()
            out = run_dir / writer.product
            record = folder / "record.txt"
            proc = ok(run(wrapped(writer, out, self.inputs, "--record", str(record)), folder),
                      f"uninterrupted {name} (wrapper)")
            assert leftovers(run_dir, writer.product) == []
            real_dir = folder / "real"
            real_dir.mkdir()
            ok(run(writer.real(real_dir / writer.product, self.inputs), folder),
               f"uninterrupted {name} (real command)")
            # the wrapper changes nothing: its output is the real command's
            assert_same_output(writer, real_dir / writer.product, out)
            self.cache[name] = Reference(out, read_record(record, run_dir), text_of(proc))
        return self.cache[name]


@pytest.fixture(scope="module")
def references(tmp_path_factory) -> References:
    return References(tmp_path_factory)


# ----------------------------------------------------------------------------------------------
# the kill matrix


def test_kill_points_cover_creation_and_every_writer():
    assert sum(len(p) for p in KILL_POINTS.values()) >= 30
    assert len(DEFAULT_POINTS) >= 10
    for writer, label in DEFAULT_POINTS:
        assert label in KILL_POINTS[writer]
    for writer in ("quench", "indicators", "gradcam"):
        assert sum(CREATING in k.at.pattern for k in KILL_POINTS[writer].values()
                   if k.at.pattern) >= 2, writer


@pytest.mark.parametrize("name,label", list(_point_params()))
def test_killed_writer_resumes_to_the_uninterrupted_result(name, label, references, tmp_path):
    writer, kill = WRITERS[name], KILL_POINTS[name][label]
    ref = references.get(writer.same_as)
    n = kill.at.resolve(ref.record)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = run_dir / writer.product
    inputs = references.inputs

    proc = run(wrapped(writer, out, inputs, "--kill", str(n), "--when", kill.when), tmp_path)
    assert proc.returncode in KILLED, (
        f"not killed at write {n} ({ref.record[n - 1]}): exit {proc.returncode}\n"
        f"{text_of(proc)[-3000:]}")
    texts = [text_of(proc)]
    if kill.again is not None:  # killed again while resuming
        kept = completed_files(writer, out)
        proc = run(wrapped(writer, out, inputs, "--kill", str(kill.again), "--when", "after"),
                   tmp_path)
        assert proc.returncode in KILLED, text_of(proc)[-3000:]
        assert_kept(writer, out, kept)
        texts.append(text_of(proc))
    if writer.is_store and (kill.at.pattern or "").startswith(CREATING):
        assert not (out / "zarr.json").exists(), "a store appeared before its creation ended"
    kept = completed_files(writer, out)
    if writer.same_as == "quench" and (out / "zarr.json").exists():
        done_after_kill = set(np.flatnonzero(
            schema.done_samples(zarr.open_group(str(out), mode="r"))).tolist())
    else:
        done_after_kill = set()

    resumed = ok(run(writer.real(out, inputs), tmp_path), f"resume of {name} after {label}")

    assert_complete(writer, out)
    assert_same_output(writer, ref.out, out)
    assert_kept(writer, out, kept)
    # (half-written temporary files: test_half_written_files_do_not_survive_a_resume)
    assert leftovers(run_dir, writer.product, temporaries=False) == [], "stale files"
    if writer.same_as == "quench":
        nsamples = int(QUENCH_VARS["nsamples"])
        again = written_samples(text_of(resumed))
        assert sorted(again) == sorted(set(range(nsamples)) - done_after_kill), (
            "the resume must write exactly the samples not done at the kill")
        assert len(again) == len(set(again)), "a sample written twice by the resume"
        for text in texts:  # nothing reported written by a killed run is missing
            assert set(written_samples(text)) <= done_after_kill | set(again)


def test_reference_runs_write_what_the_kill_points_aim_at(references):
    """The chosen kill points fall where their names say (e.g. creation inside the hidden
    folder, then the chunks of sample 0, its checksum before its done)."""
    rec = references.get("quench").record
    creating = [i for i, p in enumerate(rec) if ".creating-*" in p]
    assert creating == list(range(len(creating))) and len(creating) >= 10
    first_chunk = rec[len(creating)]
    assert first_chunk.startswith("samples.zarr/liquid/") and "/c/0" in first_chunk
    for cls in ("liquid", "glass"):
        for i in range(int(QUENCH_VARS["nsamples"])):
            mine = rf"^samples\.zarr/{cls}/.*c/{i}(/|$)"
            order = [k for k, p in enumerate(rec) if re.search(mine, p)]
            assert rec[order[-1]] == f"samples.zarr/{cls}/done/c/{i}", "done is written last"
            assert rec[order[-2]].startswith(f"samples.zarr/{cls}/checksum/c/{i}")


TORN = {
    "quench": "first-chunk-torn", "indicators": "first-chunk-torn", "gradcam": "members-torn",
    "train": "metrics-torn", "ensemble": "manifest-torn",
}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=() if n in ("quench", "train") else (pytest.mark.slow,)) for n in TORN])
def test_half_written_files_do_not_survive_a_resume(name, references, tmp_path):
    """A kill in the middle of a write leaves its temporary file (zarr's
    ``<key>.<uuid>.partial``, train's ``.<file>.<pid>.<hex>.tmp``); the resume, which holds the
    output's lock, must not leave it behind."""
    writer, kill = WRITERS[name], KILL_POINTS[name][TORN[name]]
    ref = references.get(name)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = run_dir / writer.product
    n = kill.at.resolve(ref.record)
    proc = run(wrapped(writer, out, references.inputs, "--kill", str(n), "--when", "torn"),
               tmp_path)
    assert proc.returncode in KILLED, text_of(proc)[-3000:]
    torn = leftovers(run_dir, writer.product)
    assert any(t.endswith((".partial", ".tmp")) for t in torn), torn  # the kill left one
    ok(run(writer.real(out, references.inputs), tmp_path), f"resume of {name}")
    assert_complete(writer, out)
    assert leftovers(run_dir, writer.product) == [], "half-written files left in the output"


# ----------------------------------------------------------------------------------------------
# concurrency: a second writer on a running one's output is refused at once


def _start_held(writer: Writer, out: Path, inputs: dict[str, Path], at: int, gate: Path,
                cwd: Path) -> subprocess.Popen:
    gate.mkdir()
    proc = subprocess.Popen(wrapped(writer, out, inputs, "--pause", str(at), "--gate", str(gate)),
                            cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    deadline = time.monotonic() + 120
    while not (gate / "paused").exists():
        assert proc.poll() is None, f"the first run ended early:\n{proc.communicate()[0]}"
        assert time.monotonic() < deadline, "the first run never reached its pause"
        time.sleep(0.05)
    return proc


def _file_states(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


CONCURRENT = {
    # label: (writer, where the first run is held: a write of its uninterrupted run)
    "quench": ("quench", At(r"^samples\.zarr/glass/positions/c/1/")),
    "train": ("train", At(n=1)),
    "indicators": ("indicators", At(r"liquid/ttop/c/4/")),
    "gradcam-creating": ("gradcam", At(CREATING, 10)),
    "gradcam-writing": ("gradcam", At(r"glass/cam/c/4/")),
}


@pytest.mark.parametrize("label", list(CONCURRENT))
def test_second_writer_is_refused_at_once_and_the_first_finishes(label, references, tmp_path):
    name, at = CONCURRENT[label]
    writer = WRITERS[name]
    ref = references.get(name)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    out = run_dir / writer.product
    inputs = references.inputs
    first = _start_held(writer, out, inputs, at.resolve(ref.record), tmp_path / "gate", tmp_path)
    problems = []
    try:
        before = _file_states(run_dir)
        t0 = time.monotonic()
        second = run(writer.real(out, inputs), tmp_path, timeout=60)
        elapsed = time.monotonic() - t0
        message = " ".join(text_of(second).split())
        if second.returncode == 0:
            problems.append("the second run was not refused")
        if elapsed > 30:
            problems.append(f"the second run ended only after {elapsed:.1f} s")
        if str(out) not in message:
            problems.append("the refusal does not name the output")
        if f"pid {first.pid}" not in message or socket.gethostname() not in message:
            problems.append("the refusal does not name the holder's pid and host")
        after = _file_states(run_dir)
        if after != before:
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            problems.append(f"the second run changed the output: {changed[:6]}")
    finally:
        (tmp_path / "gate" / "go").write_text("")
        text = first.communicate(timeout=TIMEOUT)[0]
    assert not problems, "; ".join(problems) + f"\n--- second run ---\n{message[-3000:]}" + (
        f"\n--- first run ---\n{text[-3000:]}")
    assert first.returncode == 0, f"the first run failed:\n{text[-6000:]}"
    assert_complete(writer, out)
    assert_same_output(writer, ref.out, out)
    assert leftovers(run_dir, writer.product) == []
    if name == "quench":
        assert sorted(written_samples(text)) == list(range(int(QUENCH_VARS["nsamples"])))
        assert written_samples(text_of(second)) == []
