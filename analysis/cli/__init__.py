"""The `glasscam` command line. Each stage lives in its own module of this package
and registers itself here; heavy imports (torch, dask) happen inside the commands, so
``glasscam --help`` stays fast."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer

app = typer.Typer(
    name="glasscam",
    help="Reproduce Oyama, Koyama & Kawasaki: liquid/glass CNN, Grad-CAM, structural "
    "indicators and dynamic propensity, from in-situ LAMMPS samples.",
    no_args_is_help=True,
    add_completion=False,
)


def _print_version(value: bool) -> None:
    if value:
        from glasscam import version_string

        typer.echo(version_string())
        raise typer.Exit()


@app.callback()
def callback(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True,
            help="Print the version and the git commit it was built from, and exit.",
        ),
    ] = False,
) -> None:
    """glasscam: in-situ LAMMPS samples -> CNN / Grad-CAM -> indicators -> correlations."""


# the modules of this package that define commands, in the order `--help` lists them
COMMAND_MODULES = ("run", "decks", "cnn", "indicators", "report", "export", "apply", "verify")


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(app)


_register_commands()



def main() -> None:
    """Entry point of the ``glasscam`` console script. SIGINT/SIGTERM stop a command with a
    note of what was kept and how to resume (:mod:`glasscam.analysis.cli.signals`)."""
    import sys

    from glasscam.analysis.cli import signals

    signals.install()
    try:
        app()
    except (SystemExit, KeyboardInterrupt):
        if signals.received:  # the command was stopped by a signal: say what was kept
            signals.report()
            sys.exit(signals.exit_code())
        raise

if __name__ == "__main__":
    main()
