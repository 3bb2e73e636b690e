"""Sampling SMILES strings from a prior or a tuned model (``rltuner generate --domain molecules``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from rltuner.domains.molecules.domain import decode_batch
from rltuner.domains.molecules.smiles import BOS_ID, EOS_ID, MAX_LENGTH, PAD_ID, Vocabulary
from rltuner.errors import ConfigError


def sample_smiles(
    model: Any,
    vocab: Vocabulary,
    n: int,
    *,
    seed: int | None = None,
    temperature: float = 1.0,
    max_length: int = MAX_LENGTH,
    reference: Any = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Sample ``n`` molecules, each from ``<bos>`` to ``<eos>`` (at most ``max_length`` tokens).

    Args:
        model: a SMILES Prior or tuned policy.
        vocab: its vocabulary.
        n: how many strings.
        seed: same seed, same strings (on one machine).
        temperature: divides the logits.
        max_length: tokens per string, ``<eos>`` included; a string that reaches it is truncated (invalid).
        reference: a model (the prior) whose log p and KL to score each sampled token with.
        progress: called with the number of strings of each sampled batch (a progress bar's ``update``).

    Returns:
        ``smiles`` (n strings in sampling order, broken ones as generated), ``broken`` (n,) bool (truncated, or a
        special token inside), ``tokens`` (n, max_length) ids, ``mask`` (n, max_length) bool, and with a
        reference ``ref_log_p`` and ``kl`` (n, max_length).
    """
    from rltuner.models.sampling import sample_scored

    if n < 1:
        raise ConfigError(f"the number of molecules must be at least 1, got {n}")
    if int(model.vocab_size) != len(vocab):
        raise ConfigError(f"the model has {model.vocab_size} outputs, the vocabulary {len(vocab)} tokens")
    drawn = sample_scored(
        model, n, max_length, reference=reference, temperature=temperature,
        primer=np.full((n, 1), BOS_ID, dtype=np.int64), seed=seed, stop_token=EOS_ID, pad_token=PAD_ID,
        progress=progress,
    )  # fmt: skip
    smiles, broken = decode_batch(drawn.melodies, vocab)
    out: dict[str, Any] = {"smiles": smiles, "broken": broken, "tokens": drawn.melodies, "mask": drawn.mask}
    if reference is not None:
        out["ref_log_p"], out["kl"] = drawn.ref_log_p, drawn.kl
    return out
