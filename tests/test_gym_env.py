"""The gymnasium adapter: gymnasium's own env checker, exact rewards against the prior, a random agent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from rltuner.errors import ConfigError  # noqa: E402
from rltuner.rl.gym_env import SequenceEnv, sequence_vector_env  # noqa: E402
from test_rl_support import LENGTH, ToyReward, peaked_prior, toy_domain  # noqa: E402


def test_gymnasium_env_checker_passes() -> None:
    check_env(SequenceEnv(toy_domain(peaked_prior())), skip_render_check=True)


def test_rewards_are_log_prior_plus_task_over_c() -> None:
    domain = toy_domain(peaked_prior())
    env = SequenceEnv(domain, reward_scale=0.5)
    obs, _ = env.reset(seed=3)
    actions = [14, 14, 20, 21, 14, 5, 6, 7]
    prior_logits, _ = domain.prior(torch.tensor([[int(obs), *actions[:-1]]]))
    expected_log_p = torch.log_softmax(prior_logits[0], -1)[torch.arange(LENGTH), actions].tolist()
    reward_state, task_reward = ToyReward().reset(1), ToyReward()
    for t, a in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(a)
        task = float(task_reward.step(reward_state, np.array([a]))[0])
        assert int(obs) == a and not truncated and terminated == (t == LENGTH - 1)
        assert info["task_reward"] == task and info["log_p"] == pytest.approx(expected_log_p[t], abs=1e-5)
        assert reward == pytest.approx(expected_log_p[t] + task / 0.5, abs=1e-5)


def test_random_agent_through_the_vector_env() -> None:
    envs = sequence_vector_env(toy_domain(peaked_prior()), n_envs=4, log_prior=False, reward_scale=1.0)
    assert isinstance(envs, gymnasium.vector.VectorEnv) and envs.num_envs == 4
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (4,) and envs.observation_space.contains(obs)
    envs.action_space.seed(0)
    ends, total = 0, 0.0
    for _ in range(3 * LENGTH):
        obs, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
        assert rewards.shape == (4,) and not truncated.any()
        if "task_reward" in infos:  # absent on the step that resets every env
            played = infos["_task_reward"]
            np.testing.assert_allclose(rewards[played], infos["task_reward"][played])
            assert (infos["log_p"][played] < 0).all()
        ends += int(terminated.sum())
        total += float(rewards.sum())
    # 24 steps of 4 envs with next-step autoreset: each env ends at steps 8 and 17 (step 9 is the reset).
    assert ends == 8 and np.isfinite(total)
    envs.close()


def test_episodes_end_at_the_end_token() -> None:
    domain = toy_domain(peaked_prior())
    domain = type(domain)(**{**domain.__dict__, "eos_token": 3})
    env = SequenceEnv(domain)
    env.reset(seed=0)
    assert env.step(5)[2] is False and env.step(3)[2] is True


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="reward_scale"):
        SequenceEnv(toy_domain(), reward_scale=0)
    with pytest.raises(ConfigError, match="n_envs"):
        sequence_vector_env(toy_domain(), 0)
    env = SequenceEnv(toy_domain())
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="outside the vocabulary"):
        env.step(99)
