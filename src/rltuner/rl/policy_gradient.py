"""On-policy KL-control losses: REINFORCE with a KL-regularised return, RLOO / GRPO, REINVENT's augmented likelihood.

Each loss is a pure tensor function of a :class:`PolicyBatch` (whole episodes sampled from the current policy)
and the run's :class:`PolicySettings`; the rows of :data:`rltuner.rl.targets.ALGORITHMS` whose family is
``"policy"`` name one of them. Shapes: ``B`` episodes, ``T`` steps, ``V`` actions.

The objective of ``reinforce-kl`` and ``rloo`` is the one the paper's Psi- and G-learning optimise off-policy,
``E_pi[sum_t r_T(s_t, a_t) / c] - beta * KL(pi || p)`` over whole sequences (with ``beta = 1`` exactly theirs),
so the comparison of ``rltuner compare`` is between two ways of reaching the same optimum.

Sources:
    - REINFORCE with a KL penalty in the reward: Jaques et al. 2017 (Eq. 3 as a return), Ziegler et al. 2019,
      https://arxiv.org/abs/1909.08593.
    - KL estimators k1 and k3: J. Schulman, "Approximating KL divergence", http://joschu.net/blog/kl-approx.html.
    - Leave-one-out baseline: Kool, van Hoof, Welling 2019, "Buy 4 REINFORCE samples, get a baseline for free!";
      Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE-style optimization" (RLOO),
      https://arxiv.org/abs/2402.14740.
    - Group normalisation: Shao et al. 2024, DeepSeekMath (GRPO), https://arxiv.org/abs/2402.03300.
    - Augmented likelihood: Olivecrona et al. 2017, "Molecular de-novo design through deep reinforcement
      learning", https://arxiv.org/abs/1704.07555; Loeffler et al. 2024, REINVENT 4 ("DAP").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

KL_ESTIMATORS = ("k1", "k3")


class PolicyBatch(NamedTuple):
    """Episodes sampled from the policy, as the losses see them.

    Attributes:
        log_pi: (B, T) ``log pi(a_t|s_t)`` of the played actions under the current policy, with gradient.
        log_p: (B, T) ``log p(a_t|s_t)`` under the frozen prior (no gradient).
        mask: (B, T) float, 1 for played steps (the end token included), 0 after the end.
        task_return: (B,) the masked sum of the task reward r_T of each episode.
        score: (B,) the domain's sequence score S in [0, 1] (only ``dap`` reads it).
        group: (B,) int64, the episodes that share a primer share a group id (``rloo``).
        entropy: (B, T) the policy's entropy ``H(pi(.|s_t))`` at each step, with gradient.
    """

    log_pi: torch.Tensor
    log_p: torch.Tensor
    mask: torch.Tensor
    task_return: torch.Tensor
    score: torch.Tensor
    group: torch.Tensor
    entropy: torch.Tensor


@dataclass(frozen=True)
class PolicySettings:
    """The settings the losses read (copied from :class:`~rltuner.rl.config.TuneConfig`)."""

    reward_scale: float = 0.5  # c
    kl_coef: float = 1.0  # beta
    kl_estimator: str = "k1"
    kl_in_reward: bool = True
    group_norm: bool = False
    entropy_coef: float = 0.0
    sigma: float = 60.0


class LossOutput(NamedTuple):
    """A loss and what the loop logs or carries over: ``mean_return`` feeds the moving-average baseline."""

    loss: torch.Tensor
    mean_return: float
    mean_kl: float


def kl_estimate(log_pi: torch.Tensor, log_p: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of ``KL(pi || p)`` from the sampled action: (B, T) -> (B, T).

    ``k1 = log pi - log p`` (unbiased, may be negative); ``k3 = (r - 1) - log r`` with ``r = p / pi``
    (unbiased, never negative, lower variance when pi is close to p). Both have the exact KL as their
    expectation under ``a ~ pi``.
    """
    if estimator == "k1":
        return log_pi - log_p
    if estimator == "k3":
        log_r = log_p - log_pi
        return torch.expm1(log_r) - log_r
    raise ValueError(f"unknown KL estimator {estimator!r}; choose one of {', '.join(KL_ESTIMATORS)}")


def _masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum(-1)


def kl_regularised_return(batch: PolicyBatch, settings: PolicySettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The return of each episode and its KL estimate: ``(R (B,), KL (B,))``, both without gradient.

    ``R = task_return / c - beta * KL`` when the KL is in the reward, else ``task_return / c`` (the KL then
    enters as a loss term of its own, :func:`kl_loss_term`).
    """
    kl = _masked_sum(kl_estimate(batch.log_pi.detach(), batch.log_p, settings.kl_estimator), batch.mask)
    ret = batch.task_return / settings.reward_scale
    if settings.kl_in_reward:
        ret = ret - settings.kl_coef * kl
    return ret, kl


def kl_loss_term(batch: PolicyBatch, settings: PolicySettings) -> torch.Tensor:
    """``beta * mean_B sum_t KL_t`` with gradient, when the KL is a loss term (0 when it is in the reward).

    Only k3 is accepted there (config validation): under on-policy samples the gradient of the k1 term,
    ``sum_t grad log pi(a_t|s_t)``, is zero in expectation, so it would regularise nothing.
    """
    if settings.kl_in_reward:
        return batch.log_pi.new_zeros(())
    kl = kl_estimate(batch.log_pi, batch.log_p, settings.kl_estimator)
    return settings.kl_coef * _masked_sum(kl, batch.mask).mean()


def _score_function_loss(
    batch: PolicyBatch, advantage: torch.Tensor, settings: PolicySettings
) -> torch.Tensor:
    """``-mean_B A * log pi(tau) - entropy_coef * mean_B sum_t H_t + KL term``: the sequence-level REINFORCE loss."""
    log_pi_seq = _masked_sum(batch.log_pi, batch.mask)  # (B,)
    loss = -(advantage.detach() * log_pi_seq).mean()
    if settings.entropy_coef:
        loss = loss - settings.entropy_coef * _masked_sum(batch.entropy, batch.mask).mean()
    return loss + kl_loss_term(batch, settings)


def reinforce_kl_loss(batch: PolicyBatch, settings: PolicySettings, baseline: float | None) -> LossOutput:
    """REINFORCE on the KL-regularised return with a moving-average baseline ``b`` (kept by the loop).

    ``loss = -mean_B (R - b) * sum_t log pi(a_t|s_t)`` (+ the KL loss term, - the entropy bonus). Before the
    first update there is no average yet (``baseline`` None): the batch's own mean return stands in.
    """
    ret, kl = kl_regularised_return(batch, settings)
    b = float(ret.mean()) if baseline is None else baseline
    loss = _score_function_loss(batch, ret - b, settings)
    return LossOutput(loss, float(ret.mean()), float(kl.mean()))


def leave_one_out_baseline(returns: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """For each episode, the mean return of the OTHER episodes of its group: (B,) -> (B,).

    A group of one has no other episode: its baseline is 0.
    """
    n_groups = int(group.max()) + 1
    totals = torch.zeros(n_groups, dtype=returns.dtype).index_add_(0, group, returns)
    counts = torch.zeros(n_groups, dtype=returns.dtype).index_add_(0, group, torch.ones_like(returns))
    others = (counts[group] - 1).clamp_min(1)
    return torch.where(counts[group] > 1, (totals[group] - returns) / others, torch.zeros_like(returns))


def group_normalised_advantage(returns: torch.Tensor, group: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's advantage: the return minus its group's mean, over the group's standard deviation (unbiased).

    (B,) -> (B,). A group whose returns are all equal gets advantage 0.
    """
    n_groups = int(group.max()) + 1
    ones = torch.ones_like(returns)
    counts = torch.zeros(n_groups, dtype=returns.dtype).index_add_(0, group, ones)
    mean = torch.zeros(n_groups, dtype=returns.dtype).index_add_(0, group, returns) / counts
    dev = returns - mean[group]
    var = torch.zeros(n_groups, dtype=returns.dtype).index_add_(0, group, dev.pow(2)) / (
        counts - 1
    ).clamp_min(1)
    return dev / (var[group].sqrt() + eps)


def rloo_loss(batch: PolicyBatch, settings: PolicySettings, baseline: float | None) -> LossOutput:
    """REINFORCE with the leave-one-out baseline over the k episodes of each primer (RLOO).

    ``A_i = R_i - mean_{j != i in group} R_j``; with ``group_norm`` GRPO's ``(R_i - mean) / std`` instead.
    ``baseline`` is unused (the group is the baseline).
    """
    ret, kl = kl_regularised_return(batch, settings)
    if settings.group_norm:
        advantage = group_normalised_advantage(ret, batch.group)
    else:
        advantage = ret - leave_one_out_baseline(ret, batch.group)
    loss = _score_function_loss(batch, advantage, settings)
    return LossOutput(loss, float(ret.mean()), float(kl.mean()))


def augmented_likelihood_loss(
    batch: PolicyBatch, settings: PolicySettings, baseline: float | None
) -> LossOutput:
    """REINVENT's loss: ``mean_B (log pi(tau) - (log p(tau) + sigma * S(tau)))^2``.

    Its minimum is the policy ``pi(tau) ~ p(tau) exp(sigma * S(tau))``: the KL-regularised optimum with the
    score weighted by sigma. ``mean_return`` reports ``sigma * S``; ``baseline`` is unused.
    """
    log_pi_seq = _masked_sum(batch.log_pi, batch.mask)
    log_p_seq = _masked_sum(batch.log_p, batch.mask)
    augmented = log_p_seq + settings.sigma * batch.score
    loss = (log_pi_seq - augmented).pow(2).mean()
    if settings.entropy_coef:
        loss = loss - settings.entropy_coef * _masked_sum(batch.entropy, batch.mask).mean()
    kl = _masked_sum(batch.log_pi.detach() - batch.log_p, batch.mask)
    return LossOutput(loss, float((settings.sigma * batch.score).mean()), float(kl.mean()))
