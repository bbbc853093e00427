"""`glasscam verify`: check every done sample of a store against the checksums recorded when it
was written; `--repair` marks the damaged ones not done, so the command that wrote the store
redoes exactly them (glasscam.insitu.integrity)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def stores_under(path: Path) -> list[Path]:
    """``path`` itself when it is a store, else the stores directly in it (a run folder)."""
    if (path / "zarr.json").exists():
        return [path]
    return sorted(p for p in path.glob("*.zarr") if (p / "zarr.json").exists())


def register(app: typer.Typer) -> None:
    @app.command("verify")
    def verify(
        paths: Annotated[
            list[Path],
            typer.Argument(help="Stores (or run folders: every *.zarr in them) to check."),
        ],
        repair: Annotated[
            bool,
            typer.Option("--repair", help="Mark every damaged sample not done (the command "
                         "that wrote the store then redoes exactly them)."),
        ] = False,
    ) -> None:
        """Check every done sample of every array against its recorded checksum.

        Exit 0: nothing damaged (or, with --repair, every damaged sample marked not done);
        1: damage found and left as it is; 2: a path is not a glasscam store."""
        import zarr
        from glasscam.insitu import integrity
        from glasscam.insitu.lock import OutputLock, OutputLockedError
        from glasscam.insitu.schema import SchemaError, open_store, units_of

        damaged_total, repaired_total = 0, 0
        for path in paths:
            stores = stores_under(path) if path.is_dir() else []
            if not stores:
                typer.echo(f"error: {path}: not a Zarr store, and no *.zarr store in it",
                           err=True)
                raise typer.Exit(2)
            for store in stores:
                where = str(store.resolve())
                try:
                    open_store(where)  # validates the schema; names a damaged zarr.json
                    root = zarr.open_group(where, mode="r")
                except (SchemaError, FileNotFoundError) as err:
                    typer.echo(f"error: {err}", err=True)
                    raise typer.Exit(2) from None
                if not units_of(root):
                    typer.echo(f"{where}: schema {root.attrs.get('schema')!r} records no "
                               "checksums (an older glasscam wrote it): nothing to verify")
                    continue
                damages = integrity.verify(root, where)
                units = integrity.damaged_units(damages)
                for d in damages:
                    typer.echo(f"DAMAGED {d}")
                left = integrity.leftovers(where)
                for path in left:
                    typer.echo(f"LEFTOVER {path} (a write interrupted before its rename; "
                               "harmless: --repair, or the next writer, removes it)")
                if not damages:
                    done = sum(int(root[u.done][...].sum()) for u in units_of(root))
                    typer.echo(f"{where}: OK ({done} done units checked)")
                    if repair and left:
                        try:
                            with OutputLock(where, what="store",
                                            command="glasscam verify --repair"):
                                integrity.sweep_leftovers(where)
                        except OutputLockedError as err:
                            typer.echo(f"error: {err}", err=True)
                            raise typer.Exit(1) from None
                    continue
                damaged_total += len(units)
                if not repair:
                    typer.echo(f"{where}: {len(units)} damaged unit(s); `glasscam verify "
                               f"--repair {store}` marks them not done")
                    continue
                try:
                    with OutputLock(where, what="store", command="glasscam verify --repair"):
                        integrity.sweep_leftovers(where)
                        integrity.repair(zarr.open_group(where, mode="r+"), damages)
                except OutputLockedError as err:
                    typer.echo(f"error: {err}", err=True)
                    raise typer.Exit(1) from None
                repaired_total += len(units)
                typer.echo(f"{where}: {len(units)} damaged unit(s) marked not done; run the "
                           "command that wrote this store again (the same `glasscam run`, "
                           "deck or stage command) to redo exactly them")
        if damaged_total and repaired_total < damaged_total:
            raise typer.Exit(1)
