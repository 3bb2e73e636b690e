"""Load any samplable model from its checkpoint: a prior (``models``) or a tuned policy (``rl``).

This module sits above both packages, so neither imports the other to dispatch on a checkpoint's kind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import torch

from rltuner.errors import CheckpointError
from rltuner.models.checkpoint import load_prior, read_meta
from rltuner.models.prior import Prior


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Prior:
    """Load any samplable model: a prior, or a tuned model (dispatched on the checkpoint's ``kind``).

    Args:
        path: a ``.safetensors`` checkpoint, or a run folder holding ``model.safetensors``.
        device: where to put it.

    Raises:
        CheckpointError: as :func:`~rltuner.models.checkpoint.load_prior`, or an unknown kind.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    meta = read_meta(p)
    kind = meta.get("kind")
    if kind == "prior":
        return load_prior(p, device)[0]
    if kind == "tuned":
        from rltuner.rl.policy import load_policy

        # A TunedPolicy follows the Prior interface without subclassing Prior.
        return cast(Prior, load_policy(p).to(device))
    raise CheckpointError(f"{p} is a checkpoint of unknown kind {kind!r} (expected 'prior' or 'tuned')")
