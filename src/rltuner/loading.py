"""Load any samplable model from its checkpoint: a prior (``models``) or a tuned policy (``rl``).

This module sits above both packages, so neither imports the other to dispatch on a checkpoint's kind. It is
also the one place that says what a model argument may name (:func:`resolve_model_path`): ``generate``,
``evaluate``, the molecule domain and :func:`load_model` all read it, so they accept the same things.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import torch

from rltuner.errors import CheckpointError
from rltuner.models.checkpoint import load_prior, read_meta
from rltuner.models.prior import Prior
from rltuner.rl.tuner import MODEL_FILE  # the file a tuning run folder holds its model in


def resolve_model_path(path: str | os.PathLike[str]) -> Path:
    """The checkpoint file a model argument names.

    Args:
        path: a checkpoint file (returned as given), or a tuning run folder holding ``model.safetensors``
            (``rltuner tune --out runs/q`` writes ``runs/q/model.safetensors``).

    Raises:
        CheckpointError: nothing at ``path``, or a folder without ``model.safetensors`` (for an
            ``rltuner run`` folder the message names its tuned models' folders).
    """
    p = Path(path)
    if not p.is_dir():
        if not p.exists():
            raise CheckpointError(f"checkpoint {p} does not exist")
        return p
    inner = p / MODEL_FILE
    if inner.is_file():
        return inner
    runs = sorted(str(d.parent) for d in p.glob(f"tune/*/{MODEL_FILE}"))
    if runs:
        raise CheckpointError(
            f"{p} is an 'rltuner run' folder: pass one of its tuned models, {', '.join(runs)}"
        )
    raise CheckpointError(
        f"{p} is a folder without {MODEL_FILE}; pass a checkpoint file or a tuning run folder"
    )


def load_model(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Prior:
    """Load any samplable model: a prior, or a tuned model (dispatched on the checkpoint's ``kind``).

    Args:
        path: a ``.safetensors`` checkpoint, or a tuning run folder holding ``model.safetensors``
            (see :func:`resolve_model_path`).
        device: where to put it.

    Raises:
        CheckpointError: as :func:`resolve_model_path` and :func:`~rltuner.models.checkpoint.load_prior`, or
            an unknown kind.
    """
    p = resolve_model_path(path)
    meta = read_meta(p)
    kind = meta.get("kind")
    if kind == "prior":
        return load_prior(p, device)[0]
    if kind == "tuned":
        from rltuner.rl.policy import load_policy

        # A TunedPolicy follows the Prior interface without subclassing Prior.
        return cast(Prior, load_policy(p).to(device))
    raise CheckpointError(f"{p} is a checkpoint of unknown kind {kind!r} (expected 'prior' or 'tuned')")
