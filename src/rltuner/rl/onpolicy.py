"""The on-policy family (REINFORCE-KL, RLOO, DAP): sample a round from the current policy, learn from it once.

Each round plays ``n_envs`` whole episodes with the policy softmax(network logits) at temperature 1 (the
environment records ``log p(a|s)`` under the frozen prior and the task reward), then one forward pass of the
network over the round's tokens recomputes ``log pi(a_t|s_t)`` with gradient, and the algorithm's loss (its row
of :data:`rltuner.rl.targets.ALGORITHMS`, a function of :mod:`rltuner.rl.policy_gradient`) takes one Adam step.
A round of E episodes is one gradient step of ``sum(mask)`` sample-updates. See ``docs/onpolicy.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from rltuner.domains.base import Domain, PrimerSampler
from rltuner.errors import ConfigError
from rltuner.rl.actors import sampling_actor
from rltuner.rl.config import TuneConfig
from rltuner.rl.env import ActFn, BatchedEnv
from rltuner.rl.learner import gradient_step, make_adam, prior_copies
from rltuner.rl.policy_gradient import PolicyBatch, PolicySettings
from rltuner.rl.replay import EpisodeBatch
from rltuner.rl.targets import Algorithm


def grouped_primers(sample: PrimerSampler, group_size: int) -> PrimerSampler:
    """A sampler that draws ``n // group_size`` primers and repeats each ``group_size`` times (RLOO's groups)."""

    def draw(n: int, rng: np.random.Generator) -> np.ndarray:
        return np.repeat(np.asarray(sample(n // group_size, rng), dtype=np.int64), group_size)

    return draw


def policy_settings(cfg: TuneConfig) -> PolicySettings:
    """The settings the losses read, from the run's config."""
    names = {f.name for f in dataclasses.fields(PolicySettings)}
    return PolicySettings(**{name: getattr(cfg, name) for name in names})


class PolicyLearner:
    """The policy network (initialised from the prior), its optimiser and the moving-average baseline.

    Follows :class:`~rltuner.rl.learner.Learner`.

    Raises:
        ConfigError: ``dap`` on a domain without a score range.
    """

    def __init__(
        self, prior: torch.nn.Module, algo: Algorithm, cfg: TuneConfig, device: torch.device, domain: Domain
    ) -> None:
        if algo.loss is None:
            raise ValueError(f"{algo.name} has no policy loss")
        if algo.needs_score and domain.score_range is None:
            raise ConfigError(
                f"{algo.name} needs a sequence score: the {domain.name} domain has no score_range"
            )
        self.algo = algo
        self.loss_fn = algo.loss
        self.cfg = cfg
        self.settings = policy_settings(cfg)
        self.device = device
        self.domain = domain
        self.q_net, self.reward_rnn = prior_copies(prior, device)
        self.optimizer = make_adam(self.q_net, cfg.learning_rate, cfg.fused_adam)
        self.params = list(self.q_net.parameters())
        self.group_size = cfg.group_size if algo.groups else 1
        self.baseline: float | None = None  # moving average of the return (reinforce-kl)
        self.last: dict[str, float] = {}

    def make_env(self, domain: Domain, n_envs: int) -> BatchedEnv:
        if self.group_size > 1:
            domain = dataclasses.replace(
                domain, sample_primers=grouped_primers(domain.sample_primers, self.group_size)
            )
        return BatchedEnv.for_domain(self.q_net, self.reward_rnn, domain, n_envs, self.device)

    def actor(self, generator: torch.Generator, env_step: int) -> ActFn:
        return sampling_actor(self.algo, generator)

    def exploration(self, env_step: int) -> float | None:
        return None

    def policy_batch(self, batch: EpisodeBatch) -> PolicyBatch:
        """The round as the loss sees it: log pi recomputed with gradient by one forward over the tokens."""
        batch = batch.trimmed()
        tokens = batch.tokens.to(self.device)  # (B, T+1): primer, a_0 .. a_{T-1}
        logits = self.q_net(tokens)[0][:, :-1].float()  # (B, T, V): the policy at s_0 .. s_{T-1}
        log_probs = torch.log_softmax(logits, dim=-1)
        mask = batch.mask.to(self.device).float()
        log_pi = log_probs.gather(-1, tokens[:, 1:, None]).squeeze(-1) * mask  # (B, T)
        if self.settings.entropy_coef:
            entropy = -(log_probs.exp() * log_probs).sum(-1)  # (B, T)
        else:
            entropy = torch.zeros_like(log_pi)
        task_return = (batch.task_reward.to(self.device) * mask).sum(1)  # (B,)
        score = self.domain.score(task_return) if self.domain.score_range is not None else task_return * 0
        group = torch.arange(tokens.shape[0], device=self.device) // self.group_size
        return PolicyBatch(log_pi, batch.log_p.to(self.device), mask, task_return, score, group, entropy)

    def learn(self, batch: EpisodeBatch, counters: dict[str, Any], generator: torch.Generator) -> float:
        """One gradient step on the round just played; updates the moving-average baseline."""
        out = self.loss_fn(self.policy_batch(batch), self.settings, self.baseline)
        gradient_step(out.loss, self.params, self.optimizer, self.cfg.grad_clip)
        m = self.cfg.baseline_momentum
        self.baseline = (
            out.mean_return if self.baseline is None else m * self.baseline + (1 - m) * out.mean_return
        )
        self.last = {"mean_return": out.mean_return, "kl_estimate": out.mean_kl}
        counters["gradient_steps"] += 1
        counters["sample_updates"] += batch.n_transitions
        return float(out.loss.detach())

    def state_dict(self) -> dict[str, Any]:
        baseline = float("nan") if self.baseline is None else self.baseline
        return {
            "q_net": self.q_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "baseline": torch.tensor(baseline, dtype=torch.float64),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        baseline = float(state["baseline"])
        self.baseline = None if np.isnan(baseline) else baseline
