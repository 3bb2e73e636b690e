"""``rltuner study``: blind A/B pairs (``make``), the rating web app (``serve``), ``export``, ``analyze``, and the
preference reward learned from ratings (``reward``; ``simulate`` rates with a simulated listener)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import SEED, threads_option
from rltuner.errors import ConfigError, DatasetError, InvalidMelodyError


@click.group(
    "study",
    epilog="""
Examples:

\b
  rltuner study make --melodies q=q.npy --melodies g=g.npy --pairs 24 --out study
  rltuner study serve study --host 0.0.0.0
  rltuner study analyze study --plot wins.png
  rltuner study reward study --out pref.safetensors
""",
)
def study() -> None:
    """Listening study: blind A/B pairs (make), a rating web app (serve), export, analyze, and a reward learned
    from the ratings (reward; simulate stands in for listeners)."""


def _parse_samples(specs: tuple[str, ...]) -> dict[str, Path]:
    parsed: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        name = name.strip()
        if not sep or not name or not path:
            raise ConfigError(f"--melodies {spec!r}: expected NAME=PATH.npy, e.g. q=runs/q/melodies.npy")
        if name in parsed:
            raise ConfigError(f"--melodies: model name {name!r} is given twice")
        parsed[name] = Path(path)
    return parsed


@study.command(
    "make",
    epilog="""
Examples:

\b
  rltuner study make --melodies note_rnn=prior.npy --melodies q=q.npy --pairs 48 --out study
  rltuner study make --melodies q=q.npy --melodies g=g.npy --no-audio --out sim-study
""",
)
@click.option(
    "--melodies", "--samples", "sample_specs", multiple=True, required=True,
    help="NAME=PATH.npy: one model's melodies, shape (N, T). Repeat for every model (at least two). "
    "(--samples is the old spelling.)",
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
@click.option(
    "--audio/--no-audio", default=True, show_default=True,
    help="Render WAV files (--no-audio: pairs for 'study simulate' only; such a study cannot be served).",
)  # fmt: skip
def make(
    sample_specs: tuple[str, ...],
    n_pairs: int,
    out: Path,
    seed: int,
    tempo: float,
    program: int,
    sample_rate: int,
    midi: bool,
    audio: bool,
) -> None:
    """Draw balanced, randomised A/B pairs from the models' samples and write blind audio and a manifest."""
    from rltuner.cli.render import load_npy_melodies
    from rltuner.evaluation.study import balanced_pair_count, make_study

    specs = _parse_samples(sample_specs)
    samples = {}
    for name, path in specs.items():
        if not path.is_file():
            raise InvalidMelodyError(f"--melodies {name}: {path} does not exist")
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
        audio=audio,
        sources={name: str(path) for name, path in specs.items()},
    )
    if total != n_pairs:
        click.echo(
            f"note: {n_pairs} pairs rounded up to {total} so every model pair and side is equally often"
        )
    click.echo(f"wrote {len(files.pairs)} pairs to {files.folder}: give listeners pairs.csv and audio/")
    click.echo(f"keep {files.key_json} from the listeners: it says which model is which")


@study.command(
    "analyze",
    epilog="""
Examples:

\b
  rltuner study analyze study --plot wins.png
  rltuner study analyze ratings.csv --key study/key.json --json
""",
)
@click.argument("ratings", type=click.Path(exists=False, path_type=Path))
@click.option(
    "--key", "key_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The key.json written by 'rltuner study make' [default: RATINGS/key.json for a study folder].",
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
def analyze(ratings: Path, key_path: Path | None, as_json: bool, plot: Path | None, alpha: float) -> None:
    """Win counts (binomial error bars), Kruskal-Wallis across models, Mann-Whitney U post-hoc (Holm) of RATINGS.

    RATINGS is a CSV with the header pair_id,choice[,rater_id,strength] (choice is A or B), or a study folder
    whose ratings database 'rltuner study serve' filled.
    """
    from rltuner.evaluation.study import analyze_ratings, format_analysis, load_key, plot_wins

    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be between 0 and 1, got {alpha}")
    answers, key_path = _ratings_and_key(ratings, key_path)
    result = analyze_ratings(answers, load_key(key_path))
    if plot is not None:
        plot_wins(result, plot)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(format_analysis(result, alpha))
        if plot is not None:
            click.echo(f"wrote {plot}")


def _ratings_and_key(ratings: Path, key_path: Path | None) -> tuple[list[Any], Path]:
    """The answers of a ratings CSV or of a study folder's database, and the key to read them with."""
    from rltuner.evaluation.study import read_ratings
    from rltuner.web.store import DB_NAME, export_rows, rows_to_ratings

    if ratings.is_dir():
        answers = rows_to_ratings(export_rows(ratings / DB_NAME))
        if not answers:
            raise DatasetError(f"{ratings / DB_NAME} holds no ratings yet")
        return answers, key_path if key_path is not None else ratings / "key.json"
    if key_path is None:
        raise click.UsageError("--key is required when RATINGS is a CSV file")
    return read_ratings(ratings), key_path


@study.command(
    "serve",
    epilog="""
Examples:

\b
  rltuner study serve study                          # http://127.0.0.1:8000
  rltuner study serve study --host 0.0.0.0 --port 8080 --per-rater 10
""",
)
@click.argument("study_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: your network)."
)
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True, help="TCP port.")
@click.option(
    "--per-rater", type=click.IntRange(min=1), default=20, show_default=True,
    help="Pairs each listener rates (at most the study's pairs).",
)  # fmt: skip
@click.option(
    "--admin-token", default=None, envvar="RLTUNER_ADMIN_TOKEN",
    help="Secret of the admin view (>= 16 characters) [default: a fresh random one, printed at start].",
)  # fmt: skip
@click.option(
    "--max-raters", type=click.IntRange(min=1), default=1000, show_default=True, help="Listeners in all."
)
@click.option(
    "--key", "key_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The study key, for the admin view's progress per model [default: STUDY_DIR/key.json if there].",
)  # fmt: skip
def serve(
    study_dir: Path,
    host: str,
    port: int,
    per_rater: int,
    admin_token: str | None,
    max_raters: int,
    key_path: Path | None,
) -> None:
    """Serve STUDY_DIR (from 'rltuner study make') as a web page where listeners rate its pairs.

    Ratings are saved to STUDY_DIR/ratings.sqlite, each as it is submitted. The listeners' link and the admin
    link (with its token) are printed at start; Ctrl-C stops the server.
    """
    from rltuner.web.app import Limits
    from rltuner.web.server import serve as run_server

    run_server(
        study_dir, host=host, port=port, per_rater=per_rater, admin_token=admin_token,
        limits=Limits(max_raters=max_raters), key_path=key_path,
    )  # fmt: skip


@study.command(
    "export",
    epilog="""
Examples:

\b
  rltuner study export study --out ratings.csv
""",
)
@click.argument("study_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("ratings.csv"), show_default=True,
    help="The ratings CSV to write (the format 'rltuner study analyze' reads).",
)  # fmt: skip
def export(study_dir: Path, out: Path) -> None:
    """Write the ratings collected by 'rltuner study serve' in STUDY_DIR as a ratings CSV (atomically)."""
    from rltuner.fileio import write_text_atomic
    from rltuner.web.app import export_csv
    from rltuner.web.store import DB_NAME, export_rows

    rows = export_rows(study_dir / DB_NAME)
    write_text_atomic(out, export_csv(rows))
    raters = len({r["rater_id"] for r in rows})
    click.echo(f"wrote {len(rows)} ratings from {raters} raters to {out}")


def _key_of(study: Path) -> Path:
    return study / "key.json" if study.is_dir() else study


@study.command(
    "simulate",
    epilog="""
Examples:

\b
  rltuner study simulate sim-study --out sim-ratings.csv --raters 20 --seed 1
""",
)
@click.argument("study_dir", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("ratings.csv"), show_default=True,
    help="The ratings CSV to write.",
)  # fmt: skip
@click.option(
    "--raters", type=int, default=1, show_default=True, help="Simulated listeners; each rates every pair."
)
@click.option(
    "--noise", type=float, default=1.0, show_default=True,
    help="Scale of the logistic noise on the hidden rule's difference (P(A) = sigmoid(d / noise)).",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the answers.")
def simulate(study_dir: Path, out: Path, raters: int, noise: float, seed: int) -> None:
    """Rate every pair of STUDY_DIR (a study folder or its key.json) with simulated listeners.

    Their hidden taste favours stepwise motion and dislikes leaps beyond a fourth (see docs/study.md); it
    stands in for real listeners in tests and in the preference-reward demonstration.
    """
    from rltuner.evaluation.preference import SimulatedRater
    from rltuner.evaluation.study import ratings_csv
    from rltuner.fileio import write_text_atomic

    ratings = SimulatedRater(noise).rate_study(_key_of(study_dir), raters=raters, seed=seed)
    write_text_atomic(out, ratings_csv(ratings))
    click.echo(f"wrote {len(ratings)} simulated ratings ({raters} raters) to {out}")


@study.command(
    "reward",
    epilog="""
Examples:

\b
  rltuner study reward study --out pref.safetensors
  rltuner tune --reward pref=pref.safetensors --out runs/pref   # then tune with it
""",
)
@click.argument("ratings", type=click.Path(exists=False, path_type=Path))
@click.option(
    "--key", "key_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="The study's key.json (it records the melodies) [default: RATINGS/key.json for a study folder].",
)  # fmt: skip
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("pref.safetensors"), show_default=True,
    help="Where to write the preference model.",
)  # fmt: skip
@click.option(
    "--set", "overrides", multiple=True, metavar="NAME=VALUE",
    help="Set a PreferenceConfig field, e.g. --set epochs=30 --set holdout=0.25 (repeatable).",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@threads_option()
def reward(
    ratings: Path, key_path: Path | None, out: Path, overrides: tuple[str, ...], as_json: bool
) -> None:
    """Fit a Bradley-Terry preference model on RATINGS and report its held-out pairwise accuracy.

    RATINGS is a ratings CSV (with --key) or a study folder. The model scores one melody; use it as a reward
    with 'rltuner tune --reward pref=OUT'.
    """
    from rltuner.config import apply_overrides, parse_override
    from rltuner.evaluation.preference import rated_pairs
    from rltuner.rewards.preference import PreferenceConfig, fit_preference, save_preference

    config = apply_overrides(PreferenceConfig(), dict(parse_override(text) for text in overrides))
    config.validate()
    answers, key_path = _ratings_and_key(ratings, key_path)
    pairs = rated_pairs(answers, key_path)
    fit = fit_preference(
        pairs.melodies_a, pairs.melodies_b, pairs.prefer_a, groups=pairs.pair_ids, strength=pairs.strength,
        config=config,
    )  # fmt: skip
    save_preference(out, fit)
    if as_json:
        click.echo(json.dumps(fit.metrics(), indent=2))
        return
    click.echo(
        f"held-out pairwise accuracy {fit.heldout_accuracy:.3f} on {fit.n_heldout} ratings of "
        f"{fit.n_heldout_pairs} pairs never seen in training (train {fit.train_accuracy:.3f} on {fit.n_train})"
    )
    click.echo(f"wrote {out}: use it with rltuner tune --reward pref={out}")
