"""What the RL core knows of a domain: a vocabulary, a prior, a task reward, primers, a length, an end token.

Nothing domain-specific lives in the core (``rl/``: env, replay, targets, tuner); a domain plugs in through a
:class:`Domain`. Music (:mod:`rltuner.domains.music`, fixed 32-step melodies) and molecules
(:mod:`rltuner.domains.molecules`, SMILES ending at ``<eos>``) are the two; :mod:`rltuner.domains` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast, runtime_checkable

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
    """A task reward over batches of sequences, computed one step at a time with an explicit per-sequence state.

    ``step`` is called once per step for every episode of the batch, also for episodes that have ended
    (their action is then the domain's ``pad_token``); what it returns for those is ignored.
    """

    def reset(self, batch_size: int) -> Any: ...

    def step(self, state: Any, actions: np.ndarray) -> np.ndarray: ...


class PrimerHearingReward(Protocol):
    """A task reward that judges each sequence with its primer first (a domain's ``reward_hears_primer``):
    ``reset`` takes the primers, (B,) int64, the tokens the episodes are fed first."""

    def reset(self, batch_size: int, primers: np.ndarray) -> Any: ...

    def step(self, state: Any, actions: np.ndarray) -> np.ndarray: ...


def reset_reward(reward: Any, batch_size: int, primers: np.ndarray, hears_primer: bool) -> Any:
    """``reward.reset``, given the primers when the reward hears them: what every environment calls."""
    if hears_primer:
        return cast(PrimerHearingReward, reward).reset(batch_size, primers)
    return cast(SequenceReward, reward).reset(batch_size)


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
        episode_length: the most actions an episode has (32 for melodies, 100 for SMILES).
        eos_token: the action that ends an episode early (``<eos>``), or None: every episode runs
            ``episode_length`` steps (music). The end token itself is the last action of its episode.
        pad_token: the input fed (and the action recorded) after an episode ended; never in a loss.
        reward_config: the task reward's settings as JSON (recorded in run configs and checkpoints, and
            used again by evaluation).
        meta: more domain settings worth recording in checkpoints (JSON-able).
        reward_parts: ``parts(actions, mask, primers) -> {name: value}``: the task reward's terms (rules), each
            as its mean per played step over the episodes (``actions`` (B, L) int64, ``mask`` (B, L) bool:
            played steps, ``primers`` (B,) int64); logged to TensorBoard. None when the reward has no named
            parts.
        reward_hears_primer: the task reward judges each sequence with its primer first (TuneConfig's
            ``reward_primer``), so :meth:`SequenceReward.reset` must be given the primers.
        with_primer_reward: builds this domain with a task reward that hears the primer
            (:meth:`for_reward_primer`); None: the domain has no such reward.
        score_range: ``(low, high)`` of an episode's task return (the sum of its task reward) that
            :meth:`score` maps onto [0, 1], the sequence score S of REINVENT's augmented likelihood (``dap``);
            None when the domain defines no score.
    """

    name: str
    vocab_size: int
    prior: Any
    make_reward: Callable[[], SequenceReward]
    sample_primers: PrimerSampler
    episode_length: int
    meta: dict[str, Any] | None = None
    eos_token: int | None = None
    pad_token: int = 0
    reward_config: dict[str, Any] | None = None
    score_range: tuple[float, float] | None = None
    reward_parts: Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, float]] | None = None
    reward_hears_primer: bool = False
    with_primer_reward: Callable[[], Domain] | None = None

    def for_reward_primer(self, on: bool) -> Domain:
        """This domain with a task reward that hears the primer (``on``) or the plain one (``not on``).

        Raises:
            ConfigError: ``on`` for a domain without such a reward, or ``not on`` for one that has only it.
        """
        if on == self.reward_hears_primer:
            return self
        if on and self.with_primer_reward is not None:
            return self.with_primer_reward()
        if on:
            raise ConfigError(f"reward_primer applies to the music domain, not to {self.name}")
        raise ConfigError(
            f"this {self.name} domain's reward hears the primer, but reward_primer is false: build the "
            "domain without it"
        )

    def score(self, task_return: torch.Tensor) -> torch.Tensor:
        """The sequence score ``S = clip((R - low) / (high - low), 0, 1)`` of task returns R: (B,) -> (B,).

        Raises:
            ConfigError: the domain defines no score range.
        """
        if self.score_range is None:
            raise ConfigError(f"the {self.name} domain defines no score range (Domain.score_range)")
        low, high = self.score_range
        return ((task_return - low) / (high - low)).clamp(0.0, 1.0)

    def validate(self) -> None:
        """Raise :class:`ConfigError` if the parts do not fit together (e.g. a prior of another vocabulary)."""
        if self.score_range is not None and not self.score_range[0] < self.score_range[1]:
            raise ConfigError(f"score_range must be (low, high) with low < high, got {self.score_range}")
        if self.episode_length < 1:
            raise ConfigError(f"episode length must be at least 1, got {self.episode_length}")
        for name in ("eos_token", "pad_token"):
            token = getattr(self, name)
            if token is not None and not 0 <= token < self.vocab_size:
                raise ConfigError(f"{name} {token} is outside the vocabulary (0..{self.vocab_size - 1})")
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
