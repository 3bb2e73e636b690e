"""stored_states: the replay keeps the acting network's recurrent state with every transition, and the learner
trains on single transitions, one network step from those states (the original RL Tuner's replay)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rltuner.errors import ConfigError, RLTunerError
from rltuner.models.prior import build_prior
from rltuner.rl.config import TuneConfig, preset
from rltuner.rl.env import BatchedEnv
from rltuner.rl.replay import EpisodeBatch, EpisodeReplay, transitions_of
from rltuner.rl.targets import get_algorithm
from rltuner.rl.tuner import ValueLearner, evaluate_policy, tune
from test_rl_episodes import EOS, PAD, StepReward, _eos_domain, scripted_actor
from test_rl_support import VOCAB, peaked_prior, tiny_prior, toy_domain
from test_rl_tuner import SHORT, _small


@pytest.mark.parametrize("arch", ["lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_flattened_state_restores_the_recurrent_step(arch: str, layers: int) -> None:
    torch.manual_seed(0)
    net = build_prior({"arch": arch, "num_layers": layers, "hidden_size": 8, "vocab_size": VOCAB})
    tokens = torch.randint(0, VOCAB, (3, 6))
    with torch.no_grad():
        forward = net(tokens)[0]
        stepper, state = net.stepper(3), net.initial_state(3)
        for t in range(6):
            rows = net.flatten_state(state)
            assert rows.shape == (3, net.state_size)
            assert torch.equal(net.flatten_state(state, out=torch.empty(3, net.state_size)), rows)
            torch.testing.assert_close(net.flatten_state(stepper.state()), rows, atol=1e-6, rtol=0)
            logits, state = net.step(tokens[:, t], net.unflatten_state(rows.clone()))
            torch.testing.assert_close(logits, forward[:, t], atol=1e-5, rtol=1e-5)
            stepper(tokens[:, t])


def test_the_rollout_records_the_state_before_each_token() -> None:
    net = tiny_prior(1)
    env = BatchedEnv(net, net, StepReward(), _eos_domain().sample_primers, 6, 3, eos_token=EOS, pad_token=PAD,
                     record_states=True)  # fmt: skip
    script = [[5, EOS, 7, 7, 7, 7], [5, 6, 7, EOS, 9, 9], [5, 6, 7, 8, 9, EOS]]
    batch = env.rollout(scripted_actor(script), np.random.default_rng(0))
    assert batch.states is not None and batch.states.shape == (3, 7, net.state_size)
    assert not batch.states[:, 0].any()  # the initial state
    with torch.no_grad():
        forward = net(batch.tokens)[0]
        for t in range(6):  # every state the Q-network was in, the last one (before token 6) included
            logits, _ = net.step(batch.tokens[:, t], net.unflatten_state(batch.states[:, t]))
            torch.testing.assert_close(logits, forward[:, t], atol=1e-5, rtol=1e-5)
    transformer = build_prior({"arch": "transformer", "hidden_size": 8, "num_heads": 2, "vocab_size": VOCAB})
    with pytest.raises(ValueError, match="recurrent"):
        BatchedEnv(transformer, net, StepReward(), _eos_domain().sample_primers, 6, 3, record_states=True)


def test_the_replay_samples_played_transitions_with_their_states() -> None:
    length = 4
    tokens = torch.tensor([[1, 5, 6, EOS, PAD], [2, 5, 7, 8, 9]])
    mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    states = (torch.arange(2)[:, None] * 100 + torch.arange(length + 1)[None, :]).float()[
        ..., None
    ]  # e*100+t
    reward = torch.arange(8, dtype=torch.float32).view(2, 4)
    batch = EpisodeBatch(tokens, reward, -reward, mask, None, states)
    replay = EpisodeReplay(8, length, state_size=1)
    replay.add(batch)
    for terminal in (True, False):
        tr = replay.sample_transitions(400, torch.Generator().manual_seed(0), terminal)
        episode, step = (tr.states[:, 0] // 100).long(), (tr.states[:, 0] % 100).long()
        assert mask[episode, step].all()  # never a step after an episode's end
        assert {(int(e), int(t)) for e, t in zip(episode, step, strict=True)} == {
            (e, t) for e in range(2) for t in range(length) if mask[e, t]
        }
        assert torch.equal(tr.next_states[:, 0], tr.states[:, 0] + 1)
        assert torch.equal(tr.tokens, tokens[episode, step]) and torch.equal(
            tr.actions, tokens[episode, step + 1]
        )
        assert torch.equal(tr.task_reward, reward[episode, step]) and torch.equal(
            tr.log_p, -reward[episode, step]
        )
        torch.testing.assert_close(tr.not_done, batch.not_done(terminal)[episode, step])
    restored = EpisodeReplay(8, length, state_size=1)
    restored.load_state_dict(replay.state_dict())
    assert restored.states is not None and torch.equal(restored.states[:2], states)
    with pytest.raises(ValueError, match="no recurrent states"):
        restored.load_state_dict({k: v for k, v in replay.state_dict().items() if k != "states"})
    with pytest.raises(ValueError, match="carry none"):
        replay.add(batch._replace(states=None))


@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [("q", {}), ("q", {"double_q": True}), ("psi", {}), ("g", {}), ("g", {"offset_by_prior": True}),
     ("q", {"terminal_last_step": False})],
)  # fmt: skip
def test_single_transitions_give_the_episode_loss_at_the_acting_weights(
    algorithm: str, extra: dict[str, object]
) -> None:
    """Before any update the stored states are exactly those a pass over the episodes computes, so the loss
    over all of a round's transitions is the whole-episode loss (only the gradient differs: no BPTT). Once the
    target network differs from the online one the two differ by design: the target then steps from the
    Q-network's stored state at s', as the original's did, not from its own state over the episode."""
    torch.manual_seed(0)
    cfg = TuneConfig(algorithm=algorithm, stored_states=True, learner_bf16="off", progress=False, **extra)  # type: ignore[arg-type]
    domain = _eos_domain()
    learner = ValueLearner(peaked_prior(3), get_algorithm(algorithm), cfg, torch.device("cpu"), 12)
    env = learner.make_env(domain, 6)
    batch = env.rollout(learner.actor(torch.Generator().manual_seed(1), 0), np.random.default_rng(0))
    assert batch.states is not None and int((~batch.mask).sum()) > 0  # some episodes ended early
    episode, step = batch.mask.nonzero(as_tuple=True)
    tr = transitions_of(batch, episode, step, cfg.terminal_last_step)
    with torch.no_grad():
        whole, single = learner.episode_loss(batch), learner.transitions_loss(tr)
    assert float(single) == pytest.approx(float(whole), rel=1e-5)
    before = [p.clone() for p in learner.q_net.parameters()]
    assert learner.step_transitions(tr) == pytest.approx(float(whole), rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.q_net.parameters(), strict=True))


def test_a_stored_state_run_learns_resumes_to_the_bit_and_counts_single_transitions(tmp_path: Path) -> None:
    domain = toy_domain(peaked_prior())
    prior = evaluate_policy(domain.prior, domain, "q", 400, seed=1)
    result = tune(preset("fast", **{**SHORT, "stored_states": True, "batch_size": 100}), domain)
    assert result.gradient_steps == 256 and result.sample_updates == 256 * 100  # batch_size: transitions
    assert result.metrics[-1]["mean_task_reward"] > prior["mean_task_reward"] + 0.05
    small = toy_domain(tiny_prior(3))
    whole = tune(_small(algorithm="q", stored_states=True, batch_size=50), small, tmp_path / "whole")
    tune(_small(algorithm="q", stored_states=True, batch_size=50, total_steps=512), small, tmp_path / "parts")
    resumed = tune(
        _small(algorithm="q", stored_states=True, batch_size=50), small, tmp_path / "parts", resume=True
    )
    assert resumed.sample_updates == whole.sample_updates
    for a, b in zip(whole.policy.state_dict().values(), resumed.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_a_run_cannot_switch_stored_states_when_resuming(tmp_path: Path) -> None:
    small = toy_domain(tiny_prior(3))
    for stored in (False, True):
        run = tmp_path / f"stored-{stored}"
        tune(_small(algorithm="q", stored_states=stored, batch_size=64, total_steps=256), small, run)
        with pytest.raises(RLTunerError, match=f"tuned with stored_states={str(stored).lower()}"):
            tune(_small(algorithm="q", stored_states=not stored, batch_size=64), small, run, resume=True)
        # as it began: goes on
        tune(_small(algorithm="q", stored_states=stored, batch_size=64), small, run, resume=True)


def test_stored_states_are_refused_where_there_is_no_recurrent_state(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="value family"):
        preset("fast", algorithm="rloo", stored_states=True)
    transformer = build_prior({"arch": "transformer", "hidden_size": 8, "num_heads": 2, "vocab_size": VOCAB})
    with pytest.raises(ConfigError, match="recurrent prior"):
        tune(_small(stored_states=True), toy_domain(transformer), tmp_path / "t")


def test_an_end_token_is_terminal_even_when_the_last_step_bootstraps() -> None:
    """terminal_last_step=false bootstraps a fixed-length episode's last step, never an end token: not on the
    last step itself, nor when every sampled episode ended early (whose trimmed batch's last column is an end
    step), in both replays."""
    length = 4
    cfg = TuneConfig(stored_states=True, terminal_last_step=False, learner_bf16="off", progress=False)
    learner = ValueLearner(tiny_prior(2), get_algorithm("q"), cfg, torch.device("cpu"), length, eos_token=EOS)
    env = BatchedEnv(learner.q_net, learner.reward_rnn, StepReward(), _eos_domain().sample_primers, length, 2,
                     eos_token=EOS, pad_token=PAD, record_states=True)  # fmt: skip
    early = env.rollout(scripted_actor([[5, EOS, 7, 7], [5, 6, EOS, 7]]), np.random.default_rng(0))
    last = env.rollout(scripted_actor([[5, 6, 7, EOS], [5, 6, 7, 8]]), np.random.default_rng(0))
    assert early.not_done(False, EOS).tolist() == [[1, 0, 0, 0], [1, 1, 0, 0]]
    assert last.not_done(False, EOS).tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    for batch in (early, last):
        episode, step = batch.mask.nonzero(as_tuple=True)
        tr = transitions_of(batch, episode, step, False, EOS)
        torch.testing.assert_close(tr.not_done, batch.not_done(False, EOS)[episode, step])
        with torch.no_grad():
            whole, single = learner.episode_loss(batch), learner.transitions_loss(tr)
        assert float(single) == pytest.approx(float(whole), rel=1e-5)
