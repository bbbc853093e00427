"""`glasscam run`: every stage of the paper's workflow, in order, resumable, never stale.

Stages (each also a subcommand of its own, and each resumable on its own)::

    quench      mpirun lmp [-partition Px1] -in inputs/<system>/quench.in   -> samples.zarr
    propensity  mpirun lmp [-partition Px1] -in inputs/<system>/propensity.in (per temperature,
                the preset's configurations: first M glass samples of the test split)
                                                                            -> propensity_T<T>.zarr
    train       glasscam train                                              -> model/
    gradcam     glasscam gradcam                                            -> gradcam.zarr
    indicators  glasscam indicators                                         -> indicators.zarr
    correlate   glasscam correlate                                          -> tables/*.csv
    report      glasscam report                        -> report.html, figures/, export/

Every stage runs as a child process (LAMMPS under MPI, the analysis under its own Dask cluster),
the way a user would run it by hand on a cluster. ``<run>/run.json`` fixes the system and
preset of a run folder: pointing `run` at a folder of another system is an error.

Checks first. Every option is checked before anything is written (no run folder, no
``run.json`` on a failure): the preset (tables, keys, the values of command options, parsed the
way the command will), ``--stage`` names, ``np`` a multiple of ``partitions``, the decks of
``--inputs``. ``run.json``, ``preset.json``, markers and ``time.json`` are written atomically
(a uniquely named temporary file in the same folder, then ``os.replace``).

One `run` per folder. `run` holds :class:`~glasscam.insitu.lock.OutputLock` on the run folder
(``<run>.lock`` beside it) while it works; a second `run` on the same folder is refused at once
with an error naming the holder (host, pid, command). A killed holder releases it by itself.

Stage keys: nothing stale. A stage that finished writes ``<run>/.glasscam/stages/<stage>.json``
(commands, wall time) with a *key*: the sha256 of its *parts*, which the marker records too, so
that a changed part can be named:

* ``commands``: the stage's argv as built, with the run folder written ``$RUN``, executables by
  name, and the options that choose *how* it runs rather than *what* it computes left out
  (``mpirun -np``, ``-partition``, ``-log``/``-plog``/``-pscreen``, and the options in
  :data:`EXECUTION_KEYS`: device, threads, prefetch, scheduler, workers, threads_per_worker),
  so that moving a run folder, resuming with more ranks or another Dask cluster keeps its
  results;
* ``preset``: the stage's preset table(s) (the same keys left out);
* ``decks``: sha256 of each LAMMPS deck it runs (an edited ``--inputs`` deck is a change);
* ``upstream``: the identity of every output of the stages it reads (:data:`DEPENDS`:
  propensity, train, indicators <- quench; gradcam <- quench, train; correlate <- quench,
  propensity, gradcam, indicators; report <- all of them): a Zarr
  store = sha256 over its root attributes ``schema`` and ``parameters`` and the bytes of every
  array whose name ends in ``done``, in sorted path order; ``model/`` = sha256 of its
  ``checkpoint.pt`` files and ``ensemble.json``; another folder (``tables/``) or file = sha256 of
  its files; an absent output = ``"missing"``.

Rerun rules. A stage whose marker key equals its key now is skipped (its outputs must exist;
a marker without them is not trusted). A stage whose key differs is rerun with everything
downstream of it (the dependants, transitively), and the message names the changed part
(``train: preset [train] epochs changed 3 -> 5; rerunning train, gradcam, correlate,
report``). Nothing written is lost: the previous outputs, logs and markers of those stages are
*moved* (renamed, under their own output locks) into ``<run>/stale/<UTC timestamp>/`` (laid out
like a run folder, with the previous ``preset.json``), and each move is printed. One
exception: when the only change of ``quench`` is a larger ``nsamples``, ``samples.zarr`` stays
where it is and the quench grows it (adds the missing samples); a smaller ``nsamples`` or any
other change moves it aside. A stage that was interrupted records its key in
``.glasscam/running/<stage>.json``; the next `run` resumes it if the key is the same and
otherwise moves its partial outputs aside like a changed stage's. A marker written before
keys existed (no ``key``) is adopted when its commands equal today's, and is a change
otherwise. With ``--stage``, stages not selected are neither checked nor run, but the
dependants of a changed selected stage are invalidated (their outputs moved aside, markers
gone) so that the next full `run` remakes them.

Wall time. ``<run>/.glasscam/time.json`` lists every attempt (start, wall time, stages run,
outcome) and their total; it is saved after every stage, every :data:`HEARTBEAT_S` seconds while
a stage runs, and when `run` ends (a SIGKILLed attempt loses at most one heartbeat). A marker
holds the stage's wall time in the attempt that finished it (``wall_s``) and over every attempt
since it was last started afresh (``wall_s_all_attempts``). `run` prints the total.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from glasscam.analysis.pipeline.presets import PresetError, check_cli_args, load_preset
from glasscam.insitu.integrity import file_sha256, write_text_atomically
from glasscam.insitu.lock import OutputLock

from glasscam.decks import deck_path, inputs_dir

STAGES = ("quench", "propensity", "train", "gradcam", "indicators", "correlate", "report")
# the stages whose outputs each stage reads
DEPENDS: dict[str, tuple[str, ...]] = {
    "quench": (),
    "propensity": ("quench",),
    "train": ("quench",),
    "gradcam": ("quench", "train"),
    "indicators": ("quench",),
    "correlate": ("quench", "propensity", "gradcam", "indicators"),
    "report": ("quench", "propensity", "train", "gradcam", "indicators", "correlate"),
}
# what a stage writes (globs relative to the run folder): moved to stale/ when it is rerun
OUTPUTS: dict[str, tuple[str, ...]] = {
    "quench": ("samples.zarr", "logs/quench.*"),
    "propensity": ("propensity_T*.zarr", "logs/propensity_T*", "logs/propensity.stdout"),
    "train": ("model", "logs/train.log"),
    # gradcam_*: the other attribution stores and the shuffled-label networks (issue 16)
    "gradcam": ("gradcam.zarr", "gradcam_*", "logs/gradcam.log"),
    "indicators": ("indicators.zarr", "logs/indicators.log"),
    "correlate": ("tables", "logs/correlate.log"),
    "report": ("report.html", "figures", "export", "logs/report.log"),
}
# options that choose how a stage runs, not what it computes: not part of a stage's key
EXECUTION_KEYS = frozenset(
    {"device", "threads", "prefetch", "scheduler", "workers", "threads_per_worker"}
)
_LAUNCH_FLAGS = frozenset({"-partition", "-log", "-plog", "-pscreen", "-screen"})
# variables `run` sets itself: a preset may not override them
_RESERVED_VARIABLES = {"quench": {"out"}, "propensity": {"out", "samples", "temp"}}
# files of a model folder that identify it (glasscam.analysis.cnn.train.CHECKPOINT, ENSEMBLE;
# not imported from there: that imports torch)
MODEL_FILES = frozenset({"checkpoint.pt", "ensemble.json"})
KEY_FORMAT = "glasscam.stage-key/1"
HEARTBEAT_S = 30.0
_NSAMPLES = re.compile(r" -var nsamples (\S+)")


class RunFolderError(ValueError):
    """The output folder belongs to another run (system or preset) or is unusable."""


@dataclass
class Stage:
    name: str
    commands: list[list[str]] = field(default_factory=list)
    # the preset tables the stage is keyed on
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    # the LAMMPS decks it runs (keyed on their content)
    decks: list[Path] = field(default_factory=list)
    # its outputs that later stages read (relative to the run folder)
    products: list[str] = field(default_factory=list)


def bin_path(name: str) -> str:
    """An executable of the running venv (lmp, mpirun, glasscam)."""
    return str(Path(sys.executable).parent / name)


def deck_defaults(deck: Path) -> dict[str, str]:
    """The ``variable NAME index VALUE`` lines of a deck (the values ``-var`` overrides)."""
    found = {}
    for line in deck.read_text().splitlines():
        m = re.match(r"\s*variable\s+(\S+)\s+index\s+(\S+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def deck_variables(deck: Path) -> set[str]:
    """Names a deck lets ``-var`` override: its ``variable NAME index ...`` lines, and the
    model-table defaults its ``glasscam.insitu.systems:define`` hook declares."""
    from glasscam.insitu.systems import SYSTEMS

    names = set(deck_defaults(deck))
    if "glasscam.insitu.systems:define" in deck.read_text():
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


def _check_deck_keys(deck: Path, table: str, values: dict[str, Any], where: str) -> None:
    """Every key of preset table ``[table]`` is a variable of ``deck`` that `run` does not set
    itself; ``where`` is the preset file."""
    known = deck_variables(deck)
    reserved = sorted(set(values) & _RESERVED_VARIABLES.get(table, set()))
    if reserved:
        raise PresetError(
            f"{where}: [{table}] key(s) {reserved} are set by `glasscam run` itself (paths and "
            "temperatures of the run folder); remove them from the preset"
        )
    bad = sorted(set(values) - known)
    if bad:
        keys = ", ".join(repr(k) for k in bad)
        verb = "is not a variable" if len(bad) == 1 else "are not variables"
        raise PresetError(
            f"{where}: [{table}] key{'s' if len(bad) > 1 else ''} {keys} {verb} of deck {deck} "
            f"(variables: {', '.join(sorted(known))})"
        )


def propensity_selection(prop: dict[str, Any], where: str = "preset") -> dict[str, Any]:
    """The configurations of the propensity stage, from the preset's [propensity] table (popped
    from it): ``configurations`` (a count M = the first M done glass samples of the test split,
    or a list of sample indices), or the older ``sample`` (an index, or ``"first-test"``);
    neither = 1 configuration, the first glass sample of the test split. One command per
    temperature runs all of them into ``propensity_T<T>.zarr``. ``where`` (the preset file)
    starts the error messages."""
    conf = prop.pop("configurations", None)
    sample = prop.pop("sample", None)
    if conf is not None and sample is not None:
        raise PresetError(
            f"{where}: [propensity] sets both 'configurations' and 'sample'; keep "
            "'configurations'"
        )
    if sample is not None:
        conf = 1 if sample == "first-test" else [int(sample)]
    if conf is None:
        conf = 1
    if isinstance(conf, (list, tuple)):
        if not conf:
            raise PresetError(f"{where}: [propensity] configurations = [] (an empty list)")
        return {"configurations": ",".join(str(int(i)) for i in conf) + ("," if len(conf) == 1
                                                                           else "")}
    if isinstance(conf, bool) or not isinstance(conf, int) or conf < 1:
        raise PresetError(
            f"{where}: [propensity] configurations = {conf!r}: a count >= 1 or a list of sample "
            "indices"
        )
    return {"configurations": conf}


def plan(
    out: Path,
    preset: dict[str, dict[str, Any]],
    scheduler: str | None,
    inputs: str | os.PathLike | None = None,
) -> list[Stage]:
    """Every stage's commands, built and checked (decks exist, deck variables and command
    options known, option values parsable); nothing is written."""
    run = preset["run"]
    where = str(run.get("preset_file", "preset"))
    system = run["system"]
    np_, parts = int(run["np"]), int(run["partitions"])
    quench_deck = deck_path(system, "quench.in", inputs)
    prop_deck = deck_path(system, "propensity.in", inputs)
    samples = out / "samples.zarr"
    logs = out / "logs"

    quench_vars = dict(preset["quench"])
    _check_deck_keys(quench_deck, "quench", quench_vars, where)
    if "seed" in run:
        quench_vars.setdefault("seed", run["seed"])
    quench = Stage(
        "quench",
        [
            lammps_argv(
                quench_deck, {"out": samples, **quench_vars}, np_, parts, logs / "quench.log"
            )
        ],
        tables={"quench": preset["quench"],
                "run": {k: run[k] for k in ("system", "seed") if k in run}},
        decks=[quench_deck],
        products=["samples.zarr"],
    )

    prop = dict(preset["propensity"])
    temperatures = prop.pop("temperatures", [])
    if not isinstance(temperatures, (list, tuple)) or not all(
        isinstance(t, (int, float)) and not isinstance(t, bool) for t in temperatures
    ):
        raise PresetError(
            f"{where}: [propensity] temperatures = {temperatures!r}: a list of numbers"
        )
    selection = propensity_selection(prop, where)
    _check_deck_keys(prop_deck, "propensity", prop, where)
    propensity = Stage(
        "propensity",
        [
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
            for temp in temperatures
        ],
        tables={"propensity": preset["propensity"]},
        decks=[prop_deck] if temperatures else [],
        products=[f"propensity_T{temp:g}.zarr" for temp in temperatures],
    )

    sched = {"scheduler": scheduler} if scheduler else {}
    options = {
        "train": {"samples": samples, "out": out / "model", **preset["train"]},
        "gradcam": {"samples": samples, "model": out / "model", "out": out / "gradcam.zarr",
                    **preset["gradcam"]},
        "indicators": {"samples": samples, "out": out / "indicators.zarr",
                       **preset["indicators"], **sched},
        "correlate": {"run": out, **preset["correlate"]},
        "report": {"run": out},
    }
    products = {"train": ["model"], "gradcam": ["gradcam.zarr"],
                "indicators": ["indicators.zarr"], "correlate": ["tables"],
                "report": ["report.html"]}
    stages = [quench, propensity]
    for name in STAGES[2:]:
        argv = cli_argv(name, options[name])
        check_cli_args(name, argv[2:], f"{where}: [{name}]")
        stages.append(Stage(name, [argv], tables={name: preset[name]} if name in preset else {},
                            products=products[name]))
    return stages


# -- stage keys ---------------------------------------------------------------------------------


def _files_identity(folder: Path, names: frozenset[str] | None = None) -> str:
    """sha256 over the relative paths and contents of the files under ``folder`` (only those
    named in ``names``, if given), in sorted order."""
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and (names is None or p.name in names))
    for path in files:
        h.update(f"{path.relative_to(folder).as_posix()}\0{file_sha256(path)}\0".encode())
    return "sha256:" + h.hexdigest()


def zarr_identity(path: str | os.PathLike) -> str:
    """sha256 over a store's root attributes ``schema`` and ``parameters`` and the bytes of every
    array whose name ends in ``done`` (sorted by path): what changes when samples are added,
    redone or lost, or the store is remade with other parameters."""
    import numpy as np
    import zarr

    root = zarr.open_group(str(path), mode="r")
    h = hashlib.sha256()
    attrs = {key: root.attrs.get(key) for key in ("schema", "parameters")}
    h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
    for name, node in sorted(root.members(max_depth=None), key=lambda m: m[0]):
        if isinstance(node, zarr.Array) and name.rsplit("/", 1)[-1].endswith("done"):
            data = np.ascontiguousarray(node[...])
            h.update(f"\0{name}\0{data.dtype.str}\0{data.shape}\0".encode())
            h.update(data.tobytes())
    return "sha256:" + h.hexdigest()


def output_identity(out: Path, rel: str) -> str:
    """The identity of output ``rel`` of run folder ``out`` (see the module docstring)."""
    path = out / rel
    if not path.exists():
        return "missing"
    try:
        if rel.endswith(".zarr"):
            return zarr_identity(path)
        if rel == "model":
            return _files_identity(path, MODEL_FILES)
        if path.is_dir():
            return _files_identity(path)
        return "sha256:" + file_sha256(path)
    except Exception as err:  # a half-made or damaged output is an identity too: unreadable
        return f"unreadable ({type(err).__name__}: {err})"


def _relative(path: str | os.PathLike, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(path)


def key_command(argv: Sequence[str], out: Path, inputs_root: Path) -> str:
    """A command as it enters a stage key: launch and execution options dropped, executables
    by name, the deck relative to its inputs folder, the run folder written ``$RUN``."""
    args = list(argv)
    if Path(args[0]).name == "mpirun":
        args = args[3:]  # mpirun -np N
    kept = [Path(args[0]).name]
    i = 1
    while i < len(args):
        arg = args[i]
        if arg in _LAUNCH_FLAGS or (
            arg.startswith("--") and arg[2:].replace("-", "_") in EXECUTION_KEYS
        ):
            i += 2
            continue
        if arg == "-in" and i + 1 < len(args):
            kept += ["-in", _relative(args[i + 1], inputs_root)]
            i += 2
            continue
        kept.append(arg)
        i += 1
    run = str(out)

    def quote(arg: str) -> str:
        if arg == run or arg.startswith(run + "/"):
            rest = arg[len(run):]
            return "$RUN" + (shlex.quote(rest) if rest else "")
        return shlex.quote(arg)

    return " ".join(quote(arg) for arg in kept)


def key_parts(
    out: Path,
    stage: Stage,
    products: dict[str, list[str]],
    inputs_root: Path,
    identities: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The parts of a stage's key (JSON-normalised); ``identities`` caches output identities."""
    identities = {} if identities is None else identities
    upstream = {}
    for dep in DEPENDS[stage.name]:
        for rel in products[dep]:
            if rel not in identities:
                identities[rel] = output_identity(out, rel)
            upstream[rel] = identities[rel]
    parts = {
        "format": KEY_FORMAT,
        "commands": [key_command(argv, out, inputs_root) for argv in stage.commands],
        "preset": {table: {k: v for k, v in values.items() if k not in EXECUTION_KEYS}
                   for table, values in stage.tables.items()},
        "decks": {_relative(deck, inputs_root): "sha256:" + file_sha256(deck)
                  for deck in stage.decks},
        "upstream": upstream,
    }
    return json.loads(json.dumps(parts, default=str))


def legacy_commands(record: dict[str, Any], out: Path, inputs_root: Path) -> list[str] | None:
    """The commands of a marker written before stage keys existed, as they enter a key (None
    when it has none or they do not parse)."""
    try:
        return [key_command(shlex.split(c), out, inputs_root) for c in record["commands"]]
    except (KeyError, TypeError, ValueError, IndexError):
        return None


def key_of(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def downstream(name: str) -> list[str]:
    """The stages that read ``name``'s outputs, directly or through others, in stage order."""
    found = {name}
    for stage in STAGES:  # DEPENDS names earlier stages only: one pass in order is enough
        if found & set(DEPENDS[stage]):
            found.add(stage)
    return [s for s in STAGES if s in found and s != name]


def _show(value: Any) -> str:
    return json.dumps(value)


def describe_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between a marker's key parts and the key parts ``new``, in words
    (``preset [train] epochs changed 3 -> 5``)."""
    if "parts" not in old:
        if "legacy_commands" not in old:
            return ["its marker is unreadable"]
        pairs = [(a, b) for a, b in zip(old["legacy_commands"], new["commands"], strict=False)
                 if a != b]
        detail = f": `{pairs[0][0]}` -> `{pairs[0][1]}`" if pairs else ""
        return [f"its marker predates stage keys and its commands changed{detail}"]
    old = old["parts"]
    changes = []
    if old.get("format") != new.get("format"):
        changes.append(f"stage key format {old.get('format')!r} -> {new.get('format')!r}")
    old_p, new_p = old.get("preset", {}), new.get("preset", {})
    for table in sorted(set(old_p) | set(new_p)):
        a, b = old_p.get(table, {}), new_p.get(table, {})
        for key in sorted(set(a) | set(b)):
            if key not in a:
                changes.append(f"preset [{table}] {key} added (= {_show(b[key])})")
            elif key not in b:
                changes.append(f"preset [{table}] {key} removed (was {_show(a[key])})")
            elif a[key] != b[key]:
                changes.append(f"preset [{table}] {key} changed {_show(a[key])} -> "
                               f"{_show(b[key])}")
    for group, noun in (("decks", "deck"), ("upstream", "input")):
        a, b = old.get(group, {}), new.get(group, {})
        for name in sorted(set(a) | set(b)):
            before, now = a.get(name, "missing"), b.get(name, "missing")
            if before == now:
                continue
            if now == "missing":
                changes.append(f"{noun} {name} is missing (it was there)")
            elif before == "missing":
                changes.append(f"{noun} {name} appeared (it was missing)")
            elif name.endswith(".zarr"):
                changes.append(f"{noun} {name} changed (its done flags, schema or parameters)")
            else:
                changes.append(f"{noun} {name} changed (its content)")
    if not changes and old.get("commands") != new.get("commands"):
        a, b = old.get("commands", []), new.get("commands", [])
        pairs = [(x, y) for x, y in zip(a, b, strict=False) if x != y]
        if pairs:
            changes.append(f"command changed: `{pairs[0][0]}` -> `{pairs[0][1]}`")
        else:
            changes.append(f"number of commands changed {len(a)} -> {len(b)}")
    return changes or ["its key changed"]


def _nsamples_growth(
    old_cmds: list[str], new_cmds: list[str], default: str | None
) -> tuple[int, int] | None:
    """(old, new) nsamples if the commands differ only in a larger ``-var nsamples``."""

    def split(cmds: list[str]) -> tuple[str | None, list[str]]:
        values = [v for c in cmds for v in _NSAMPLES.findall(c)]
        return (values[-1] if values else default), [_NSAMPLES.sub("", c) for c in cmds]

    (a, rest_a), (b, rest_b) = split(old_cmds), split(new_cmds)
    if rest_a != rest_b or a is None or b is None:
        return None
    try:
        before, now = int(a), int(b)
    except ValueError:
        return None
    return (before, now) if now > before else None


def quench_growth(
    old: dict[str, Any], new_parts: dict[str, Any], stage: Stage
) -> tuple[int, int] | None:
    """(old, new) nsamples when the only change of the quench stage is a larger ``nsamples``;
    ``old`` is its previous (finished or running) marker."""
    default = deck_defaults(stage.decks[0]).get("nsamples") if stage.decks else None
    parts = old.get("parts")
    if parts is None:  # a marker that predates keys: compare its commands
        return _nsamples_growth(old.get("legacy_commands", []), new_parts["commands"], default)
    for group in ("format", "decks", "upstream"):
        if parts.get(group) != new_parts.get(group):
            return None
    strip = {table: {k: v for k, v in values.items() if k != "nsamples"}
             for table, values in parts.get("preset", {}).items()}
    if strip != {table: {k: v for k, v in values.items() if k != "nsamples"}
                 for table, values in new_parts.get("preset", {}).items()}:
        return None
    return _nsamples_growth(parts.get("commands", []), new_parts["commands"], default)


# -- files of the run folder --------------------------------------------------------------------


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically and durably (fsync before the rename)."""
    write_text_atomically(path, text, durable=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, json.dumps(data, indent=2, default=str) + "\n")


def _read_json(path: Path) -> dict[str, Any] | None:
    """A marker's content; None when absent. A damaged marker is not trusted: {} (a change)."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def check_run_folder(out: Path, preset: dict[str, dict[str, Any]]) -> None:
    """Refuse a folder made for another system or preset, or not made by `run`; writes
    nothing."""
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


def claim_run_folder(out: Path, preset: dict[str, dict[str, Any]]) -> None:
    """Create ``run.json`` or check the folder was made for the same system and preset."""
    check_run_folder(out, preset)
    meta = out / "run.json"
    if meta.exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    mine = {"system": preset["run"]["system"], "preset": preset["run"]["preset"]}
    _write_json(meta, {**mine, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})


def marker(out: Path, stage: str) -> Path:
    """The marker of a finished stage."""
    return out / ".glasscam" / "stages" / f"{stage}.json"


def running_marker(out: Path, stage: str) -> Path:
    """The marker of a started, not yet finished stage (its key and the time spent so far)."""
    return out / ".glasscam" / "running" / f"{stage}.json"


def time_file(out: Path) -> Path:
    return out / ".glasscam" / "time.json"


class StaleFolder:
    """``<run>/stale/<UTC timestamp>/``: where the outputs of changed stages are moved, laid out
    like the run folder. One per `run` call, made on first use (with the previous
    ``preset.json``)."""

    def __init__(self, out: Path, echo: Callable[[str], None], old_preset: str | None):
        self.out = out
        self.echo = echo
        self.old_preset = old_preset
        self.folder: Path | None = None

    def _ensure(self) -> Path:
        if self.folder is None:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            folder, n = self.out / "stale" / stamp, 1
            while folder.exists():
                folder, n = self.out / "stale" / f"{stamp}-{n}", n + 1
            folder.mkdir(parents=True)
            if self.old_preset is not None:
                atomic_write(folder / "preset.json", self.old_preset)
            self.folder = folder
        return self.folder

    def _move(self, src: Path, lock: bool) -> None:
        rel = src.relative_to(self.out)
        dest = self._ensure() / rel
        n = 1
        while dest.exists():
            dest, n = dest.with_name(f"{rel.name}.{n}"), n + 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        if lock:  # nobody may be writing an output while it moves
            with OutputLock(src, what="output"):
                os.rename(src, dest)
        else:
            os.rename(src, dest)
        self.echo(f"  moved {rel.as_posix()} -> {dest.relative_to(self.out).as_posix()}")

    def move_stage(self, name: str, keep: Iterable[str] = ()) -> None:
        """Move the outputs, logs and markers of stage ``name`` (except ``keep``)."""
        keep = set(keep)
        for pattern in OUTPUTS[name]:
            for src in sorted(self.out.glob(pattern)):
                rel = src.relative_to(self.out).as_posix()
                if rel in keep or src.name.endswith(".lock"):
                    continue
                self._move(src, lock=not rel.startswith("logs/"))
        self.move_markers(name)

    def move_markers(self, name: str) -> None:
        """Move the markers of stage ``name`` (finished, running)."""
        for path in (marker(self.out, name), running_marker(self.out, name)):
            if path.exists():
                self._move(path, lock=False)


class RunClock:
    """``<run>/.glasscam/time.json``: every attempt of `run` on the folder and their total."""

    def __init__(self, out: Path, echo: Callable[[str], None]):
        self.path = time_file(out)
        data = _read_json(self.path)
        if data == {}:
            echo(f"  {self.path}: not valid JSON; the time of earlier attempts is lost")
        self.data: dict[str, Any] = data if data else {}
        self.data.setdefault("attempts", [])
        self.t0 = time.perf_counter()
        self.attempt: dict[str, Any] = {"started": _utc_now(), "wall_s": 0.0, "stages": {},
                                        "outcome": "running"}
        self.data["attempts"].append(self.attempt)
        self.save()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    @property
    def total(self) -> float:
        return float(sum(a.get("wall_s", 0.0) for a in self.data["attempts"]))

    def save(self, outcome: str | None = None) -> None:
        self.attempt["wall_s"] = self.elapsed
        if outcome is not None:
            self.attempt["outcome"] = outcome
        self.data["total_wall_s"] = self.total
        _write_json(self.path, self.data)


def stage_log(out: Path, stage: str, argv: Sequence[str]) -> Path:
    """Where a stage command's output goes: ``logs/<stage>.log`` for the analysis stages;
    ``logs/<stage>.stdout`` beside LAMMPS' own ``logs/<stage>*.log`` for the MD stages."""
    lammps = any(Path(a).name == "lmp" for a in argv)
    return out / "logs" / f"{stage}.{'stdout' if lammps else 'log'}"


def run_command(argv: list[str], env: dict[str, str], cwd: Path,
                tick: Callable[[], None], log: Path | None = None) -> int:
    """Run one stage command to its end, its output both shown and appended to ``log``;
    ``tick()`` every :data:`HEARTBEAT_S` seconds."""
    import threading

    sink = open(log, "a", encoding="utf-8") if log is not None else None  # noqa: SIM115
    if sink is not None:
        sink.write(f"# {_utc_now()} $ {shlex.join(argv)}\n")
        sink.flush()

    def pump(stream) -> None:
        for line in stream:
            sys.stdout.write(line)
            sys.stdout.flush()
            if sink is not None:
                sink.write(line)
                sink.flush()

    with subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
        reader = threading.Thread(target=pump, args=(proc.stdout,), daemon=True)
        reader.start()
        try:
            while True:
                try:
                    code = proc.wait(timeout=HEARTBEAT_S)
                    reader.join(timeout=30)
                    return code
                except subprocess.TimeoutExpired:
                    tick()
        except KeyboardInterrupt:  # the child got the SIGINT too: let it stop cleanly
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        except BaseException:
            proc.kill()
            raise
        finally:
            if sink is not None:
                reader.join(timeout=5)
                sink.close()


# -- the pipeline -------------------------------------------------------------------------------


def prepare(
    out: Path,
    preset_name: str,
    system: str | None = None,
    np: int | None = None,
    partitions: int | None = None,
    scheduler: str | None = None,
    only: Sequence[str] | None = None,
    inputs: str | os.PathLike | None = None,
) -> tuple[dict[str, dict[str, Any]], list[Stage]]:
    """Every check of a `run` (see the module docstring), before anything is written: the
    resolved preset and the planned stages."""
    preset = load_preset(preset_name, system, inputs)
    where = preset["run"]["preset_file"]
    if only:
        unknown = sorted(set(only) - set(STAGES))
        if unknown:
            raise PresetError(f"--stage: unknown stage(s) {unknown}; stages are {STAGES}")
    origin = {}
    for key, value in (("np", np), ("partitions", partitions)):
        if value is not None:
            if value < 1:
                raise PresetError(f"--{key} {value}: must be >= 1")
            preset["run"][key] = value
            origin[key] = f"--{key}"
        else:
            origin[key] = f"[run] {key} of {where}"
    np_, parts = int(preset["run"]["np"]), int(preset["run"]["partitions"])
    if np_ % parts:
        raise PresetError(
            f"np = {np_} ({origin['np']}) is not a multiple of partitions = {parts} "
            f"({origin['partitions']}): every LAMMPS partition needs the same number of ranks"
        )
    inputs_dir(inputs)  # an --inputs folder that does not exist
    return preset, plan(out, preset, scheduler, inputs)


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
    instead of the packaged ones. Raises :class:`~glasscam.insitu.lock.OutputLockedError` when
    another `run` holds the folder."""
    out = Path(out).resolve()
    preset, stages = prepare(out, preset_name, system, np, partitions, scheduler, only, inputs)
    check_run_folder(out, preset)
    with OutputLock(out, what="run folder"):
        claim_run_folder(out, preset)
        return _run_stages(out, preset, stages, only, echo, inputs_dir(inputs))


def _run_stages(
    out: Path,
    preset: dict[str, dict[str, Any]],
    stages: list[Stage],
    only: Sequence[str] | None,
    echo: Callable[[str], None],
    inputs_root: Path,
) -> dict[str, float]:
    preset_file = out / "preset.json"
    old_preset = preset_file.read_text() if preset_file.exists() else None
    (out / "logs").mkdir(exist_ok=True)
    _write_json(preset_file, preset)
    stale = StaleFolder(out, echo, old_preset)
    products = {s.name: s.products for s in stages}
    identities: dict[str, str] = {}
    clock = RunClock(out, echo)
    env = {**os.environ, "GLASSCAM_RUN": str(out)}
    timings: dict[str, float] = {}
    current: dict[str, Any] = {}  # the stage running now: name, t0, earlier, record
    outcome = "failed"

    def save_running() -> None:
        if current:
            record = current["record"]
            record["wall_s"] = current["earlier"] + time.perf_counter() - current["t0"]
            _write_json(running_marker(out, current["name"]), record)

    def tick() -> None:
        save_running()
        clock.save()

    try:
        for i, stage in enumerate(stages, 1):
            if only and stage.name not in only:
                continue
            head = f"[{i}/{len(stages)}] {stage.name}"
            parts = key_parts(out, stage, products, inputs_root, identities)
            key = key_of(parts)
            done = _read_json(marker(out, stage.name))
            running = _read_json(running_marker(out, stage.name))
            if done is not None and "key" not in done:  # written before stage keys existed
                done["legacy_commands"] = legacy_commands(done, out, inputs_root)
            earlier = 0.0
            if done is not None and done.get("key") == key:
                missing = [p for p in stage.products if not (out / p).exists()]
                if not missing:
                    running_marker(out, stage.name).unlink(missing_ok=True)
                    echo(f"{head}: complete, skipped")
                    continue
                echo(f"{head}: marked complete, but {', '.join(missing)} is missing; running "
                     "it again")
                stale.move_markers(stage.name)
            elif done is not None and done.get("legacy_commands") == parts["commands"]:
                adopted = {k: v for k, v in done.items() if k != "legacy_commands"}
                _write_json(marker(out, stage.name), {**adopted, "key": key, "parts": parts,
                                                      "key_recorded": _utc_now()})
                echo(f"{head}: complete (marked before stage keys existed; its commands are "
                     "unchanged, key recorded), skipped")
                continue
            elif done is not None or (running is not None and running.get("key") != key):
                old = done if done is not None else running or {}
                changes = describe_changes(old, parts)
                grow = quench_growth(old, parts, stage) if stage.name == "quench" else None
                affected = [stage.name, *downstream(stage.name)]
                now = [s for s in affected if not only or s in only]
                later = [s for s in affected if s not in now]
                was = "" if done is not None else " (interrupted earlier)"
                msg = f"{head}{was}: {'; '.join(changes)}; rerunning {', '.join(now)}"
                if later:
                    msg += f"; invalidated (not selected by --stage): {', '.join(later)}"
                echo(msg)
                if grow:
                    echo(f"  samples.zarr stays in place: nsamples grows {grow[0]} -> {grow[1]}"
                         ", the quench adds the missing samples")
                for name in affected:
                    stale.move_stage(name, keep={"samples.zarr"} if grow and name == "quench"
                                     else ())
                identities.clear()
            elif running is not None:
                earlier = float(running.get("wall_s", 0.0))
                echo(f"{head}: resuming (interrupted after {earlier:.0f} s)")
            else:
                echo(head)
            record = {"stage": stage.name, "key": key, "parts": parts, "started": _utc_now(),
                      "wall_s": earlier}
            current.update(name=stage.name, t0=time.perf_counter(), earlier=earlier,
                           record=record)
            save_running()
            for argv in stage.commands:
                echo("  $ " + shlex.join(argv))
                code = run_command(argv, env, out, tick, stage_log(out, stage.name, argv))
                if code != 0:
                    raise RuntimeError(
                        f"stage {stage.name} failed (exit {code}): {shlex.join(argv)}; "
                        f"logs in {out / 'logs'}. Run the same `glasscam run` again to resume."
                    )
            wall = time.perf_counter() - current["t0"]
            current.clear()
            timings[stage.name] = wall
            clock.attempt["stages"][stage.name] = wall
            _write_json(
                marker(out, stage.name),
                {
                    "stage": stage.name,
                    "commands": [shlex.join(a) for a in stage.commands],
                    "wall_s": wall,
                    "wall_s_all_attempts": earlier + wall,
                    "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "key": key,
                    "parts": parts,
                },
            )
            running_marker(out, stage.name).unlink(missing_ok=True)
            identities.clear()
            clock.save()
            total = f" ({earlier + wall:.1f} s over all attempts)" if earlier else ""
            echo(f"  {stage.name} finished in {wall:.1f} s{total}")
        outcome = "complete"
    except KeyboardInterrupt:
        outcome = "interrupted"
        raise
    except BaseException as err:
        outcome = f"failed: {err}"
        raise
    finally:
        if current:
            clock.attempt["stages"][current["name"]] = time.perf_counter() - current["t0"]
        save_running()
        clock.save(outcome)
        attempts = len(clock.data["attempts"])
        echo(f"wall time: {clock.elapsed:.1f} s in this attempt, {clock.total:.1f} s in all "
             f"{attempts} attempt{'s' if attempts > 1 else ''} on this run folder "
             f"({time_file(out)})")
    return timings
