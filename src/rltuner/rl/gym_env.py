"""The tuning task as a gymnasium environment, so agents from other libraries can be tried on it.

:class:`SequenceEnv` is one episode of a :class:`~rltuner.domains.base.Domain`: the observation is the last
token (the primer first), an action is the next token, the episode ends at the domain's end token or after
``episode_length`` actions (``terminated``; nothing is truncated). The reward is the paper's
``log p(a|s) + r_T / c`` (Eq. 3), or ``r_T / c`` with ``log_prior=False``; ``info`` carries both parts,
``task_reward`` and ``log_p``, so an agent can mix them as it likes. The frozen prior supplies ``log p`` and is
stepped with its own recurrent state, like the prior of :class:`~rltuner.rl.env.BatchedEnv`.

:class:`BatchedVectorEnv` gives ``n`` episodes as a ``gymnasium.vector.VectorEnv`` that steps them together,
as the tuner's :class:`~rltuner.rl.env.BatchedEnv` does: one batched prior step and one batched task-reward step
per call, whatever ``n``. Each episode restarts on its own with gymnasium's next-step autoreset.
:func:`sequence_vector_env` builds it (or, with ``batched=False``, a ``SyncVectorEnv`` of :class:`SequenceEnv`,
which steps each episode's prior with batch 1). Needs the ``gym`` extra (``pip install 'rltuner[gym]'``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rltuner.domains.base import Domain, reset_reward
from rltuner.errors import ConfigError, RLTunerError

try:
    import gymnasium
    from gymnasium import spaces
except ImportError:  # pragma: no cover - the extra is part of the test install
    raise RLTunerError("the gymnasium adapter needs gymnasium: pip install 'rltuner[gym]'") from None


class SequenceEnv(gymnasium.Env[np.int64, np.int64]):
    """One episode of a domain at a time, behind gymnasium's ``Env`` API.

    Args:
        domain: the prior, task reward, primers, length and end token.
        reward_scale: c of ``r_T / c``.
        log_prior: add ``log p(a|s)`` to the reward (the paper's RL Tuner reward).
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012 (gymnasium declares it so)

    def __init__(self, domain: Domain, reward_scale: float = 0.5, log_prior: bool = True) -> None:
        if not reward_scale > 0:
            raise ConfigError(f"reward_scale (c) must be positive, got {reward_scale}")
        domain.validate()
        self.domain = domain
        self.reward_scale = reward_scale
        self.log_prior = log_prior
        self.observation_space = spaces.Discrete(domain.vocab_size)
        self.action_space = spaces.Discrete(domain.vocab_size)
        self._reward = domain.make_reward()
        self._reward_state: Any = None
        self._prior_state: Any = None
        self._prior_log_p: torch.Tensor | None = None  # (V,) log p(.|s) at the current state
        self._t = 0

    @torch.no_grad()
    def _advance_prior(self, token: int) -> None:
        logits, self._prior_state = self.domain.prior.step(torch.tensor([token]), self._prior_state)
        self._prior_log_p = torch.log_softmax(logits.float(), dim=-1)[0]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        """Start an episode: the observation is its primer (drawn with the env's ``np_random``)."""
        super().reset(seed=seed)
        primer = int(np.asarray(self.domain.sample_primers(1, self.np_random), dtype=np.int64)[0])
        self._reward_state = reset_reward(
            self._reward, 1, np.array([primer], dtype=np.int64), self.domain.reward_hears_primer
        )
        self._prior_state = self.domain.prior.initial_state(1)
        self._advance_prior(primer)
        self._t = 0
        return np.int64(primer), {}

    def step(self, action: Any) -> tuple[np.int64, float, bool, bool, dict[str, Any]]:
        """Play one token; returns ``(token, reward, terminated, truncated, info)``."""
        if self._prior_log_p is None:
            raise RLTunerError("call reset() before step()")
        a = int(action)
        if not 0 <= a < self.domain.vocab_size:
            raise ConfigError(f"action {a} is outside the vocabulary (0..{self.domain.vocab_size - 1})")
        log_p = float(self._prior_log_p[a])
        task = float(self._reward.step(self._reward_state, np.array([a], dtype=np.int64))[0])
        self._t += 1
        terminated = self._t >= self.domain.episode_length or a == self.domain.eos_token
        self._advance_prior(a)
        reward = task / self.reward_scale + (log_p if self.log_prior else 0.0)
        return np.int64(a), reward, terminated, False, {"task_reward": task, "log_p": log_p}


class _Cohort:
    """Episodes that started at the same step: they share one task-reward state (its step counter is common)."""

    def __init__(self, slots: np.ndarray, state: Any) -> None:
        self.slots = slots  # (k,) indices into the vector env
        self.state = state
        self.alive = np.ones(len(slots), dtype=bool)


class BatchedVectorEnv(gymnasium.vector.VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """``n_envs`` episodes of a domain stepped in lockstep, behind gymnasium's ``VectorEnv`` API.

    Observations are the last token of each episode (its primer after a reset); actions are the next tokens.
    Rewards, terminations and ``infos`` (``task_reward``, ``log_p`` with gymnasium's ``_task_reward`` /
    ``_log_p`` masks) are those of :class:`SequenceEnv`. Autoreset is next-step: the call after an episode
    terminated ignores its action, starts a new episode there and returns the primer with reward 0.

    Episodes that start at the same call share one task-reward state, so the reward runs batched (all
    episodes together for melodies, which all end at once). When episodes end at different steps (a domain
    with an end token), one episode's recurrent prior state is reset in place; a prior whose state grows with
    the sequence (the Transformer's key-value cache) cannot be, and is refused for such a domain.

    Args:
        domain: the prior, task reward, primers, length and end token.
        n_envs: episodes stepped together.
        reward_scale: c of ``r_T / c``.
        log_prior: add ``log p(a|s)`` to the reward (the paper's RL Tuner reward).

    Raises:
        ConfigError: ``n_envs < 1``, a nonsense reward scale, or a growing prior state with an end token.
    """

    metadata: dict[str, Any] = {"autoreset_mode": gymnasium.vector.AutoresetMode.NEXT_STEP}  # noqa: RUF012

    def __init__(
        self, domain: Domain, n_envs: int, reward_scale: float = 0.5, log_prior: bool = True
    ) -> None:
        if n_envs < 1:
            raise ConfigError(f"n_envs must be at least 1, got {n_envs}")
        if not reward_scale > 0:
            raise ConfigError(f"reward_scale (c) must be positive, got {reward_scale}")
        domain.validate()
        self.domain = domain
        self.num_envs = n_envs
        self.reward_scale = reward_scale
        self.log_prior = log_prior
        vocab = domain.vocab_size
        self.single_observation_space = spaces.Discrete(vocab)
        self.single_action_space = spaces.Discrete(vocab)
        self.observation_space = spaces.MultiDiscrete(np.full(n_envs, vocab))
        self.action_space = spaces.MultiDiscrete(np.full(n_envs, vocab))
        self._reward = domain.make_reward()
        self._device = next(iter(domain.prior.parameters())).device
        if domain.eos_token is not None and not self._state_is_fixed():
            raise ConfigError(
                "the batched vector env restarts episodes one by one in a domain with an end token, which "
                "needs a recurrent prior (LSTM, GRU); use sequence_vector_env(..., batched=False)"
            )
        self._rng = np.random.default_rng()
        self._prior_state: Any = None
        self._log_p: torch.Tensor | None = None  # (n, V) log p(.|s) at each episode's current state
        self._t = np.zeros(n_envs, dtype=np.int64)
        self._needs_reset = np.zeros(n_envs, dtype=bool)
        self._cohorts: list[_Cohort] = []
        self._cohort_of = np.zeros(n_envs, dtype=np.int64)  # slot -> index into its cohort's slots

    @torch.no_grad()
    def _state_is_fixed(self) -> bool:
        prior = self.domain.prior
        before = prior.initial_state(1, device=self._device)
        _, after = prior.step(torch.zeros(1, dtype=torch.int64, device=self._device), before)
        return all(a.shape == b.shape for a, b in zip(after, before, strict=True))

    def _start(self, slots: np.ndarray) -> np.ndarray:
        """New episodes at ``slots``: primers, a fresh reward state, a fresh prior state; returns the primers."""
        primers = np.asarray(self.domain.sample_primers(len(slots), self._rng), dtype=np.int64)
        state = reset_reward(self._reward, len(slots), primers, self.domain.reward_hears_primer)
        self._cohorts.append(_Cohort(slots, state))
        self._cohort_of[slots] = np.arange(len(slots))
        self._t[slots] = 0
        fresh = self.domain.prior.initial_state(len(slots), device=self._device)
        if len(slots) == self.num_envs:
            self._prior_state = fresh
        else:  # recurrent state with the batch on dimension 1 (checked in __init__)
            index = torch.as_tensor(slots, device=self._device)
            for current, new in zip(self._prior_state, fresh, strict=True):
                current[:, index] = new
        return primers

    @torch.no_grad()
    def _advance_prior(self, tokens: np.ndarray) -> None:
        inputs = torch.as_tensor(tokens, dtype=torch.int64, device=self._device)
        logits, self._prior_state = self.domain.prior.step(inputs, self._prior_state)
        self._log_p = torch.log_softmax(logits.float(), dim=-1).cpu()

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every episode; the observations are their primers."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        self._cohorts = []
        primers = self._start(np.arange(self.num_envs))
        self._advance_prior(primers)
        self._needs_reset[:] = False
        return primers, {}

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Play one token in every episode (or restart the ones that ended at the previous call)."""
        if self._log_p is None:
            raise RLTunerError("call reset() before step()")
        acts = np.asarray(actions, dtype=np.int64).reshape(-1)
        if acts.shape != (self.num_envs,):
            raise ConfigError(f"expected {self.num_envs} actions, got shape {np.shape(actions)}")
        if ((acts < 0) | (acts >= self.domain.vocab_size)).any():
            raise ConfigError(f"actions must be in 0..{self.domain.vocab_size - 1}, got {acts.tolist()}")
        played = ~self._needs_reset
        inputs = acts.copy()
        log_p = np.zeros(self.num_envs)
        task = np.zeros(self.num_envs)
        log_p[played] = self._log_p[np.flatnonzero(played), acts[played]].numpy()
        for cohort in self._cohorts:
            members = np.where(cohort.alive, acts[cohort.slots], self.domain.pad_token)
            values = self._reward.step(cohort.state, members)
            task[cohort.slots[cohort.alive]] = values[cohort.alive]
        self._t[played] += 1
        terminated = played & (self._t >= self.domain.episode_length)
        if self.domain.eos_token is not None:
            terminated |= played & (acts == self.domain.eos_token)
        for cohort in self._cohorts:
            cohort.alive &= ~terminated[cohort.slots]
        self._cohorts = [c for c in self._cohorts if c.alive.any()]
        restart = np.flatnonzero(self._needs_reset)
        if len(restart):
            inputs[restart] = self._start(restart)
        self._advance_prior(inputs)
        self._needs_reset = terminated
        rewards = np.where(played, task / self.reward_scale + (log_p if self.log_prior else 0.0), 0.0)
        infos = {"task_reward": task, "_task_reward": played.copy(), "log_p": log_p, "_log_p": played.copy()}
        return inputs, rewards, terminated, np.zeros(self.num_envs, dtype=bool), infos


def sequence_vector_env(
    domain: Domain,
    n_envs: int,
    reward_scale: float = 0.5,
    log_prior: bool = True,
    batched: bool = True,
) -> gymnasium.vector.VectorEnv:
    """``n_envs`` episodes of ``domain`` as a gymnasium vector env (observations: the last token of each).

    ``infos`` holds ``task_reward`` and ``log_p`` (arrays over the episodes, with gymnasium's ``_task_reward``
    masks). All episodes share the domain's prior module (frozen; only read). ``batched`` (the default) gives a
    :class:`BatchedVectorEnv`; ``batched=False`` a ``SyncVectorEnv`` of :class:`SequenceEnv` (any prior, slow).

    Raises:
        ConfigError: ``n_envs < 1`` or a nonsense reward scale.
    """
    if n_envs < 1:
        raise ConfigError(f"n_envs must be at least 1, got {n_envs}")
    if batched:
        return BatchedVectorEnv(domain, n_envs, reward_scale, log_prior)
    return gymnasium.vector.SyncVectorEnv(
        [lambda: SequenceEnv(domain, reward_scale, log_prior) for _ in range(n_envs)]
    )
