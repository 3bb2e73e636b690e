"""Options shared by several sub-commands."""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from rltuner.devices import DEVICE_CHOICES
from rltuner.limits import MAX_SEED
from rltuner.threads import DEFAULT_THREADS, MAX_THREADS, THREADS_HELP

# Every --seed option: numpy and torch both take seeds in 0..2^63-1; click refuses others in one line.
SEED = click.IntRange(0, MAX_SEED)


def device_option(
    help: str = "Torch device (auto: cuda when available).", default: str | None = "cpu"
) -> Callable[[Any], Any]:
    """``--device cpu|cuda|auto``."""
    return click.option(
        "--device",
        type=click.Choice(DEVICE_CHOICES),
        default=default,
        show_default=default is not None,
        help=help,
    )


def domain_option(help: str = "Sequence domain") -> Callable[[Any], Any]:
    """``--domain music|molecules``: the choices are the domain table's (:data:`rltuner.domains.DOMAINS`)."""
    from rltuner.domains import DOMAINS

    listing = "; ".join(f"{e.name}: {e.title}" for e in DOMAINS.values())
    return click.option(
        "--domain",
        type=click.Choice(list(DOMAINS)),
        default="music",
        show_default=True,
        help=f"{help} ({listing}).",
    )


def threads_option(pass_value: bool = False, more_help: str = "") -> Callable[[Any], Any]:
    """``--threads N`` on a command that runs torch work: torch uses N CPU threads while the command runs.

    The count is applied (:func:`rltuner.threads.using_threads`) when the command starts, after its options
    parsed, and restored when it returns. With ``pass_value`` the command also receives it as ``threads`` (to
    put it in its config, which records it). ``more_help`` follows the shared help text (what else the count
    decides in this command). Place it below ``@click.command``, among the options.
    """

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def run_with_threads(*args: Any, threads: int, **kwargs: Any) -> Any:
            from rltuner.threads import using_threads

            with using_threads(threads):
                if pass_value:
                    kwargs["threads"] = threads
                return command(*args, **kwargs)

        option = click.option(
            "--threads", type=click.IntRange(0, MAX_THREADS), default=DEFAULT_THREADS, show_default=False,
            metavar="N", help=f"{THREADS_HELP} {more_help}".strip(),
        )  # fmt: skip
        return option(run_with_threads)

    return decorate


def quiet_option() -> Callable[[Any], Any]:
    """``--quiet/-q`` on every long-running command: no progress bar, only the result lines.

    ``--no-progress`` (pretrain's old spelling) is kept as an alias.
    """
    return click.option(
        "--quiet",
        "-q",
        "--no-progress",
        "quiet",
        is_flag=True,
        help="No progress bar; print only the results.",
    )


@contextlib.contextmanager
def progress_lines_hidden(quiet: bool) -> Iterator[None]:
    """With ``quiet``, rltuner's progress lines (its INFO log: "stage ... ", "tune/q: done in ...") are held
    back inside; warnings and errors still show, and ``-v`` (debug) keeps everything."""
    logger = logging.getLogger("rltuner")
    level = logger.level
    if quiet and level == logging.INFO:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def samples_option(help: str, default: int | None = None) -> Callable[[Any], Any]:
    """``-n/--samples N``: the number of sequences, the same meaning on every command."""
    return click.option(
        "-n", "--samples", "samples", type=click.IntRange(1), default=default, show_default=default is not None,
        help=help,
    )  # fmt: skip


def config_option(target: str, record: str = "a JSON file of the same names") -> Callable[[Any], Any]:
    """``--config FILE``: settings read from a TOML file or ``record`` (flags given override it)."""
    return click.option(
        "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help=f"Read {target} settings from a TOML file (name = value) or {record}; options given "
        "on the command line override the file.",
    )  # fmt: skip


def rules_option() -> Callable[[Any], Any]:
    """``--rule MODULE:FUNCTION``: a user music-theory rule, imported and registered (repeatable)."""
    return click.option(
        "--rule", "--rules", "rules", multiple=True, metavar="MODULE:FUNCTION",
        help="Music: add your own reward rule, a function of a module or a file (my_rules:strong_beats, "
        "rules.py:strong_beats; NAME=... to rename it, ...@W for weight W); repeatable. See docs/rewards.md.",
    )  # fmt: skip


def given(ctx: click.Context, name: str) -> bool:
    """True when the parameter ``name`` was given on the command line (not a default)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source not in (
        click.core.ParameterSource.DEFAULT,
        click.core.ParameterSource.DEFAULT_MAP,
    )
