"""The molecule domain (Sequence Tutor's second experiment): a SMILES prior, the chemistry reward, ``<bos>``
primers, episodes that end at ``<eos>`` or after :data:`~rltuner.domains.molecules.smiles.MAX_LENGTH` tokens.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from rltuner.domains.base import Domain
from rltuner.domains.molecules.smiles import BOS_ID, EOS_ID, MAX_LENGTH, PAD_ID, Vocabulary
from rltuner.errors import CheckpointError, ConfigError

DEFAULT_PRIOR_FILE = "smiles_rnn.safetensors"


def default_smiles_prior_path() -> Path:
    """The SMILES LSTM shipped inside the package.

    Raises:
        CheckpointError: this install has no shipped SMILES prior.
    """
    path = Path(str(resources.files("rltuner").joinpath("assets", DEFAULT_PRIOR_FILE)))
    if not path.is_file():
        raise CheckpointError(f"no SMILES prior shipped with this install ({path} is missing)")
    return path


def vocabulary_of(meta: dict[str, Any], source: str) -> Vocabulary:
    """The SMILES vocabulary recorded in a checkpoint's metadata.

    Raises:
        CheckpointError: the checkpoint is not a SMILES model (no vocabulary).
    """
    tokens = meta.get("vocabulary")
    if not isinstance(tokens, list) or not tokens:
        raise CheckpointError(f"{source} is not a SMILES model: it records no vocabulary (a melody model?)")
    try:
        return Vocabulary(tuple(str(t) for t in tokens))
    except ConfigError as exc:
        raise CheckpointError(f"{source} has a broken vocabulary: {exc}") from None


def load_smiles_model(
    path: str | os.PathLike[str] | None = None, device: str = "cpu"
) -> tuple[Any, Vocabulary]:
    """A SMILES prior or tuned model and its vocabulary (None: the shipped prior).

    Raises:
        CheckpointError: unreadable, or not a SMILES model.
    """
    from rltuner.loading import load_model, resolve_model_path
    from rltuner.models.checkpoint import read_meta

    p = resolve_model_path(path) if path is not None else default_smiles_prior_path()
    meta = read_meta(p)
    if meta.get("kind") == "tuned":
        domain_meta = meta.get("domain_meta") or {}
        vocab = vocabulary_of(domain_meta if isinstance(domain_meta, dict) else {}, str(p))
    else:
        vocab = vocabulary_of(meta, str(p))
    model = load_model(p, device)
    if int(model.vocab_size) != len(vocab):
        raise CheckpointError(
            f"{p}: the model's {model.vocab_size} outputs do not fit its {len(vocab)} tokens"
        )
    return model, vocab


def bos_primers(n: int, rng: np.random.Generator) -> np.ndarray:
    """Every molecule starts from ``<bos>``."""
    return np.full(n, BOS_ID, dtype=np.int64)


class SmilesReward:
    """The chemistry reward behind the step-wise :class:`~rltuner.domains.base.SequenceReward` protocol.

    r_T is paid at an episode's last step: when it plays ``<eos>``, or at step ``max_length - 1`` without one
    (then the string was truncated and is invalid); every other step pays 0. A ``<bos>`` or ``<pad>`` played
    inside a molecule makes it invalid. The molecules that end at one step are scored together (one RDKit
    batch, cached by :class:`~rltuner.domains.molecules.reward.MoleculeReward`).

    ``last_terms`` holds the weighted terms of every molecule finished since the last :meth:`reset`.
    """

    def __init__(self, vocab: Vocabulary, scorer: Any, max_length: int = MAX_LENGTH) -> None:
        self.vocab = vocab
        self.scorer = scorer
        self.max_length = max_length
        self.finished: list[dict[str, float]] = []

    def reset(self, batch_size: int) -> dict[str, Any]:
        self.finished = []
        return {"tokens": [[] for _ in range(batch_size)], "done": np.zeros(batch_size, bool), "t": 0}

    def step(self, state: dict[str, Any], actions: np.ndarray) -> np.ndarray:
        t = state["t"]
        done = state["done"]
        rewards = np.zeros(len(actions), dtype=np.float64)
        ending = []
        for i in np.flatnonzero(~done):
            a = int(actions[i])
            if a == EOS_ID or t == self.max_length - 1:
                ending.append(i)
                if a != EOS_ID:
                    state["tokens"][i].append(a)
            else:
                state["tokens"][i].append(a)
        if ending:
            strings, broken = [], np.zeros(len(ending), dtype=bool)
            for k, i in enumerate(ending):
                ids = state["tokens"][i]
                broken[k] = int(actions[i]) != EOS_ID or any(x in (PAD_ID, BOS_ID) for x in ids)
                strings.append("".join(self.vocab.tokens[x] for x in ids if x > EOS_ID))
            total, terms = self.scorer(strings, truncated=broken)
            rewards[ending] = total
            done[ending] = True
            names = list(terms)
            for k in range(len(ending)):
                self.finished.append({n: float(terms[n][k]) for n in names})
        state["t"] = t + 1
        return rewards


def decode_batch(tokens: np.ndarray, vocab: Vocabulary) -> tuple[list[str], np.ndarray]:
    """Sampled ids (n, L) -> the strings before ``<eos>`` and whether each is broken (no ``<eos>``, or a
    ``<bos>``/``<pad>`` inside). Broken strings are returned as generated (special tokens left out)."""
    strings, broken = [], np.zeros(len(tokens), dtype=bool)
    for r, row in enumerate(np.asarray(tokens, dtype=np.int64)):
        ends = np.flatnonzero(row == EOS_ID)
        body = row[: ends[0]] if ends.size else row
        broken[r] = ends.size == 0 or bool(np.isin(body, (PAD_ID, BOS_ID)).any())
        strings.append("".join(vocab.tokens[x] for x in body.tolist() if x > EOS_ID))
    return strings, broken


def molecule_score_range(cfg: Any) -> tuple[float, float]:
    """The range of r_T that ``dap``'s sequence score S maps onto [0, 1] (``docs/onpolicy.md``).

    Low: an invalid string (``-w_invalid``); high: a valid molecule with perfect QED, SA and logP and no
    penalty (``w_valid + w_qed + w_sa + w_logp * logp_max / logp_scale``; 4.5 with the defaults). Molecules
    that collect penalties below the invalid score are clipped to S = 0.
    """
    w = cfg.weights
    high = w.valid + w.qed + w.sa + w.logp * cfg.logp_max / cfg.logp_scale
    return -w.invalid, high


def molecule_domain(
    prior: Any = None,
    *,
    vocab: Vocabulary | None = None,
    reward_config: Any = None,
    max_length: int = MAX_LENGTH,
    device: str = "cpu",
) -> Domain:
    """The SMILES domain of Sequence Tutor.

    Args:
        prior: a SMILES Prior module (then give ``vocab``), a checkpoint path, or None for the shipped prior.
        vocab: the vocabulary of a prior given as a module.
        reward_config: a ``MoleculeRewardConfig`` (None: the spec's defaults).
        max_length: the most tokens per molecule, ``<eos>`` included.
        device: where to load a prior given by path.

    Raises:
        ConfigError: parts that do not fit. CheckpointError: the prior cannot be loaded.
        RLTunerError: RDKit is missing.
    """
    from rltuner.config import to_dict
    from rltuner.domains.molecules.corpus import require_rdkit

    require_rdkit()
    from rltuner.domains.molecules.reward import MoleculeReward, MoleculeRewardConfig

    if prior is None or isinstance(prior, (str, os.PathLike)):
        model, vocab = load_smiles_model(prior, device)
    else:
        if vocab is None:
            raise ConfigError("a SMILES prior given as a module needs its vocabulary (vocab=...)")
        model = prior
    if not 2 <= max_length <= 10_000:
        raise ConfigError(f"max_length must be in 2..10000, not {max_length}")
    cfg = reward_config if reward_config is not None else MoleculeRewardConfig()
    cfg.validate()
    scorer = MoleculeReward(cfg)  # one cache shared by every episode batch of the run
    assert vocab is not None

    def make_reward() -> SmilesReward:
        return SmilesReward(vocab, scorer, max_length)

    def reward_parts(actions: np.ndarray, mask: np.ndarray, primers: np.ndarray) -> dict[str, float]:
        # r_T is paid once per episode; per played step, like the tuner's mean task reward, they add up to it
        strings, broken = decode_batch(actions, vocab)
        _, terms = scorer(strings, truncated=broken)
        steps = max(float(np.asarray(mask).sum()), 1.0)
        return {name: float(values.sum()) / steps for name, values in terms.items()}

    domain = Domain(
        name="molecules", vocab_size=len(vocab), prior=model, make_reward=make_reward,
        sample_primers=bos_primers, episode_length=max_length, eos_token=EOS_ID, pad_token=PAD_ID,
        meta={"primer": "<bos>", "max_length": max_length, "vocabulary": list(vocab.tokens)},
        reward_config={"molecules": to_dict(cfg)}, score_range=molecule_score_range(cfg),
        reward_parts=reward_parts,
    )  # fmt: skip
    domain.validate()
    return domain
