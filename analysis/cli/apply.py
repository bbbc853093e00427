"""`glasscam apply`: score a user's own configurations with a trained model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from glasscam.insitu.lock import OutputLockedError


def register(app: typer.Typer) -> None:
    @app.command("apply")
    def apply(
        model: Annotated[Path, typer.Option(help="Model folder of `glasscam train`.")],
        out: Annotated[Path, typer.Option(help="Output folder (one <name>.zarr, .extxyz and "
                                          ".lammpstrj per input; resumed).")],
        files: Annotated[
            list[Path] | None,
            typer.Argument(help="Input files: LAMMPS data, LAMMPS dump (every frame), "
                           "extended XYZ."),
        ] = None,
        input_: Annotated[
            list[Path] | None, typer.Option("--input", help="An input file (repeatable).")
        ] = None,
        types: Annotated[
            str | None,
            typer.Option(help="Type mapping, e.g. 1=A,2=B (default for LAMMPS files); for "
                         "extended XYZ without a type column: species names, e.g. Ni=A,P=B."),
        ] = None,
        indicators: Annotated[
            bool, typer.Option(help="Also the Voronoi area ϒ and the Tong–Tanaka Θ.")
        ] = False,
        xi: Annotated[
            float | None, typer.Option(help="ξ of the coarse-grained Γ (default: the paper's "
                                       "structural ξ of the model's system).")
        ] = None,
        format_: Annotated[
            str | None, typer.Option("--format", help="lammps-data, lammps-dump or extxyz "
                                     "(default: detected).")
        ] = None,
        device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    ) -> None:
        """Which regions of MY configuration does the network call glassy? P(glass), the
        Grad-CAM map and Γ of every frame, checked against the model's training data."""
        from glasscam.analysis.apply.explain import load_model
        from glasscam.analysis.apply.files import apply_file, output_name
        from glasscam.analysis.cli.signals import saving
        from glasscam.insitu.schema import SchemaError

        saving(f"every frame marked done in the stores of {out}")
        inputs = list(files or []) + list(input_ or [])
        if not inputs:
            typer.echo("error: no input file (give FILES or --input FILE)", err=True)
            raise typer.Exit(2)
        try:
            trained = load_model(model, device)
            typer.echo(repr(trained))
            taken: set[str] = set()
            for path in inputs:
                result = apply_file(trained, path, out, output_name(Path(path), taken), types,
                                    indicators, xi, format_, echo=typer.echo)
                typer.echo(f"{path}: {result['frames']} frame(s) -> {result['store']}, "
                           f"{result['extxyz']}, {result['dump']}")
        except (SchemaError, FileNotFoundError, ValueError, OutputLockedError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
