"""``rltuner run``: the main job (tune Q, Psi, G and RL-only, evaluate, write report.html)."""

from __future__ import annotations

import datetime as dt
import sys

import click

from rltuner.cli.options import SEED, device_option, domain_option


@click.command("run")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder (default runs/<timestamp>). Finished stages found there are skipped.",
)
@click.option(
    "--quick", is_flag=True, help="A smoke version of a few minutes: few tuning steps, few samples."
)
@click.option(
    "--algorithms",
    default="q,psi,g,rl-only",
    show_default=True,
    help="Comma-separated algorithms to tune (the value-family rows of the algorithm table).",
)
@click.option(
    "--samples",
    type=int,
    default=None,
    help="Sequences sampled per model for evaluation [default: music 100000, as the paper, molecules 5000; "
    "--quick: 1000 / 300].",
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help="Environment steps per tuning run [default: 1,000,000; --quick: music 8192, molecules 20000].",
)
@click.option(
    "--prior",
    type=click.Path(dir_okay=False),
    default=None,
    help="Prior checkpoint to tune and compare against [default: the domain's shipped one].",
)
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Seed of tuning, sampling and evaluation."
)
@click.option(
    "--seeds",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="How many tuning seeds: --seed, --seed + 1, ... Each algorithm is tuned and every model evaluated once per seed; "
    "the report, table.md and summary.json show mean ± sd over seeds (use 3 or more for results to quote).",
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
@click.option("--no-fcd", is_flag=True, help="Molecules: skip FCD (about 30 s per model).")
@domain_option()
def run(
    domain: str,
    no_fcd: bool,
    out: str | None,
    quick: bool,
    algorithms: str,
    samples: int | None,
    steps: int | None,
    prior: str | None,
    seed: int,
    seeds: int,
    device: str,
    muspy_samples: int,
    no_copying: bool,
    force: bool,
) -> None:
    """The main job: RL-tune the shipped Note RNN with each algorithm, evaluate all models (Note RNN
    included), and write a run folder with a self-contained report.html.

    With --domain molecules: tune the shipped SMILES prior, evaluate with MOSES's metrics, the chemistry reward's
    terms, log p and KL, and draw reward curves, property histograms and molecule grids into the report.
    A stage is skipped only when it finished with the same inputs (settings, prior, code version).

    With --seeds N (N > 1) each algorithm is tuned with seeds S .. S+N-1 into RUN/tune/<alg>/seed-<s>/, every
    model is evaluated per seed into RUN/seed-<s>/, and RUN/table.md, RUN/summary.json and the report give
    mean ± sd (and 95% intervals) over seeds; both domains. Example: rltuner run --seeds 3 --out runs/three
    """
    folder = out or f"runs/{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    cmd = " ".join(["rltuner", *sys.argv[1:]]) if sys.argv else None
    if domain == "molecules":
        from rltuner.domains import get_domain

        get_domain("molecules").check_installed()
        from rltuner.domains.molecules.pipeline import MoleculeRunConfig, run_molecule_pipeline

        mol = MoleculeRunConfig(
            out=folder, algorithms=tuple(a.strip() for a in algorithms.split(",") if a.strip()), samples=samples,
            steps=steps, prior=prior, seed=seed, seeds=seeds, device=device, quick=quick, fcd=not no_fcd, force=force,
        )  # fmt: skip
        click.echo(str(run_molecule_pipeline(mol, command=cmd)))
        return
    from rltuner.evaluation.pipeline import PipelineConfig, run_pipeline

    config = PipelineConfig(
        out=folder,
        algorithms=tuple(a.strip() for a in algorithms.split(",") if a.strip()),
        samples=samples,
        steps=steps,
        prior=prior,
        seed=seed,
        seeds=seeds,
        device=device,
        quick=quick,
        muspy_samples=muspy_samples,
        copying=not no_copying,
        force=force,
    )
    report = run_pipeline(config, command=cmd)
    click.echo(str(report))
