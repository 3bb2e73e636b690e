"""A batched environment: B episodes composed in lockstep, fully vectorised.

The state of each episode is the previous token plus the recurrent states of the Q-network and of the frozen
Reward RNN (the prior); the task reward's per-episode state lives in the reward object. One call of
:meth:`BatchedEnv.rollout` plays a whole batch of episodes; the next call restarts them all.

Episodes end after ``episode_length`` actions or, when the domain has an end token, at the step that plays it
(the end token is the episode's last action). After its end an episode is fed the pad token; its later steps
are masked out (``mask`` false), carry no reward and no loss. The rollout stops once every episode has ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import torch

from rltuner.domains.base import PrimerSampler, SequenceReward, reset_reward
from rltuner.models.prior import StatefulStepper, Stepper
from rltuner.rl.replay import EpisodeBatch
from rltuner.threads import OverlapChooser, overlap_pool

ActFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``act(outputs (B, V), prior_log_p (B, V)) -> actions (B,) int64``: the network's outputs at the current
states and the prior's log-probabilities there."""


class BatchedEnv:
    """``n_envs`` episodes of ``episode_length`` actions, stepped together.

    Args:
        q_net: the acting network (Prior interface); its outputs are handed to ``act``.
        reward_rnn: the frozen prior; supplies ``log p(a|s)``.
        reward: the task reward (``reset`` / ``step`` protocol), e.g. the music-theory reward.
        sample_primers: draws the first input token of each episode.
        episode_length: L.
        n_envs: B.
        device: where the networks run (the task reward runs on the CPU in numpy).
        eos_token: the action that ends an episode early, or None.
        pad_token: what an ended episode is fed.
        reward_hears_primer: ``reward.reset`` takes the primers (the domain's ``reward_hears_primer``).
        record_prior_logits: also return the prior's logits at every state (``EpisodeBatch.prior_logits``),
            for a learner that would otherwise run the prior over the episodes again (G-learning).
        overlap: step the prior on the worker thread (:func:`rltuner.threads.overlap_pool`) while the
            acting network steps: the two are independent, so the numbers are the same.
        record_states: also return the acting network's recurrent state before every token
            (``EpisodeBatch.states``; a recurrent network with ``flatten_state``), for a replay that stores
            them (``TuneConfig.stored_states``).
    """

    def __init__(
        self,
        q_net: Any,
        reward_rnn: Any,
        reward: SequenceReward,
        sample_primers: PrimerSampler,
        episode_length: int,
        n_envs: int,
        device: torch.device | str = "cpu",
        eos_token: int | None = None,
        pad_token: int = 0,
        reward_hears_primer: bool = False,
        record_prior_logits: bool = False,
        overlap: bool | OverlapChooser = False,
        record_states: bool = False,
    ) -> None:
        if record_states and not hasattr(q_net, "flatten_state"):
            raise ValueError("record_states needs a recurrent acting network (one with flatten_state)")
        self.q_net = q_net
        self.reward_rnn = reward_rnn
        self.reward = reward
        self.sample_primers = sample_primers
        self.episode_length = episode_length
        self.n_envs = n_envs
        self.device = torch.device(device)
        self.eos_token = eos_token
        self.pad_token = pad_token
        self.reward_hears_primer = reward_hears_primer
        self.record_prior_logits = record_prior_logits
        self.record_states = record_states
        # A bool: always or never; a chooser (overlap=auto): timed rollout by rollout.
        self.overlap = overlap if isinstance(overlap, OverlapChooser) else OverlapChooser(overlap)

    @classmethod
    def for_domain(
        cls,
        q_net: Any,
        reward_rnn: Any,
        domain: Any,
        n_envs: int,
        device: Any = "cpu",
        record_prior_logits: bool = False,
        overlap: bool | OverlapChooser = False,
        record_states: bool = False,
    ) -> BatchedEnv:
        """An environment over a :class:`~rltuner.domains.base.Domain` (its reward, primers, length, end)."""
        return cls(
            q_net, reward_rnn, domain.make_reward(), domain.sample_primers, domain.episode_length, n_envs,
            device, eos_token=domain.eos_token, pad_token=domain.pad_token,
            reward_hears_primer=domain.reward_hears_primer, record_prior_logits=record_prior_logits,
            overlap=overlap, record_states=record_states,
        )  # fmt: skip

    @torch.no_grad()
    def rollout(self, act: ActFn, rng: np.random.Generator) -> EpisodeBatch:
        """Play one batch of complete episodes.

        Args:
            act: the behaviour policy (exploration included).
            rng: draws the primers.

        Returns:
            The episodes (on the CPU): tokens (B, L+1) with the primer first, task_reward (B, L), log_p (B, L),
            mask (B, L), and with ``record_prior_logits`` prior_logits (B, L+1, V). Steps after an episode's
            end hold the pad token, zeros and ``mask`` false (the prior's logits there are those of the pad
            inputs, up to the state after the last played step; zeros beyond), with ``record_states`` states
            (B, L+1, S): positions 0 .. t+1 written (t the last step any episode played), zeros beyond; after
            an episode's end, the states after its pad inputs.
        """
        B, L = self.n_envs, self.episode_length
        primers = torch.as_tensor(np.asarray(self.sample_primers(B, rng), dtype=np.int64))
        tokens = torch.full((B, L + 1), self.pad_token, dtype=torch.int64)
        tokens[:, 0] = primers
        reward = np.zeros((B, L), dtype=np.float64)
        log_p = torch.zeros(B, L, dtype=torch.float32, device=self.device)
        mask = torch.zeros(B, L, dtype=torch.bool)
        alive = torch.ones(B, dtype=torch.bool)  # not yet ended (CPU)
        # Steppers keep the recurrent states and may precompute from the weights: valid for this rollout,
        # as the weights change only between rollouts.
        q_step = stepper(self.q_net, B, self.device)
        p_step = stepper(self.reward_rnn, B, self.device)
        reward_state = reset_reward(self.reward, B, primers.numpy(), self.reward_hears_primer)
        prev = primers.to(self.device)
        pad = torch.full((B,), self.pad_token, dtype=torch.int64)
        prior_logits: torch.Tensor | None = None
        states: torch.Tensor | None = None
        if self.record_states:  # position t: the state before token t (the initial one first)
            read_state = cast(Any, q_step).state
            flatten = self.q_net.flatten_state
            states = torch.zeros(B, L + 1, self.q_net.state_size, device=self.device)
            flatten(read_state(), out=states[:, 0])
        overlap = self.overlap.use()
        started = time.perf_counter()
        pool = overlap_pool() if overlap else None
        t = -1
        for t in range(L):
            # Both networks read the previous token: their outputs are the values at state s_t.
            pending = pool.submit(p_step, prev) if pool is not None else None
            outputs = q_step(prev)  # (B, V)
            if states is not None:
                flatten(read_state(), out=states[:, t + 1])
            p_logits = (pending.result() if pending is not None else p_step(prev)).float()
            if self.record_prior_logits:
                if prior_logits is None:
                    prior_logits = p_logits.new_zeros(B, L + 1, p_logits.shape[-1])
                prior_logits[:, t] = p_logits
            prior_log_p = torch.log_softmax(p_logits, dim=-1)  # (B, V)
            actions_cpu = act(outputs, prior_log_p).cpu()  # (B,)
            if self.eos_token is not None:  # an ended episode is fed the pad token
                actions_cpu = torch.where(alive, actions_cpu, pad)
                mask[:, t] = alive
            actions = actions_cpu.to(self.device)
            tokens[:, t + 1] = actions_cpu
            prev = actions
            taken = prior_log_p.gather(1, actions[:, None]).squeeze(1)
            step_reward = self.reward.step(reward_state, actions_cpu.numpy())
            if self.eos_token is None:  # every episode plays every step: nothing to mask (the same numbers)
                log_p[:, t] = taken
                reward[:, t] = step_reward
                continue
            log_p[:, t] = taken * alive.to(self.device)
            reward[:, t] = step_reward * alive.numpy()
            alive &= actions_cpu != self.eos_token
            if not bool(alive.any()):
                break
        if self.eos_token is None:
            mask[:, : t + 1] = True
        if prior_logits is not None:  # the state after the last played step: the TD target's last s'
            prior_logits[:, t + 1] = p_step(prev).float()
            prior_logits = prior_logits.cpu()
        self.overlap.record(overlap, time.perf_counter() - started)
        if states is not None:
            states = states.cpu()
        return EpisodeBatch(tokens, torch.from_numpy(reward).float(), log_p.cpu(), mask, prior_logits, states)


def stepper(net: Any, batch_size: int, device: torch.device) -> Stepper:
    """``net.stepper`` (:meth:`~rltuner.models.prior.Prior.stepper`), or the same over ``net.step`` for a
    network that only has the step interface (a :class:`~rltuner.models.prior.StatefulStepper`)."""
    if hasattr(net, "stepper"):
        return cast(Stepper, net.stepper(batch_size, device))
    state = [net.initial_state(batch_size, device=device)]

    def step(tokens: torch.Tensor) -> torch.Tensor:
        logits, state[0] = net.step(tokens, state[0])
        return cast(torch.Tensor, logits)

    return StatefulStepper(step, lambda: state[0])
