"""`glasscam run`: every stage of the paper's workflow, in order, resumable.

Stages (each also a subcommand of its own, and each resumable on its own)::

    quench      mpirun lmp [-partition Px1] -in inputs/<system>/quench.in   -> samples.zarr
    propensity  mpirun lmp [-partition Px1] -in inputs/<system>/propensity.in (per temperature,
                the preset's configurations: first M glass samples of the test split)
                                                                            -> propensity_T<T>.zarr
    train       glasscam train                                              -> model/
    gradcam     glasscam gradcam                                            -> gradcam.zarr
    indicators  glasscam indicators                                         -> indicators.zarr
    correlate   glasscam correlate                                          -> tables/*.csv
    report      glasscam report                                             -> report.html

Every stage runs as a child process (LAMMPS under MPI, the analysis under its own Dask cluster),
the way a user would run it by hand on a cluster. A stage that finished writes
``<run>/.glasscam/stages/<stage>.json`` (command, wall time); `run` skips stages that have one and
re-runs the others, which resume from what their stores already hold. ``<run>/run.json`` fixes
the system and preset of a run folder: pointing `run` at a folder of another system is an error.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glasscam.analysis.pipeline.presets import PresetError, load_preset

from glasscam.decks import inputs_dir

STAGES = ("quench", "propensity", "train", "gradcam", "indicators", "correlate", "report")


class RunFolderError(ValueError):
    """The output folder belongs to another run (system or preset) or is unusable."""


@dataclass
class Stage:
    name: str
    commands: list[list[str]] = field(default_factory=list)
    # commands whose argv depends on earlier stages' outputs are built lazily
    build: Callable[[], list[list[str]]] | None = None


def bin_path(name: str) -> str:
    """An executable of the running venv (lmp, mpirun, glasscam)."""
    return str(Path(sys.executable).parent / name)


def deck_variables(deck: Path) -> set[str]:
    """Names a deck lets ``-var`` override: its ``variable NAME index ...`` lines, and the
    model-table defaults its ``glasscam.insitu.systems:define`` hook declares."""
    from glasscam.insitu.systems import SYSTEMS

    names = set()
    text = deck.read_text()
    for line in text.splitlines():
        m = re.match(r"\s*variable\s+(\S+)\s+index\b", line)
        if m:
            names.add(m.group(1))
    if "glasscam.insitu.systems:define" in text:
        names |= set(next(iter(SYSTEMS.values())).deck_defaults())
    return names


def lammps_argv(
    deck: Path, variables: dict[str, Any], np: int, partitions: int, screen: Path | None = None
) -> list[str]:
    argv: list[str] = []
    if np > 1 or partitions > 1:
        argv += [bin_path("mpirun"), "-np", str(np)]
    argv += [bin_path("lmp"), "-nocite", "-in", str(deck)]
    if partitions > 1:
        if np % partitions:
            raise PresetError(f"np = {np} is not a multiple of partitions = {partitions}")
        at = argv.index("-in")
        argv[at:at] = ["-partition", f"{partitions}x{np // partitions}"]
    if screen is not None:
        at = argv.index("-in")
        if partitions > 1:  # one log and one screen file per partition, beside the main log
            argv[at:at] = ["-log", str(screen), "-plog", str(screen.with_suffix("")) + ".log",
                           "-pscreen", str(screen.with_suffix("")) + ".screen"]
        else:
            argv[at:at] = ["-log", str(screen)]
    for key, value in variables.items():
        if isinstance(value, bool):
            value = int(value)
        argv += ["-var", key, str(value)]
    return argv


def cli_argv(command: str, options: dict[str, Any]) -> list[str]:
    argv = [bin_path("glasscam"), command]
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def _check_deck_keys(deck: Path, table: str, values: dict[str, Any], reserved: set[str]) -> None:
    known = deck_variables(deck)
    bad = sorted(set(values) - known - reserved)
    if bad:
        raise PresetError(
            f"preset [{table}] key(s) {bad} are not variables of {deck} (it has {sorted(known)})"
        )


def propensity_selection(prop: dict[str, Any]) -> dict[str, Any]:
    """The configurations of the propensity stage, from the preset's [propensity] table (popped
    from it): ``configurations`` (a count M = the first M done glass samples of the test split,
    or a list of sample indices), or the older ``sample`` (an index, or ``"first-test"``);
    neither = 1 configuration, the first glass sample of the test split. One command per
    temperature runs all of them into ``propensity_T<T>.zarr``."""
    conf = prop.pop("configurations", None)
    sample = prop.pop("sample", None)
    if conf is not None and sample is not None:
        raise PresetError(
            "preset [propensity] sets both 'configurations' and 'sample'; keep 'configurations'"
        )
    if sample is not None:
        conf = 1 if sample == "first-test" else [int(sample)]
    if conf is None:
        conf = 1
    if isinstance(conf, (list, tuple)):
        if not conf:
            raise PresetError("preset [propensity] configurations = [] (an empty list)")
        return {"configurations": ",".join(str(int(i)) for i in conf) + ("," if len(conf) == 1
                                                                           else "")}
    if isinstance(conf, bool) or not isinstance(conf, int) or conf < 1:
        raise PresetError(
            f"preset [propensity] configurations = {conf!r}: a count >= 1 or a list of sample "
            "indices"
        )
    return {"configurations": conf}


def plan(
    out: Path,
    preset: dict[str, dict[str, Any]],
    scheduler: str | None,
    inputs: str | os.PathLike | None = None,
) -> list[Stage]:
    run = preset["run"]
    system = run["system"]
    np_, parts = int(run["np"]), int(run["partitions"])
    decks = inputs_dir(inputs) / system
    samples = out / "samples.zarr"
    logs = out / "logs"

    quench_vars = {k: v for k, v in preset["quench"].items()}
    quench_deck = decks / "quench.in"
    _check_deck_keys(quench_deck, "quench", quench_vars, set())
    if "seed" in run:
        quench_vars.setdefault("seed", run["seed"])
    quench = Stage(
        "quench",
        [
            lammps_argv(
                quench_deck, {"out": samples, **quench_vars}, np_, parts, logs / "quench.log"
            )
        ],
    )

    prop = dict(preset["propensity"])
    temperatures = prop.pop("temperatures", [])
    prop_deck = decks / "propensity.in"
    selection = propensity_selection(prop)

    def build_propensity() -> list[list[str]]:
        if not temperatures:
            return []
        _check_deck_keys(prop_deck, "propensity", prop, set())
        cmds = []
        for temp in temperatures:
            cmds.append(
                lammps_argv(
                    prop_deck,
                    {
                        "samples": samples,
                        **selection,
                        "temp": temp,
                        "out": out / f"propensity_T{temp:g}.zarr",
                        **prop,
                    },
                    np_,
                    parts,
                    logs / f"propensity_T{temp:g}.log",
                )
            )
        return cmds

    sched = {"scheduler": scheduler} if scheduler else {}
    indicators_opts = {**preset["indicators"], **sched}
    return [
        quench,
        Stage("propensity", build=build_propensity),
        Stage(
            "train",
            [cli_argv("train", {"samples": samples, "out": out / "model", **preset["train"]})],
        ),
        Stage(
            "gradcam",
            [
                cli_argv(
                    "gradcam",
                    {
                        "samples": samples,
                        "model": out / "model",
                        "out": out / "gradcam.zarr",
                        **preset["gradcam"],
                    },
                )
            ],
        ),
        Stage(
            "indicators",
            [
                cli_argv(
                    "indicators",
                    {"samples": samples, "out": out / "indicators.zarr", **indicators_opts},
                )
            ],
        ),
        Stage("correlate", [cli_argv("correlate", {"run": out, **preset["correlate"]})]),
        Stage("report", [cli_argv("report", {"run": out})]),
    ]


def claim_run_folder(out: Path, preset: dict[str, dict[str, Any]]) -> None:
    """Create ``run.json`` or check the folder was made for the same system and preset."""
    out.mkdir(parents=True, exist_ok=True)
    meta = out / "run.json"
    mine = {"system": preset["run"]["system"], "preset": preset["run"]["preset"]}
    if meta.exists():
        try:
            theirs = json.loads(meta.read_text())
        except json.JSONDecodeError:
            raise RunFolderError(f"{meta}: not valid JSON") from None
        for key in ("system", "preset"):
            if theirs.get(key) != mine[key]:
                raise RunFolderError(
                    f"{out} is a run folder of {key} {theirs.get(key)!r}, this run asks for "
                    f"{mine[key]!r} (field '{key}' of {meta}); choose another --out"
                )
        return
    for existing in ("samples.zarr", "model", "gradcam.zarr", "indicators.zarr"):
        if (out / existing).exists():
            raise RunFolderError(
                f"{out} already holds {existing} but no run.json: not a folder made by "
                "`glasscam run`; choose another --out"
            )
    meta.write_text(json.dumps({**mine, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")


def marker(out: Path, stage: str) -> Path:
    return out / ".glasscam" / "stages" / f"{stage}.json"


def run_pipeline(
    out: Path,
    preset_name: str,
    system: str | None = None,
    np: int | None = None,
    partitions: int | None = None,
    scheduler: str | None = None,
    only: Sequence[str] | None = None,
    echo: Callable[[str], None] = print,
    inputs: str | os.PathLike | None = None,
) -> dict[str, float]:
    """Run (or resume) every stage; return wall seconds of the stages run now.

    ``inputs``: a folder of decks and presets (``glasscam decks DIR``, possibly edited) used
    instead of the packaged ones."""
    preset = load_preset(preset_name, system, inputs)
    if np is not None:
        preset["run"]["np"] = np
    if partitions is not None:
        preset["run"]["partitions"] = partitions
    out = Path(out).resolve()
    claim_run_folder(out, preset)
    (out / "logs").mkdir(exist_ok=True)
    (out / "preset.json").write_text(json.dumps(preset, indent=2, default=str) + "\n")
    stages = plan(out, preset, scheduler, inputs)
    if only:
        unknown = sorted(set(only) - set(STAGES))
        if unknown:
            raise PresetError(f"unknown stage(s) {unknown}; stages are {STAGES}")
    timings: dict[str, float] = {}
    env = {**os.environ, "GLASSCAM_RUN": str(out)}
    for i, stage in enumerate(stages, 1):
        if only and stage.name not in only:
            continue
        done = marker(out, stage.name)
        if done.exists():
            echo(f"[{i}/{len(stages)}] {stage.name}: complete, skipped")
            continue
        commands = stage.build() if stage.build else stage.commands
        echo(f"[{i}/{len(stages)}] {stage.name}")
        t0 = time.perf_counter()
        for argv in commands:
            echo("  $ " + shlex.join(argv))
            proc = subprocess.run(argv, env=env, cwd=out)
            if proc.returncode != 0:
                raise RuntimeError(
                    f"stage {stage.name} failed (exit {proc.returncode}): {shlex.join(argv)}; "
                    f"logs in {out / 'logs'}. Run the same `glasscam run` again to resume."
                )
        wall = time.perf_counter() - t0
        timings[stage.name] = wall
        done.parent.mkdir(parents=True, exist_ok=True)
        done.write_text(
            json.dumps(
                {
                    "stage": stage.name,
                    "commands": [shlex.join(a) for a in commands],
                    "wall_s": wall,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                },
                indent=2,
            )
            + "\n"
        )
        echo(f"  {stage.name} finished in {wall:.1f} s")
    return timings
