"""The plain eager-PyTorch reference of the fast preset's work: what ``rltuner bench --only rl`` compares to.

Issue #15's speed goal is relative: the fast preset's tuning run in <= 0.65x the time that plain eager torch
takes for the same work at the same shapes, measured in the same run. This module is that plain version, as a
user would write it directly with ``torch.nn.LSTM`` and ``torch.nn.Linear`` (no rltuner class in its hot loops),
in fp32 with the networks of the prior handed in (the shipped Note RNN's sizes and weights):

* acting: ``n_envs`` episodes stepping the Q-network and the Reward RNN one token at a time (``nn.LSTM`` over a
  one-hot input of length 1), epsilon-greedy on the Q-values (or Boltzmann sampling), ``log p(a|s)`` gathered
  from the Reward RNN's log-softmax, and the domain's music-theory reward per step. The reward is the project's
  batched numpy reward (the same code the tuner calls, ~2% of a run), so both sides do the same reward work;
* learning: Q-learning's TD loss (Eq. 4, reward ``log p + r_MT / c``) on batches of whole episodes drawn from the
  played ones: the online and the target network's forward over the sequence, backward, gradient-norm
  clipping, a step of ``torch.optim.Adam`` with torch's default implementation (on CPU the per-tensor for-loop;
  no ``fused``/``foreach``), and the soft target update parameter by parameter.

Not included (the tuning run does them, they are ~2% of it): evaluations, progress, TensorBoard, checkpoints.
Psi and RL-only differ from Q only in the target's reduction; G's target also reads the prior's log-probabilities at
the next states, which the tuner records while acting (the replay keeps them), so it runs no extra forward.

To keep the benchmark short, a fraction of the acting rounds and of the gradient steps is timed (after one
untimed warm-up of each) and scaled linearly to the full budget (:class:`EagerTiming`).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from rltuner.domains.base import Domain, reset_reward
from rltuner.rl.config import TuneConfig

FRACTION = 1 / 8  # of the acting rounds and of the gradient steps timed at the full budget


class PlainLSTM(torch.nn.Module):
    """``nn.LSTM`` then ``nn.Linear``, over one-hot inputs (batch first): the Note RNN written plainly."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.lstm = torch.nn.LSTM(vocab_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.out = torch.nn.Linear(hidden_size, vocab_size)

    def forward(
        self, one_hot: Tensor, state: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        h, state = self.lstm(one_hot, state)  # (B, T, H)
        return self.out(h), state  # (B, T, V)


def plain_copy(prior: Any) -> PlainLSTM:
    """A :class:`PlainLSTM` of the prior's sizes (its config) holding its weights (same parameter names).

    Raises:
        ValueError: the prior is not an LSTM (the reference is written for the Note RNN).
    """
    cfg = prior.config
    if cfg.arch != "lstm":
        raise ValueError(f"the plain eager-torch reference is an LSTM; the prior is {cfg.arch!r}")
    net = PlainLSTM(cfg.vocab_size, cfg.hidden_size, cfg.num_layers)
    net.lstm.load_state_dict(prior.rnn.state_dict())
    net.out.load_state_dict(prior.out.state_dict())
    return net


def budget_counts(cfg: TuneConfig, episode_length: int) -> tuple[int, int]:
    """``(rounds, gradient steps)`` of a value-family tuning run of ``cfg``: what the tuner plays and learns.

    A round plays ``n_envs`` whole episodes; a gradient step falls due every ``train_every`` env steps after
    ``learning_starts`` (fractions carry over), as in :meth:`rltuner.rl.tuner.ValueLearner.learn`.
    """
    per_round = cfg.n_envs * episode_length
    rounds = math.ceil(cfg.total_steps / per_round)
    return rounds, max(0, rounds * per_round - cfg.learning_starts) // cfg.train_every


@dataclass(frozen=True)
class EagerTiming:
    """Seconds measured for a fraction of the budget, and the full budget's projection (linear)."""

    rounds: int  # acting rounds of the full budget (n_envs episodes each)
    gradient_steps: int  # gradient steps of the full budget
    timed_rounds: int
    timed_steps: int
    acting_s: float  # measured: the timed rounds
    learning_s: float  # measured: the timed gradient steps
    cpu_s: float  # this process's CPU time over both timed parts (below their wall time when others share it)

    @property
    def projected_acting_s(self) -> float:
        return self.acting_s * self.rounds / self.timed_rounds

    @property
    def projected_learning_s(self) -> float:
        return self.learning_s * self.gradient_steps / self.timed_steps if self.timed_steps else 0.0

    @property
    def projected_s(self) -> float:
        """The full budget's time: acting and learning, each scaled from its timed fraction."""
        return self.projected_acting_s + self.projected_learning_s


Episodes = tuple[Tensor, Tensor, Tensor]  # tokens (B, L+1) primer first, task reward (B, L), log p (B, L)


@torch.no_grad()
def _play_round(
    q_net: PlainLSTM, reward_rnn: PlainLSTM, domain: Domain, cfg: TuneConfig, epsilon: float,
    generator: torch.Generator, rng: np.random.Generator,
) -> Episodes:  # fmt: skip
    B, L, V = cfg.n_envs, domain.episode_length, q_net.vocab_size
    primers = torch.as_tensor(np.asarray(domain.sample_primers(B, rng), dtype=np.int64))
    reward = domain.make_reward()
    reward_state = reset_reward(reward, B, primers.numpy(), domain.reward_hears_primer)
    tokens = torch.empty(B, L + 1, dtype=torch.int64)
    tokens[:, 0] = primers
    task_reward = np.empty((B, L), dtype=np.float64)
    log_p = torch.empty(B, L)
    q_state: tuple[Tensor, Tensor] | None = None
    p_state: tuple[Tensor, Tensor] | None = None
    prev = primers
    for t in range(L):
        x = F.one_hot(prev, V).float()[:, None]  # (B, 1, V): one step of each network
        q, q_state = q_net(x, q_state)
        p, p_state = reward_rnn(x, p_state)
        log_prior = torch.log_softmax(p[:, 0], dim=-1)  # (B, V)
        if cfg.exploration == "boltzmann":
            actions = torch.multinomial(torch.softmax(q[:, 0], dim=-1), 1, generator=generator).squeeze(1)
        else:
            explore = torch.rand(B, generator=generator) < epsilon
            random_actions = torch.randint(V, (B,), generator=generator)
            actions = torch.where(explore, random_actions, q[:, 0].argmax(dim=-1))
        log_p[:, t] = log_prior.gather(1, actions[:, None]).squeeze(1)
        task_reward[:, t] = reward.step(reward_state, actions.numpy())
        tokens[:, t + 1] = actions
        prev = actions
    return tokens, torch.from_numpy(task_reward).float(), log_p


def _gradient_step(
    q_net: PlainLSTM, target_net: PlainLSTM, optimizer: torch.optim.Optimizer, batch: Episodes,
    cfg: TuneConfig,
) -> float:  # fmt: skip
    tokens, task_reward, log_p = batch  # (E, L+1), (E, L), (E, L)
    x = F.one_hot(tokens, q_net.vocab_size).float()  # (E, L+1, V)
    q_all = q_net(x)[0]  # (E, L+1, V): Q(s_t, .) for t = 0..L
    with torch.no_grad():
        next_value = target_net(x)[0][:, 1:].max(dim=-1).values  # (E, L): max_a' Q'(s_{t+1}, a')
        not_done = torch.ones_like(next_value)
        if cfg.terminal_last_step:
            not_done[:, -1] = 0.0
        y = log_p + task_reward / cfg.reward_scale + cfg.gamma * not_done * next_value
    q_taken = q_all[:, :-1].gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (E, L)
    loss = F.mse_loss(q_taken, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(q_net.parameters(), cfg.grad_clip)
    optimizer.step()
    with torch.no_grad():  # theta- <- (1 - eta) theta- + eta theta
        for target_p, p in zip(target_net.parameters(), q_net.parameters(), strict=True):
            target_p.lerp_(p, cfg.target_update_rate)
    return float(loss.detach())


def measure_reference(
    prior: Any, domain: Domain, cfg: TuneConfig, fraction: float = FRACTION, seed: int = 0
) -> EagerTiming:
    """Time ``fraction`` of the acting rounds and of the gradient steps of a Q run of ``cfg``, plainly.

    Args:
        prior: the Note RNN (an LSTM prior); both networks start from its weights.
        domain: supplies the primers, the episode length and the task reward.
        cfg: the run whose work is reproduced (``n_envs``, ``batch_size``, ``train_every``, ``total_steps``,
            the learning settings); runs at the current torch thread count.
        fraction: in (0, 1]; at least one round and (when the run learns) one gradient step are timed.
        seed: seeds the primers, the exploration and the replay draws.

    Returns:
        The measured seconds and the counts to scale them by (:attr:`EagerTiming.projected_s`).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    L = domain.episode_length
    rounds, steps = budget_counts(cfg, L)
    timed_rounds = max(1, math.ceil(rounds * fraction))
    timed_steps = min(steps, max(1, math.ceil(steps * fraction)))
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    q_net = plain_copy(prior).train()
    reward_rnn = plain_copy(prior).eval().requires_grad_(False)
    target_net = copy.deepcopy(reward_rnn)
    optimizer = torch.optim.Adam(q_net.parameters(), lr=cfg.learning_rate)  # torch's default implementation

    def epsilon(round_index: int) -> float:  # linear from epsilon_start to epsilon_end, as the tuner's
        frac = min(1.0, round_index * cfg.n_envs * L / max(1, cfg.epsilon_steps))
        return cfg.epsilon_start + frac * (cfg.epsilon_end - cfg.epsilon_start)

    played = [_play_round(q_net, reward_rnn, domain, cfg, epsilon(0), generator, rng)]  # warm-up
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(timed_rounds):
        played.append(_play_round(q_net, reward_rnn, domain, cfg, epsilon(i), generator, rng))
    acting_s = time.perf_counter() - t0
    memory = tuple(torch.cat(part) for part in zip(*played, strict=True))  # the replay: whole episodes
    episodes_per_step = cfg.batch_size // L

    def draw() -> Episodes:
        idx = torch.randint(memory[0].shape[0], (episodes_per_step,), generator=generator)
        return memory[0][idx], memory[1][idx], memory[2][idx]

    cpu_s = time.process_time() - cpu0
    learning_s = 0.0
    if timed_steps:
        _gradient_step(q_net, target_net, optimizer, draw(), cfg)  # warm-up
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(timed_steps):
            _gradient_step(q_net, target_net, optimizer, draw(), cfg)
        learning_s = time.perf_counter() - t0
        cpu_s += time.process_time() - cpu0
    return EagerTiming(rounds, steps, timed_rounds, timed_steps, acting_s, learning_s, cpu_s)
