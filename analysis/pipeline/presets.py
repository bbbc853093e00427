"""Presets (``inputs/presets/*.toml``): sizes and counts of a run, never the physics code path.

A preset is a TOML file with one table per stage::

    [run]          system, np (MPI ranks), partitions (LAMMPS partitions), seed
    [quench]       deck variables of inputs/<system>/quench.in (natoms, nsamples, rate, ...)
    [propensity]   temperatures, sample, nreplicas, nsteps, ... (inputs/<system>/propensity.in)
    [train]        options of `glasscam train` (epochs, batch_size, ...)
    [gradcam]      options of `glasscam gradcam`
    [indicators]   options of `glasscam indicators`
    [correlate]    options of `glasscam correlate`

A list value of a command option is passed comma-separated (``[gradcam] methods = ["gradcam",
"hirescam"]`` is ``--methods gradcam,hirescam``). Any value may instead be a table keyed by
system (``temperatures = {kam = [0.45], abm = [1.2]}``) and is then resolved for the run's
system. Unknown tables or keys are errors that name the file,
the table and the key (``p.toml: [train] key 'epochz' is not an option of glasscam train
(options: ...)``): a typo must not silently fall back to a default. Every error of this module
names the preset file; values of command options are checked the way the command itself will
parse them (:func:`check_cli_args`), before anything runs.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glasscam.decks import inputs_dir

SYSTEMS = ("kam", "abm")
RUN_KEYS = frozenset({"system", "np", "partitions", "seed", "description"})
DECK_TABLES = ("quench", "propensity")  # checked against the deck's own `variable` lines
CLI_TABLES = ("train", "gradcam", "indicators", "correlate")  # checked against the CLI options
STAGE_TABLES = ("run", *DECK_TABLES, *CLI_TABLES)
# options the pipeline sets itself (paths), never a preset
PIPELINE_OPTIONS = frozenset({"samples", "out", "model", "run"})


def _command(command: str) -> Any:
    """The click command of a `glasscam` subcommand."""
    import typer.main
    from glasscam.analysis.cli import app

    group = typer.main.get_command(app)
    return group.commands[command]  # type: ignore[attr-defined]


def cli_options(command: str) -> frozenset[str]:
    """Option names (python spelling) of a `glasscam` subcommand."""
    return frozenset(p.name for p in _command(command).params if p.name) - PIPELINE_OPTIONS


def check_cli_args(command: str, args: list[str], where: str) -> None:
    """Parse ``glasscam <command> <args>`` the way the command will (types, choices), without
    running it: a bad value in a preset fails now, not hours later when its stage starts.
    ``where`` names the origin in the error (``p.toml: [train]``)."""
    try:
        _command(command).make_context(command, list(args))
    except Exception as err:  # click's UsageError / BadParameter (vendored by typer)
        text = err.format_message() if hasattr(err, "format_message") else str(err)
        raise PresetError(f"{where} {text} (as `glasscam {command}` parses it)") from None


class PresetError(ValueError):
    """A preset file is missing, malformed or names an unknown key."""


def preset_path(name: str, inputs: str | os.PathLike | None = None) -> Path:
    """``name`` is a preset name (``demo``, looked up in the inputs folder's ``presets/``: the
    packaged one unless ``inputs`` is given) or a path to a TOML file."""
    candidate = Path(name)
    if candidate.suffix == ".toml" and candidate.exists():
        return candidate
    folder = inputs_dir(inputs) / "presets"
    path = folder / f"{name}.toml"
    if not path.exists():
        have = sorted(p.stem for p in folder.glob("*.toml"))
        raise PresetError(f"no preset {name!r}: {path} does not exist (presets: {have})")
    return path


def _unknown_keys(path: Path, table: str, bad: list[str], allowed: frozenset[str]) -> str:
    keys = ", ".join(repr(k) for k in bad)
    one = len(bad) == 1
    if table == "run":
        what = "a setting of [run]" if one else "settings of [run]"
        kind = "settings"
    else:
        what = f"{'an option' if one else 'options'} of glasscam {table}"
        kind = "options"
    return (f"{path}: [{table}] key{'' if one else 's'} {keys} {'is' if one else 'are'} not "
            f"{what} ({kind}: {', '.join(sorted(allowed))})")


def _resolve(value: Any, system: str) -> Any:
    if isinstance(value, Mapping) and value and set(value) <= set(SYSTEMS):
        if system not in value:
            raise KeyError(system)
        return value[system]
    return value


def load_preset(
    name: str, system: str | None = None, inputs: str | os.PathLike | None = None
) -> dict[str, dict[str, Any]]:
    """Load a preset, resolve per-system values, validate table and key names."""
    path = preset_path(name, inputs)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise PresetError(f"{path}: not valid TOML ({err})") from None
    unknown = sorted(set(raw) - set(STAGE_TABLES))
    if unknown:
        raise PresetError(
            f"{path}: unknown table(s) {unknown}; known tables are {sorted(STAGE_TABLES)}"
        )
    run = dict(raw.get("run", {}))
    system = system or run.get("system", "kam")
    if system not in SYSTEMS:
        raise PresetError(f"{path}: [run] system = {system!r}; choose one of {SYSTEMS}")
    out: dict[str, dict[str, Any]] = {}
    for table in STAGE_TABLES:
        values = raw.get(table, {})
        if not isinstance(values, Mapping):
            raise PresetError(f"{path}: [{table}] must be a table")
        allowed: frozenset[str] | None = None
        if table == "run":
            allowed = RUN_KEYS
        elif table in CLI_TABLES:
            allowed = cli_options(table)
        if allowed is not None:
            bad = sorted(set(values) - allowed)
            if bad:
                raise PresetError(_unknown_keys(path, table, bad, allowed))
        resolved = {}
        for key, value in values.items():
            try:
                resolved[key] = _resolve(value, system)
            except KeyError:
                raise PresetError(
                    f"{path}: [{table}] {key} has per-system values but none for {system!r}"
                ) from None
            if table in CLI_TABLES and isinstance(resolved[key], list):
                # a list of a command option (`methods = ["gradcam", "hirescam"]`) is passed
                # the way the command takes it: comma-separated
                resolved[key] = ",".join(str(v) for v in resolved[key])
        out[table] = resolved
    out["run"]["system"] = system
    out["run"].setdefault("np", 1)
    out["run"].setdefault("partitions", 1)
    for key in ("np", "partitions", "seed"):
        value = out["run"].get(key)
        if key in out["run"] and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < (0 if key == "seed" else 1)):
            raise PresetError(
                f"{path}: [run] {key} = {value!r}; an integer >= {0 if key == 'seed' else 1}"
            )
    out["run"]["preset"] = path.stem
    out["run"]["preset_file"] = str(path)
    return out
