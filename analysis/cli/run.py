"""`glasscam run`: the whole pipeline from a preset (see glasscam.analysis.pipeline.runner)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def _presets() -> str:
    from glasscam.decks import packaged_inputs

    names = sorted(p.stem for p in (packaged_inputs() / "presets").glob("*.toml"))
    return ", ".join(names)


_STAGES = "quench, propensity, train, gradcam, indicators, correlate, report"


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        out: Annotated[Path, typer.Option(help="Run folder (created; resumed if it exists).")],
        preset: Annotated[
            str, typer.Option(help=f"Preset: one of {_presets()} (inputs/presets), or a .toml "
                              "file of yours.")
        ],
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
            list[str] | None,
            typer.Option(help=f"Run only these stages (repeatable): {_STAGES}."),
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

        console = Console(soft_wrap=True)

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
        report = Path(out).resolve() / "report.html"
        where = f"report: {report}" if report.exists() else \
            f"no report yet (`glasscam status {out}` lists the pending stages)"
        echo(f"done: {total:.0f} s of stages run now; {where}")


    @app.command("status")
    def status(
        run: Annotated[Path, typer.Argument(help="Run folder of `glasscam run`.")],
    ) -> None:
        """Where a run folder stands: each stage done / running / interrupted / pending, done
        counts per store, wall time over every attempt, the running stage's estimated remaining
        time, the last log line. Read-only."""
        from glasscam.analysis.pipeline.status import format_status, run_status

        try:
            typer.echo(format_status(run_status(run)))
        except FileNotFoundError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
