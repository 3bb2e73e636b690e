"""The tuning task as a gymnasium environment, so agents from other libraries can be tried on it.

:class:`SequenceEnv` is one episode of a :class:`~rltuner.domains.base.Domain`: the observation is the last
token (the primer first), an action is the next token, the episode ends at the domain's end token or after
``episode_length`` actions (``terminated``; nothing is truncated). The reward is the paper's
``log p(a|s) + r_T / c`` (Eq. 3), or ``r_T / c`` with ``log_prior=False``; ``info`` carries both parts,
``task_reward`` and ``log_p``, so an agent can mix them as it likes. The frozen prior supplies ``log p`` and is
stepped with its own recurrent state, like the prior of :class:`~rltuner.rl.env.BatchedEnv`.

:func:`sequence_vector_env` gives ``n`` of them as a ``gymnasium.vector.VectorEnv`` (a ``SyncVectorEnv``: each
episode restarts on its own, gymnasium's next-step autoreset). It steps each episode's prior with batch 1, so
it is much slower than the tuner's own lockstep :class:`~rltuner.rl.env.BatchedEnv`; it is for interoperability,
not for speed. Needs the ``gym`` extra (``pip install 'rltuner[gym]'``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from rltuner.domains.base import Domain
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
        self._reward_state = self._reward.reset(1)
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


def sequence_vector_env(
    domain: Domain, n_envs: int, reward_scale: float = 0.5, log_prior: bool = True
) -> gymnasium.vector.VectorEnv:
    """``n_envs`` episodes of ``domain`` as a gymnasium vector env (observations: the last token of each).

    ``infos`` holds ``task_reward`` and ``log_p`` (arrays over the episodes, with gymnasium's ``_task_reward``
    masks). All episodes share the domain's prior module (frozen; only read).

    Raises:
        ConfigError: ``n_envs < 1`` or a nonsense reward scale.
    """
    if n_envs < 1:
        raise ConfigError(f"n_envs must be at least 1, got {n_envs}")
    return gymnasium.vector.SyncVectorEnv(
        [lambda: SequenceEnv(domain, reward_scale, log_prior) for _ in range(n_envs)]
    )
