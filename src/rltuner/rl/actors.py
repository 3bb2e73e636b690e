"""Behaviour policies handed to :meth:`~rltuner.rl.env.BatchedEnv.rollout`: exploration and plain sampling."""

from __future__ import annotations

import torch

from rltuner.rl.config import TuneConfig
from rltuner.rl.env import ActFn
from rltuner.rl.targets import Algorithm


def epsilon_at(step: int, cfg: TuneConfig) -> float:
    """Linearly annealed epsilon: ``epsilon_start`` at step 0 to ``epsilon_end`` at ``epsilon_steps``, then flat."""
    if cfg.epsilon_steps == 0 or step >= cfg.epsilon_steps:
        return cfg.epsilon_end
    frac = step / cfg.epsilon_steps
    return cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start)


def make_actor(
    algo: Algorithm, cfg: TuneConfig, generator: torch.Generator, first_step: int, n_envs: int
) -> ActFn:
    """The behaviour policy: epsilon-greedy on the policy logits, or sampling from them (Boltzmann)."""
    step = [first_step]

    def act(outputs: torch.Tensor, prior_log_p: torch.Tensor) -> torch.Tensor:
        logits = algo.policy_logits(outputs, prior_log_p)  # (B, V)
        B, V = logits.shape
        if cfg.exploration == "boltzmann":
            probs = torch.softmax(logits.float(), dim=-1).cpu()
            actions = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            eps = epsilon_at(step[0], cfg)
            greedy = logits.argmax(dim=-1).cpu()
            explore = torch.rand(B, generator=generator) < eps
            random_actions = torch.randint(V, (B,), generator=generator)
            actions = torch.where(explore, random_actions, greedy)
        step[0] += n_envs
        return actions.to(logits.device)

    return act


def sampling_actor(algo: Algorithm, generator: torch.Generator) -> ActFn:
    """The stochastic policy itself (temperature 1): what evaluation and ``generate`` sample from."""

    def act(outputs: torch.Tensor, prior_log_p: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(algo.policy_logits(outputs, prior_log_p).float(), dim=-1).cpu()
        return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(outputs.device)

    return act
