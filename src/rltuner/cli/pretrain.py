"""``rltuner pretrain``: train a Note RNN prior by maximum likelihood."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import SEED, device_option


@click.command("pretrain")
@click.option(
    "--data",
    "data_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Dataset file from `rltuner data build` (default: the folk corpus, built into the cache on first use).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Best checkpoint (.safetensors); the run folder <name>.run/ beside it holds logs and resume state.",
)
@click.option(
    "--arch", type=click.Choice(["lstm", "gru", "transformer"]), default="lstm", show_default=True,
    help="Model kind.",
)  # fmt: skip
@click.option(
    "--hidden-size", type=int, default=100, show_default=True, help="Cells per layer / model width."
)
@click.option(
    "--num-layers", type=int, default=1, show_default=True, help="Recurrent layers / Transformer blocks."
)
@click.option("--steps", type=int, default=None, help="Optimizer steps [default: 12000].")
@click.option(
    "--batch-size", type=int, default=128, show_default=True, help="Windows per batch (the paper: 128)."
)
@click.option("--window", type=int, default=128, show_default=True, help="Predictions per training window.")
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate.")
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Random seed (bit-reproducible on the CPU)."
)
@click.option("--eval-every", type=int, default=250, show_default=True, help="Validate every N steps.")
@click.option(
    "--patience", type=int, default=8, show_default=True,
    help="Stop after N validations without improvement (0 = run all steps).",
)  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue an interrupted run from <out>.run/resume.pt.")
@device_option()
@click.option(
    "--threads", type=int, default=1, show_default=True,
    help="CPU threads for torch (0 = torch's default; 1 is fastest on a busy machine).",
)  # fmt: skip
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
def pretrain(data_path: Path | None, out: Path, no_progress: bool, **opts: Any) -> None:
    """Train a prior (the paper's Note RNN by default) on a melody dataset; keep the best checkpoint.

    Prints validation accuracy and log-perplexity (mean NLL per step, nats) next to trivial baselines.
    Ctrl-C saves a resume state; run the same command with --resume to continue.
    """
    from rltuner.config import from_dict
    from rltuner.models.train import PretrainConfig
    from rltuner.models.train import pretrain as run_pretrain

    model = {
        "arch": opts.pop("arch"),
        "hidden_size": opts.pop("hidden_size"),
        "num_layers": opts.pop("num_layers"),
    }
    resume = opts.pop("resume")
    if opts["steps"] is None:
        opts.pop("steps")
    cfg = from_dict(PretrainConfig, {"model": model, **opts})
    from rltuner.fileio import ensure_writable_dir
    from rltuner.models.train import run_dir_for

    ensure_writable_dir(run_dir_for(out))  # before the dataset is loaded (or built): fail in a second
    dataset = _load_dataset(data_path, progress=not no_progress)
    click.echo(
        f"training {cfg.model.arch} ({cfg.model.num_layers} x {cfg.model.hidden_size}) on "
        f"{len(dataset.train):,} melodies, validating on {len(dataset.valid):,}",
        err=True,
    )
    result = run_pretrain(
        dataset.train,
        dataset.valid,
        out,
        cfg,
        resume=resume,
        dataset_hash=dataset.content_hash()[:16],
        progress=not no_progress,
        extra_meta={"dataset": data_path.name if data_path else "default folk corpus"},
    )
    click.echo(f"best checkpoint: {result.best_path} (step {result.best_step} of {result.steps_done})")
    click.echo(f"time: {result.seconds:.1f} s; run folder: {result.run_dir}")
    click.echo(f"{'validation':<22}{'accuracy':>9}{'log-perplexity':>16}")
    rows = [("model", result.best)] + [(f"baseline: {k}", v) for k, v in result.baselines.items()]
    for name, m in rows:
        click.echo(f"{name:<22}{m.accuracy:>9.4f}{m.nll:>16.4f}")


def _load_dataset(path: Path | None, *, progress: bool) -> Any:
    from rltuner.data.dataset import load_dataset, load_default_dataset

    if path is None:
        return load_default_dataset(progress=progress)
    return load_dataset(path)
