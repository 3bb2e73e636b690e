"""Entry point of the ``rltuner`` command.

Sub-commands live in their own modules and are imported lazily, so ``rltuner --help`` is instant and one
sub-command never pays for another's imports (torch, music21). That also lets :func:`main` set OpenMP's wait
policy before torch loads (:mod:`rltuner.threads`).
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Any

import click

from rltuner.errors import RLTunerError
from rltuner.threads import set_passive_wait_policy

# name -> ("module:attribute", one-line help). Each attribute is a click command or group.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("rltuner.cli.run:run", "The main job: tune, evaluate and write a report (make demo)."),
    "data": ("rltuner.cli.data:data", "Build a dataset: folk tunes / MIDI files, or MOSES / SMILES files."),
    "render": ("rltuner.cli.render:render", "Write melodies (.mid/.npy) as MIDI, WAV and piano-roll PNG."),
    "pretrain": (
        "rltuner.cli.pretrain:pretrain",
        "Train a prior (Note RNN, SMILES LSTM) by maximum likelihood.",
    ),
    "generate": (
        "rltuner.cli.generate:generate",
        "Sample melodies or molecules from a prior or a tuned model.",
    ),
    "score": ("rltuner.cli.score:score", "Music-theory reward and Table 1 statistics of melodies."),
    "tune": ("rltuner.cli.tune:tune", "RL-tune a prior: Q, Psi, G, RL-only, REINFORCE-KL, RLOO or DAP."),
    "evaluate": (
        "rltuner.cli.evaluate:evaluate",
        "Sample from models and compare them (Table 1 / MOSES, KL...).",
    ),
    "compare": (
        "rltuner.cli.compare:compare",
        "Off- against on-policy KL control at one budget: Pareto figure, table, verdict.",
    ),
    "study": (
        "rltuner.cli.study:study",
        "Listening study: blind A/B pairs, a rating web app, analysis, a learned reward.",
    ),
    "sweep": (
        "rltuner.cli.sweep:sweep",
        "Search tuning settings on Ray Tune for the goal rows: trial table, best config, Pareto plot.",
    ),
    "bench": ("rltuner.cli.bench:bench", "Measure every speed figure and rewrite BENCHMARKS.md."),
}


class LazyGroup(click.Group):
    """A group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        target, _ = COMMANDS[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                return None  # not built yet in this version
            raise
        command: click.Command = getattr(module, attr)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, short) for name, (_, short) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="rltuner")
@click.option(
    "-v", "--verbose", is_flag=True,
    help="Log debugging details: the settings each command resolved, every file written, why a stage runs or "
    "is skipped.",
)  # fmt: skip
def cli(verbose: bool) -> None:
    """rltuner: tune a trained sequence model with reinforcement learning (RL Tuner, Jaques et al.).

    Every command works on melodies (the default) and on molecules (--domain molecules). Long-running
    commands take -q/--quiet (no progress bar), -n/--samples is always a number of sequences, and tune, run,
    compare and pretrain read settings from a file with --config FILE. Every command's --help ends with
    examples.

    \b
    Examples:
      rltuner run --quick --out out/quick
      rltuner -v tune -a g --steps 100000 --out runs/g
      rltuner generate --model runs/g -n 8 --out samples/g
    """
    # rltuner's own debug lines only: other libraries' (matplotlib, PIL, ...) stay at their usual level
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("rltuner").setLevel(logging.DEBUG if verbose else logging.INFO)


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; user errors become one line on stderr and exit status 2 (1 for an interruption)."""
    # Waiting OpenMP threads sleep instead of spinning (unless the user chose): read once, when torch loads.
    set_passive_wait_policy()
    try:
        rv = cli.main(args=argv, prog_name="rltuner", standalone_mode=False)
        if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
            sys.exit(rv)  # ctx.exit(code) in a sub-command
        return rv
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except RLTunerError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted: what was done is saved", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
