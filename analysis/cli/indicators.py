"""`glasscam indicators` (ϒ and Θ of every sample, on Dask) and `glasscam correlate`
(coarse-graining, correlation lengths, Tables 3-5 and figure data as CSV)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from glasscam.insitu.lock import OutputLockedError
from rich.markup import escape


def parse_grid(text: str) -> list[float]:
    """``"0,1,2"`` or ``"0:10"`` (step 1) or ``"0:10:0.5"``, ends included."""
    text = text.replace(" ", "")
    if ":" in text:
        parts = [float(v) for v in text.split(":")]
        if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] <= 0):
            raise ValueError("a range is START:STOP or START:STOP:STEP with STEP > 0")
        start, stop, step = (*parts, 1.0) if len(parts) == 2 else parts
        n = int(round((stop - start) / step))
        if n < 0:
            raise ValueError("STOP is below START")
        return [round(start + i * step, 12) for i in range(n + 1)]
    values = [float(v) for v in text.split(",") if v]
    if not values:
        raise ValueError("no values")
    return values


def register(app: typer.Typer) -> None:
    @app.command("indicators")
    def indicators(
        samples: Annotated[Path, typer.Option(help="samples.zarr to read.")],
        out: Annotated[Path, typer.Option(help="indicators.zarr to write (resumed if it exists).")],
        scheduler: Annotated[
            str | None,
            typer.Option(
                help="Where the Dask tasks run: 'serial' (in-process), 'local' (default: a new "
                "LocalCluster), 'mpi' (dask-mpi: launch this command under mpirun -np >= 4), "
                "'slurm' (a dask-jobqueue SLURMCluster of the --cluster-* options), or the "
                "address / scheduler file of a running scheduler."
            ),
        ] = None,
        split: Annotated[str, typer.Option(help="all, train, val or test.")] = "all",
        workers: Annotated[int, typer.Option(help="LocalCluster worker processes.")] = 2,
        threads_per_worker: Annotated[int, typer.Option(help="Threads per worker.")] = 1,
        samples_per_task: Annotated[int, typer.Option(help="Samples per Dask task.")] = 16,
        system: Annotated[
            str | None, typer.Option(help="kam or abm (default: the samples store's).")
        ] = None,
        cluster_jobs: Annotated[int, typer.Option(help="slurm: batch jobs of workers.")] = 2,
        cluster_cores: Annotated[int, typer.Option(help="slurm: cores per job.")] = 16,
        cluster_memory: Annotated[str, typer.Option(help="slurm: memory per job.")] = "64GB",
        cluster_walltime: Annotated[str, typer.Option(help="slurm: job time limit.")] = "02:00:00",
        cluster_queue: Annotated[str | None, typer.Option(help="slurm: partition.")] = None,
        cluster_account: Annotated[str | None, typer.Option(help="slurm: account.")] = None,
        cluster_dry_run: Annotated[
            bool, typer.Option(help="slurm: print the job script and stop (submit nothing).")
        ] = False,
    ) -> None:
        """Voronoi volume ϒ and Tong-Tanaka order parameter Θ of every done sample of both
        classes, in parallel, into indicators.zarr (resumable)."""
        from glasscam.analysis.cluster import ClusterError, SlurmOptions, initialize_mpi

        if scheduler == "mpi":  # first: every rank but one becomes the scheduler or a worker
            try:
                initialize_mpi()
            except ClusterError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None
        slurm = SlurmOptions(jobs=cluster_jobs, cores=cluster_cores, processes=cluster_cores,
                             memory=cluster_memory, walltime=cluster_walltime,
                             queue=cluster_queue, account=cluster_account)
        if scheduler == "slurm" and cluster_dry_run:
            try:
                typer.echo(slurm.cluster().job_script())
            except ClusterError as err:
                typer.echo(f"error: {err}", err=True)
                raise typer.Exit(2) from None
            return
        from glasscam.analysis.cli.progress import progress_callback
        from glasscam.analysis.cli.signals import saving
        from glasscam.analysis.structure.indicators import run_indicators
        from rich.console import Console

        saving(f"every sample marked done in {out}")
        console = Console(soft_wrap=True)

        def echo(text: str) -> None:
            console.print(text, markup=False, highlight=False, soft_wrap=True)

        try:
            run_indicators(
                samples,
                out,
                split=split,
                scheduler=scheduler,
                workers=workers,
                threads_per_worker=threads_per_worker,
                batch_size=samples_per_task,
                system=system,
                echo=echo,
                progress=progress_callback("indicators: samples", echo),
                slurm=slurm,
            )
        except (ValueError, FileNotFoundError, OutputLockedError) as err:
            console.print("[red]error:[/red] " + escape(str(err)), soft_wrap=True)
            raise typer.Exit(2) from None

    @app.command("correlate")
    def correlate(
        run: Annotated[Path, typer.Option(help="Run folder with samples.zarr, indicators.zarr, "
                                         "propensity*.zarr and (optionally) gradcam.zarr.")],
        xi_grid: Annotated[
            str, typer.Option(help="ξ values scanned for every indicator: a list (0,1,2) or "
                              "a range (0:10, step 1; 0:10:0.5).")
        ] = "0:10",
        xi_delta: Annotated[
            float | None,
            typer.Option(help="Fix ξ_Δ instead of the noise-free 1/e length at δ ≈ 1."),
        ] = None,
        xi_pairs: Annotated[
            float, typer.Option(help="ξ for the per-sample inter-indicator coefficients (Fig 6).")
        ] = 2.0,
        kernel: Annotated[str, typer.Option(help="exp, gauss or tophat.")] = "exp",
        cutoff_factor: Annotated[float, typer.Option(help="r_c = cutoff_factor · ξ.")] = 3.0,
        dr: Annotated[float, typer.Option(help="Bin width of C_X(r).")] = 0.1,
        split: Annotated[str, typer.Option(help="Samples for Figs 6/8 (test, all, ...).")] = "test",
        system: Annotated[
            str | None, typer.Option(help="kam or abm (default: the samples store's).")
        ] = None,
        null_draws: Annotated[
            int, typer.Option(help="Torus translations of the significance null.")
        ] = 1000,
        bootstrap: Annotated[
            int, typer.Option(help="Replica-bootstrap resamples per configuration.")
        ] = 200,
        delta_min: Annotated[
            float, typer.Option(help="C_max over the outputs with δ ≥ this.")
        ] = 0.3,
        seed: Annotated[int, typer.Option(help="Seed of the null and the bootstraps.")] = 0,
    ) -> None:
        """Coarse-grain Γ, ϒ, Θ, the baselines (local fraction of A, particle energy) and Δ;
        for every configuration of every propensity store: C_max and C at δ ≈ 0.3, 1, 3, their
        torus-translation null, p-values, 95 % CIs over configurations and replicas, the noise
        ceiling; write significance.csv, Tables 3/4/5, the curves of Figs 3/5/7/8 and the
        per-sample Pearson/Spearman of Fig 6 as CSV under RUN/tables/."""
        from glasscam.analysis.correlate.tables import CorrelateOptions, run_correlate
        from rich.console import Console

        console = Console(soft_wrap=True)
        try:
            grid = parse_grid(xi_grid)
        except ValueError as err:
            console.print(f"[red]error:[/red] --xi-grid {xi_grid!r}: {err}")
            raise typer.Exit(2) from None
        opts = CorrelateOptions(
            xi_grid=tuple(grid),
            xi_delta=xi_delta,
            xi_pairs=xi_pairs,
            kernel=kernel,
            cutoff_factor=cutoff_factor,
            dr=dr,
            split=split,
            system=system,
            null_draws=null_draws,
            bootstrap=bootstrap,
            delta_min=delta_min,
            seed=seed,
        )
        try:
            written = run_correlate(run, opts, echo=console.print)
        except (ValueError, FileNotFoundError, OutputLockedError) as err:
            console.print("[red]error:[/red] " + escape(str(err)), soft_wrap=True)
            raise typer.Exit(2) from None
        for path in written:
            console.print(f"wrote {path}")
