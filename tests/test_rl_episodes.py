"""Variable-length episodes: done masks in the environment, the replay and the TD targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rltuner.domains.base import Domain
from rltuner.domains.music import random_note_primers
from rltuner.rl.config import TuneConfig
from rltuner.rl.env import BatchedEnv
from rltuner.rl.replay import EpisodeBatch, EpisodeReplay
from rltuner.rl.targets import get_algorithm, td_target
from rltuner.rl.tuner import ValueLearner, episode_summary, tune
from test_rl_support import VOCAB, tiny_prior

EOS, PAD = 3, 0


class StepReward:
    """Pays the step number + 1 at every step, so masked steps are easy to spot."""

    def reset(self, batch_size: int) -> dict[str, int]:
        return {"t": 0}

    def step(self, state: dict[str, int], actions: np.ndarray) -> np.ndarray:
        state["t"] += 1
        return np.full(len(actions), float(state["t"]))


def scripted_actor(script: list[list[int]]):  # type: ignore[no-untyped-def]
    """Plays ``script[b][t]`` in episode b at step t."""
    t = [0]

    def act(outputs: torch.Tensor, prior_log_p: torch.Tensor) -> torch.Tensor:
        out = torch.tensor([row[t[0]] for row in script])
        t[0] += 1
        return out

    return act


def test_rollout_ends_episodes_at_the_end_token_and_masks_the_rest() -> None:
    prior = tiny_prior()
    env = BatchedEnv(prior, prior, StepReward(), random_note_primers, 6, 3, eos_token=EOS, pad_token=PAD)
    script = [[5, EOS, 7, 7, 7, 7], [5, 6, 7, EOS, 9, 9], [5, 6, 7, 8, 9, EOS]]
    batch = env.rollout(scripted_actor(script), np.random.default_rng(0))
    assert batch.mask.tolist() == [
        [True, True, False, False, False, False],
        [True, True, True, True, False, False],
        [True] * 6,
    ]
    assert batch.tokens[:, 1:].tolist() == [[5, EOS, PAD, PAD, PAD, PAD], [5, 6, 7, EOS, PAD, PAD], script[2]]
    # Rewards and log p are zero after the end; played steps keep theirs.
    assert batch.task_reward.tolist()[0] == [1.0, 2.0, 0.0, 0.0, 0.0, 0.0]
    assert (batch.log_p[~batch.mask] == 0).all() and (batch.log_p[batch.mask] < 0).all()
    assert batch.n_transitions == 2 + 4 + 6
    summary = episode_summary(batch)
    assert summary["mean_length"] == pytest.approx(4.0)
    assert summary["mean_return"] == pytest.approx((3 + 10 + 21) / 3)


def test_rollout_stops_once_every_episode_ended() -> None:
    calls = [0]
    prior = tiny_prior()

    def act(outputs: torch.Tensor, prior_log_p: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        return torch.full((outputs.shape[0],), EOS)

    env = BatchedEnv(prior, prior, StepReward(), random_note_primers, 50, 4, eos_token=EOS, pad_token=PAD)
    batch = env.rollout(act, np.random.default_rng(0))
    assert calls[0] == 1 and batch.mask[:, 0].all() and not batch.mask[:, 1:].any()


def test_not_done_and_trim() -> None:
    mask = torch.tensor([[True, True, False, False], [True, True, True, False]])
    batch = EpisodeBatch(torch.zeros(2, 5, dtype=torch.long), torch.zeros(2, 4), torch.zeros(2, 4), mask)
    assert batch.not_done().tolist() == [[1, 0, 0, 0], [1, 1, 0, 0]]
    full = EpisodeBatch(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3), torch.zeros(1, 3),
                        torch.ones(1, 3, dtype=torch.bool))  # fmt: skip
    assert full.not_done(terminal_last_step=True).tolist() == [[1, 1, 0]]
    assert full.not_done(terminal_last_step=False).tolist() == [[1, 1, 1]]
    trimmed = batch.trimmed()
    assert trimmed.mask.shape == (2, 3) and trimmed.tokens.shape == (2, 4)


def test_replay_keeps_masks() -> None:
    mask = torch.tensor([[True, False, False], [True, True, True]])
    batch = EpisodeBatch(torch.arange(8).view(2, 4), torch.ones(2, 3), torch.ones(2, 3), mask)
    replay = EpisodeReplay(30, 3)
    replay.add(batch)
    assert replay.n_transitions == 4
    restored = EpisodeReplay(30, 3)
    restored.load_state_dict(replay.state_dict())
    assert torch.equal(restored.mask[:2], mask)


@pytest.mark.parametrize("offset", [False, True])
@pytest.mark.parametrize("algorithm", ["q", "psi", "g"])
def test_learner_loss_equals_step_by_step_td_errors_over_played_steps(algorithm: str, offset: bool) -> None:
    torch.manual_seed(0)
    cfg = TuneConfig(
        algorithm=algorithm, learning_rate=1e-9, batch_size=8, progress=False, offset_by_prior=offset
    )
    learner = ValueLearner(tiny_prior(1), get_algorithm(algorithm), cfg, torch.device("cpu"), 4)
    tokens = torch.tensor([[5, 6, EOS, PAD, PAD], [5, 7, 8, 9, EOS]])
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    reward = torch.tensor([[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, -1.0]])
    log_p = torch.tensor([[-1.0, -2.0, 0.0, 0.0], [-1.5, -0.5, -1.0, -2.0]])
    batch = EpisodeBatch(tokens, reward, log_p, mask)
    algo = get_algorithm(algorithm)
    # Step by step, one transition at a time, no padding involved.
    errors = []
    with torch.no_grad():
        for b in range(2):
            n = int(mask[b].sum())
            seq = tokens[b : b + 1, : n + 1]
            online = learner.q_net(seq)[0][0]  # (n+1, V)
            target = learner.target_net(seq)[0][0]
            prior_logits = learner.reward_rnn(seq)[0][0]
            prior = torch.log_softmax(prior_logits, -1)
            if offset:  # Q = outputs - logsumexp(prior logits): at the start, exactly log p(a|s)
                online = online - torch.logsumexp(prior_logits, -1, keepdim=True)
                target = target - torch.logsumexp(prior_logits, -1, keepdim=True)
                torch.testing.assert_close(online, prior, atol=1e-5, rtol=0)
            for t in range(n):
                r = algo.reward(log_p[b, t : t + 1], reward[b, t : t + 1], cfg.reward_scale)
                v = algo.next_value(
                    target[None, t + 1 : t + 2],
                    online[None, t + 1 : t + 2],
                    prior[None, t + 1 : t + 2],
                    False,
                )
                last = t == n - 1
                y = td_target(r, v.view(1), cfg.gamma, torch.tensor([0.0 if last else 1.0]))
                errors.append(float((online[t, tokens[b, t + 1]] - y) ** 2))
    loss = learner.step(batch)
    assert loss == pytest.approx(sum(errors) / len(errors), rel=1e-5)


def _eos_domain() -> Domain:
    class PaysForEos:
        def reset(self, batch_size: int) -> None:
            return None

        def step(self, state: None, actions: np.ndarray) -> np.ndarray:
            return (actions == EOS).astype(np.float64) * 5.0

    return Domain(
        name="toy-eos", vocab_size=VOCAB, prior=tiny_prior(2), make_reward=PaysForEos,
        sample_primers=random_note_primers, episode_length=12, eos_token=EOS, pad_token=PAD,
    )  # fmt: skip


def test_tuning_an_eos_domain_learns_to_end_early() -> None:
    cfg = TuneConfig(
        algorithm="q", total_steps=6000, n_envs=32, batch_size=192, train_every=16, exploration="boltzmann",
        eval_every=0, eval_episodes=64, tensorboard=False, progress=False, learning_rate=5e-3,
    )  # fmt: skip
    result = tune(cfg, _eos_domain())
    first, last = result.metrics[0], result.metrics[-1]
    assert last["mean_return"] > first["mean_return"] + 1.0
    assert last["mean_length"] < first["mean_length"]
    assert result.sample_updates < result.gradient_steps * cfg.batch_size  # padding is not counted


def test_rollout_records_the_prior_logits_a_forward_pass_gives() -> None:
    prior = tiny_prior()
    env = BatchedEnv(prior, prior, StepReward(), random_note_primers, 6, 3, eos_token=EOS, pad_token=PAD,
                     record_prior_logits=True)  # fmt: skip
    script = [[5, EOS, 7, 7, 7, 7], [5, 6, 7, EOS, 9, 9], [5, 6, EOS, 8, 9, 9]]
    batch = env.rollout(scripted_actor(script), np.random.default_rng(0))
    assert batch.prior_logits is not None
    # Every episode ended by step 4: the rollout stopped there; the state after it is recorded, the rest 0.
    n = int(batch.mask.any(dim=0).sum())
    assert n == 4 and batch.prior_logits.shape == (3, 7, VOCAB)
    with torch.no_grad():
        forward = prior(batch.tokens[:, : n + 1])[0]
    torch.testing.assert_close(batch.prior_logits[:, : n + 1], forward, atol=1e-5, rtol=1e-5)
    assert not batch.prior_logits[:, n + 1 :].any()
    # log p(a|s) of the played actions is the recorded distribution's
    log_softmax = torch.log_softmax(batch.prior_logits[:, :-1], -1)
    taken = log_softmax.gather(-1, batch.tokens[:, 1:, None]).squeeze(-1)
    torch.testing.assert_close(taken[batch.mask], batch.log_p[batch.mask])
    trimmed = batch.trimmed()
    assert trimmed.prior_logits is not None and trimmed.prior_logits.shape == (3, n + 1, VOCAB)
    plain = BatchedEnv(prior, prior, StepReward(), random_note_primers, 6, 3, eos_token=EOS, pad_token=PAD)
    assert plain.rollout(scripted_actor(script), np.random.default_rng(0)).prior_logits is None


def test_replay_keeps_and_saves_the_prior_logits() -> None:
    mask = torch.ones(3, 2, dtype=torch.bool)
    logits = torch.randn(3, 3, VOCAB)
    batch = EpisodeBatch(torch.arange(9).view(3, 3), torch.ones(3, 2), torch.ones(3, 2), mask, logits)
    replay = EpisodeReplay(4, 2, prior_vocab=VOCAB)  # holds 2 episodes: the newest two are kept
    replay.add(batch)
    assert replay.prior_logits is not None and torch.equal(replay.prior_logits, logits[1:])
    sample = replay.sample(5, torch.Generator().manual_seed(0))
    assert sample.prior_logits is not None
    for tokens, row in zip(sample.tokens, sample.prior_logits, strict=True):
        assert torch.equal(row, logits[int(tokens[0]) // 3])
    restored = EpisodeReplay(4, 2, prior_vocab=VOCAB)
    restored.load_state_dict(replay.state_dict())
    assert restored.prior_logits is not None and torch.equal(restored.prior_logits, replay.prior_logits)
    with pytest.raises(ValueError, match="carry none"):
        replay.add(batch._replace(prior_logits=None))
    old_state = {k: v for k, v in replay.state_dict().items() if k != "prior_logits"}
    assert restored.missing_prior_logits(old_state) and not EpisodeReplay(4, 2).missing_prior_logits(
        old_state
    )
    with pytest.raises(ValueError, match="no prior logits"):
        restored.load_state_dict(old_state)


@pytest.mark.parametrize("offset", [False, True])
def test_g_learns_from_recorded_prior_logits_as_from_a_forward_pass(offset: bool) -> None:
    torch.manual_seed(0)
    cfg = TuneConfig(algorithm="g", batch_size=8, progress=False, offset_by_prior=offset, learner_bf16="off")
    domain = _eos_domain()
    learner = ValueLearner(domain.prior, get_algorithm("g"), cfg, torch.device("cpu"), 12)
    env = learner.make_env(domain, 4)
    batch = env.rollout(learner.actor(torch.Generator().manual_seed(1), 0), np.random.default_rng(0))
    assert batch.prior_logits is not None
    twin = ValueLearner(domain.prior, get_algorithm("g"), cfg, torch.device("cpu"), 12)
    recorded = learner.step(batch)
    recomputed = twin.step(batch._replace(prior_logits=None))  # the forward-pass fallback
    assert recorded == pytest.approx(recomputed, rel=1e-5)
    # A run saved before the replay kept the logits resumes with them recomputed.
    learner.replay.add(batch)
    state = learner.state_dict()
    del state["replay"]["prior_logits"]
    resumed = ValueLearner(domain.prior, get_algorithm("g"), cfg, torch.device("cpu"), 12)
    resumed.load_state_dict(state)
    assert resumed.replay.prior_logits is not None and learner.replay.prior_logits is not None
    n = int(batch.mask.any(dim=0).sum())  # the recorded states (a rollout whose episodes all ended stopped)
    got, want = resumed.replay.prior_logits[:4, : n + 1], learner.replay.prior_logits[:4, : n + 1]
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
