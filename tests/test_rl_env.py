"""Environment, replay, soft update and epsilon schedule."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from rltuner.domains.music import random_note_primers
from rltuner.rl.config import preset
from rltuner.rl.env import BatchedEnv
from rltuner.rl.replay import EpisodeBatch, EpisodeReplay
from rltuner.rl.tuner import epsilon_at, soft_update
from test_rl_support import LENGTH, ToyReward, tiny_prior


def test_recomputed_values_equal_step_by_step_values() -> None:
    q_net, reward_rnn = tiny_prior(1), tiny_prior(2)
    env = BatchedEnv(q_net, reward_rnn, ToyReward(), random_note_primers, LENGTH, n_envs=5)
    seen_q, seen_p = [], []
    gen = torch.Generator().manual_seed(0)

    def act(outputs: torch.Tensor, prior_log_p: torch.Tensor) -> torch.Tensor:
        seen_q.append(outputs.clone())
        seen_p.append(prior_log_p.clone())
        return torch.multinomial(torch.softmax(outputs, -1), 1, generator=gen).squeeze(1)

    batch = env.rollout(act, np.random.default_rng(0))
    assert batch.tokens.shape == (5, LENGTH + 1) and batch.task_reward.shape == (5, LENGTH)
    with torch.no_grad():
        recomputed = q_net(batch.tokens)[0]  # (5, L+1, V)
        prior_log_p = torch.log_softmax(reward_rnn(batch.tokens)[0], -1)
    torch.testing.assert_close(recomputed[:, :LENGTH], torch.stack(seen_q, 1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(prior_log_p[:, :LENGTH], torch.stack(seen_p, 1), atol=1e-5, rtol=1e-5)
    # The stored log p(a|s) is the prior's log-probability of the action taken.
    taken = prior_log_p[:, :LENGTH].gather(-1, batch.tokens[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(batch.log_p, taken, atol=1e-5, rtol=1e-5)
    # The toy reward was computed on the actions in order.
    actions = batch.tokens[:, 1:].numpy()
    reward = ToyReward()
    state = reward.reset(5)
    expected = np.stack([reward.step(state, actions[:, t]) for t in range(LENGTH)], 1)
    np.testing.assert_array_equal(batch.task_reward.numpy(), expected)
    assert ((batch.tokens[:, 0] >= 2) & (batch.tokens[:, 0] <= 37)).all()


def _episodes(start: int, n: int, length: int = 2) -> EpisodeBatch:
    ids = torch.arange(start, start + n, dtype=torch.float32)
    return EpisodeBatch(
        ids.long()[:, None].repeat(1, length + 1),
        ids[:, None].repeat(1, length),
        -ids[:, None].repeat(1, length),
        torch.ones(n, length, dtype=torch.bool),
    )


def test_replay_keeps_whole_episodes_and_overwrites_the_oldest() -> None:
    replay = EpisodeReplay(capacity_transitions=6, episode_length=2)  # 3 episodes
    replay.add(_episodes(0, 2))
    assert len(replay) == 2 and replay.n_transitions == 4
    replay.add(_episodes(2, 2))
    assert len(replay) == 3
    assert sorted(replay.tokens[:, 0].tolist()) == [1, 2, 3]  # episode 0 was overwritten
    sample = replay.sample(50, torch.Generator().manual_seed(0))
    # Rows stay whole: tokens, rewards and log p of one episode travel together.
    assert (sample.tokens[:, 0].float() == sample.task_reward[:, 0]).all()
    assert (sample.task_reward == -sample.log_p).all()
    restored = EpisodeReplay(6, 2)
    restored.load_state_dict(replay.state_dict())
    assert torch.equal(restored.tokens, replay.tokens) and restored.cursor == replay.cursor


def test_soft_update_moves_eta_of_the_way() -> None:
    target, online = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    with torch.no_grad():
        target.weight.fill_(1.0)
        online.weight.fill_(3.0)
        target.bias.fill_(0.0)
        online.bias.fill_(-1.0)
    soft_update(list(target.parameters()), list(online.parameters()), 0.25)
    assert target.weight.tolist() == [[1.5, 1.5]]
    assert target.bias.tolist() == [-0.25]


@pytest.mark.parametrize(("step", "expected"), [(0, 1.0), (250_000, 0.55), (500_000, 0.1), (900_000, 0.1)])
def test_epsilon_schedule_of_the_paper(step: int, expected: float) -> None:
    assert epsilon_at(step, preset("paper")) == pytest.approx(expected)


# ---------------------------------------------------- reward_primer: every path hands the reward its primers
def _primed_music(seed: int = 3, on: bool = True) -> Any:
    from rltuner.domains.music import music_domain

    return music_domain(tiny_prior(seed), reward_primer=on)


def _heard(tokens: np.ndarray) -> np.ndarray:
    """What the primer-hearing reward gives (B, 1 + 32) tokens, primer first (it equals the spec's rules on
    the 33-step melody: test_music_theory.test_hear_primer_is_the_spec_on_the_melody_as_heard)."""
    from rltuner.rewards.music_theory import MusicTheoryReward

    out = MusicTheoryReward(hear_primer=True).score(tokens[:, 1:], primers=tokens[:, 0])
    assert isinstance(out, np.ndarray)
    return out


def _sample(outputs: torch.Tensor, prior_log_p: torch.Tensor) -> torch.Tensor:
    return torch.multinomial(torch.softmax(outputs, -1), 1).squeeze(1)


@pytest.mark.parametrize("n_envs", [1, 6])  # 1: the paper's one-melody path (the reward's scalar path)
def test_lockstep_env_pays_what_the_primer_hearing_reward_gives(n_envs: int) -> None:
    torch.manual_seed(0)
    domain = _primed_music()
    assert domain.reward_hears_primer
    batch = BatchedEnv.for_domain(domain.prior, domain.prior, domain, n_envs).rollout(
        _sample, np.random.default_rng(1)
    )
    tokens = batch.tokens.numpy()
    np.testing.assert_array_equal(batch.task_reward.numpy(), _heard(tokens).astype(np.float32))


def test_option_off_pays_the_spec_reward_and_on_differs() -> None:
    from rltuner.rewards.music_theory import music_theory_rewards

    rewards = {}
    for on in (False, True):
        torch.manual_seed(0)
        domain = _primed_music(on=on)
        batch = BatchedEnv.for_domain(domain.prior, domain.prior, domain, 8).rollout(
            _sample, np.random.default_rng(1)
        )
        rewards[on] = batch.task_reward.numpy()
        spec = np.asarray(music_theory_rewards(batch.tokens[:, 1:].numpy()))
        if not on:
            np.testing.assert_array_equal(rewards[on], spec.astype(np.float32))
    assert np.any(rewards[False] != rewards[True])  # same episodes (same seeds), other reward


def test_on_policy_rollout_with_grouped_primers_hears_them() -> None:
    from rltuner.rl.targets import get_algorithm
    from rltuner.rl.tuner import make_learner

    domain = _primed_music()
    cfg = preset("fast", algorithm="rloo", n_envs=8, reward_primer=True)
    learner = make_learner(get_algorithm("rloo"), cfg, domain, torch.device("cpu"))
    batch = learner.make_env(domain, 8).rollout(_sample, np.random.default_rng(2))
    tokens = batch.tokens.numpy()
    assert len(set(tokens[:, 0].tolist())) <= 2  # groups of 4 share a primer
    np.testing.assert_array_equal(batch.task_reward.numpy(), _heard(tokens).astype(np.float32))


def test_gym_envs_pay_what_the_primer_hearing_reward_gives() -> None:
    pytest.importorskip("gymnasium")
    from rltuner.rl.gym_env import BatchedVectorEnv, SequenceEnv

    domain = _primed_music()
    rng = np.random.default_rng(4)
    actions = rng.integers(0, 38, size=(32, 5))
    envs = BatchedVectorEnv(domain, 5, log_prior=False)
    primers, _ = envs.reset(seed=7)
    got = np.stack([envs.step(actions[t])[4]["task_reward"] for t in range(32)], axis=1)
    expected = _heard(np.concatenate([primers[:, None], actions.T], axis=1))
    np.testing.assert_array_equal(got, expected)
    one = SequenceEnv(domain, log_prior=False)
    primer, _ = one.reset(seed=7)
    got_one = [one.step(int(a))[4]["task_reward"] for a in actions[:, 0]]
    np.testing.assert_array_equal(got_one, _heard(np.array([[int(primer), *actions[:, 0]]]))[0])
