"""The ONE table where the algorithms differ: Q, Psi, G-learning and RL-only, and the on-policy KL-control rows.

A value-family algorithm (off-policy, replay, TD target) is three pure tensor functions: the reward mix, the
value of the next state used by the TD target, and the policy's logits. A policy-family algorithm (on-policy:
each batch is sampled from the current policy, learnt from once) is its loss, a pure function of a
:class:`~rltuner.rl.policy_gradient.PolicyBatch` (:mod:`rltuner.rl.policy_gradient`); its policy is
softmax(network logits). Everything else (environment, prior, rewards, run folder) is shared.
Shapes: ``B`` episodes, ``T`` steps, ``V`` actions. Paper: Jaques et al. 2017, https://arxiv.org/abs/1611.02796.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from rltuner.errors import ConfigError
from rltuner.rl.policy_gradient import (
    LossOutput,
    PolicyBatch,
    PolicySettings,
    augmented_likelihood_loss,
    reinforce_kl_loss,
    rloo_loss,
)


def reward_log_prior(log_p: torch.Tensor, task_reward: torch.Tensor, c: float) -> torch.Tensor:
    """``r = log p(a|s) + r_T / c`` (Eq. 3; r_T the task reward, r_MT for music): the reward of Q and Psi-learning. Shapes (B, T) -> (B, T)."""
    return log_p + task_reward / c


def reward_task_only(log_p: torch.Tensor, task_reward: torch.Tensor, c: float) -> torch.Tensor:
    """``r = r_T / c``: the reward of G-learning (the prior enters through its value) and RL-only."""
    return task_reward / c


def value_max(
    target_next: torch.Tensor, online_next: torch.Tensor, prior_next: torch.Tensor | None, double_q: bool
) -> torch.Tensor:
    """``max_a' Q'(s', a')`` of Eq. 4 (DQN). With ``double_q`` the online net picks ``a'``, the target values it.

    Args:
        target_next: target network outputs at the next states, (B, T, V).
        online_next: online network outputs there (no gradient), (B, T, V); used only with ``double_q``.
        prior_next: unused (the prior is in the reward).
        double_q: double Q-learning (van Hasselt et al. 2016).

    Returns:
        (B, T) next-state values.
    """
    if double_q:
        best = online_next.argmax(dim=-1, keepdim=True)
        return target_next.gather(-1, best).squeeze(-1)
    return target_next.amax(dim=-1)  # the values only: ~4x faster than max(dim) with its indices


def value_logsumexp(
    target_next: torch.Tensor, online_next: torch.Tensor, prior_next: torch.Tensor | None, double_q: bool
) -> torch.Tensor:
    """``log sum_a' exp Psi'(s', a')`` of Eq. 11 (generalized Psi-learning): the soft value. (B, T, V) -> (B, T)."""
    return torch.logsumexp(target_next, dim=-1)


def value_prior_logsumexp(
    target_next: torch.Tensor, online_next: torch.Tensor, prior_next: torch.Tensor | None, double_q: bool
) -> torch.Tensor:
    """``log sum_a' exp(log p(a'|s') + G'(s', a'))`` of Eq. 13 (G-learning). (B, T, V) -> (B, T).

    ``prior_next`` holds the Reward RNN's log-probabilities ``log p(.|s')``, (B, T, V).
    """
    if prior_next is None:
        raise ValueError("G-learning needs the prior's log-probabilities at the next states")
    return torch.logsumexp(prior_next + target_next, dim=-1)


def policy_values(outputs: torch.Tensor, prior_log_p: torch.Tensor | None) -> torch.Tensor:
    """The policy of Q, RL-only (Eq. 5: greedy on Q; sampling: softmax(Q)) and Psi (Eq. 12: softmax(Psi))."""
    return outputs


def policy_prior_plus(outputs: torch.Tensor, prior_log_p: torch.Tensor | None) -> torch.Tensor:
    """The G-learning policy ``pi(a|s) ~ p(a|s) exp G(s, a)`` (Eq. 14) as logits ``log p(a|s) + G(s, a)``."""
    if prior_log_p is None:
        raise ValueError("the G-learning policy needs the prior's log-probabilities")
    return prior_log_p + outputs


RewardFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
ValueFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", bool], torch.Tensor]
PolicyFn = Callable[[torch.Tensor, "torch.Tensor | None"], torch.Tensor]
PolicyLossFn = Callable[[PolicyBatch, PolicySettings, "float | None"], LossOutput]

FAMILIES = ("value", "policy")


@dataclass(frozen=True)
class Algorithm:
    """One row of the algorithm table (``shared/spec/algorithms.md``; the policy rows: ``docs/onpolicy.md``).

    Attributes:
        family: ``"value"`` (off-policy TD learning from replay: ``reward`` and ``next_value`` are set) or
            ``"policy"`` (on-policy: ``loss`` is set).
        kl_weight: the setting that trades task reward against closeness to the prior, what
            ``rltuner compare`` sweeps (a TuneConfig field), or None when there is none (RL-only).
        equation: where the row comes from.
        kl_estimate: the loss reads a per-token KL estimate (``kl_estimator``, ``kl_in_reward``, ``kl_coef``).
        groups: the loss compares the episodes of a primer group (``group_size``, ``group_norm``).
        needs_score: the loss reads the domain's sequence score S in [0, 1] (``Domain.score_range``).
    """

    name: str
    title: str
    reward: RewardFn | None
    next_value: ValueFn | None
    policy_logits: PolicyFn
    needs_prior_values: bool  # the target or the policy reads log p(.|s) for every action
    supports_double_q: bool
    equation: str
    family: str = "value"
    loss: PolicyLossFn | None = None
    kl_weight: str | None = "reward_scale"
    kl_estimate: bool = False
    groups: bool = False
    needs_score: bool = False


ALGORITHMS: dict[str, Algorithm] = {
    "q": Algorithm(
        "q", "Q-learning with log-prior augmentation", reward_log_prior, value_max, policy_values,
        needs_prior_values=False, supports_double_q=True, equation="Eq. 4-5",
    ),
    "psi": Algorithm(
        "psi", "generalized Psi-learning", reward_log_prior, value_logsumexp, policy_values,
        needs_prior_values=False, supports_double_q=False, equation="Eq. 11-12",
    ),
    "g": Algorithm(
        "g", "G-learning", reward_task_only, value_prior_logsumexp, policy_prior_plus,
        needs_prior_values=True, supports_double_q=False, equation="Eq. 13-14",
    ),
    "rl-only": Algorithm(
        "rl-only", "RL only (no prior in the reward)", reward_task_only, value_max, policy_values,
        needs_prior_values=False, supports_double_q=True, equation="Eq. 2 with r = r_MT / c", kl_weight=None,
    ),
    "reinforce-kl": Algorithm(
        "reinforce-kl", "REINFORCE on r_T / c - beta KL(pi || p), moving-average baseline", None, None,
        policy_values, needs_prior_values=False, supports_double_q=False,
        equation="Eq. 3 as a sequence return; Ziegler et al. 2019", family="policy", loss=reinforce_kl_loss,
        kl_estimate=True,
    ),
    "rloo": Algorithm(
        "rloo", "REINFORCE leave-one-out over k samples per primer (GRPO normalisation optional)", None, None,
        policy_values, needs_prior_values=False, supports_double_q=False,
        equation="Kool et al. 2019; Ahmadian et al. 2024; Shao et al. 2024", family="policy", loss=rloo_loss,
        kl_estimate=True, groups=True,
    ),
    "dap": Algorithm(
        "dap", "REINVENT's augmented likelihood (log pi - log p - sigma S)^2", None, None, policy_values,
        needs_prior_values=False, supports_double_q=False, equation="Olivecrona et al. 2017, Eq. 2-3",
        family="policy", loss=augmented_likelihood_loss, kl_weight="sigma", needs_score=True,
    ),
}  # fmt: skip


def get_algorithm(name: str) -> Algorithm:
    """The table row named ``name``; raises :class:`ConfigError` listing the known names."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ConfigError(f"unknown algorithm {name!r}; choose one of {', '.join(ALGORITHMS)}") from None


def td_target(
    reward: torch.Tensor, next_value: torch.Tensor, gamma: float, not_done: torch.Tensor
) -> torch.Tensor:
    """``y = r + gamma * V(s')``, with no bootstrap where the episode ended (``not_done == 0``). (B, T)."""
    return reward + gamma * not_done * next_value
