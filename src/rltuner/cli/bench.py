"""``rltuner bench``: measure every speed figure named in the issues and rewrite this machine's part of BENCHMARKS.md."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from rltuner.benchmarks import suite
from rltuner.cli.options import quiet_option, threads_option


@click.command(
    epilog="""
Examples:

\b
  rltuner bench --quick --out /tmp/bench.md          # checks that every benchmark runs
  rltuner bench --only rewards --only rl             # re-measure two topics into BENCHMARKS.md
""",
)
@click.option(
    "--only",
    multiple=True,
    help=f"Run only these topics ({', '.join(suite.TOPICS)}); repeatable; the other topics' sections of --out are "
    "kept. Default: all.",
)
@click.option(
    "--quick",
    is_flag=True,
    help="Tiny sizes: checks that the benchmarks run. Its figures replace this machine's sections of --out like "
    "any run's, so give it another --out.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("BENCHMARKS.md"),
    show_default=True,
    help="Markdown file to (re)write. Each topic keeps the latest section of every machine (CPU model, AMX or "
    "not, and cores, and the GPU when one is used); this run replaces only this machine's sections of the topics it measures.",
)
@threads_option()
@quiet_option()
def bench(only: tuple[str, ...], quick: bool, out: Path, quiet: bool) -> None:
    """Run the benchmark suite in one process and write the results with machine, date and command.

    The file keeps figures from several machines: per topic, each machine's latest section (its key is the CPU
    model, whether it has AMX, and the core count, and the GPU when one is used), this machine's first; a top line lists the machines and their topics.

    Torch runs with --threads (the default policy, as every command); the threads topic measures the policies
    themselves, each in a fresh process, quiet and beside a CPU burner.
    """
    from rltuner.benchmarks.suite import TOPICS, check_output_file, run_topics, write_benchmarks

    unknown = [t for t in only if t not in TOPICS]
    if unknown:
        raise click.BadParameter(f"unknown topic(s) {', '.join(unknown)}; choose from {', '.join(TOPICS)}")
    topics = list(only) or list(TOPICS)
    check_output_file(out)  # before the minutes of measuring
    results = run_topics(topics, quick=quick, progress=not quiet)
    command = "rltuner " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "rltuner bench"
    write_benchmarks(out, results, command=command, keep_others=bool(only))
    click.echo(f"wrote {out}")
    for topic, items in results.items():
        if isinstance(items, str):
            click.echo(f"{topic}: {items}", err=True)
            continue
        for r in items:
            met = "" if r["met"] is None else (" [met]" if r["met"] else " [NOT MET]")
            click.echo(f"{topic}: {r['name']}: {r['value']:.4g} {r['unit']} (goal {r['goal'] or '-'}){met}")
