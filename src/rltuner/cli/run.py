"""``rltuner run``: the main job (tune Q, Psi, G and RL-only, evaluate, write report.html)."""

from __future__ import annotations

import datetime as dt
import sys

import click

from rltuner.cli.options import SEED, device_option


@click.command("run")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder (default runs/<timestamp>). Finished stages found there are skipped.",
)
@click.option("--quick", is_flag=True, help="A ~1-minute smoke version: few tuning steps, few samples.")
@click.option(
    "--algorithms",
    default="q,psi,g,rl-only",
    show_default=True,
    help="Comma-separated algorithms to tune: q, psi, g, rl-only.",
)
@click.option(
    "--samples",
    type=int,
    default=None,
    help="Melodies sampled per model for evaluation [default: 100000, as the paper; --quick: 1000].",
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help="Environment steps per tuning run [default: the fast preset's; --quick: 8192].",
)
@click.option(
    "--prior",
    type=click.Path(dir_okay=False),
    default=None,
    help="Note RNN checkpoint to tune and compare against [default: the shipped one].",
)
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Seed of tuning, sampling and evaluation."
)
@device_option()
@click.option(
    "--muspy-samples",
    type=int,
    default=1000,
    show_default=True,
    help="Melodies per model scored by muspy (slow: a Python loop).",
)
@click.option("--no-copying", is_flag=True, help="Skip the copying measure (no training corpus needed).")
@click.option("--force", is_flag=True, help="Redo every stage even where its outputs exist.")
def run(
    out: str | None,
    quick: bool,
    algorithms: str,
    samples: int | None,
    steps: int | None,
    prior: str | None,
    seed: int,
    device: str,
    muspy_samples: int,
    no_copying: bool,
    force: bool,
) -> None:
    """The main job: RL-tune the shipped Note RNN with each algorithm, evaluate all models (Note RNN
    included), and write a run folder with a self-contained report.html."""
    from rltuner.evaluation.pipeline import PipelineConfig, run_pipeline

    folder = out or f"runs/{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    config = PipelineConfig(
        out=folder,
        algorithms=tuple(a.strip() for a in algorithms.split(",") if a.strip()),
        samples=samples,
        steps=steps,
        prior=prior,
        seed=seed,
        device=device,
        quick=quick,
        muspy_samples=muspy_samples,
        copying=not no_copying,
        force=force,
    )
    report = run_pipeline(config, command=" ".join(["rltuner", *sys.argv[1:]]) if sys.argv else None)
    click.echo(str(report))
