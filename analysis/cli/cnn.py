"""`glasscam train` (the liquid/glass CNN) and `glasscam gradcam` (Grad-CAM maps and Γ).

torch is imported inside the command bodies so that ``glasscam --help`` stays fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from glasscam.insitu.lock import OutputLockedError
from rich.markup import escape


def _conv_channels(text: str) -> tuple[int, int, int]:
    parts = [int(p) for p in text.replace(" ", "").split(",") if p]
    if len(parts) != 3:
        raise typer.BadParameter(f"three comma-separated channel counts expected, got {text!r}")
    return parts[0], parts[1], parts[2]


def _progress(console: Any, info: bool) -> Any:
    """The rich progress display of the long CNN stages (with a per-task ``info`` column)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    return Progress(*columns, console=console)


# options shared by `train` and `gradcam`
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA when present), cpu, cuda[:i].")]
ThreadsOption = Annotated[
    int | None, typer.Option(help="torch CPU threads (default: torch's choice).")
]


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train(
        samples: Annotated[Path, typer.Option(help="samples.zarr to train on.")],
        out: Annotated[
            Path, typer.Option(help="Model folder (checkpoint.pt, metrics.json); resumed.")
        ],
        epochs: Annotated[int, typer.Option(help="Training epochs (paper: 250).")] = 250,
        batch_size: Annotated[int, typer.Option(help="Items (images) per batch.")] = 32,
        lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
        weight_decay: Annotated[float, typer.Option(help="Adam L2 weight decay.")] = 0.0,
        dropout: Annotated[float, typer.Option(help="Dropout between the FC layers.")] = 0.5,
        conv_channels: Annotated[
            str, typer.Option(help="Channels of the three conv layers.")
        ] = "16,32,64",
        kernel_size: Annotated[int, typer.Option(help="Conv kernel size (odd).")] = 3,
        fc_width: Annotated[int, typer.Option(help="Width of the hidden FC layer.")] = 64,
        head: Annotated[
            str,
            typer.Option(help="fc: the paper's dense head (fixes the image size); gap: global "
                         "average pooling first, so the model scores any box size at the "
                         "training pixel size (glasscam apply)."),
        ] = "fc",
        seed: Annotated[int, typer.Option(help="Seed of weights, item order and dropout.")] = 0,
        device: DeviceOption = "auto",
        threads: ThreadsOption = None,
        prefetch: Annotated[int, typer.Option(help="Batches read ahead of the loop.")] = 4,
        augment: Annotated[
            bool,
            typer.Option(help="Random periodic translations and square symmetries of the "
                         "training images (exact symmetries of the box; off as in the paper)."),
        ] = False,
        standardize: Annotated[
            bool,
            typer.Option(help="Standardise the input per channel with the train split's mean "
                         "and std (stored in the model config, applied by gradcam too)."),
        ] = False,
        lr_schedule: Annotated[
            str, typer.Option(help="constant, or cosine (lr decays to 0 over --epochs).")
        ] = "constant",
        ensemble: Annotated[
            int,
            typer.Option(help="Independently seeded networks (seeds seed, seed+1, ...) whose "
                         "mean Γ the correlations use; 1 is the paper's single network."),
        ] = 1,
    ) -> None:
        """Train the CNN on the train split, validate every epoch, checkpoint, and write
        metrics.json (test accuracy and confusion matrix = Table 2). Re-running the same
        command resumes after the last completed epoch."""
        from glasscam.analysis.cnn.network import CNNConfig
        from glasscam.analysis.cnn.train import Reporter, TrainConfig, train_ensemble
        from glasscam.insitu.schema import SchemaError
        from rich.console import Console

        console = Console()
        progress = _progress(console, info=True)

        class RichReporter(Reporter):
            def __init__(self) -> None:
                self.epochs_task: Any = None
                self.batch_task: Any = None

            def start_epoch(self, epoch: int, epochs: int, nbatches: int) -> None:
                if self.epochs_task is None:
                    self.epochs_task = progress.add_task(
                        "epochs", total=epochs, completed=epoch, info=""
                    )
                if self.batch_task is not None:
                    progress.remove_task(self.batch_task)
                self.batch_task = progress.add_task(
                    f"epoch {epoch + 1}", total=nbatches, info=""
                )

            def advance(self, n: int = 1) -> None:
                progress.advance(self.batch_task, n)

            def end_epoch(self, record: dict[str, Any]) -> None:
                info = (
                    f"loss {record['train_loss']:.4f}  acc {record['train_accuracy']:.3f}  "
                    f"val {record['val_accuracy']:.3f}  {record['samples_per_s']:.0f}/s  "
                    f"wait {100 * record['data_wait_fraction']:.1f}%"
                )
                progress.update(self.epochs_task, advance=1, info=info)

            def message(self, text: str) -> None:
                console.print(text)

        try:
            # every setting is checked before the store or --out is touched
            config = TrainConfig(
                epochs=epochs,
                batch_size=batch_size,
                lr=lr,
                weight_decay=weight_decay,
                seed=seed,
                device=device,
                threads=threads,
                prefetch=prefetch,
                augment=augment,
                standardize=standardize,
                lr_schedule=lr_schedule,
            )
            if ensemble < 1:
                raise ValueError(f"--ensemble must be >= 1, got {ensemble}")
            from glasscam.analysis.cnn.data import SplitImages

            store = SplitImages(samples, "train")
            cfg = CNNConfig(
                channels=store.channels,
                grid=store.grid,
                conv_channels=_conv_channels(conv_channels),
                kernel_size=kernel_size,
                fc_width=fc_width,
                dropout=dropout,
                head=head,
            )
            with progress:
                metrics = train_ensemble(
                    samples,
                    out,
                    ensemble,
                    config,
                    cfg,
                    RichReporter(),
                )
        except (SchemaError, FileNotFoundError, ValueError, OutputLockedError) as err:
            console.print("[red]error:[/red] " + escape(str(err)), soft_wrap=True)
            raise typer.Exit(2) from None
        test = metrics["test"]
        if "ensemble" in metrics:
            members = ", ".join(f"{100 * a:.1f}" for a in metrics["member_test_accuracy"])
            console.print(f"ensemble of {len(metrics['ensemble'])}: member test accuracy "
                          f"{members} %")
        console.print(
            f"test accuracy {100 * test['accuracy']:.2f} % "
            f"(liquid {100 * test['per_class_accuracy']['liquid']:.2f} %, "
            f"glass {100 * test['per_class_accuracy']['glass']:.2f} %), "
            f"{len(test['misclassified'])} misclassified; "
            f"{metrics['samples_per_s']:.1f} samples/s on {metrics['device']}, "
            f"data wait {100 * metrics['data_wait_fraction']:.1f} %  -> {out / 'metrics.json'}"
        )

    @app.command("gradcam")
    def gradcam(
        samples: Annotated[Path, typer.Option(help="samples.zarr the model was trained on.")],
        model: Annotated[Path, typer.Option(help="Model folder written by `glasscam train`.")],
        out: Annotated[Path, typer.Option(help="gradcam.zarr to write (resumed if it exists).")],
        split: Annotated[str, typer.Option(help="all, train, val or test.")] = "test",
        target: Annotated[str, typer.Option(help="Class C of the Grad-CAM map.")] = "glass",
        batch_size: Annotated[int, typer.Option(help="Images per Grad-CAM batch.")] = 64,
        device: DeviceOption = "auto",
        threads: ThreadsOption = None,
    ) -> None:
        """Grad-CAM of the glass class on the last conv layer for every sample (liquid and
        glass) of a split, mapped back to particles (Γ), into gradcam.zarr with the model's
        provenance; misclassified samples are flagged (field 'correct')."""
        import torch
        from glasscam.analysis.cnn.gradcam import run_gradcam
        from glasscam.insitu.schema import SchemaError
        from rich.console import Console

        if threads:
            torch.set_num_threads(threads)
        console = Console()
        progress = _progress(console, info=False)

        class RichReporter:
            task: Any = None

            def start(self, total: int) -> None:
                self.task = progress.add_task(f"Grad-CAM ({split})", total=total)

            def advance(self, n: int) -> None:
                progress.advance(self.task, n)

        try:
            with progress:
                summary = run_gradcam(
                    samples,
                    model,
                    out,
                    split=split,
                    batch_size=batch_size,
                    device=device,
                    target=target,
                    reporter=RichReporter(),
                )
        except (SchemaError, FileNotFoundError, ValueError, OutputLockedError) as err:
            console.print("[red]error:[/red] " + escape(str(err)), soft_wrap=True)
            raise typer.Exit(2) from None
        console.print(
            f"{summary['items']} images ({summary['already_done']} already done), "
            f"Grad-CAM {summary['gradcam_ms_per_sample']:.2f} ms/sample, "
            f"{len(summary['misclassified'])} misclassified flagged -> {out}"
        )
