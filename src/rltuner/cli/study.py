"""``rltuner study``: the listening study's blind A/B pairs (``make``) and the analysis of ratings (``analyze``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from rltuner.cli.options import SEED
from rltuner.errors import ConfigError, InvalidMelodyError


@click.group("study")
def study() -> None:
    """Listening study: make blind A/B pairs of melodies from several models, then analyse the ratings."""


def _parse_samples(specs: tuple[str, ...]) -> dict[str, Path]:
    parsed: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise ConfigError(f"--samples {spec!r}: expected NAME=PATH.npy, e.g. q=runs/q/melodies.npy")
        if name in parsed:
            raise ConfigError(f"--samples: model name {name!r} is given twice")
        parsed[name] = Path(path)
    return parsed


@study.command("make")
@click.option(
    "--samples", "sample_specs", multiple=True, required=True,
    help="NAME=PATH.npy: one model's melodies, shape (N, T). Repeat for every model (at least two).",
)  # fmt: skip
@click.option(
    "--pairs", "n_pairs", type=int, default=24, show_default=True,
    help="Number of A/B pairs, rounded up to a whole number of balanced cycles (K models: K(K-1) pairs each).",
)  # fmt: skip
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("study"), show_default=True,
    help="Output folder: audio/, midi/, pairs.csv, ratings_template.csv, key.json.",
)  # fmt: skip
@click.option("--seed", type=SEED, default=0, show_default=True, help="Random seed of the pairing and order.")
@click.option("--tempo", type=float, default=120.0, show_default=True, help="Quarter notes per minute.")
@click.option("--program", type=int, default=0, show_default=True, help="General MIDI program 0..127.")
@click.option("--sample-rate", type=int, default=44100, show_default=True, help="WAV samples per second.")
@click.option("--midi/--no-midi", default=True, show_default=True, help="Also write MIDI files.")
def make(
    sample_specs: tuple[str, ...],
    n_pairs: int,
    out: Path,
    seed: int,
    tempo: float,
    program: int,
    sample_rate: int,
    midi: bool,
) -> None:
    """Draw balanced, randomised A/B pairs from the models' samples and write blind audio and a manifest."""
    from rltuner.cli.render import load_npy_melodies
    from rltuner.evaluation.study import balanced_pair_count, make_study

    specs = _parse_samples(sample_specs)
    samples = {}
    for name, path in specs.items():
        if not path.is_file():
            raise InvalidMelodyError(f"--samples {name}: {path} does not exist")
        samples[name] = load_npy_melodies(path)
    total = balanced_pair_count(len(samples), n_pairs) if len(samples) >= 2 and n_pairs >= 1 else n_pairs
    files = make_study(
        samples,
        out,
        n_pairs=n_pairs,
        seed=seed,
        tempo=tempo,
        program=program,
        sample_rate=sample_rate,
        midi=midi,
        sources={name: str(path) for name, path in specs.items()},
    )
    if total != n_pairs:
        click.echo(
            f"note: {n_pairs} pairs rounded up to {total} so every model pair and side is equally often"
        )
    click.echo(f"wrote {len(files.pairs)} pairs to {files.folder}: give listeners pairs.csv and audio/")
    click.echo(f"keep {files.key_json} from the listeners: it says which model is which")


@study.command("analyze")
@click.argument("ratings", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--key", "key_path", type=click.Path(dir_okay=False, path_type=Path), required=True,
    help="The key.json written by 'rltuner study make'.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON instead of a table.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the win-count bar chart (PNG).",
)
@click.option(
    "--alpha", type=float, default=0.05, show_default=True, help="Significance level for the verdicts."
)
def analyze(ratings: Path, key_path: Path, as_json: bool, plot: Path | None, alpha: float) -> None:
    """Win counts (binomial error bars), Kruskal-Wallis across models, Mann-Whitney U post-hoc (Holm) of RATINGS.

    RATINGS is a CSV with the header pair_id,choice[,rater_id,strength]; choice is A or B.
    """
    from rltuner.evaluation.study import analyze_ratings, format_analysis, load_key, plot_wins, read_ratings

    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1, got {alpha}")
    key = load_key(key_path)
    result = analyze_ratings(read_ratings(ratings), key)
    if plot is not None:
        plot_wins(result, plot)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_analysis(result, alpha))
        if plot is not None:
            click.echo(f"wrote {plot}")
