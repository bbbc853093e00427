"""`glasscam run`: stage keys (nothing stale), stale/ moves (nothing lost), checks before any
write, the run-folder lock, wall time across attempts.

The stage commands are replaced by a stand-in (:func:`fake_stage`) that writes small real
outputs where each command would (Zarr stores with ``done`` arrays, a checkpoint, tables, a
report), so every test runs the real planning, keys, identities and moves of the tiny preset
in well under a second per `run`, without LAMMPS or torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from glasscam.analysis.pipeline import runner
from glasscam.analysis.pipeline.presets import PresetError
from glasscam.analysis.pipeline.runner import (
    STAGES,
    downstream,
    marker,
    run_pipeline,
    zarr_identity,
)
from glasscam.insitu.lock import OutputLock, OutputLockedError

from glasscam.decks import DeckError, packaged_inputs

TINY = (packaged_inputs() / "presets" / "tiny.toml").read_text()


def _vars(argv: list[str]) -> dict[str, str]:
    return {argv[i + 1]: argv[i + 2] for i, a in enumerate(argv) if a == "-var"}


def _opts(argv: list[str]) -> dict[str, str]:
    return {a[2:]: argv[i + 1] for i, a in enumerate(argv[:-1])
            if a.startswith("--") and not argv[i + 1].startswith("--")}


def _store(path: Path, schema: str, params: dict, n: int) -> None:
    """A small real store; an existing one of the same schema grows to ``n`` samples."""
    if path.exists():
        root = zarr.open_group(str(path), mode="r+")
        for cls in ("liquid", "glass"):
            done = root[f"{cls}/done"]
            old = done.shape[0]
            if n > old:
                done.resize((n,))
                done[old:] = True
        root.attrs["parameters"] = params
        return
    root = zarr.open_group(str(path), mode="w")
    root.attrs["schema"] = schema
    root.attrs["parameters"] = params
    for cls in ("liquid", "glass"):
        done = root.create_group(cls).create_array("done", shape=(n,), chunks=(1,), dtype="bool")
        done[:] = True
        root[cls].create_array("value", shape=(n,), chunks=(1,), dtype="f4")


def fake_stage(argv: list[str], out: Path) -> int:
    """What each stage command writes, in miniature."""
    name = Path(argv[0]).name
    if name == "mpirun":
        argv = argv[3:]
        name = Path(argv[0]).name
    if name == "lmp":
        deck = Path(argv[argv.index("-in") + 1]).stem
        var = _vars(argv)
        if "-log" in argv:
            Path(argv[argv.index("-log") + 1]).write_text(f"log of {deck}\n")
        if deck == "quench":
            params = {k: v for k, v in var.items() if k not in ("out", "nsamples")}
            _store(Path(var["out"]), "glasscam.samples/2", params, int(var.get("nsamples", 8)))
        else:
            _store(Path(var["out"]), "glasscam.propensity/2", var, int(var["nreplicas"]))
        return 0
    command, opts = argv[1], _opts(argv)
    if command == "train":
        model = Path(opts["out"])
        model.mkdir(exist_ok=True)
        (model / "checkpoint.pt").write_text(json.dumps(opts, sort_keys=True))
        (model / "metrics.json").write_text("{}")
    elif command in ("gradcam", "indicators"):
        _store(Path(opts["out"]), f"glasscam.{command}/1", opts, 4)
    elif command == "correlate":
        (Path(opts["run"]) / "tables").mkdir(exist_ok=True)
        (Path(opts["run"]) / "tables" / "table5_cmax.csv").write_text("indicator,c_max\n")
    elif command == "report":
        (Path(opts["run"]) / "figures").mkdir(exist_ok=True)
        (Path(opts["run"]) / "figures" / "fig.png").write_bytes(b"png")
        (Path(opts["run"]) / "report.html").write_text("<html></html>")
    return 0


def _stage_of(argv: list[str]) -> str:
    if "-in" in argv:
        return Path(argv[argv.index("-in") + 1]).stem
    return argv[1]


class Fake:
    """Replaces runner.run_command; records the stages run, can make one fail."""

    def __init__(self) -> None:
        self.ran: list[str] = []
        self.fail: str | None = None

    def __call__(self, argv, env, cwd, tick, log=None) -> int:
        stage = _stage_of(argv)
        if not self.ran or self.ran[-1] != stage:
            self.ran.append(stage)
        tick()
        if stage == self.fail:
            model = Path(cwd) / "model"
            model.mkdir(exist_ok=True)
            (model / "checkpoint.pt").write_text("partial")
            return 1
        return fake_stage(argv, Path(cwd))


@pytest.fixture
def fake(monkeypatch) -> Fake:
    f = Fake()
    monkeypatch.setattr(runner, "run_command", f)
    return f


@pytest.fixture
def preset(tmp_path) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(TINY)
    return path


def edit(path: Path, table: str, key: str, value: str) -> None:
    """Set ``key = value`` in ``[table]`` of a preset file (replacing or adding the line)."""
    text = path.read_text()
    head = text.index(f"[{table}]\n") + len(f"[{table}]\n")
    end = text.find("\n[", head)
    end = len(text) if end < 0 else end + 1
    body = text[head:end]
    line = re.compile(rf"^{key}\s*=.*$", re.M)
    body = line.sub(f"{key} = {value}", body) if line.search(body) else f"{key} = {value}\n" + body
    path.write_text(text[:head] + body + text[end:])


def run(out: Path, preset: Path, **kw) -> tuple[dict[str, float], str]:
    lines: list[str] = []
    timings = run_pipeline(out, str(preset), echo=lines.append, **kw)
    return timings, "\n".join(lines)


def stale_folders(out: Path) -> list[Path]:
    return sorted((out / "stale").iterdir()) if (out / "stale").exists() else []


def test_unchanged_inputs_skip_every_stage(tmp_path, preset, fake):
    out = tmp_path / "r"
    run(out, preset)
    assert fake.ran == list(STAGES)
    fake.ran.clear()
    timings, text = run(out, preset)
    assert fake.ran == [] and timings == {}
    for name in STAGES:
        assert f"{name}: complete, skipped" in text
    # how a stage runs is not what it computes: threads, ranks, partitions, a Dask scheduler
    edit(preset, "train", "threads", "1")
    edit(preset, "indicators", "workers", "1")
    _, text = run(out, preset, np=4, partitions=4, scheduler="tcp://node:8786")
    assert fake.ran == [] and text.count("complete, skipped") == len(STAGES)
    # a moved run folder keeps its results
    moved = tmp_path / "moved"
    shutil.move(out, moved)
    run(moved, preset)
    assert fake.ran == [] and not stale_folders(moved)
    # wall time: every attempt in time.json, the marker's own wall time, the total printed
    times = json.loads((moved / ".glasscam" / "time.json").read_text())
    assert len(times["attempts"]) == 4 and times["attempts"][0]["outcome"] == "complete"
    assert set(times["attempts"][0]["stages"]) == set(STAGES)
    assert times["total_wall_s"] == pytest.approx(sum(a["wall_s"] for a in times["attempts"]))
    done = json.loads(marker(moved, "train").read_text())
    assert done["wall_s"] >= 0 and done["wall_s_all_attempts"] == done["wall_s"]
    assert {"commands", "preset", "decks", "upstream"} <= set(done["parts"])


def test_changed_preset_key_reruns_stage_and_downstream_and_keeps_old_outputs(
    tmp_path, preset, fake
):
    out = tmp_path / "r"
    run(out, preset)
    old_checkpoint = (out / "model" / "checkpoint.pt").read_text()
    samples_id = zarr_identity(out / "samples.zarr")
    fake.ran.clear()
    edit(preset, "train", "epochs", "5")
    _, text = run(out, preset)
    assert fake.ran == ["train", "gradcam", "correlate", "report"]
    assert "train: preset [train] epochs changed 60 -> 5; rerunning train, gradcam, correlate, " \
           "report" in text
    for name in ("quench", "propensity", "indicators"):
        assert f"{name}: complete, skipped" in text
    (stale,) = stale_folders(out)
    assert re.fullmatch(r"\d{8}T\d{6}Z", stale.name)
    # nothing lost: the previous outputs and markers, moved and listed
    assert (stale / "model" / "checkpoint.pt").read_text() == old_checkpoint
    for rel in ("gradcam.zarr", "tables/table5_cmax.csv", "report.html", "figures/fig.png",
                ".glasscam/stages/train.json", ".glasscam/stages/report.json"):
        assert (stale / rel).exists(), rel
    for rel in ("model", "gradcam.zarr", "tables", "report.html", "figures",
                ".glasscam/stages/train.json"):
        assert f"moved {rel} -> stale/{stale.name}/{rel}" in text
    assert json.loads((stale / "preset.json").read_text())["train"]["epochs"] == 60
    assert not (stale / "samples.zarr").exists() and not (stale / "indicators.zarr").exists()
    # the new outputs are in place, upstream untouched
    assert json.loads((out / "model" / "checkpoint.pt").read_text())["epochs"] == "5"
    assert zarr_identity(out / "samples.zarr") == samples_id
    assert json.loads(marker(out, "train").read_text())["parts"]["preset"]["train"]["epochs"] == 5
    fake.ran.clear()
    run(out, preset)
    assert fake.ran == []


def test_changed_upstream_store_reruns_its_dependants(tmp_path, preset, fake):
    out = tmp_path / "r"
    run(out, preset)
    fake.ran.clear()
    root = zarr.open_group(str(out / "samples.zarr"), mode="r+")
    before = zarr_identity(out / "samples.zarr")
    root["glass/done"][0] = False  # a sample lost (or redone) by hand: the store changed
    assert zarr_identity(out / "samples.zarr") != before
    root["glass/value"][0] = 3.0  # only done arrays and root attributes make the identity
    after = zarr_identity(out / "samples.zarr")
    root["glass/value"][0] = 4.0
    assert zarr_identity(out / "samples.zarr") == after
    _, text = run(out, preset)
    assert fake.ran == [s for s in STAGES if s != "quench"]
    assert "quench: complete, skipped" in text
    assert "propensity: input samples.zarr changed (its done flags, schema or parameters); " \
           "rerunning propensity, correlate, report" in text
    # a model retrained by hand: gradcam and what reads it rerun, not train
    fake.ran.clear()
    (out / "model" / "checkpoint.pt").write_text("retrained by hand")
    _, text = run(out, preset)
    assert fake.ran == ["gradcam", "correlate", "report"]
    assert "gradcam: input model changed (its content); rerunning gradcam, correlate, report" \
           in text
    # a marker whose output is gone is not trusted
    fake.ran.clear()
    shutil.rmtree(out / "indicators.zarr")
    _, text = run(out, preset)
    assert "indicators.zarr is missing; running it again" in text
    # remade with the same parameters and done flags, it is the same input of correlate
    assert fake.ran == ["indicators"]


def test_quench_keeps_its_store_when_nsamples_grows_only(tmp_path, preset, fake):
    edit(preset, "quench", "nsamples", "4")
    out = tmp_path / "r"
    run(out, preset)
    fake.ran.clear()
    edit(preset, "quench", "nsamples", "16")
    _, text = run(out, preset)
    assert fake.ran == list(STAGES)
    assert "quench: preset [quench] nsamples changed 4 -> 16" in text
    assert "samples.zarr stays in place: nsamples grows 4 -> 16" in text
    (stale,) = stale_folders(out)
    assert not (stale / "samples.zarr").exists() and (stale / "model").exists()
    assert (stale / "logs" / "quench.log").exists()  # its old log is kept
    assert zarr.open_group(str(out / "samples.zarr"), mode="r")["glass/done"].shape == (16,)
    # a smaller nsamples, or another change, moves the store aside
    fake.ran.clear()
    edit(preset, "quench", "nsamples", "8")
    _, text = run(out, preset)
    assert fake.ran == list(STAGES) and "stays in place" not in text
    assert any((s / "samples.zarr").exists() for s in stale_folders(out))
    edit(preset, "quench", "nsamples", "12")
    edit(preset, "quench", "rate", "0.1")
    _, text = run(out, preset)
    assert "stays in place" not in text and "preset [quench] rate changed 0.05 -> 0.1" in text


def test_interrupted_stage_resumes_or_moves_aside(tmp_path, preset, fake):
    out = tmp_path / "r"
    fake.fail = "train"
    with pytest.raises(RuntimeError, match="stage train failed"):
        run(out, preset)
    assert (out / ".glasscam" / "running" / "train.json").exists()
    times = json.loads((out / ".glasscam" / "time.json").read_text())
    assert times["attempts"][0]["outcome"].startswith("failed")
    # the same inputs: train resumes into its partial model
    fake.fail, fake.ran = None, []
    _, text = run(out, preset)
    assert fake.ran == ["train", "gradcam", "indicators", "correlate", "report"]
    assert "train: resuming" in text and not stale_folders(out)
    assert not (out / ".glasscam" / "running" / "train.json").exists()
    done = json.loads(marker(out, "train").read_text())
    assert done["wall_s_all_attempts"] >= done["wall_s"]
    assert len(json.loads((out / ".glasscam" / "time.json").read_text())["attempts"]) == 2
    # interrupted under other inputs: its partial output is moved aside
    fake.fail, fake.ran = "train", []
    edit(preset, "train", "lr", "0.01")
    with pytest.raises(RuntimeError):
        run(out, preset)
    fake.fail, fake.ran = None, []
    edit(preset, "train", "lr", "0.02")
    _, text = run(out, preset)
    assert "train (interrupted earlier): preset [train] lr changed 0.01 -> 0.02" in text
    assert any((s / "model" / "checkpoint.pt").read_text() == "partial"
               for s in stale_folders(out))


def test_markers_written_before_keys_are_adopted_or_rerun(tmp_path, preset, fake):
    out = tmp_path / "r"
    run(out, preset)
    for name in STAGES:  # the marker format of earlier versions: no key
        path = marker(out, name)
        old = json.loads(path.read_text())
        path.write_text(json.dumps({k: old[k] for k in ("stage", "commands", "wall_s")}))
    fake.ran.clear()
    _, text = run(out, preset, np=4, partitions=4)  # compared as keys compare commands
    assert fake.ran == [] and text.count("key recorded") == len(STAGES)
    adopted = json.loads(marker(out, "gradcam").read_text())
    assert "key" in adopted and "legacy_commands" not in adopted
    _, text = run(out, preset)
    assert fake.ran == [] and text.count("complete, skipped") == len(STAGES)
    path = marker(out, "correlate")
    path.write_text(json.dumps({"stage": "correlate", "commands": ["glasscam correlate"]}))
    _, text = run(out, preset)
    assert fake.ran == ["correlate", "report"]
    assert "correlate: its marker predates stage keys and its commands changed: `glasscam " \
           "correlate` -> `glasscam correlate --run $RUN --xi-grid 0,1,2,3`; rerunning " \
           "correlate, report" in text


def test_downstream_closure():
    assert downstream("train") == ["gradcam", "correlate", "report"]
    assert downstream("quench") == list(STAGES[1:])
    assert downstream("indicators") == ["correlate", "report"]
    assert downstream("report") == []


def _inputs_without_decks(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    (folder / "presets").mkdir(parents=True)
    (folder / "presets" / "tiny.toml").write_text(TINY)
    return folder


CHECKS = [
    ("unknown preset", PresetError, "no preset 'nope'"),
    ("unknown stage", PresetError, r"--stage: unknown stage\(s\) \['trian'\]"),
    ("np not a multiple", PresetError, r"np = 3 \(--np\) is not a multiple of partitions = 2"),
    ("deck key", PresetError, r"\[quench\] key 'natomz' is not a variable of deck"),
    ("reserved deck key", PresetError, r"\[propensity\] key\(s\) \['out'\] are set by"),
    ("option key", PresetError, r"\[train\] key 'epochz' is not an option of glasscam train"),
    ("option value", PresetError,
     r"\[train\] Invalid value for '--epochs'.*\(as `glasscam train` parses it\)"),
    ("run value", PresetError, r"\[run\] partitions = 0"),
    ("temperatures", PresetError, r"\[propensity\] temperatures = 'hot'"),
    ("inputs missing", DeckError, "inputs folder does not exist"),
    ("inputs without decks", DeckError, r"kam/quench.in: deck does not exist"),
]


@pytest.mark.parametrize("case, error, match", CHECKS, ids=[c[0] for c in CHECKS])
def test_every_check_comes_before_the_run_folder(tmp_path, preset, fake, case, error, match):
    out = tmp_path / "deep" / "r"
    kw: dict = {}
    name = str(preset)
    if case == "unknown preset":
        name = "nope"
    elif case == "unknown stage":
        kw["only"] = ["train", "trian"]
    elif case == "np not a multiple":
        kw["np"] = 3
    elif case == "deck key":
        edit(preset, "quench", "natomz", "10")
    elif case == "reserved deck key":
        edit(preset, "propensity", "out", '"x.zarr"')
    elif case == "option key":
        edit(preset, "train", "epochz", "10")
    elif case == "option value":
        edit(preset, "train", "epochs", '"many"')
    elif case == "run value":
        edit(preset, "run", "partitions", "0")
    elif case == "temperatures":
        edit(preset, "propensity", "temperatures", '"hot"')
    elif case == "inputs missing":
        kw["inputs"] = tmp_path / "nowhere"
    elif case == "inputs without decks":
        kw["inputs"] = _inputs_without_decks(tmp_path)
        name = "tiny"
    with pytest.raises(error, match=match):
        run_pipeline(out, name, echo=lambda s: None, **kw)
    assert not out.exists() and not (tmp_path / "deep").exists()
    assert fake.ran == []


def test_unknown_preset_key_names_the_file_and_table(tmp_path, preset):
    from glasscam.analysis.cli import app
    from typer.testing import CliRunner

    edit(preset, "train", "epochz", "10")
    with pytest.raises(PresetError) as err:
        run_pipeline(tmp_path / "r", str(preset), echo=lambda s: None)
    text = str(err.value)
    assert text.startswith(f"{preset}: [train] key 'epochz' is not an option of glasscam train "
                           "(options: ")
    assert "epochs" in text and "samples" not in text.split("options:")[1]  # set by `run`
    # printed as it is (a table name is not console markup), exit 2, nothing created
    result = CliRunner().invoke(app, ["run", "--preset", str(preset), "--out",
                                      str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "[train] key 'epochz' is not an option of glasscam train" in result.output
    assert str(preset) in result.output and not (tmp_path / "r").exists()
    preset.write_text(TINY.replace("[quench]\n", "[quench]\nnatomz = 3\n"))
    with pytest.raises(PresetError, match=rf"^{re.escape(str(preset))}: \[quench\] key 'natomz'"):
        run_pipeline(tmp_path / "r", str(preset), echo=lambda s: None)


def test_second_run_on_a_locked_folder_is_refused(tmp_path, preset, fake):
    from glasscam.analysis.cli import app
    from typer.testing import CliRunner

    out = tmp_path / "r"
    run(out, preset)
    fake.ran.clear()
    with OutputLock(out, what="run folder", command="glasscam run --out r"):
        with pytest.raises(OutputLockedError) as err:
            run(out, preset)
        assert f"pid {os.getpid()}" in str(err.value) and "run folder" in str(err.value)
        result = CliRunner().invoke(app, ["run", "--preset", str(preset), "--out", str(out)])
        assert result.exit_code == 2
        assert f"pid {os.getpid()}" in result.output and "glasscam run --out r" in result.output
    assert fake.ran == []
    run(out, preset)  # released: the next run goes ahead (and finds everything done)
    assert fake.ran == []


def test_zarr_identity_of_a_real_samples_store(tmp_path):
    from glasscam.testing import synthetic_samples_store

    root = synthetic_samples_store(tmp_path / "s.zarr", nsamples=4, natoms=16, grid=8)
    first = zarr_identity(tmp_path / "s.zarr")
    assert first.startswith("sha256:") and zarr_identity(tmp_path / "s.zarr") == first
    root["liquid/positions"][0] = np.zeros_like(root["liquid/positions"][0])
    assert zarr_identity(tmp_path / "s.zarr") == first
    root["liquid/done"][1] = False
    assert zarr_identity(tmp_path / "s.zarr") != first
    root["liquid/done"][1] = True
    root.attrs["parameters"] = {**root.attrs["parameters"], "seed": 2}
    assert zarr_identity(tmp_path / "s.zarr") != first
