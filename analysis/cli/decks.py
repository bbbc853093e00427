"""`glasscam decks DIR`: copy the shipped LAMMPS decks and presets where LAMMPS can read them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    @app.command("decks")
    def decks(
        dest: Annotated[Path, typer.Argument(help="Folder to copy kam/, abm/ and presets/ into.")],
        force: Annotated[
            bool, typer.Option(help="Overwrite files that differ from the shipped ones.")
        ] = False,
    ) -> None:
        """Copy every deck (kam/quench.in, kam/propensity.in, abm/...) and preset into DEST,
        so that `mpirun lmp -in DEST/kam/quench.in ...` works anywhere. Edited copies are
        never overwritten without --force."""
        from glasscam.decks import DeckError, copy_decks

        try:
            written = copy_decks(dest, force=force)
        except DeckError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(2) from None
        for path in written:
            typer.echo(f"wrote {path}")
        if not written:
            typer.echo(f"{dest}: every deck and preset is already there, unchanged")
