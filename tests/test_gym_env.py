"""The gymnasium adapter: gymnasium's own env checker, exact rewards against the prior, a random agent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gymnasium = pytest.importorskip("gymnasium")

from gymnasium.utils.env_checker import check_env  # noqa: E402

from rltuner.errors import ConfigError, RLTunerError  # noqa: E402
from rltuner.models.prior import build_prior  # noqa: E402
from rltuner.rl.gym_env import BatchedVectorEnv, SequenceEnv, sequence_vector_env  # noqa: E402
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


@pytest.mark.parametrize("batched", [True, False])
def test_random_agent_through_the_vector_env(batched: bool) -> None:
    envs = sequence_vector_env(
        toy_domain(peaked_prior()), n_envs=4, log_prior=False, reward_scale=1.0, batched=batched
    )
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


def _eos_domain(eos: int = 3) -> object:
    domain = toy_domain(peaked_prior())
    return type(domain)(**{**domain.__dict__, "eos_token": eos})


def test_batched_vector_env_restarts_episodes_one_by_one_with_exact_rewards() -> None:
    """Episodes end at the end token at different steps; each one's rewards match a replay of it alone."""
    domain = _eos_domain()
    envs = BatchedVectorEnv(domain, n_envs=5, reward_scale=0.5)
    obs, _ = envs.reset(seed=1)
    rng = np.random.default_rng(0)
    running: list[dict[str, list]] = [
        {"tokens": [int(o)], "rewards": [], "task": [], "log_p": []} for o in obs
    ]
    finished = []
    restarts = 0
    for _ in range(40):
        actions = rng.choice([3, 5, 14, 20, 21], size=5, p=[0.2, 0.2, 0.2, 0.2, 0.2])
        obs, rewards, terminated, truncated, infos = envs.step(actions)
        assert envs.observation_space.contains(obs) and not truncated.any()
        for i in range(5):
            if not infos["_task_reward"][i]:  # the step that restarts episode i: its primer, reward 0
                assert rewards[i] == 0 and not terminated[i]
                running[i] = {"tokens": [int(obs[i])], "rewards": [], "task": [], "log_p": []}
                restarts += 1
                continue
            ep = running[i]
            ep["tokens"].append(int(actions[i]))
            ep["rewards"].append(float(rewards[i]))
            ep["task"].append(float(infos["task_reward"][i]))
            ep["log_p"].append(float(infos["log_p"][i]))
            assert int(obs[i]) == actions[i]
            if terminated[i]:
                assert actions[i] == 3 or len(ep["task"]) == LENGTH
                finished.append(ep)
    assert restarts >= 5 and len(finished) >= 10
    lengths = {len(ep["task"]) for ep in finished}
    assert len(lengths) > 1  # the episodes did end at different steps
    for ep in finished:
        tokens = ep["tokens"]
        with torch.no_grad():
            logits, _ = domain.prior(torch.tensor([tokens[:-1]]))
        expected_log_p = torch.log_softmax(logits[0], -1)[torch.arange(len(tokens) - 1), tokens[1:]]
        reward, state = ToyReward(), ToyReward().reset(1)
        expected_task = [float(reward.step(state, np.array([a]))[0]) for a in tokens[1:]]
        np.testing.assert_allclose(ep["log_p"], expected_log_p.numpy(), atol=1e-5)
        np.testing.assert_allclose(ep["task"], expected_task)
        np.testing.assert_allclose(
            ep["rewards"], np.array(expected_task) / 0.5 + expected_log_p.numpy(), atol=1e-5
        )


def test_batched_vector_env_works_with_gymnasium_wrappers() -> None:
    """gymnasium's own episode statistics wrapper reads the autoreset episodes right."""
    from gymnasium.wrappers.vector import RecordEpisodeStatistics

    envs = RecordEpisodeStatistics(BatchedVectorEnv(toy_domain(peaked_prior()), n_envs=3))
    envs.reset(seed=0)
    envs.action_space.seed(0)
    lengths = []
    for _ in range(2 * LENGTH + 1):
        *_, infos = envs.step(envs.action_space.sample())
        if "episode" in infos:
            lengths.extend(infos["episode"]["l"][infos["_episode"]].tolist())
    assert lengths == [LENGTH] * 6


def test_batched_vector_env_is_seeded() -> None:
    def play(seed: int) -> list[float]:
        envs = BatchedVectorEnv(_eos_domain(), n_envs=4)
        obs, _ = envs.reset(seed=seed)
        out = obs.tolist()
        for t in range(20):
            obs, rewards, *_ = envs.step(np.full(4, 3 if t % 3 == 0 else 14))
            out += obs.tolist() + rewards.tolist()
        return out

    assert play(7) == play(7) and play(7) != play(8)


def test_batched_vector_env_refusals() -> None:
    transformer = build_prior({"arch": "transformer", "vocab_size": 38, "hidden_size": 16, "num_heads": 2})
    domain = toy_domain(transformer)
    BatchedVectorEnv(domain, 2)  # fixed-length episodes restart together: any prior works
    with pytest.raises(ConfigError, match="recurrent prior"):
        BatchedVectorEnv(type(domain)(**{**domain.__dict__, "eos_token": 3}), 2)
    envs = BatchedVectorEnv(toy_domain(), 2)
    with pytest.raises(RLTunerError, match="reset"):
        envs.step(np.zeros(2))
    envs.reset(seed=0)
    with pytest.raises(ConfigError, match="expected 2 actions"):
        envs.step(np.zeros(3))
    with pytest.raises(ConfigError, match="actions must be in"):
        envs.step(np.array([0, 99]))
