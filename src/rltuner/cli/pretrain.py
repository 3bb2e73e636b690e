"""``rltuner pretrain``: train a Note RNN prior by maximum likelihood."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import (
    SEED,
    config_option,
    device_option,
    domain_option,
    given,
    quiet_option,
    threads_option,
)
from rltuner.errors import ConfigError

EXAMPLES = """
Examples:

\b
  rltuner pretrain --out note_rnn.safetensors                   # the paper's Note RNN on the folk corpus
  rltuner pretrain --data data/mine.npz --arch gru --out gru.safetensors
  rltuner pretrain --config pretrain.toml --out mine.safetensors   # settings from a TOML file
  rltuner pretrain --out note_rnn.safetensors --resume           # continue after Ctrl-C
  rltuner pretrain --domain molecules --steps 2000 --out smiles.safetensors
"""


@click.command("pretrain", epilog=EXAMPLES)
@click.option(
    "--data",
    "data_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Dataset file from `rltuner data build` (default: the domain's corpus, folk tunes or MOSES, built "
    "into the cache on first use).",
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
    "--hidden-size",
    type=int,
    default=None,
    help="Cells per layer / model width [default: music 100, molecules 256].",
)
@click.option(
    "--num-layers", type=int, default=1, show_default=True, help="Recurrent layers / Transformer blocks."
)
@click.option("--steps", type=int, default=None, help="Optimizer steps [default: 12000].")
@click.option(
    "--batch-size", type=int, default=128, show_default=True, help="Windows per batch (the paper: 128)."
)
@click.option(
    "--window",
    type=int,
    default=None,
    help="Predictions per training window [default: music 128, molecules 55].",
)
@click.option("--lr", type=float, default=3e-3, show_default=True, help="Adam learning rate.")
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Random seed (bit-reproducible on the CPU)."
)
@click.option(
    "--eval-every", type=int, default=None, help="Validate every N steps [default: music 250, molecules 500]."
)
@click.option(
    "--patience", type=int, default=None,
    help="Stop after N validations without improvement (0 = run all steps) [default: music 8, molecules 0].",
)  # fmt: skip
@click.option("--resume", is_flag=True, help="Continue an interrupted run from <out>.run/resume.pt.")
@device_option()
@threads_option(pass_value=True)
@quiet_option()
@config_option("PretrainConfig")
@domain_option()
@click.pass_context
def pretrain(
    ctx: click.Context,
    domain: str,
    data_path: Path | None,
    out: Path,
    quiet: bool,
    config_file: Path | None,
    **opts: Any,
) -> None:
    """Train a prior (the paper's Note RNN by default) on a melody dataset; keep the best checkpoint.

    Prints validation accuracy and log-perplexity (mean NLL per step, nats) next to trivial baselines.
    Ctrl-C saves a resume state; run the same command with --resume to continue.
    """
    from rltuner.config import apply_overrides, flatten_settings, read_settings
    from rltuner.domains import get_domain
    from rltuner.models.train import PretrainConfig
    from rltuner.models.train import pretrain as run_pretrain

    entry = get_domain(domain)
    entry.check_installed()
    resume = opts.pop("resume")
    from rltuner.fileio import ensure_writable_dir
    from rltuner.models.train import run_dir_for

    ensure_writable_dir(run_dir_for(out))  # before the dataset is loaded (or built): fail in a second

    def setting(option: str) -> str:
        return f"model.{option}" if option in ("arch", "hidden_size", "num_layers") else option

    # precedence: the domain's defaults < the options' defaults < the --config file < options given
    defaults = {setting(k): v for k, v in opts.items() if v is not None and not given(ctx, k)}
    explicit = {setting(k): v for k, v in opts.items() if v is not None and given(ctx, k)}
    from_file = flatten_settings(read_settings(config_file)) if config_file is not None else {}
    settings = {**entry.pretrain_defaults, **defaults, **from_file, **explicit}
    logging.getLogger(__name__).debug("pretrain settings: %s", settings)
    try:
        apply_overrides(PretrainConfig(), settings)  # nonsense settings fail here, before the data is read
    except ConfigError as exc:
        raise ConfigError(f"{config_file}: {exc}" if from_file else str(exc)) from None
    dataset, train, valid, meta = _load_dataset(domain, data_path, progress=not quiet)
    cfg = apply_overrides(PretrainConfig(), {**settings, "model.vocab_size": meta.pop("vocab_size")})
    click.echo(
        f"training {cfg.model.arch} ({cfg.model.num_layers} x {cfg.model.hidden_size}) on "
        f"{len(train):,} {entry.item}s, validating on {len(valid):,}",
        err=True,
    )
    result = run_pretrain(
        train, valid, out, cfg, resume=resume, dataset_hash=dataset.content_hash()[:16],
        progress=not quiet,
        extra_meta={"dataset": data_path.name if data_path else f"default {domain} corpus", **meta},
    )  # fmt: skip
    click.echo(f"best checkpoint: {result.best_path} (step {result.best_step} of {result.steps_done})")
    click.echo(f"time: {result.seconds:.1f} s; run folder: {result.run_dir}")
    click.echo(f"{'validation':<22}{'accuracy':>9}{'log-perplexity':>16}")
    rows = [("model", result.best)] + [(f"baseline: {k}", v) for k, v in result.baselines.items()]
    for name, m in rows:
        click.echo(f"{name:<22}{m.accuracy:>9.4f}{m.nll:>16.4f}")


def _load_dataset(
    domain: str, path: Path | None, *, progress: bool
) -> tuple[Any, list, list, dict[str, Any]]:
    """The dataset, its train and validation sequences, and metadata for the checkpoint (with vocab_size)."""
    if domain == "molecules":
        from rltuner.domains.molecules.corpus import load_default_molecule_dataset, load_molecule_dataset

        mols = (
            load_default_molecule_dataset(progress=progress) if path is None else load_molecule_dataset(path)
        )
        meta = {"domain": "molecules", "vocabulary": list(mols.vocab.tokens), "vocab_size": len(mols.vocab)}
        return mols, mols.sequences("train"), mols.sequences("valid"), meta
    from rltuner.data.dataset import load_dataset, load_default_dataset
    from rltuner.encoding import NUM_CLASSES

    ds = load_default_dataset(progress=progress) if path is None else load_dataset(path)
    return ds, ds.train, ds.valid, {"domain": "music", "vocab_size": NUM_CLASSES}
