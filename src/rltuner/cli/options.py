"""Options shared by several sub-commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from rltuner.devices import DEVICE_CHOICES


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
