"""What the RL core knows of a domain: a vocabulary, a prior, a reward, a primer distribution, a length.

Nothing musical lives in the core (``env``, ``replay``, ``targets``, ``tuner``); a domain plugs in through a
:class:`Domain`. Music is the first one (:mod:`rltuner.rl.music`); a SMILES generator could be another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from rltuner.errors import ConfigError

State = tuple[torch.Tensor, ...]


@runtime_checkable
class PriorLike(Protocol):
    """The prior interface of ``docs/architecture.md`` (a ``torch.nn.Module`` in practice)."""

    vocab_size: int

    def initial_state(self, batch_size: int, device: Any = None) -> State: ...

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]: ...

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]: ...

    def model_config(self) -> dict[str, Any]: ...


class SequenceReward(Protocol):
    """A reward over batches of sequences, computed one step at a time with an explicit per-sequence state."""

    def reset(self, batch_size: int) -> Any: ...

    def step(self, state: Any, actions: np.ndarray) -> np.ndarray: ...


PrimerSampler = Callable[[int, np.random.Generator], np.ndarray]
"""``sample(n, rng) -> (n,) int64``: the token fed as the first input of each episode (not part of it)."""


@dataclass(frozen=True)
class Domain:
    """Everything the tuner needs to know about a sequence domain.

    Attributes:
        name: a label written into checkpoints and logs.
        vocab_size: number of tokens (actions); the prior's outputs have this size.
        prior: the trained model (a ``torch.nn.Module`` following the Prior interface). The tuner copies it
            into the Q-network and the target network and keeps it frozen as the Reward RNN.
        make_reward: builds a fresh :class:`SequenceReward` (one per environment).
        sample_primers: draws the first input token of each episode.
        episode_length: number of actions per episode (32 for melodies).
        meta: domain settings worth recording in checkpoints (JSON-able).
    """

    name: str
    vocab_size: int
    prior: Any
    make_reward: Callable[[], SequenceReward]
    sample_primers: PrimerSampler
    episode_length: int
    meta: dict[str, Any] | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` if the parts do not fit together (e.g. a prior of another vocabulary)."""
        if self.episode_length < 1:
            raise ConfigError(f"episode length must be at least 1, got {self.episode_length}")
        prior_vocab = getattr(self.prior, "vocab_size", None)
        if prior_vocab != self.vocab_size:
            raise ConfigError(
                f"the prior's vocabulary ({prior_vocab}) does not match the {self.name} domain's "
                f"({self.vocab_size} tokens)"
            )
        for method in ("initial_state", "forward", "step", "model_config"):
            if not callable(getattr(self.prior, method, None)):
                raise ConfigError(
                    f"the prior has no {method}() method: it does not follow the Prior interface"
                )
