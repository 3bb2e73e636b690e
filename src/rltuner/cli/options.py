"""Options shared by several sub-commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from rltuner.devices import DEVICE_CHOICES
from rltuner.limits import MAX_SEED

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
