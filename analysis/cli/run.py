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
        """Run every stage in order: skip a stage whose inputs are unchanged since it finished,
        rerun a changed one and its dependants (their old outputs moved to <out>/stale/), resume
        an interrupted one. Every option is checked before anything is written."""
        from glasscam.analysis.pipeline.presets import PresetError
        from glasscam.analysis.pipeline.runner import RunFolderError, run_pipeline
        from glasscam.insitu.lock import OutputLockedError
        from rich.console import Console
        from rich.markup import escape

        from glasscam.decks import DeckError

        console = Console()

        def echo(text: str) -> None:  # messages name preset tables: [train] is not markup
            console.print(text, markup=False, highlight=False, soft_wrap=True)

        try:
            timings = run_pipeline(
                out, preset, system, np, partitions, scheduler, stage, echo=echo, inputs=inputs,
            )
        except (PresetError, RunFolderError, DeckError, FileNotFoundError,
                OutputLockedError) as err:
            console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except RuntimeError as err:
            console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        total = sum(timings.values())
        echo(f"done: {total:.0f} s of stages run now; report: "
             f"{Path(out).resolve() / 'report.html'}")
