"""Preference reward: the Bradley-Terry model, the simulated rater, the reward term in tuning, the CLI loop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import rltuner
from rltuner.cli.main import cli
from rltuner.errors import CheckpointError, ConfigError
from rltuner.evaluation.preference import SimulatedRater, rated_pairs, stepwise_utility, win_rate
from rltuner.evaluation.study import read_ratings
from rltuner.rewards.music_theory import MusicTheoryReward, registered_rules, unregister_rule
from rltuner.rewards.preference import (
    PreferenceConfig,
    PreferenceNet,
    fit_preference,
    load_preference,
    preference_rule,
    register_reward_terms,
    save_preference,
    score_melodies,
)


@pytest.fixture(autouse=True)
def no_leftover_rules() -> Iterator[None]:
    before = set(registered_rules())
    yield
    for name in set(registered_rules()) - before:
        unregister_rule(name)


@pytest.fixture(scope="module")
def prior_melodies() -> np.ndarray:
    return np.asarray(rltuner.sample(rltuner.load_default_prior(), 2400, 32, seed=0))


def test_stepwise_utility_exact_values() -> None:
    # classes: 0 rest, 1 hold, 2.. notes (class difference = semitones)
    melodies = np.array(
        [
            [20, 1, 21, 1, 23, 0, 24, 1],  # +1 (1 st), +1 (2 st), +1 (1 st after a rest)
            [20, 27, 20, 1, 1, 25, 25, 1],  # -1 (7 st), -1 (7 st), 0 (5 st), 0 (repeat)
            [0, 1, 0, 1, 0, 1, 0, 1],  # no notes
            [20, 22, 28, 1, 1, 1, 1, 1],  # +1, -1 (6 st)
        ]
    )
    assert stepwise_utility(melodies).tolist() == [3.0, -2.0, 0.0, 0.0]


@pytest.mark.parametrize("kernel", [1, 3, 8])
def test_the_rule_pays_the_melodys_score_step_by_step(kernel: int, prior_melodies: np.ndarray) -> None:
    torch.manual_seed(kernel)
    model = PreferenceNet(kernel=kernel).eval()
    with torch.no_grad():
        model.offset.fill_(0.3)
    melodies = prior_melodies[:64]
    rule = preference_rule(model)
    paid = sum(rule(melodies[:, :t], melodies[:, t], t, 32) for t in range(32))
    np.testing.assert_allclose(paid, score_melodies(model, melodies), rtol=1e-5, atol=1e-4)
    # causal and local: changing step 10 changes only the scores of steps 10 .. 10 + kernel - 1
    changed = melodies[:1].copy()
    changed[0, 10] = 2 if changed[0, 10] != 2 else 3
    with torch.no_grad():
        diff = (
            model.step_scores(torch.from_numpy(changed)) - model.step_scores(torch.from_numpy(melodies[:1]))
        )[0]
    moved = torch.nonzero(diff.abs() > 1e-7).flatten().tolist()
    assert moved and min(moved) >= 10 and max(moved) <= 10 + kernel - 1


def test_fit_learns_the_hidden_rule_on_held_out_pairs(prior_melodies: np.ndarray) -> None:
    rater = SimulatedRater(noise=1.0)
    a, b = prior_melodies[:1200], prior_melodies[1200:]
    prefer_a, strength = rater.rate(a, b, np.random.default_rng(0))
    fit = fit_preference(a, b, prefer_a, strength=strength, config=PreferenceConfig(epochs=20))
    assert (fit.n_train, fit.n_heldout, fit.n_heldout_pairs) == (960, 240, 240)
    assert fit.heldout_accuracy > 0.70
    # the score orders melodies like the hidden rule does
    rho = np.corrcoef(score_melodies(fit.model, a), stepwise_utility(a))[0, 1]
    assert rho > 0.6
    # the per-step scores are centred on the training melodies
    with torch.no_grad():
        mean = fit.model.step_scores(torch.from_numpy(prior_melodies)).mean()
    assert abs(float(mean)) < 0.05


def test_held_out_accuracy_is_honest_on_coin_flips(prior_melodies: np.ndarray) -> None:
    a, b = prior_melodies[:1200], prior_melodies[1200:]
    coin = np.random.default_rng(3).random(1200) < 0.5
    fit = fit_preference(a, b, coin, config=PreferenceConfig(epochs=20))
    assert fit.train_accuracy > fit.heldout_accuracy
    assert 0.40 < fit.heldout_accuracy < 0.60


def test_whole_pairs_are_held_out(prior_melodies: np.ndarray) -> None:
    a, b = prior_melodies[:100], prior_melodies[100:200]
    # each pair rated by three raters: 300 ratings of 100 pairs
    groups = np.repeat(np.arange(100), 3)
    prefer = np.random.default_rng(0).random(300) < 0.5
    fit = fit_preference(
        np.repeat(a, 3, 0), np.repeat(b, 3, 0), prefer, groups=groups, config=PreferenceConfig(epochs=1)
    )
    assert (fit.n_heldout_pairs, fit.n_heldout, fit.n_train) == (20, 60, 240)


def test_fit_errors(prior_melodies: np.ndarray) -> None:
    with pytest.raises(rltuner.errors.DatasetError, match="too few"):
        fit_preference(prior_melodies[:2], prior_melodies[2:4], [True, False])
    with pytest.raises(rltuner.errors.DatasetError, match="expected melodies"):
        fit_preference(prior_melodies[:4], prior_melodies[:3], [True] * 4)
    with pytest.raises(ConfigError, match="holdout"):
        fit_preference(
            prior_melodies[:4], prior_melodies[4:8], [True] * 4, config=PreferenceConfig(holdout=1.0)
        )


def test_checkpoint_round_trip_and_wrong_kind(prior_melodies: np.ndarray, tmp_path: Path) -> None:
    a, b = prior_melodies[:200], prior_melodies[200:400]
    prefer, _ = SimulatedRater().rate(a, b, np.random.default_rng(0))
    fit = fit_preference(a, b, prefer, config=PreferenceConfig(epochs=2, kernel=5, channels=4))
    path = save_preference(tmp_path / "pref.safetensors", fit)
    model, meta = load_preference(path)
    assert meta["kind"] == "preference" and meta["config"]["kernel"] == 5
    assert meta["metrics"]["heldout_accuracy"] == fit.heldout_accuracy
    np.testing.assert_array_equal(score_melodies(model, a), score_melodies(fit.model, a))
    rltuner.save_prior(tmp_path / "prior.safetensors", rltuner.load_default_prior())
    with pytest.raises(CheckpointError, match="not a preference model"):
        load_preference(tmp_path / "prior.safetensors")


def test_reward_terms_beside_or_instead_of_music_theory(prior_melodies: np.ndarray, tmp_path: Path) -> None:
    a, b = prior_melodies[:200], prior_melodies[200:400]
    prefer, _ = SimulatedRater().rate(a, b, np.random.default_rng(0))
    fit = fit_preference(a, b, prefer, config=PreferenceConfig(epochs=2))
    path = str(save_preference(tmp_path / "pref.safetensors", fit))
    melodies = prior_melodies[:16]
    music_only = MusicTheoryReward().score(melodies).sum(axis=1)

    config, desc = register_reward_terms([f"pref={path}"], ["pref=2.5"])
    beside = MusicTheoryReward(config).score(melodies).sum(axis=1)
    np.testing.assert_allclose(
        beside, music_only + 2.5 * score_melodies(fit.model, melodies), rtol=1e-5, atol=1e-4
    )
    assert desc["pref"]["weight"] == 2.5 and desc["music"]["weight"] == 1.0

    config, _ = register_reward_terms([f"pref={path}"], ["music=0"])
    instead = MusicTheoryReward(config).score(melodies).sum(axis=1)
    np.testing.assert_allclose(instead, score_melodies(fit.model, melodies), rtol=1e-5, atol=1e-4)

    for terms, weights, message in [
        (["pref"], [], "expected NAME=PATH"),
        ([f"music={path}"], [], "music-theory rules"),
        ([f"pref={path}"], ["other=1"], "no reward term or rule 'other'"),
        ([f"tonic={path}"], [], "music-theory rules or one of them"),
        ([f"pref={path}"], ["pref=lots"], "not a number"),
        ([f"pref={tmp_path / 'missing.safetensors'}"], [], "does not exist"),
    ]:
        with pytest.raises(rltuner.errors.RLTunerError, match=message):
            register_reward_terms(terms, weights)


def test_reward_weight_sets_one_music_theory_rule() -> None:
    """``--reward-weight RULE=W`` weights one rule, times the ``music`` scale (what rltuner sweep writes)."""
    config, desc = register_reward_terms([], ["tonic=2", "music=0.5"])
    assert config.weights.tonic == 1.0 and config.weights.key == 0.5 and config.weights.extremes == 0.5
    assert desc["music"] == {"weight": 0.5, "rules": {"tonic": 2.0}}
    from rltuner.encoding import pitch_to_class

    c4 = pitch_to_class(60)
    melodies = np.array([[c4, 1, 1, 1] * 8], dtype=np.int64)  # the tonic, held: rule 2 pays
    weighted = MusicTheoryReward(register_reward_terms([], ["tonic=2"])[0]).score(melodies, by_rule=True)
    plain = MusicTheoryReward().score(melodies, by_rule=True)
    assert isinstance(weighted, dict) and isinstance(plain, dict)
    assert plain["tonic"].sum() > 0
    np.testing.assert_allclose(weighted["tonic"], 2 * plain["tonic"])
    np.testing.assert_allclose(weighted["key"], plain["key"])


def test_tuning_on_the_learned_preference_wins_under_the_rater(prior_melodies: np.ndarray) -> None:
    """The loop in small: simulated ratings of prior melodies -> preference model -> tune -> fresh pairs."""
    from rltuner.domains.music import music_domain
    from rltuner.rewards.music_theory import RewardConfig, RuleWeights, register_rule
    from rltuner.rl.config import PRESETS

    rater = SimulatedRater(noise=1.0)
    a, b = prior_melodies[:1200], prior_melodies[1200:]
    prefer_a, strength = rater.rate(a, b, np.random.default_rng(0))
    fit = fit_preference(a, b, prefer_a, strength=strength)
    register_rule("pref", preference_rule(fit.model), weight=5.0)
    zero = RuleWeights(**dict.fromkeys(RuleWeights.__dataclass_fields__, 0.0))
    domain = music_domain(reward_config=RewardConfig(weights=zero))
    cfg = PRESETS["fast"].with_overrides(
        algorithm="q", total_steps=40_000, epsilon_steps=20_000, progress=False
    )
    result = rltuner.tune(cfg, domain, None)
    tuned = np.asarray(rltuner.sample(result.policy, 500, 32, seed=11))
    fresh_prior = np.asarray(rltuner.sample(rltuner.load_default_prior(), 500, 32, seed=12))
    tuned_rate, se = win_rate(rater, tuned, fresh_prior, seed=1)
    prior_rate, _ = win_rate(
        rater, np.asarray(rltuner.sample(rltuner.load_default_prior(), 500, 32, seed=13)), fresh_prior
    )
    assert abs(prior_rate - 0.5) < 0.06  # the prior against itself: a coin flip
    assert tuned_rate > 0.65 and tuned_rate - 3 * se > prior_rate
    assert stepwise_utility(tuned).mean() > stepwise_utility(fresh_prior).mean() + 1.0


def test_cli_simulate_reward_and_tune(tmp_path: Path, prior_melodies: np.ndarray) -> None:
    np.save(tmp_path / "a.npy", prior_melodies[:600])
    np.save(tmp_path / "b.npy", prior_melodies[600:1200])
    run = CliRunner().invoke
    made = run(cli, ["study", "make", "--samples", f"a={tmp_path / 'a.npy'}", "--samples", f"b={tmp_path / 'b.npy'}",
                     "--pairs", "600", "--no-audio", "--no-midi", "--out", str(tmp_path / "study")])  # fmt: skip
    assert made.exit_code == 0, made.output
    assert not (tmp_path / "study" / "audio").exists()
    ratings = tmp_path / "ratings.csv"
    simulated = run(
        cli, ["study", "simulate", str(tmp_path / "study"), "--raters", "2", "--out", str(ratings)]
    )
    assert simulated.exit_code == 0 and "1200 simulated ratings" in simulated.output
    answers = read_ratings(ratings)
    assert len(answers) == 1200 and {r.rater_id for r in answers} == {"sim01", "sim02"}
    pairs = rated_pairs(answers, tmp_path / "study" / "key.json")
    assert pairs.melodies_a.shape == (1200, 32)

    pref = tmp_path / "pref.safetensors"
    fitted = run(cli, ["study", "reward", str(ratings), "--key", str(tmp_path / "study" / "key.json"),
                       "--out", str(pref), "--set", "epochs=5", "--json"])  # fmt: skip
    assert fitted.exit_code == 0, fitted.output
    metrics = json.loads(fitted.output)
    assert (
        metrics["n_heldout_pairs"] == 120
        and metrics["n_heldout"] == 240
        and metrics["heldout_accuracy"] > 0.6
    )

    out = tmp_path / "run"
    tuned = run(cli, ["tune", "-a", "g", "--reward", f"pref={pref}", "--reward-weight", "pref=3",
                      "--steps", "2048", "--n-envs", "64", "--batch-size", "64", "--eval-every", "1024",
                      "--quiet", "--out", str(out)])  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert (out / "model.safetensors").is_file()
    record = json.loads((out / "reward.json").read_text())
    assert record["pref"]["weight"] == 3.0 and record["music"]["weight"] == 1.0
    assert record["pref"]["metrics"]["heldout_accuracy"] == metrics["heldout_accuracy"]

    served = run(cli, ["study", "serve", str(tmp_path / "study")])
    assert served.exit_code != 0 and "made with --no-audio" in str(served.exception)
