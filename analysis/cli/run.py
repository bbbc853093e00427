"""`glasscam run`: the whole pipeline from a preset (see glasscam.analysis.pipeline.runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        out: Annotated[Path, typer.Option(help="Run folder (created; resumed if it exists).")],
        preset: Annotated[
            str, typer.Option(help="Preset name in inputs/presets or a .toml.")
        ] = "demo",
        system: Annotated[
            str | None, typer.Option(help="kam or abm (default: the preset's).")
        ] = None,
        np: Annotated[int | None, typer.Option("--np", help="MPI ranks for LAMMPS.")] = None,
        partitions: Annotated[
            int | None, typer.Option(help="LAMMPS partitions (samples/replicas in parallel).")
        ] = None,
        scheduler: Annotated[
            str | None, typer.Option(help="Address of an existing Dask scheduler.")
        ] = None,
        stage: Annotated[
            list[str] | None, typer.Option(help="Run only these stages (repeatable).")
        ] = None,
        inputs: Annotated[
            Path | None,
            typer.Option(help="Folder of decks and presets (from `glasscam decks DIR`, possibly "
                         "edited) to use instead of the packaged ones."),
        ] = None,
    ) -> None:
        """Run every stage in order, skipping finished ones and resuming the others."""
        from glasscam.analysis.pipeline.presets import PresetError
        from glasscam.analysis.pipeline.runner import RunFolderError, run_pipeline
        from rich.console import Console

        from glasscam.decks import DeckError

        console = Console()
        try:
            timings = run_pipeline(
                out, preset, system, np, partitions, scheduler, stage, echo=console.print,
                inputs=inputs,
            )
        except (PresetError, RunFolderError, DeckError, FileNotFoundError) as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(2) from None
        except RuntimeError as err:
            console.print(f"[red]error:[/red] {err}")
            raise typer.Exit(1) from None
        total = sum(timings.values())
        console.print(f"done in {total:.0f} s; report: {Path(out).resolve() / 'report.html'}")
