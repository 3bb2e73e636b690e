"""Short tuning runs: every algorithm learns, resume reproduces, bad settings fail early, the model reloads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rltuner.domains.base import Domain
from rltuner.errors import ConfigError, RLTunerError
from rltuner.rl.config import TuneConfig, preset
from rltuner.rl.policy import load_policy
from rltuner.rl.tuner import METRIC_COLUMNS, evaluate_policy, tune
from test_rl_support import peaked_prior, tiny_prior, toy_domain

SHORT = {
    "total_steps": 4096, "n_envs": 64, "batch_size": 256, "train_every": 16, "epsilon_steps": 2048,
    "eval_every": 0, "eval_episodes": 400, "progress": False, "target_update_rate": 0.1,
    "learning_rate": 1e-2, "tensorboard": False,
}  # fmt: skip


@pytest.fixture(scope="module")
def domain() -> Domain:
    return toy_domain(peaked_prior())


@pytest.fixture(scope="module")
def final_evals(domain: Domain) -> dict[str, dict[str, float]]:
    torch.set_num_threads(2)
    out = {"prior": evaluate_policy(domain.prior, domain, "q", 400, seed=1)}
    for name in ("q", "psi", "g", "rl-only"):
        result = tune(preset("fast", algorithm=name, **SHORT), domain)
        assert (
            result.env_steps == 4096 and result.gradient_steps == 256 and result.sample_updates == 256 * 256
        )
        out[name] = result.metrics[-1]
    return out


@pytest.mark.parametrize("name", ["q", "psi", "g", "rl-only"])
def test_each_algorithm_raises_the_task_reward(final_evals: dict[str, dict[str, float]], name: str) -> None:
    assert final_evals[name]["mean_task_reward"] > final_evals["prior"]["mean_task_reward"] + 0.05


@pytest.mark.parametrize("name", ["q", "psi", "g"])
def test_prior_keeps_log_p_above_rl_only(final_evals: dict[str, dict[str, float]], name: str) -> None:
    assert final_evals[name]["mean_log_p"] > final_evals["rl-only"]["mean_log_p"] + 0.2


def _small(**kw: object) -> TuneConfig:
    base = {
        **SHORT,
        "total_steps": 1024,
        "n_envs": 16,
        "batch_size": 64,
        "train_every": 32,
        "eval_every": 512,
    }
    return preset("fast", **{**base, **kw})


def test_run_folder_and_resume_reproduce_an_uninterrupted_run(tmp_path: Path) -> None:
    domain = toy_domain(tiny_prior(3))
    whole = tune(_small(algorithm="g", total_steps=1024), domain, tmp_path / "whole")
    tune(_small(algorithm="g", total_steps=512), domain, tmp_path / "parts")
    resumed = tune(_small(algorithm="g", total_steps=1024), domain, tmp_path / "parts", resume=True)
    assert resumed.env_steps == whole.env_steps == 1024
    assert resumed.sample_updates == whole.sample_updates
    for a, b in zip(whole.policy.state_dict().values(), resumed.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in row.items() if k != "wall_s"} for row in whole.metrics]
    assert strip == [{k: v for k, v in row.items() if k != "wall_s"} for row in resumed.metrics]
    run = tmp_path / "whole"
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "model.safetensors", "resume.pt"):
        assert (run / name).is_file()
    assert (run / "metrics.csv").read_text().splitlines()[0] == ",".join(METRIC_COLUMNS)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["env_step"] for r in rows] == [0, 512, 1024]
    assert json.loads((run / "config.json").read_text())["algorithm"] == "g"
    with pytest.raises(RLTunerError, match="already holds a run"):
        tune(_small(algorithm="g"), domain, run)


def test_the_evaluation_hook_sees_each_evaluation_and_changes_nothing() -> None:
    """on_evaluation (rltuner sweep's intermediate scores) may sample from the policy without moving the run."""
    from rltuner.models.sampling import sample

    domain = toy_domain(tiny_prior(5))
    plain = tune(_small(algorithm="psi"), domain)
    seen: list[tuple[int, bool]] = []

    def hook(row: dict[str, object], policy: torch.nn.Module) -> None:
        seen.append((int(row["env_step"]), policy.training))  # type: ignore[call-overload]
        sample(policy, 8, 4, seed=1)  # what a sweep trial does: draw from the policy as it is

    hooked = tune(_small(algorithm="psi"), domain, on_evaluation=hook)
    assert seen == [(0, False), (512, False), (1024, False)]
    for a, b in zip(plain.policy.state_dict().values(), hooked.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    strip = [{k: v for k, v in row.items() if k != "wall_s"} for row in plain.metrics]
    assert strip == [{k: v for k, v in row.items() if k != "wall_s"} for row in hooked.metrics]


@pytest.mark.parametrize("name", ["q", "g"])
def test_saved_model_reloads_as_the_policy(tmp_path: Path, name: str) -> None:
    from rltuner.loading import load_model

    domain = toy_domain(tiny_prior(4))
    result = tune(_small(algorithm=name, total_steps=256, eval_every=0), domain, tmp_path)
    loaded = load_policy(tmp_path / "model.safetensors")
    tokens = torch.randint(0, 38, (3, 6))
    with torch.no_grad():
        expected = result.policy(tokens)[0]
        torch.testing.assert_close(loaded(tokens)[0], expected)
        torch.testing.assert_close(load_model(tmp_path / "model.safetensors")(tokens)[0], expected)
        # step() agrees with forward() for the combined policy state
        state = loaded.initial_state(3)
        logits, state = loaded.step(tokens[:, 0], state)
        torch.testing.assert_close(logits, expected[:, 0], atol=1e-5, rtol=1e-5)
    if name == "g":  # G's policy is log p + G, not G alone
        assert not torch.allclose(expected, result.policy.q_net(tokens)[0])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gamma": 1.0}, "gamma"),
        ({"gamma": -0.1}, "gamma"),
        ({"reward_scale": 0.0}, "reward_scale"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"target_update_rate": -0.5}, "target_update_rate"),
        ({"algorithm": "sarsa"}, "unknown algorithm"),
        ({"exploration": "ucb"}, "exploration"),
        ({"epsilon_end": 1.5}, "epsilon_end"),
        ({"algorithm": "psi", "double_q": True}, "double_q"),
        ({"n_envs": 0}, "n_envs"),
    ],
)
def test_nonsense_settings_are_rejected(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        preset("fast", **overrides)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stored_states": "false"}, "stored_states must be true or false"),  # "false" would be truthy
        ({"fused_adam": "maybe"}, "fused_adam must be true or false"),
        ({"total_steps": "8192"}, "total_steps must be an integer"),
        ({"n_envs": 2.0}, "n_envs must be an integer"),
        ({"learning_rate": True}, "learning_rate must be a number"),
        ({"device": None}, "device must be a string"),
    ],
)
def test_a_config_built_by_hand_with_wrong_types_is_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tune(TuneConfig(**fields))  # type: ignore[arg-type]
    # numpy scalars are numbers, and the same settings as strings are read by the parsing routes
    TuneConfig(total_steps=np.int64(4096), learning_rate=np.float32(1e-3)).validate()  # type: ignore[arg-type]
    assert preset("fast", stored_states="false").stored_states is False


def test_domain_level_checks_come_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of the episode length"):
        tune(_small(batch_size=100), toy_domain(tiny_prior()), tmp_path / "a")
    from rltuner.models.prior import build_prior

    wrong = build_prior({"arch": "lstm", "vocab_size": 12, "hidden_size": 4})
    with pytest.raises(ConfigError, match="vocabulary"):
        tune(_small(), toy_domain(wrong), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    with pytest.raises(RLTunerError, match="no run to resume"):
        tune(_small(), toy_domain(tiny_prior()), tmp_path / "c", resume=True)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_tensorboard_gets_round_scalars_and_reward_parts(tmp_path: Path, domain: Domain) -> None:
    import dataclasses

    def parts(actions: np.ndarray, mask: np.ndarray, primers: np.ndarray) -> dict[str, float]:
        return {"hits": float((actions == 3).mean()), "steps": float(mask.sum(1).mean())}

    with_parts = dataclasses.replace(domain, reward_parts=parts)
    settings = {**SHORT, "total_steps": 1024, "eval_every": 512, "tensorboard": True, "learning_starts": 256}
    result = tune(preset("fast", algorithm="q", **settings), with_parts, out_dir=tmp_path)
    scalars = _scalars(tmp_path / "tb")
    rounds = [64 * 8 * k for k in (1, 2)]  # n_envs 64 x length 8: two rounds of 512 steps
    for tag in ("round/mean_log_p", "round/mean_task_reward", "round/mean_return", "round/mean_length",
                "train/loss", "train/epsilon", "train/env_steps_per_s", "train/sample_updates_per_s",
                "reward/hits", "reward/steps"):  # fmt: skip
        assert [step for step, _ in scalars[tag]] == rounds, tag
    assert all(v > 0 for _, v in scalars["train/env_steps_per_s"])
    assert [v for _, v in scalars["reward/steps"]] == [8.0, 8.0]
    final = result.metrics[-1]
    assert scalars["eval/mean_kl"][-1] == (1024, pytest.approx(final["mean_kl"]))
    assert [s for s, _ in scalars["eval/mean_log_p"]] == [0, 512, 1024]


def test_music_reward_parts_add_up_to_the_reward() -> None:
    import numpy as np

    from rltuner.domains.music import music_domain
    from rltuner.rewards.music_theory import RULE_NAMES, music_theory_rewards

    domain = music_domain()
    assert domain.reward_parts is not None
    actions = np.random.default_rng(0).integers(0, 38, size=(16, 32))
    primers = np.random.default_rng(1).integers(2, 38, size=16)
    parts = domain.reward_parts(actions, np.ones_like(actions, dtype=bool), primers)
    assert set(RULE_NAMES) <= set(parts)
    total = music_theory_rewards(actions)
    assert sum(parts.values()) == pytest.approx(float(np.mean(total)))
    # with reward_primer the parts are those of the reward that hears the primer
    heard = domain.for_reward_primer(True)
    assert heard.reward_parts is not None and heard.reward_hears_primer
    parts = heard.reward_parts(actions, np.ones_like(actions, dtype=bool), primers)
    heard_total = heard.make_reward().score(actions, primers=primers)  # type: ignore[attr-defined]
    assert sum(parts.values()) == pytest.approx(float(np.mean(heard_total)))
    assert float(np.mean(heard_total)) != pytest.approx(float(np.mean(total)))


def test_reward_primer_is_recorded_and_refused_where_the_domain_has_none(tmp_path: Path) -> None:
    from rltuner.domains.music import music_domain

    domain = music_domain(tiny_prior(2))
    tune(_small(reward_primer=True, total_steps=256, eval_every=0), domain, tmp_path / "on")
    assert json.loads((tmp_path / "on" / "config.json").read_text())["reward_primer"] is True
    with pytest.raises(ConfigError, match="reward_primer applies to the music domain, not to toy"):
        tune(_small(reward_primer=True), toy_domain(tiny_prior()), tmp_path / "toy")
    assert not (tmp_path / "toy").exists()
    with pytest.raises(ConfigError, match="reward_primer is false"):
        tune(_small(), domain.for_reward_primer(True), tmp_path / "off")


def test_the_summary_records_what_the_auto_settings_became(tmp_path: Path) -> None:
    domain = toy_domain(tiny_prior())
    runs = {}
    for name, settings in {
        "bf16 on, overlap on": {"learner_bf16": "on", "overlap": "on"},
        "bf16 off, overlap off": {"learner_bf16": "off", "overlap": "off"},
    }.items():
        result = tune(_small(**settings), domain, tmp_path / name.replace(" ", "_").replace(",", ""))
        runs[name] = json.loads((result.run_dir / "summary.json").read_text())["resolved"]
        assert runs[name] == result.resolved
    assert runs["bf16 on, overlap on"] == {
        "learner_bf16": True,
        "overlap_learning": 1.0,
        "overlap_acting": 1.0,
    }
    assert runs["bf16 off, overlap off"] == {
        "learner_bf16": False,
        "overlap_learning": 0.0,
        "overlap_acting": 0.0,
    }
    on_policy = tune(_small(algorithm="rloo", n_envs=16), domain)
    assert on_policy.resolved["learner_bf16"] is False  # the policy family has no bf16 learner
