"""``rltuner run``: the main job (tune Q, Psi, G, RL-only and the featured model, evaluate, write report.html)."""

from __future__ import annotations

import datetime as dt
import logging
import sys
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import (
    SEED,
    config_option,
    device_option,
    domain_option,
    given,
    progress_lines_hidden,
    quiet_option,
    rules_option,
    samples_option,
    threads_option,
)
from rltuner.errors import ConfigError

log = logging.getLogger(__name__)

EXAMPLES = """
Examples:

\b
  rltuner run --quick --out out/quick            # a smoke version of the whole job
  rltuner run --out out/demo                     # what make demo runs
  rltuner run --featured runs/sweep/best.toml --out out/best   # feature a sweep's best configuration
  rltuner run --no-featured --jobs 1 --out out/paper   # the paper's four algorithms, one process
  rltuner run --algorithms q,g -n 20000 --seed 1 --out out/seed1
  rltuner run --config run.toml --out out/mine   # settings from a TOML file (name = value)
  rltuner run --config out/demo/run.json --seed 2 --out out/seed2   # that job again, another seed
  rltuner run --rule my_rules.py:strong_beats --tensorboard --out out/beats
  rltuner run --domain molecules --quick --out out/mol-quick
"""

# CLI parameter -> (setting, how the flag's value becomes the setting's)
_PARAMS: dict[str, tuple[str, Any]] = {
    "out": ("out", None), "quick": ("quick", None), "algorithms": ("algorithms", None),
    "samples": ("samples", None), "steps": ("steps", None), "prior": ("prior", None), "seed": ("seed", None),
    "device": ("device", None), "muspy_samples": ("muspy_samples", None), "force": ("force", None),
    "no_copying": ("copying", lambda v: not v), "no_fcd": ("fcd", lambda v: not v), "rules": ("rules", None),
    "tensorboard": ("tensorboard", None), "quiet": ("progress", lambda v: not v), "threads": ("threads", None), "seeds": ("seeds", None),
    "featured": ("featured", None), "no_featured": ("featured", lambda v: None), "jobs": ("jobs", None),
}  # fmt: skip


@click.command("run", epilog=EXAMPLES)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=None,
    help="Run folder (default runs/<timestamp>). Finished stages found there are skipped.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="A smoke version (music: 13-16 s on this project's 2-core Xeon when it is not busy): few tuning steps, "
    "few samples.",
)
@click.option(
    "--algorithms",
    default="q,psi,g,rl-only",
    show_default=True,
    help="Comma-separated algorithms to tune (the value-family rows of the algorithm table).",
)
@samples_option(
    "Sequences sampled per model for evaluation [default: music 100000, as the paper, molecules 5000; "
    "--quick: 1000 / 300]."
)
@click.option(
    "--steps",
    type=int,
    default=None,
    help="Environment steps per tuning run; the schedules (epsilon, evaluations) scale with it "
    "[default: 1,000,000; --quick: music 8192, molecules 20000].",
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
@click.option(
    "--featured", "featured", type=click.Path(dir_okay=False), default=None, metavar="FILE",
    help="Music: settings of the featured model, tuned beside the algorithms as model 'featured' and shown "
    "first in the report: a TOML file that rltuner tune --config reads, a tuning run's config.json or a sweep's "
    "best.toml [default: the shipped one, rltuner/assets/featured.toml (docs/sweep.md)].",
)  # fmt: skip
@click.option("--no-featured", is_flag=True, help="Music: leave the featured model out.")
@click.option(
    "--jobs", "-j", type=click.IntRange(0, 256), default=0, metavar="N",
    help="Worker processes that run the tuning runs and model evaluations side by side, each with --threads "
    "torch threads; the results equal --jobs 1's [default: 0 = one per CPU core].",
)  # fmt: skip
@device_option()
@threads_option(pass_value=True)
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
@click.option(
    "--tensorboard/--no-tensorboard", default=False, show_default=True,
    help="Write TensorBoard event files of each tuning run to OUT/tune/ALGORITHM/tb.",
)  # fmt: skip
@rules_option()
@config_option("run", "an rltuner run folder's run.json")
@click.option(
    "--set", "overrides", multiple=True, metavar="NAME=VALUE",
    help="Set any setting of the job (see --config), e.g. --set audio_per_model=5 (repeatable).",
)  # fmt: skip
@quiet_option()
@domain_option()
@click.pass_context
def run(
    ctx: click.Context,
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
    threads: int,
    featured: str | None,
    no_featured: bool,
    jobs: int,
    muspy_samples: int,
    no_copying: bool,
    force: bool,
    tensorboard: bool,
    rules: tuple[str, ...],
    config_file: Path | None,
    overrides: tuple[str, ...],
    quiet: bool,
) -> None:
    """The main job: RL-tune the shipped Note RNN with each algorithm and as the featured model (its settings
    from --featured, default the shipped featured.toml), evaluate all models (Note RNN included), and write a
    run folder with a self-contained report.html. The tuning runs and the models' evaluations run side by
    side in --jobs worker processes (default one per core).

    With --domain molecules: tune the shipped SMILES prior, evaluate with MOSES's metrics, the chemistry reward's
    terms, log p and KL, and draw reward curves, property histograms and molecule grids into the report.
    A stage is skipped only when it finished with the same inputs (settings, prior, code version).

    With --seeds N (N > 1) each algorithm is tuned with seeds S .. S+N-1 into RUN/tune/<alg>/seed-<s>/, every
    model is evaluated per seed into RUN/seed-<s>/, and RUN/table.md, RUN/summary.json and the report give
    mean ± sd (and 95% intervals) over seeds; both domains. Example: rltuner run --seeds 3 --out runs/three
    """
    from rltuner.config import apply_overrides, parse_override, read_settings, with_settings

    params = dict(ctx.params)
    default_out = f"runs/{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    cmd = " ".join(["rltuner", *sys.argv[1:]]) if sys.argv else None
    if featured is not None and no_featured:
        raise click.UsageError("give either --featured FILE or --no-featured, not both")
    if domain == "molecules":
        if rules:
            raise click.UsageError("--rule applies to the music domain")
        for name, option in (
            ("featured", "--featured"),
            ("no_featured", "--no-featured"),
            ("jobs", "--jobs"),
        ):
            if given(ctx, name):
                raise click.UsageError(f"{option} applies to the music domain")
        from rltuner.domains import get_domain

        get_domain("molecules").check_installed()
        from rltuner.domains.molecules.pipeline import MoleculeRunConfig, run_molecule_pipeline

        base: Any = MoleculeRunConfig(out=default_out)
    else:
        from rltuner.evaluation.pipeline import PipelineConfig, run_pipeline

        base = PipelineConfig(out=default_out)
    if config_file is not None:
        data = read_settings(config_file)
        if isinstance(data.get("settings"), dict) and isinstance(data["settings"].get("pipeline"), dict):
            data = {k: v for k, v in data["settings"]["pipeline"].items() if k != "out"}  # a run.json
        try:
            base = with_settings(base, data)
        except ConfigError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
    fields = set(type(base).__dataclass_fields__)
    flags: dict[str, Any] = {}
    for name, (setting, convert) in _PARAMS.items():
        if setting in fields and given(ctx, name):
            value = params[name]
            flags[setting] = convert(value) if convert is not None else value
    if "algorithms" in flags:
        flags["algorithms"] = tuple(a.strip() for a in str(flags["algorithms"]).split(",") if a.strip())
    config = with_settings(base, flags)
    if overrides:
        config = apply_overrides(config, dict(parse_override(text) for text in overrides))
    log.debug("run settings: %s", config)
    if domain == "molecules":
        with progress_lines_hidden(quiet):
            report = run_molecule_pipeline(config, command=cmd)
        click.echo(f"report: {report}")  # the one line naming it
        return
    with progress_lines_hidden(quiet):
        report = run_pipeline(config, command=cmd)
    click.echo(f"report: {report}")  # the one line naming it (the pipeline logs stages only)
