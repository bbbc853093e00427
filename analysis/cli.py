"""The `glasscam` command line. Each stage lives in its own module under ``analysis/commands``
and registers itself here; heavy imports (torch, dask) happen inside the commands, so
``glasscam --help`` stays fast."""

from __future__ import annotations

import importlib
import pkgutil

import typer

app = typer.Typer(
    name="glasscam",
    help="Reproduce Oyama, Koyama & Kawasaki: liquid/glass CNN, Grad-CAM, structural "
    "indicators and dynamic propensity, from in-situ LAMMPS samples.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main() -> None:
    """glasscam: in-situ LAMMPS samples -> CNN / Grad-CAM -> indicators -> correlations."""


def _register_commands() -> None:
    from analysis import commands

    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"analysis.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(app)


_register_commands()

if __name__ == "__main__":
    app()
