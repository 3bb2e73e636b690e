"""``rltuner evaluate``: sample from models and compare them (Table 1, log p, KL, diversity, copying, muspy)."""

from __future__ import annotations

from pathlib import Path

import click

from rltuner.cli.options import (
    SEED,
    device_option,
    domain_option,
    quiet_option,
    rules_option,
    samples_option,
    threads_option,
)
from rltuner.errors import CheckpointError, ConfigError


def _parse_models(specs: tuple[str, ...]) -> dict[str, str]:
    from rltuner.loading import resolve_model_path  # torch: imported only when models are given

    models: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep:
            path, name = spec, Path(spec).stem if Path(spec).suffix else Path(spec).name
        if not name or not path:
            raise ConfigError(f"model {spec!r}: expected NAME=PATH or PATH")
        if name in models:
            raise ConfigError(f"model name {name!r} given twice; name them with NAME=PATH")
        try:  # a checkpoint, or a tuning run folder: the same as generate and load_model accept
            file = resolve_model_path(path)
        except CheckpointError as exc:
            raise ConfigError(f"model {name!r}: {exc}") from None
        models[name] = str(file)
    return models


EXAMPLES = """
Examples:

\b
  rltuner evaluate q=runs/q g=runs/g --out eval/            # Table 1 beside the paper's, log p, KL...
  rltuner evaluate runs/q -n 5000 --muspy-samples 0         # quicker: fewer melodies, no muspy
  rltuner evaluate q=runs/q --rule my_rules.py:strong_beats -n 5000   # r_MT with your own rule
  rltuner evaluate --domain molecules g=runs/mol-g -n 10000 --out eval-mol/
"""


EVAL_WORKERS_HELP = (
    "Music: the batches of melodies and the measures run side by side, one per CPU core left (cores // N; at "
    "N = 1 on 2 cores: two at a time); the results do not depend on it."
)


@click.command("evaluate", epilog=EXAMPLES)
@click.argument("models", nargs=-1)
@click.option(
    "--prior",
    type=click.Path(dir_okay=False),
    default=None,
    help="Prior checkpoint that log p and KL refer to [default: the domain's shipped prior].",
)
@samples_option("Sequences sampled per model [default: 100,000 melodies, 10,000 molecules].")
@click.option("--fcd/--no-fcd", default=True, show_default=True, help="Molecules: FCD to the MOSES test set.")
@click.option(
    "--length", type=int, default=32, show_default=True, help="Steps sampled per melody after its primer."
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of primers and sampling.")
@click.option(
    "--muspy-samples",
    type=int,
    default=1000,
    show_default=True,
    help="Melodies per model scored by muspy (slow: a Python loop); 0 = skip.",
)
@click.option(
    "--corpus/--no-corpus",
    default=True,
    show_default=True,
    help="Measure copying against the default training corpus.",
)
@device_option()
@threads_option(pass_value=True, more_help=EVAL_WORKERS_HELP)
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for evaluation.json/.csv/.txt and samples.npz (default: print only).",
)
@rules_option()
@quiet_option()
@domain_option()
def evaluate(
    domain: str,
    rules: tuple[str, ...],
    quiet: bool,
    fcd: bool,
    models: tuple[str, ...],
    prior: str | None,
    samples: int | None,
    length: int,
    seed: int,
    muspy_samples: int,
    corpus: bool,
    device: str,
    out: str | None,
    threads: int,
) -> None:
    """Evaluate the Note RNN and MODELS (checkpoints or run folders, as PATH or NAME=PATH).

    Each model samples N melodies from its stochastic policy (temperature 1, one random priming note);
    the table shows Table 1 beside the paper's numbers (a melody is its primer + the sampled steps), then
    log p under the Note RNN, r_MT, KL, diversity (distinct melodies and n-grams, the most common 8-step
    opening), copying (16-step corpus runs of >= 4 notes) and muspy's metrics. A second table gives the goals
    of issue #13, each row's value and pass/FAIL per model.

    With --domain molecules: the SMILES prior and MODELS sample N strings each from <bos>; the table shows
    MOSES's metrics (valid, unique, novel, IntDiv, filters, FCD), the properties and every reward penalty,
    log p under the prior and the KL, beside MOSES's published CharRNN.
    """
    from rltuner.devices import resolve_device

    parsed = _parse_models(models)
    if rules:
        if domain != "music":
            raise click.UsageError("--rule applies to the music domain")
        from rltuner.rewards.user_rules import register_rule_specs

        register_rule_specs(rules)
    if domain == "molecules":
        from rltuner.domains import get_domain

        get_domain("molecules").check_installed()
        from rltuner.domains.molecules.evaluate import evaluate_molecule_models

        if samples is not None and samples < 1:
            raise click.BadParameter("must be at least 1", param_hint="--samples")
        mol = evaluate_molecule_models(
            parsed,
            n=samples or 10_000,
            seed=seed,
            prior=prior,
            fcd=fcd,
            device=str(resolve_device(device)),
            progress=not quiet,
        )
        click.echo(mol.format_table())
        if out:
            paths = mol.write(out)
            click.echo(f"wrote {', '.join(str(p) for p in paths.values())}")
        return
    from rltuner.evaluation.evaluate import evaluate_models
    from rltuner.evaluation.pipeline import _load_corpus, _save_samples
    from rltuner.threads import batch_workers

    result = evaluate_models(
        parsed,
        n=samples or 100_000,
        length=length,
        seed=seed,
        corpus=_load_corpus() if corpus else None,
        prior=prior,
        muspy_samples=muspy_samples,
        device=str(resolve_device(device)),
        show_progress=not quiet,
        workers=batch_workers(threads),
    )
    click.echo(result.format_table())
    if out:
        paths = result.write(out)
        _save_samples(Path(out) / "samples.npz", result.samples, result.primers)
        click.echo(f"wrote {', '.join(str(p) for p in paths.values())} and {Path(out) / 'samples.npz'}")
