"""``rltuner data build`` and ``rltuner data stats``: make a melody dataset and look inside one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import SEED, domain_option, quiet_option

_SPLIT_HELP = "Comma-separated; the option may also be repeated."


def _names(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(n.strip() for v in values for n in v.split(",") if n.strip())


@click.group(
    epilog="""
Examples:

\b
  rltuner data build --out data/melodies.npz
  rltuner data stats data/melodies.npz --plot stats.png
"""
)
def data() -> None:
    """Build a dataset (melodies: music21's folk corpus or MIDI files; molecules: MOSES or a SMILES file)."""


@data.command(
    epilog="""
Examples:

\b
  rltuner data build                                   # the folk corpus -> data/melodies.npz
  rltuner data build --exclude essen --out data/folk.npz
  rltuner data build --source ~/midi --out data/mine.npz   # a folder of MIDI files
  rltuner data build --domain molecules                # MOSES -> data/molecules.npz
"""
)
@click.option(
    "--source",
    "sources",
    multiple=True,
    metavar="folk|moses|PATH",
    help="Music: 'folk' (music21's folk collections, the default) or a MIDI file/folder, repeatable. "
    "Molecules: 'moses' (the MOSES train set in the molsets wheel, the default) or one .smi/.txt/.csv file "
    "(gzipped or not).",
)
@click.option("--collections", multiple=True, help=f"Folk collections to use (default all). {_SPLIT_HELP}")
@click.option("--exclude", multiple=True, help=f"Folk collections to leave out. {_SPLIT_HELP}")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Dataset file to write (its manifest goes beside it as NAME.manifest.json) "
    "[default: data/melodies.npz or data/molecules.npz].",
)
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the train/validation split.")
@click.option(
    "--valid-fraction",
    type=float,
    default=None,
    help="Fraction of tunes (molecules) in the validation split [default: 0.1 for music, 0.01 for molecules].",
)
@click.option("--limit", type=int, default=0, help="Molecules only: use the first N strings of the source.")
@click.option(
    "--min-length", type=int, default=32, show_default=True, help="Shortest melody kept, in sixteenth steps."
)
@click.option(
    "--triplets",
    type=click.Choice(["round", "drop"]),
    default="round",
    show_default=True,
    help="Onsets off the 16th grid (triplets): round them to the grid, or drop the tune.",
)
@click.option(
    "--polyphony",
    type=click.Choice(["top", "drop"]),
    default="top",
    show_default=True,
    help="Notes sounding together: keep the highest, or drop the tune/track.",
)
@click.option(
    "--split-rest-bars",
    type=float,
    default=2.0,
    show_default=True,
    help="Split a line into separate melodies at rests this many 4/4 bars long.",
)
@click.option(
    "--jobs", type=int, default=0, show_default=True, help="Worker processes (0: one per CPU core)."
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write which MIDI file was dropped and why (tab-separated: file, reason, candidates).",
)
@quiet_option()
@domain_option()
def build(
    domain: str,
    limit: int,
    sources: tuple[str, ...],
    collections: tuple[str, ...],
    exclude: tuple[str, ...],
    out: Path | None,
    seed: int,
    valid_fraction: float | None,
    min_length: int,
    triplets: str,
    polyphony: str,
    split_rest_bars: float,
    jobs: int,
    report_path: Path | None,
    quiet: bool,
) -> None:
    """Build one dataset file (train/validation split, manifest, content hash) and print the build report."""
    from rltuner.config import from_dict
    from rltuner.data.dataset import BuildConfig, build_dataset

    if domain == "molecules":
        _build_molecules(sources, out, seed, valid_fraction, limit, jobs, quiet)
        return
    out = out if out is not None else Path("data/melodies.npz")
    valid_fraction = 0.1 if valid_fraction is None else valid_fraction
    config = from_dict(
        BuildConfig,
        {
            "sources": sources or ("folk",),
            "collections": _names(collections),
            "exclude": _names(exclude),
            "seed": seed,
            "valid_fraction": valid_fraction,
            "min_length": min_length,
            "triplets": triplets,
            "polyphony": polyphony,
            "split_rest_bars": split_rest_bars,
            "jobs": jobs,
        },
    )
    report = build_dataset(config, out, progress=not quiet)
    click.echo(report.format())
    if report_path is not None:
        report.write_dropped(report_path)
        click.echo(f"dropped files: {report_path} ({len(report.dropped):,} lines)")


def _build_molecules(
    sources: tuple[str, ...], out: Path | None, seed: int, valid_fraction: float | None, limit: int,
    jobs: int, quiet: bool,
) -> None:  # fmt: skip
    from rltuner.config import from_dict
    from rltuner.domains import get_domain

    get_domain("molecules").check_installed()
    from rltuner.domains.molecules.corpus import MoleculeBuildConfig, build_molecule_dataset

    if len(sources) > 1:
        raise click.UsageError("--domain molecules takes one --source: 'moses' or one SMILES file")
    config = from_dict(
        MoleculeBuildConfig,
        {"source": sources[0] if sources else "moses", "seed": seed, "limit": limit, "jobs": jobs,
         "valid_fraction": 0.01 if valid_fraction is None else valid_fraction},
    )  # fmt: skip
    report = build_molecule_dataset(
        config, out if out is not None else Path("data/molecules.npz"), progress=not quiet
    )
    click.echo(report.format())


@data.command(
    epilog="""
Examples:

\b
  rltuner data stats data/melodies.npz
  rltuner data stats data/melodies.npz --plot stats.png --json
"""
)
@click.argument("dataset", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also draw the statistics to a PNG."
)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON instead of text.")
def stats(dataset: Path, plot: Path | None, as_json: bool) -> None:
    """Class histogram, melody lengths and melodic intervals of a dataset."""
    from rltuner.data.dataset import dataset_stats, load_dataset

    ds = load_dataset(dataset)
    summary = dataset_stats(ds)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(format_stats(summary, ds.manifest))
    if plot is not None:
        plot_stats(summary, [len(m) for m in ds.train + ds.valid], plot)
        if not as_json:
            click.echo(f"wrote {plot}")


def format_stats(summary: dict[str, Any], manifest: dict[str, Any]) -> str:
    """The text report of ``rltuner data stats``."""
    from rltuner.encoding import NUM_CLASSES, class_name

    length = summary["length"]
    lines = [
        f"melodies {summary['melodies']:,} (train {summary['train']:,}, valid {summary['valid']:,}), "
        f"steps {summary['steps']:,}, notes {summary['notes']:,}",
        f"sources: {', '.join(s.get('name') or s.get('path', '?') for s in manifest.get('sources', []))}",
        f"length in steps: min {length['min']}, median {length['median']:.0f}, mean {length['mean']:.1f}, "
        f"max {length['max']}",
        "class histogram (share of all steps):",
    ]
    counts = summary["class_counts"]
    total = max(1, sum(counts))
    top = max(counts) or 1
    for cls in range(NUM_CLASSES):
        if counts[cls]:
            bar = "#" * max(1, round(40 * counts[cls] / top))
            lines.append(f"  {cls:>2} {class_name(cls):>4} {100 * counts[cls] / total:6.2f}% {bar}")
    intervals = {int(k): v for k, v in summary["interval_counts"].items()}
    n = max(1, sum(intervals.values()))
    lines.append("intervals between consecutive notes (semitones, share of all intervals):")
    for k in range(-12, 13):
        if intervals.get(k):
            lines.append(f"  {k:+3d} {100 * intervals[k] / n:6.2f}%")
    wide = sum(v for k, v in intervals.items() if abs(k) > 12)
    lines.append(f"  wider than an octave: {100 * wide / n:.2f}%")
    return "\n".join(lines)


def plot_stats(summary: dict[str, Any], lengths: list[int], path: Path) -> None:
    """Three panels (class histogram, length histogram, interval histogram) written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rltuner.encoding import NUM_CLASSES, class_name
    from rltuner.fileio import atomic_path

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    counts = summary["class_counts"]
    axes[0].bar(range(NUM_CLASSES), counts, color="tab:blue")
    axes[0].set_xticks(
        range(0, NUM_CLASSES, 4), [class_name(c) for c in range(0, NUM_CLASSES, 4)], rotation=45
    )
    axes[0].set_yscale("log")
    axes[0].set_title("classes (steps, log scale)")
    if lengths:
        axes[1].hist(lengths, bins=50, color="tab:green")
    axes[1].set_title(
        f"melody length (steps): median {summary['length']['median']:.0f}, max {summary['length']['max']}"
    )
    intervals = {int(k): v for k, v in summary["interval_counts"].items() if abs(int(k)) <= 12}
    axes[2].bar(list(intervals), list(intervals.values()), color="tab:orange")
    axes[2].set_title("intervals between notes (semitones)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
