"""The training loop: act in B environments, store whole episodes, learn, soft-update the target, evaluate.

One round = one batch of ``n_envs`` complete episodes played with fixed weights, then the gradient steps that
fell due (one per ``train_every`` environment steps), then evaluation and checkpoints when due. Counting:
an environment step is one token played in one episode; a sample-update is one transition's TD error in a
gradient step (a gradient step on ``batch_size`` transitions is ``batch_size`` sample-updates).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from rltuner.config import to_dict
from rltuner.devices import resolve_device
from rltuner.domains.base import Domain
from rltuner.errors import ConfigError, RLTunerError, TrainingDivergedError
from rltuner.fileio import ensure_writable_dir, write_json_atomic, write_text_atomic
from rltuner.interrupts import deferred_sigint
from rltuner.models.checkpoint import load_training_state, save_training_state
from rltuner.models.sampling import kl_divergence
from rltuner.rl.actors import epsilon_at, make_actor, sampling_actor
from rltuner.rl.config import PRESETS, TuneConfig
from rltuner.rl.env import ActFn, BatchedEnv
from rltuner.rl.learner import (
    OVERLAP_MIN_BATCH,
    OVERLAP_MIN_ENVS,
    Learner,
    bf16_enabled,
    gradient_step,
    learner_autocast,
    make_adam,
    overlap_chooser,
    prior_copies,
)
from rltuner.rl.onpolicy import PolicyLearner
from rltuner.rl.policy import TunedPolicy, policy_checkpoint
from rltuner.rl.replay import EpisodeBatch, EpisodeReplay, Transitions
from rltuner.rl.targets import Algorithm, get_algorithm, td_target
from rltuner.threads import OverlapChooser, overlap_pool, using_threads

METRIC_COLUMNS = (
    "env_step", "sample_updates", "wall_s", "mean_log_p", "mean_task_reward", "mean_return", "mean_length",
    "mean_kl", "epsilon", "loss",
)  # fmt: skip
RESUME_FILE = "resume.pt"
MODEL_FILE = "model.safetensors"
SUMMARY_FILE = "summary.json"
REWARD_FILE = "reward.json"
"""A run's record of the reward terms added to its task's (user rules, preference models): written before
tuning by the command that adds them (``tune``, ``run``), checked when ``tune --resume`` goes on with the run."""

log = logging.getLogger(__name__)


@dataclass
class TuneResult:
    """What :func:`tune` returns.

    Attributes:
        policy: the tuned model as a samplable Prior (its logits are the policy's).
        metrics: one dict per evaluation, keys :data:`METRIC_COLUMNS` (Figure 2's data).
        env_steps / sample_updates / gradient_steps: honest counts of the work done.
        wall_s: seconds of training (this session plus earlier ones when resumed).
        run_dir: the run folder, or None when nothing was written.
        interrupted: True when Ctrl-C stopped the run early (what was done is saved).
        prior_metrics: the prior itself evaluated like the final policy (same episodes count, seed and
            primers; keys as :func:`evaluate_policy`'s), or None for an interrupted run.
        worse_than_prior: whether the final policy's mean task reward per step is below the prior's (None for
            an interrupted run); when True, :func:`tune` also logs a warning.
        resolved: what the ``auto`` settings became on this machine, this session: ``learner_bf16`` (bf16
            autocast used: it changes the numbers) and, for the value family, ``overlap_learning`` /
            ``overlap_acting``, the fractions of gradient steps and rollouts that ran overlapped (a machine
            detail: overlap changes no number).
    """

    policy: TunedPolicy
    algorithm: str
    metrics: list[dict[str, Any]]
    env_steps: int
    sample_updates: int
    gradient_steps: int
    wall_s: float
    run_dir: Path | None = None
    interrupted: bool = False
    prior_metrics: dict[str, float] | None = None
    worse_than_prior: bool | None = None
    resolved: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """The run's outcome as JSON-able data (``RUN_DIR/summary.json``): counts, the final evaluation, the
        prior's evaluation and ``worse_than_prior``."""
        final = self.metrics[-1] if self.metrics else {}
        keys = ("mean_task_reward", "mean_return", "mean_log_p", "mean_kl", "mean_length")
        return {
            "algorithm": self.algorithm, "env_steps": self.env_steps, "sample_updates": self.sample_updates,
            "gradient_steps": self.gradient_steps, "wall_s": round(self.wall_s, 3),
            "interrupted": self.interrupted,
            "final": {"env_step": final.get("env_step"), **{k: final.get(k) for k in keys}},
            "prior": self.prior_metrics, "worse_than_prior": self.worse_than_prior, "resolved": self.resolved,
        }  # fmt: skip


@torch.no_grad()
def soft_update(target: Sequence[torch.Tensor], online: Sequence[torch.Tensor], eta: float) -> None:
    """``theta- <- (1 - eta) theta- + eta theta`` for every parameter (in place); the networks' parameter
    lists, made once by the caller (no walk over the modules at every step)."""
    # One foreach call instead of a Python loop over the tensors (the same lerp kernel, the same values).
    torch._foreach_lerp_(list(target), list(online), eta)


def evaluate_policy(
    q_net: Any, domain: Domain, algorithm: str, n_episodes: int, seed: int, device: torch.device | str = "cpu"
) -> dict[str, float]:
    """Sample ``n_episodes`` from the stochastic policy and score them (Figure 2's two quantities).

    Pass the prior itself as ``q_net`` with ``algorithm="q"`` to score the untuned prior.

    Returns:
        ``mean_log_p``: mean log p(a|s) under the prior per played step; ``mean_task_reward``: mean task reward
        per played step; ``mean_return``: mean task reward per episode (summed over its steps);
        ``mean_length``: mean number of actions per episode; ``mean_kl``: the exact ``KL(pi(.|s) || p(.|s))``
        over the vocabulary, per played step (0 for the prior itself).
    """
    algo = get_algorithm(algorithm)
    env = BatchedEnv.for_domain(q_net, domain.prior, domain, n_episodes, device)
    generator = torch.Generator().manual_seed(seed)
    batch = env.rollout(sampling_actor(algo, generator), np.random.default_rng(seed))
    return {**episode_summary(batch), "mean_kl": _mean_kl(q_net, domain.prior, algo, batch, device)}


@torch.no_grad()
def _mean_kl(
    q_net: Any, prior: Any, algo: Algorithm, batch: EpisodeBatch, device: torch.device | str
) -> float:
    """Mean exact ``KL(pi || p)`` per played step of sampled episodes (one forward of each network)."""
    batch = batch.trimmed()
    tokens = batch.tokens.to(device)
    prior_log_p = torch.log_softmax(prior(tokens)[0][:, :-1].float(), dim=-1)  # (B, T, V) at s_0..s_{T-1}
    outputs = q_net(tokens)[0][:, :-1].float()
    log_pi = torch.log_softmax(algo.policy_logits(outputs, prior_log_p), dim=-1)
    played = batch.mask.to(device).float()
    kl = kl_divergence(log_pi, prior_log_p)  # (B, T)
    return float((kl * played).sum() / played.sum().clamp_min(1.0))


def episode_summary(batch: EpisodeBatch) -> dict[str, float]:
    """Mean log p and task reward per played step, mean return and length per episode (masked steps excluded)."""
    played = batch.mask.float()
    n = played.sum().clamp_min(1.0)
    return {
        "mean_log_p": float((batch.log_p * played).sum() / n),
        "mean_task_reward": float((batch.task_reward * played).sum() / n),
        "mean_return": float((batch.task_reward * played).sum(1).mean()),
        "mean_length": float(played.sum(1).mean()),
    }


def _pad_states(values: torch.Tensor, states: int) -> torch.Tensor:
    """``values`` (E, T, V) with zeros appended along T up to ``states`` positions (a skipped last state)."""
    missing = states - values.shape[1]
    if missing <= 0:
        return values
    return torch.cat([values, values.new_zeros(values.shape[0], missing, values.shape[2])], dim=1)


class ValueLearner:
    """The value family (Q, Psi, G, RL-only): replay, the loss of Eq. 4 / 11 / 13 via the target table, the
    soft-updated target network. Follows :class:`~rltuner.rl.learner.Learner`."""

    skip_last_state = True  # with terminal_last_step, no network pass over the last token (tests compare)

    def __init__(
        self,
        prior: torch.nn.Module,
        algo: Algorithm,
        cfg: TuneConfig,
        device: torch.device,
        episode_length: int,
        eos_token: int | None = None,
    ) -> None:
        self.algo = algo
        self.eos_token = eos_token  # the domain's end token: its step is terminal (EpisodeBatch.not_done)
        self.cfg = cfg
        self.device = device
        self.episode_length = episode_length
        self.q_net, self.reward_rnn = prior_copies(prior, device)
        self.target_net = copy.deepcopy(self.reward_rnn)
        self.optimizer = make_adam(self.q_net, cfg.learning_rate, cfg.fused_adam)
        self.params, self.target_params = list(self.q_net.parameters()), list(self.target_net.parameters())
        self.bf16 = bf16_enabled(cfg.learner_bf16, device, cfg.batch_size)
        # overlap=auto: timed while learning (the cores' behaviour can change during a run); on / off: fixed.
        self.overlap = overlap_chooser(cfg.overlap, device, cfg.threads, cfg.batch_size, OVERLAP_MIN_BATCH)
        # G's target and offset_by_prior read the frozen prior's logits at every state of a sampled episode:
        # the environment computed them while playing, so the replay keeps them instead of the learner
        # running the prior over each batch again (one LSTM forward less per gradient step).
        self.needs_prior_logits = algo.needs_prior_values or cfg.offset_by_prior
        vocab = cast(int, self.reward_rnn.vocab_size) if self.needs_prior_logits else None
        state_size = None
        if cfg.stored_states:
            if not hasattr(self.q_net, "flatten_state"):
                arch = getattr(getattr(prior, "config", None), "arch", type(prior).__name__)
                raise ConfigError(
                    f"stored_states needs a recurrent prior (lstm or gru), not {arch}: its state is what the "
                    "replay stores"
                )
            state_size = cast(int, cast(Any, self.q_net).state_size)
        self.replay = EpisodeReplay(cfg.replay_size, episode_length, prior_vocab=vocab, state_size=state_size)

    def make_env(self, domain: Domain, n_envs: int) -> BatchedEnv:
        cfg = self.cfg
        # auto: timed rollout by rollout (a trial of 2 + 2 every 32 rollouts), as the learner's steps are.
        overlap = overlap_chooser(
            cfg.overlap, self.device, cfg.threads, n_envs, OVERLAP_MIN_ENVS, every=32, trial=2
        )
        return BatchedEnv.for_domain(
            self.q_net, self.reward_rnn, domain, n_envs, self.device, record_prior_logits=self.needs_prior_logits,
            overlap=overlap, record_states=cfg.stored_states,
        )  # fmt: skip

    def actor(self, generator: torch.Generator, env_step: int) -> ActFn:
        return make_actor(self.algo, self.cfg, generator, env_step, self.cfg.n_envs)

    def exploration(self, env_step: int) -> float | None:
        return epsilon_at(env_step, self.cfg)

    def learn(self, batch: EpisodeBatch, counters: dict[str, Any], generator: torch.Generator) -> float:
        """Store the round's episodes, then take the gradient steps that fell due (one per ``train_every``)."""
        cfg = self.cfg
        self.replay.add(batch)
        learned = max(0, counters["env_steps"] - cfg.learning_starts)
        due = learned // cfg.train_every - counters["gradient_steps"]
        loss = float("nan")
        for _ in range(due):
            if cfg.stored_states:
                transitions = self.replay.sample_transitions(
                    cfg.batch_size, generator, cfg.terminal_last_step, self.eos_token
                )
                loss = self.step_transitions(transitions)
                counters["sample_updates"] += cfg.batch_size
            else:
                sample = self.replay.sample(cfg.batch_size // self.episode_length, generator)
                loss = self.step(sample)
                counters["sample_updates"] += sample.n_transitions
            counters["gradient_steps"] += 1
        return loss

    def step(self, batch: EpisodeBatch) -> float:
        """One gradient step on whole episodes; returns the loss (mean squared TD error over played steps)."""
        overlap = self.overlap.use()
        started = time.perf_counter()
        loss = self.episode_loss(batch, overlap)
        value = self._descend(loss)
        self.overlap.record(overlap, time.perf_counter() - started)
        return value

    def step_transitions(self, transitions: Transitions) -> float:
        """One gradient step on single transitions with stored states (``stored_states``); returns the loss."""
        return self._descend(self.transitions_loss(transitions))

    def _descend(self, loss: torch.Tensor) -> float:
        """The gradient step on ``loss`` and the soft target update; the loss as a float."""
        cfg = self.cfg
        gradient_step(loss, self.params, self.optimizer, cfg.grad_clip)
        soft_update(self.target_params, self.params, cfg.target_update_rate)
        return float(loss.detach())

    def transitions_loss(self, transitions: Transitions) -> torch.Tensor:
        """The TD loss (mean squared TD error) of single transitions, each network one step from the stored
        state: Q(s_t, .) from ``states`` reading ``tokens``; the target network's (and for double Q the online
        one's) values at s_{t+1} from ``next_states`` reading a_t, the Q-network's state there, as the
        original computed its target."""
        if self.needs_prior_logits and transitions.prior_logits is None:
            raise ValueError("these transitions carry no prior logits, which this algorithm reads")
        moved: list[Any] = [None if x is None else x.to(self.device) for x in transitions]
        tr = Transitions(*moved)
        q_net, target_net = cast(Any, self.q_net), cast(Any, self.target_net)
        with learner_autocast(self.bf16, self.device):
            online = q_net.step(tr.tokens, q_net.unflatten_state(tr.states))[0].float()  # (n, V)
        with torch.no_grad(), learner_autocast(self.bf16, self.device):
            next_state = q_net.unflatten_state(tr.next_states)
            target_next = target_net.step(tr.next_tokens, next_state)[0].float()
            online_next = q_net.step(tr.next_tokens, next_state)[0].float() if self.cfg.double_q else None
        q_taken = online.gather(-1, tr.actions[:, None]).squeeze(-1)  # (n,)
        offsets = None
        if self.cfg.offset_by_prior:
            assert tr.prior_logits is not None and tr.next_prior_logits is not None
            offsets = (torch.logsumexp(tr.prior_logits, -1), torch.logsumexp(tr.next_prior_logits, -1))
        return self._td_loss(
            q_taken, target_next, online_next, tr.next_prior_logits, offsets, tr.log_p, tr.task_reward,
            tr.not_done, None,
        )  # fmt: skip

    def episode_loss(self, batch: EpisodeBatch, overlap: bool = False) -> torch.Tensor:
        """The TD loss (mean squared TD error over played steps) of whole episodes, every network run over
        them; ``overlap``: the target network's forward on the worker thread meanwhile."""
        cfg = self.cfg
        # No bootstrap past an episode's end (its end token, or the last step when that is terminal); taken
        # before trimming, whose last column need not be step L-1.
        not_done = batch.not_done(cfg.terminal_last_step, self.eos_token)
        batch = batch.trimmed()
        tokens = batch.tokens.to(self.device)  # (E, L+1): primer, a_0 .. a_{L-1}
        actions = tokens[:, 1:]  # (E, L)
        # One forward over the whole sequence gives Q(s_t, .) for t = 0..L (position t has read token t).
        # The target network's forward does not depend on the online one's: with overlap it runs on the
        # worker thread meanwhile (the same kernels on the same operands, so the same numbers).
        # With the last step terminal nothing bootstraps from s_L: both networks skip the last token (the same
        # outputs at the other positions, to the bit) and s_L's values are zeros that not_done multiplies out.
        inputs = tokens[:, :-1] if cfg.terminal_last_step and self.skip_last_state else tokens
        pending = overlap_pool().submit(self._target_values, inputs) if overlap else None
        with learner_autocast(self.bf16, self.device):  # the networks only: targets and loss in fp32
            online = self.q_net(inputs)[0].float()  # (E, L, V) with the last token skipped, else (E, L+1, V)
        target_next = pending.result() if pending is not None else self._target_values(inputs)
        target_next = _pad_states(target_next, actions.shape[1])  # (E, L, V)
        prior_logits = None  # (E, L+1, V)
        if self.needs_prior_logits:
            prior_logits = self._prior_logits(batch, tokens)
        q_taken = online[:, : actions.shape[1]].gather(-1, actions[..., None]).squeeze(-1)  # (E, L)
        # The online values at s' only for double Q (the other targets ignore them): no pad otherwise.
        online_next = _pad_states(online[:, 1:].detach(), actions.shape[1]) if cfg.double_q else None
        offsets = None
        if cfg.offset_by_prior:
            assert prior_logits is not None
            log_partition = torch.logsumexp(prior_logits, dim=-1)  # (E, L+1), once for s and s'
            offsets = (log_partition[:, :-1], log_partition[:, 1:])
        return self._td_loss(
            q_taken, target_next, online_next,
            None if prior_logits is None else prior_logits[:, 1:], offsets,
            batch.log_p.to(self.device), batch.task_reward.to(self.device),
            not_done[:, : actions.shape[1]].to(self.device),
            batch.mask.to(self.device).float(),  # steps after the end carry no loss
        )  # fmt: skip

    def _td_loss(
        self,
        q_taken: torch.Tensor,
        target_next: torch.Tensor,
        online_next: torch.Tensor | None,
        next_prior_logits: torch.Tensor | None,
        offsets: tuple[torch.Tensor, torch.Tensor] | None,
        log_p: torch.Tensor,
        task_reward: torch.Tensor,
        not_done: torch.Tensor,
        played: torch.Tensor | None,
    ) -> torch.Tensor:
        """The loss of Eq. 4 / 11 / 13 from the values taken (``q_taken`` (...,)) and those at the next states
        (``target_next`` (..., V); ``online_next`` for double Q), for any leading shape: (E, L) for episodes,
        (n,) for transitions. ``next_prior_logits``: the frozen prior's at s' (G's target); ``offsets``: its
        log-partitions at s and s' (``offset_by_prior``, else None); ``played``: the loss's weights (None: all
        steps count)."""
        cfg, algo = self.cfg, self.algo
        assert algo.reward is not None and algo.next_value is not None  # a value-family row
        with torch.no_grad():
            prior_next = None
            if next_prior_logits is not None:
                prior_next = torch.log_softmax(next_prior_logits, dim=-1)
            if offsets is not None:
                # Q = outputs - log sum_a exp(prior logits): a fixed per-state shift, so the network's
                # initial Q is exactly log p(a|s) and the policy (a softmax, or an argmax) is unchanged.
                target_next = target_next - offsets[1][..., None]
            reward = algo.reward(log_p, task_reward, cfg.reward_scale)
            online = online_next if online_next is not None else target_next
            next_value = algo.next_value(target_next, online, prior_next, cfg.double_q)
            y = td_target(reward, next_value, cfg.gamma, not_done)
        if offsets is not None:
            q_taken = q_taken - offsets[0]
        if played is None:
            return (q_taken - y).pow(2).mean()
        return ((q_taken - y).pow(2) * played).sum() / played.sum().clamp_min(1.0)

    def _target_values(self, tokens: torch.Tensor) -> torch.Tensor:
        """The target network's outputs at the next states s_1 .. s_T of ``tokens`` (E, T+1), (E, T, V) fp32
        (no gradient).

        Sets its own no-grad and autocast modes: both are per thread, and this may run on the worker.
        """
        with torch.no_grad(), learner_autocast(self.bf16, self.device):
            return self.target_net(tokens)[0][:, 1:].float()

    def _prior_logits(self, batch: EpisodeBatch, tokens: torch.Tensor) -> torch.Tensor:
        """The frozen prior's logits at every state: those the environment recorded (the replay keeps them),
        else (a batch made by hand) a forward pass over the episodes."""
        if batch.prior_logits is not None:
            return batch.prior_logits.to(self.device)
        with torch.no_grad():
            return self.reward_rnn(tokens)[0].float()

    def state_dict(self) -> dict[str, Any]:
        return {
            "q_net": self.q_net.state_dict(),
            "target_net": self.target_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": self.replay.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        replay = state["replay"]
        if self.replay.missing_prior_logits(replay):
            # A run saved before the replay kept them: the frozen prior's forward over the stored episodes
            # gives them again (equal up to float rounding; the run continues, not bit for bit).
            with torch.no_grad():
                logits = self.reward_rnn(replay["tokens"].to(self.device))[0].float().cpu()
            replay = {**replay, "prior_logits": logits}
        self.replay.load_state_dict(replay)


def make_learner(algo: Algorithm, cfg: TuneConfig, domain: Domain, device: torch.device) -> Learner:
    """The learner of the algorithm's family, its network initialised from the domain's prior."""
    if algo.family == "policy":
        return PolicyLearner(domain.prior, algo, cfg, device, domain)
    return ValueLearner(domain.prior, algo, cfg, device, domain.episode_length, domain.eos_token)


def _default_domain() -> Domain:
    from rltuner.domains.music import music_domain

    return music_domain()


def tune(
    config: TuneConfig | None = None,
    domain: Domain | None = None,
    out_dir: str | Path | None = None,
    resume: bool = False,
    on_evaluation: Callable[[dict[str, Any], TunedPolicy], None] | None = None,
) -> TuneResult:
    """RL-tune a prior with Q, Psi, G-learning or RL-only, or on-policy with REINFORCE-KL, RLOO or DAP.

    Torch uses ``config.threads`` CPU threads during the run (:func:`rltuner.threads.using_threads`).

    Args:
        config: the run's settings (default: the ``fast`` preset).
        domain: the prior, reward and primers (default: the music domain with the shipped Note RNN).
        out_dir: the run folder (config.json, metrics.jsonl/csv, tb/, model.safetensors, resume.pt);
            None writes nothing.
        resume: continue the run saved in ``out_dir`` (its learner, optimiser, RNG states and counters); with
            the same seed and settings the result equals that of an uninterrupted run (exactly, on CPU).
            ``total_steps`` may be raised to train longer.
        on_evaluation: called after each evaluation with its metrics row and the policy as
            it is now (in eval mode; do not train it), e.g. for a sweep's intermediate scores
            (``rltuner.sweep``). It may raise to stop the run; it must not change the RNG streams' use.

    Returns:
        A :class:`TuneResult`.

    Raises:
        ConfigError: nonsense settings or a domain whose parts do not fit, before any work starts.
        RLTunerError: the run folder cannot be written, or ``resume`` finds no run there.
    """
    cfg = config if config is not None else PRESETS["fast"]
    cfg.validate()
    with using_threads(cfg.threads):
        return _tune(cfg, domain, out_dir, resume, on_evaluation)


def _tune(
    cfg: TuneConfig,
    domain: Domain | None,
    out_dir: str | Path | None,
    resume: bool,
    on_evaluation: Callable[[dict[str, Any], TunedPolicy], None] | None,
) -> TuneResult:
    algo = get_algorithm(cfg.algorithm)
    domain = domain if domain is not None else _default_domain()
    domain = domain.for_reward_primer(cfg.reward_primer)
    domain.validate()
    cfg.validate_for_episode_length(domain.episode_length)
    device = resolve_device(cfg.device)
    warn_unfinished_schedule(cfg)
    run_dir = Path(out_dir) if out_dir is not None else None
    if resume and run_dir is None:
        raise RLTunerError("resume needs the run folder (out_dir)")
    if run_dir is not None:
        ensure_writable_dir(run_dir)
        if resume and not (run_dir / RESUME_FILE).exists():
            raise RLTunerError(f"{run_dir} holds no run to resume ({RESUME_FILE} is missing)")
        if not resume and (run_dir / RESUME_FILE).exists():
            raise RLTunerError(f"{run_dir} already holds a run: resume it or choose another folder")

    learner = make_learner(algo, cfg, domain, device)
    env = learner.make_env(domain, cfg.n_envs)
    log.info(
        "resolved: learner_bf16=%s -> bf16 autocast %s; overlap=%s (auto: timed during the run where it may "
        "pay; summary.json's resolved gives the shares); %d torch thread(s)",
        cfg.learner_bf16, "on" if getattr(learner, "bf16", False) else "off", cfg.overlap, torch.get_num_threads(),
    )  # fmt: skip
    generator = torch.Generator().manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed)
    counters: dict[str, Any] = {
        "env_steps": 0,
        "gradient_steps": 0,
        "sample_updates": 0,
        "wall_s": 0.0,
        "next_eval": 0,
    }
    metrics: list[dict[str, Any]] = []
    if resume:
        assert run_dir is not None
        _load_resume(run_dir / RESUME_FILE, learner, generator, np_rng, counters, metrics, cfg)
    if run_dir is not None:
        write_json_atomic(
            run_dir / "config.json",
            {**to_dict(cfg), "domain": domain.name, **(domain.meta or {}), "reward": domain.reward_config},
        )
    writer = _tensorboard(run_dir, cfg)
    board = _RoundLog(writer, cfg, domain, counters) if writer is not None else None

    def evaluate_now(loss: float) -> None:
        seed = cfg.seed * 1_000_003 + counters["env_steps"]  # independent of the training streams
        learner.q_net.eval()
        ev = evaluate_policy(learner.q_net, domain, cfg.algorithm, cfg.eval_episodes, seed, device)
        learner.q_net.train()
        row = {
            "env_step": counters["env_steps"], "sample_updates": counters["sample_updates"],
            "wall_s": round(counters["wall_s"] + time.perf_counter() - t0, 3), **ev,
            "epsilon": learner.exploration(counters["env_steps"]), "loss": None if math.isnan(loss) else loss,
        }  # fmt: skip
        metrics.append(row)
        if writer is not None:
            for key in METRIC_COLUMNS[3:]:
                if row[key] is not None:
                    writer.add_scalar(f"eval/{key}", row[key], counters["env_steps"])
            writer.flush()
        counters["next_eval"] = counters["env_steps"] + (cfg.eval_every or cfg.total_steps)
        if on_evaluation is not None:
            learner.q_net.eval()
            on_evaluation(row, TunedPolicy(learner.q_net, learner.reward_rnn, cfg.algorithm).eval())
            learner.q_net.train()

    def save() -> None:
        if run_dir is None:
            return
        counters_now = {**counters, "wall_s": counters["wall_s"] + time.perf_counter() - t0}
        _write_metrics(run_dir, metrics)
        _save_model(run_dir / MODEL_FILE, learner, cfg, domain, counters_now)
        _save_resume(run_dir / RESUME_FILE, learner, cfg.algorithm, generator, np_rng, counters_now, metrics)

    t0 = time.perf_counter()
    loss = float("nan")
    interrupted = False
    if counters["env_steps"] == 0 and not metrics:
        evaluate_now(loss)  # step 0: the prior-initialised network (Figure 2's first point)
        save()  # a resume state from the start: a double Ctrl-C before the first evaluation loses nothing
    bar = _progress(cfg, counters["env_steps"])
    rates = {"t": time.perf_counter(), "steps": counters["env_steps"], "updates": counters["sample_updates"]}
    with deferred_sigint("stopping after this round and saving (Ctrl-C again to abort)") as stop:
        while counters["env_steps"] < cfg.total_steps and not stop[0]:
            act = learner.actor(generator, counters["env_steps"])
            learner.q_net.eval()
            batch = env.rollout(act, np_rng)
            learner.q_net.train()
            counters["env_steps"] += batch.n_transitions
            round_loss = learner.learn(batch, counters, generator)
            loss = loss if math.isnan(round_loss) else round_loss
            check_not_diverged(learner.q_net, loss, counters["gradient_steps"], run_dir)  # before any save
            if counters["env_steps"] >= counters["next_eval"] or counters["env_steps"] >= cfg.total_steps:
                evaluate_now(loss)
                save()
            if board is not None:
                board.log(batch, loss, learner.exploration(counters["env_steps"]))
            _update_progress(
                bar, rates, counters, batch, cfg, loss, learner.exploration(counters["env_steps"])
            )
    if stop[0] and counters["env_steps"] < cfg.total_steps:
        interrupted = True
        save()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()
    wall = counters["wall_s"] + time.perf_counter() - t0
    policy = TunedPolicy(learner.q_net.eval(), learner.reward_rnn, cfg.algorithm)
    result = TuneResult(
        policy=policy, algorithm=cfg.algorithm, metrics=metrics, env_steps=int(counters["env_steps"]),
        sample_updates=int(counters["sample_updates"]), gradient_steps=int(counters["gradient_steps"]),
        wall_s=wall, run_dir=run_dir, interrupted=interrupted, resolved=_resolved(learner, env),
    )  # fmt: skip
    if not interrupted and metrics:
        compare_with_prior(result, learner.reward_rnn, domain, cfg, device)
    if run_dir is not None:
        write_json_atomic(run_dir / SUMMARY_FILE, result.summary())
    return result


def _resolved(learner: Learner, env: Any) -> dict[str, Any]:
    """:attr:`TuneResult.resolved`: bf16 as resolved, the share of overlapped work where it was timed."""
    out: dict[str, Any] = {"learner_bf16": bool(getattr(learner, "bf16", False))}
    for name, owner in (("overlap_learning", learner), ("overlap_acting", env)):
        chooser = getattr(owner, "overlap", None)
        if isinstance(chooser, OverlapChooser) and chooser.steps:
            out[name] = round(chooser.overlapped / chooser.steps, 3)
    return out


def compare_with_prior(
    result: TuneResult, prior: torch.nn.Module, domain: Domain, cfg: TuneConfig, device: torch.device
) -> None:
    """Evaluate the prior as the final policy was (same seed, so the same primers) and record whether the
    tuning made the task reward worse; a run that did says so on stderr (a warning), not only in numbers.

    Both are means over ``eval_episodes`` sampled episodes, so a policy within sampling noise of the prior may
    land on either side; a short run still exploring typically ends far below it.
    """
    final = result.metrics[-1]
    seed = cfg.seed * 1_000_003 + int(final["env_step"])  # the final evaluation's seed (evaluate_now)
    result.prior_metrics = evaluate_policy(prior, domain, "q", cfg.eval_episodes, seed, device)
    tuned, base = float(final["mean_task_reward"]), result.prior_metrics["mean_task_reward"]
    result.worse_than_prior = tuned < base
    if result.worse_than_prior:
        log.warning(
            "warning: the %s policy ended worse than the prior on the task reward: %.3f per step against the "
            "prior's %.3f (%d episodes each, same primers) after %s env steps; the run may be too short or a "
            "setting harmful (docs/tuning.md, \"Schedules and the budget\")",
            cfg.algorithm, tuned, base, cfg.eval_episodes, f"{result.env_steps:,}",
        )  # fmt: skip


def warn_unfinished_schedule(cfg: TuneConfig) -> None:
    """A config whose exploration outlasts the run (a hand-built one: the presets scale it) gets a warning."""
    if get_algorithm(cfg.algorithm).family != "value" or cfg.exploration != "epsilon":
        return
    if cfg.epsilon_steps > cfg.total_steps:
        log.warning(
            "warning: epsilon_steps (%s) is longer than the run (total_steps %s): epsilon ends at %.2f, not "
            "%.2f (unset, through rltuner.rl.config.preset or the CLI, it follows total_steps)",
            f"{cfg.epsilon_steps:,}", f"{cfg.total_steps:,}", epsilon_at(cfg.total_steps, cfg), cfg.epsilon_end,
        )  # fmt: skip


def _progress(cfg: TuneConfig, start: int) -> Any:
    if not cfg.progress:
        return None
    from tqdm import tqdm

    return tqdm(
        total=cfg.total_steps, initial=start, unit="step", unit_scale=True, file=sys.stderr,
        desc=f"tune {cfg.algorithm}", dynamic_ncols=True,
    )  # fmt: skip


def _update_progress(
    bar: Any,
    rates: dict[str, float],
    counters: dict[str, Any],
    batch: EpisodeBatch,
    cfg: TuneConfig,
    loss: float,
    exploration: float | None,
) -> None:
    if bar is None:
        return
    now = time.perf_counter()
    dt = max(now - rates["t"], 1e-9)
    upd_s = (counters["sample_updates"] - rates["updates"]) / dt
    summary = episode_summary(batch)
    bar.set_postfix(
        {
            "upd/s": f"{upd_s:.3g}", "logp": f"{summary['mean_log_p']:.3f}",
            "r_T/ep": f"{summary['mean_return']:.3f}", "len": f"{summary['mean_length']:.1f}",
            **({"eps": f"{exploration:.3f}"} if exploration is not None else {}), "loss": f"{loss:.3g}",
        },
        refresh=False,
    )  # fmt: skip
    bar.update(min(counters["env_steps"], cfg.total_steps) - bar.n)
    rates.update(t=now, steps=counters["env_steps"], updates=counters["sample_updates"])


TB_POINTS = 256
"""Training scalars are written at most about this many times per run (each round in short runs), so event
files stay small and the cost stays negligible even with the paper's one-episode rounds."""
TB_PART_POINTS = 32
"""Reward parts are written at most about this many times per run: scoring a round's melodies by rule costs
about 20 ms (a Python loop over the steps), so 32 points cost under a second even on the paper's budget."""
TB_PART_EPISODES = 128
"""Episodes of a round whose reward parts are computed for TensorBoard (a whole-melody pass over them)."""


class _RoundLog:
    """TensorBoard scalars of the training rounds (docs/tuning.md lists them), every ``total_steps / 256``
    environment steps (or every round, if rounds are longer): the round's episodes (log p, task reward,
    return, length), the loss, epsilon and the speed since the last point; every ``total_steps / 32`` steps
    also each reward part, when the domain names its parts."""

    def __init__(self, writer: Any, cfg: TuneConfig, domain: Domain, counters: dict[str, Any]) -> None:
        self.writer, self.domain, self.counters = writer, domain, counters
        self.every = max(1, cfg.total_steps // TB_POINTS)
        self.parts_every = max(1, cfg.total_steps // TB_PART_POINTS)
        self.next = self.next_parts = counters["env_steps"]
        self.last = (time.perf_counter(), counters["env_steps"], counters["sample_updates"])

    def log(self, batch: EpisodeBatch, loss: float, epsilon: float | None) -> None:
        c = self.counters
        step = int(c["env_steps"])
        if step < self.next:
            return
        self.next = step + self.every
        now = time.perf_counter()
        dt = max(now - self.last[0], 1e-9)
        scalars: dict[str, float] = {
            **{f"round/{k}": v for k, v in episode_summary(batch).items()},
            "train/env_steps_per_s": (step - self.last[1]) / dt,
            "train/sample_updates_per_s": (c["sample_updates"] - self.last[2]) / dt,
            "train/gradient_steps": float(c["gradient_steps"]),
        }
        if not math.isnan(loss):
            scalars["train/loss"] = loss
        if epsilon is not None:
            scalars["train/epsilon"] = epsilon
        if self.domain.reward_parts is not None and step >= self.next_parts:
            self.next_parts = step + self.parts_every
            part = batch.trimmed()
            k = min(TB_PART_EPISODES, part.tokens.shape[0])
            actions = part.tokens[:k, 1:].cpu().numpy()
            mask = part.mask[:k].cpu().numpy()
            primers = part.tokens[:k, 0].cpu().numpy()
            for name, value in self.domain.reward_parts(actions, mask, primers).items():
                scalars[f"reward/{name}"] = value
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.last = (time.perf_counter(), step, c["sample_updates"])


def _tensorboard(run_dir: Path | None, cfg: TuneConfig) -> Any:
    if run_dir is None or not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional for the core
        return None
    return SummaryWriter(log_dir=str(run_dir / "tb"))


def _write_metrics(run_dir: Path, metrics: list[dict[str, Any]]) -> None:
    write_text_atomic(run_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in metrics))
    buf = io.StringIO()
    out = csv.DictWriter(buf, fieldnames=list(METRIC_COLUMNS), extrasaction="ignore", lineterminator="\n")
    out.writeheader()
    out.writerows(metrics)
    write_text_atomic(run_dir / "metrics.csv", buf.getvalue())


def _save_model(
    path: Path, learner: Learner, cfg: TuneConfig, domain: Domain, counters: dict[str, Any]
) -> None:
    from rltuner.models.checkpoint import save_checkpoint

    tensors, meta = policy_checkpoint(
        learner.q_net, learner.reward_rnn, cfg.algorithm,
        {"config": to_dict(cfg), "domain": domain.name, "domain_meta": domain.meta or {},
         "reward": domain.reward_config, "step": int(counters["env_steps"]),
         "sample_updates": int(counters["sample_updates"])},
    )  # fmt: skip
    save_checkpoint(path, tensors, meta)


def _save_resume(
    path: Path,
    learner: Learner,
    algorithm: str,
    generator: torch.Generator,
    np_rng: np.random.Generator,
    counters: dict[str, Any],
    metrics: list[dict[str, Any]],
) -> None:
    state = {
        **learner.state_dict(),
        "torch_rng": generator.get_state(),
        "numpy_rng": json.dumps(np_rng.bit_generator.state),  # 128-bit ints: kept as text
        "counters": json.dumps(counters),
        "metrics": json.dumps(metrics),
        "algorithm": algorithm,
    }
    save_training_state(path, state)


def _load_resume(
    path: Path,
    learner: Learner,
    generator: torch.Generator,
    np_rng: np.random.Generator,
    counters: dict[str, Any],
    metrics: list[dict[str, Any]],
    cfg: TuneConfig,
) -> None:
    state = load_training_state(path)
    try:
        if state["algorithm"] != cfg.algorithm:
            raise RLTunerError(
                f"the run in {path.parent} used algorithm {state['algorithm']}, not {cfg.algorithm}"
            )
        replay = state.get("replay")
        if isinstance(replay, dict) and ("states" in replay) != cfg.stored_states:
            was = "states" in replay
            raise RLTunerError(
                f"the run in {path.parent} was tuned with stored_states={str(was).lower()}, and a run cannot "
                f"change it when resuming (its replay holds {'single transitions with' if was else 'no'} "
                f"recurrent states); resume with stored_states={str(was).lower()} or start a new run"
            )
        learner.load_state_dict(state)
        generator.set_state(state["torch_rng"])
        np_rng.bit_generator.state = json.loads(state["numpy_rng"])
        counters.update(json.loads(state["counters"]))
        metrics.extend(json.loads(state["metrics"]))
    except RLTunerError:
        raise
    except Exception as exc:  # corrupt file, other format, other network size
        raise RLTunerError(f"cannot resume from {path}: {exc}") from None


def check_not_diverged(net: torch.nn.Module, loss: float, gradient_step: int, run_dir: Path | None) -> None:
    """Stop a run whose loss or weights became NaN or infinite, before they can overwrite a good checkpoint.

    Raises:
        TrainingDivergedError: saying where, and that the last good checkpoint (if any) is kept.
    """
    finite = math.isfinite(loss) or (math.isnan(loss) and gradient_step == 0)
    if finite and all(bool(torch.isfinite(p).all()) for p in net.parameters()):
        return
    kept = f"; the last good checkpoint is kept in {run_dir}" if run_dir is not None else ""
    raise TrainingDivergedError(
        f"training diverged at gradient step {gradient_step:,}: the loss or the weights became NaN or "
        f"infinite (try a smaller learning_rate or a larger reward_scale){kept}"
    )
