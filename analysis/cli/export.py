"""`glasscam export`: stored samples in standard formats (extended XYZ, LAMMPS data file)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("export")
    def export(
        run: Annotated[
            Path | None, typer.Option(help="Run folder (its samples.zarr, and for the extended "
                                      "XYZ export its gradcam.zarr and indicators.zarr).")
        ] = None,
        samples: Annotated[
            Path | None, typer.Option(help="samples.zarr to read (default: RUN/samples.zarr).")
        ] = None,
        lammps_data: Annotated[
            int | None, typer.Option("--lammps-data", metavar="SAMPLE",
                                     help="Write sample SAMPLE as a LAMMPS data file.")
        ] = None,
        class_: Annotated[
            str, typer.Option("--class", help="liquid or glass (with --lammps-data).")
        ] = "glass",
        out: Annotated[
            Path | None, typer.Option(help="Output file (--lammps-data; default "
                                      "RUN/export/<class>_<sample>.data) or folder (extended "
                                      "XYZ; default RUN/export).")
        ] = None,
        masses: Annotated[
            bool, typer.Option(help="Write the Masses section (1.0, Lennard-Jones units).")
        ] = True,
        pair_coeffs: Annotated[
            bool, typer.Option(help="Write the model's pair coefficients as a PairIJ Coeffs "
                               "section (define the pair_style before read_data); without "
                               "it they are comments.")
        ] = False,
        split: Annotated[
            str, typer.Option(help="Samples of the extended XYZ export: test, all, ...")
        ] = "test",
    ) -> None:
        """Export stored samples: with --lammps-data SAMPLE one sample (--class liquid or glass)
        as a LAMMPS data file that read_data reads (dimension 2, atom_style atomic, types
        1 = A, 2 = B); without it, every sample of --split of a run as extended XYZ (ASE and
        OVITO read it; species Ni = A, P = B, integer type and id, gamma/voronoi/ttop,
        misclassified flagged), as the report writes them."""
        from glasscam.analysis.report.export import export_lammps_data, export_samples

        if run is None and samples is None:
            typer.echo("error: give --run RUN or --samples samples.zarr", err=True)
            raise typer.Exit(2)
        store = samples if samples is not None else run / "samples.zarr"
        try:
            if lammps_data is not None:
                base = run if run is not None else Path(store).resolve().parent
                path = out or base / "export" / f"{class_}_{lammps_data}.data"
                written = export_lammps_data(store, lammps_data, class_, path, masses=masses,
                                             pair_coeffs=pair_coeffs)
                typer.echo(str(written))
                return
            if run is None:
                typer.echo("error: the extended XYZ export needs --run (gradcam.zarr and "
                           "indicators.zarr of the run)", err=True)
                raise typer.Exit(2)
            from glasscam.analysis.correlate.tables import open_inputs

            written = export_samples(open_inputs(run), out or run / "export", split)
            typer.echo(f"{len(written)} samples -> {out or run / 'export'}")
        except (FileNotFoundError, ValueError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
