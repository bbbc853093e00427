"""`glasscam report`: figures, tables and report.html of a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from glasscam.insitu.lock import OutputLockedError


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        run: Annotated[Path, typer.Option(help="Run folder written by the earlier stages.")],
    ) -> None:
        """Draw every figure, render every table beside the paper's values, write report.html."""
        from glasscam.analysis.report.html import build_report

        try:
            path = build_report(run)
        except (FileNotFoundError, ValueError, OutputLockedError) as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        typer.echo(str(path))
