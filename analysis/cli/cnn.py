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
    """The progress display of the long CNN stages (with a per-task ``info`` column): live
    bars on a terminal, plain lines in a log (:mod:`glasscam.analysis.cli.progress`)."""
    from glasscam.analysis.cli.progress import make_progress
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
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
    return make_progress(console, columns)


# names of glasscam.analysis.cnn.attribution (METHODS, LAYERS, CASCADE, SHUFFLED, IG_STEPS),
# repeated here so that checking a preset does not import torch (a test keeps them equal)
ATTRIBUTION_METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "saliency",
                       "input-x-gradient", "integrated-gradients")
ATTRIBUTION_LAYERS = ("act1", "act2", "act3")
RANDOMIZATIONS = ("cascade", *(f"cascade:{m}" for m in ("output", "fc", "conv3", "conv2",
                                                          "conv1")), "shuffled-labels")
IG_STEPS = 32


def _names(value: str | None, allowed: tuple[str, ...], what: str, extra: tuple[str, ...] = (),
           aliases: dict[str, str] | None = None) -> str | None:
    """A comma-separated list of names, each in ``allowed`` (or ``extra``)."""
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed and v not in extra
           and (aliases or {}).get(v) not in allowed]
    if bad or not items:
        raise typer.BadParameter(f"{what} {', '.join(bad) or repr(value)} unknown; choose "
                                 f"from {', '.join((*allowed, *extra))} (comma-separated)")
    return value


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
        from glasscam.analysis.cli.signals import saving
        from glasscam.analysis.cnn.network import CNNConfig
        from glasscam.analysis.cnn.train import Reporter, TrainConfig, train_ensemble
        from glasscam.insitu.schema import SchemaError
        from rich.console import Console

        saving(f"the checkpoint of every completed epoch in {out}")
        console = Console(soft_wrap=True)
        progress = _progress(console, info=True)

        class RichReporter(Reporter):
            def __init__(self) -> None:
                self.epochs_task: Any = None
                self.batch_task: Any = None

            last_epoch = -1

            def start_epoch(self, epoch: int, epochs: int, nbatches: int) -> None:
                # a new network (the next ensemble member) starts its own epoch count
                if self.epochs_task is None or epoch <= self.last_epoch:
                    if self.epochs_task is not None:
                        progress.remove_task(self.epochs_task)
                    self.epochs_task = progress.add_task(
                        "epochs", total=epochs, completed=epoch, info=""
                    )
                self.last_epoch = epoch
                if self.batch_task is not None:
                    progress.remove_task(self.batch_task)
                self.batch_task = progress.add_task(
                    f"  epoch {epoch + 1} batches", total=nbatches, info="", log=False
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
        methods: Annotated[
            str,
            typer.Option("--method", "--methods", callback=lambda v: _names(
                v, ATTRIBUTION_METHODS, "method", ("all",)),
                help="Attribution method(s), comma-separated: gradcam (the paper), gradcam++, "
                     "hirescam, xgradcam, layercam, saliency, input-x-gradient, "
                     "integrated-gradients, or all. --out is the paper's Grad-CAM store; every "
                     "other method goes beside it as gradcam_<method>[_<layer>].zarr."),
        ] = "gradcam",
        layers: Annotated[
            str,
            typer.Option("--layer", "--layers", callback=lambda v: _names(
                v, ATTRIBUTION_LAYERS, "layer", ("all",),
                {f"conv{k}": f"act{k}" for k in (1, 2, 3)}),
                help="Conv layer(s) of the class activation maps (the ReLU output of "
                     "conv1..3): act1, act2, act3 (the paper's), or all."),
        ] = "act3",
        randomize: Annotated[
            str | None,
            typer.Option(callback=lambda v: _names(v, RANDOMIZATIONS, "randomisation"),
                         help="Sanity checks (Adebayo et al. 2018), comma-separated: cascade "
                              "(weights re-drawn from the output layer down, one store per "
                              "step), cascade:<output|fc|conv3|conv2|conv1> (one step), "
                              "shuffled-labels (networks trained again on permuted labels, "
                              "in gradcam_model_shuffled-labels/). Every method x layer is "
                              "computed for the trained network and for each of these."),
        ] = None,
        ig_steps: Annotated[
            int, typer.Option(min=1, help="Gauss-Legendre nodes of integrated-gradients.")
        ] = IG_STEPS,
    ) -> None:
        """Grad-CAM of the glass class on the last conv layer for every sample (liquid and
        glass) of a split, mapped back to particles (Γ), into gradcam.zarr with the model's
        provenance; misclassified samples are flagged (field 'correct'). With --method,
        --layer, --randomize: the rivals of Grad-CAM and their sanity checks, one store each
        beside --out (docs/cnn.md, "Attribution methods")."""
        import torch
        from glasscam.analysis.cnn.gradcam import run_attributions
        from glasscam.insitu.schema import SchemaError
        from rich.console import Console

        if threads:
            torch.set_num_threads(threads)
        from glasscam.analysis.cli.signals import saving

        saving(f"every sample marked done in {out}")
        console = Console(soft_wrap=True)
        progress = _progress(console, info=False)

        class RichReporter:
            task: Any = None

            def __init__(self, what: str = "Grad-CAM") -> None:
                self.what = what

            def start(self, total: int) -> None:
                self.task = progress.add_task(f"{self.what} ({split})", total=total)

            def advance(self, n: int) -> None:
                progress.advance(self.task, n)

        try:
            with progress:
                summaries = run_attributions(
                    samples,
                    model,
                    out,
                    methods=methods,
                    layers=layers,
                    randomize=randomize,
                    split=split,
                    batch_size=batch_size,
                    device=device,
                    target=target,
                    ig_steps=ig_steps,
                    reporter_for=lambda what: RichReporter(
                        "Grad-CAM" if what == "gradcam act3" else what),
                    echo=lambda text: console.print(text, markup=False, highlight=False),
                )
        except (SchemaError, FileNotFoundError, ValueError, OutputLockedError) as err:
            console.print("[red]error:[/red] " + escape(str(err)), soft_wrap=True)
            raise typer.Exit(2) from None
        for summary in summaries:
            name = ("Grad-CAM" if summary["method"] == "gradcam" else summary["method"])
            console.print(
                f"{summary['items']} images ({summary['already_done']} already done), "
                f"{name} {summary['gradcam_ms_per_sample']:.2f} ms/sample, "
                f"{len(summary['misclassified'])} misclassified flagged -> {summary['out']}",
                soft_wrap=True,
            )
