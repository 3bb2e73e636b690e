"""Where torch work runs: one resolver for every command (``cpu``, ``cuda`` or ``auto``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rltuner.errors import ConfigError

if TYPE_CHECKING:
    import torch

DEVICE_CHOICES = ("cpu", "cuda", "auto")


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a :class:`ConfigError`."""
    import torch

    if name not in DEVICE_CHOICES:
        raise ConfigError(f"device must be one of {', '.join(DEVICE_CHOICES)}, not {name!r}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device cuda was asked for, but torch sees no CUDA GPU here (use cpu or auto)")
    return torch.device(name)
