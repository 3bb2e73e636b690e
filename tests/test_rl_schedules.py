"""Schedules follow the budget (``rl.config.scaled_to_budget``), and a run worse than the prior says so."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from rltuner.domains import DOMAINS, tune_preset
from rltuner.errors import ConfigError
from rltuner.evaluation.compare import CompareConfig, Point, point_config
from rltuner.evaluation.pipeline import PipelineConfig, _tune_config, worse_than_prior_note
from rltuner.rl.config import PRESETS, SCHEDULE_FIELDS, TuneConfig, preset, scaled_to_budget
from rltuner.rl.tuner import SUMMARY_FILE, tune
from test_rl_support import peaked_prior, toy_domain

# What the presets resolved to before schedules followed the budget (the paper's and the fast schedule).
TODAY = {
    "paper": {
        "total_steps": 1_000_000,
        "epsilon_steps": 500_000,
        "learning_starts": 0,
        "eval_every": 100_000,
    },
    "fast": {"total_steps": 1_000_000, "epsilon_steps": 250_000, "learning_starts": 0, "eval_every": 100_000},
}


def _schedule(cfg: TuneConfig) -> dict[str, int]:
    return {name: getattr(cfg, name) for name in ("total_steps", *SCHEDULE_FIELDS)}


@pytest.mark.parametrize("name", ["paper", "fast"])
@pytest.mark.parametrize("algorithm", ["q", "g", "rloo"])
def test_the_full_budget_resolves_to_todays_values(name: str, algorithm: str) -> None:
    explicit = preset(name, algorithm=algorithm, total_steps=1_000_000)
    assert _schedule(explicit) == TODAY[name]
    assert explicit == preset(name, algorithm=algorithm)  # naming the full budget changes nothing


@pytest.mark.parametrize("name", ["paper", "fast"])
@pytest.mark.parametrize("domain", list(DOMAINS))
def test_domain_presets_at_the_full_budget_are_unchanged(name: str, domain: str) -> None:
    cfg = tune_preset(domain, name, algorithm="g", total_steps=1_000_000)
    # today's construction: the preset with the domain's overrides, taken literally
    before = PRESETS[name].with_overrides(**DOMAINS[domain].preset_overrides.get(name, {}), algorithm="g")
    assert cfg == before


def test_compare_at_the_full_budget_is_unchanged() -> None:
    cfg = CompareConfig(budget=1_000_000)
    point = point_config(cfg, Point("q", "reward_scale", 0.5, 1))
    assert (point.epsilon_steps, point.eval_every, point.learning_starts) == (250_000, cfg.eval_every, 0)
    # a shorter comparison explores for the same share of its budget; its own eval_every is kept
    short = point_config(dataclasses.replace(cfg, budget=200_000), Point("q", "reward_scale", 0.5, 1))
    assert (short.epsilon_steps, short.eval_every) == (50_000, cfg.eval_every)


@pytest.mark.parametrize("name", ["paper", "fast"])
@pytest.mark.parametrize("steps", [16_384, 100_000, 2_000_000])
def test_schedules_keep_their_share_of_the_budget(name: str, steps: int) -> None:
    full = PRESETS[name]
    cfg = preset(name, algorithm="g", total_steps=steps)
    for field in ("epsilon_steps", "eval_every"):
        assert getattr(cfg, field) == round(getattr(full, field) * steps / full.total_steps)
    assert cfg.learning_starts == 0  # "off" stays off


def test_explicit_settings_win() -> None:
    cfg = preset("fast", algorithm="q", total_steps=32_768, epsilon_steps=100_000, eval_every="0")
    assert (cfg.epsilon_steps, cfg.eval_every) == (100_000, 0)
    # the others still follow the budget
    assert preset("fast", total_steps=32_768, eval_every=10).epsilon_steps == 8_192


def test_scaled_to_budget_rounds_and_keeps_at_least_one_step() -> None:
    cfg = dataclasses.replace(PRESETS["fast"], total_steps=10, learning_starts=30_000)
    scaled = scaled_to_budget(cfg, 1_000_000)
    assert (scaled.epsilon_steps, scaled.learning_starts, scaled.eval_every) == (2, 1, 1)
    assert scaled_to_budget(cfg, 1_000_000, keep={"learning_starts"}).learning_starts == 30_000
    assert scaled_to_budget(PRESETS["fast"], 1_000_000) is PRESETS["fast"]
    with pytest.raises(ConfigError, match="at least 1"):
        scaled_to_budget(cfg, 0)


def test_run_uses_the_same_scaling() -> None:
    quick = _tune_config(PipelineConfig(out="x", quick=True), "g", 0)
    assert quick == preset("fast", algorithm="g", total_steps=8_192, seed=0, device="cpu", tensorboard=False,
                           eval_episodes=32)  # fmt: skip
    assert (quick.epsilon_steps, quick.eval_every) == (2_048, 819)
    full = _tune_config(PipelineConfig(out="x"), "q", 0)
    assert _schedule(full) == TODAY["fast"]


def _toy_run(tmp_path: Path, **overrides: Any) -> Any:
    cfg = preset(
        "fast", algorithm="q", n_envs=32, batch_size=64, train_every=32, eval_episodes=16,
        progress=False, tensorboard=False, **overrides,
    )  # fmt: skip
    return tune(cfg, toy_domain(peaked_prior()), tmp_path)


def test_a_hand_built_config_that_cannot_finish_exploring_is_warned_of(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="rltuner.rl.tuner"):
        _toy_run(tmp_path, total_steps=256, epsilon_steps=1_000)
    assert "epsilon_steps (1,000) is longer than the run (total_steps 256)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="rltuner.rl.tuner"):
        _toy_run(tmp_path / "scaled", total_steps=256)
    assert "longer than the run" not in caplog.text


# Real music, 16,384 steps (two rounds of 256 melodies, 2-4 s each): the g case of issue 10.
@pytest.fixture(scope="module")
def g_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path, str]]:
    from rltuner.domains.music import music_domain

    domain = music_domain()
    out: dict[str, tuple[Any, Path, str]] = {}
    root = tmp_path_factory.mktemp("g")
    logger = logging.getLogger("rltuner.rl.tuner")
    for name, extra in (("scaled", {}), ("unscaled", {"epsilon_steps": 250_000})):
        records: list[logging.LogRecord] = []
        handler = logging.Handler()
        handler.emit = records.append  # type: ignore[method-assign]
        logger.addHandler(handler)
        try:
            cfg = preset("fast", algorithm="g", total_steps=16_384, eval_episodes=64, progress=False,
                         tensorboard=False, **extra)  # fmt: skip
            result = tune(cfg, domain, root / name)
        finally:
            logger.removeHandler(handler)
        out[name] = (result, root / name, "\n".join(r.getMessage() for r in records))
    return out


@pytest.mark.slow
def test_a_short_g_run_ends_exploring_and_better_than_the_prior(g_runs: dict[str, Any]) -> None:
    result, folder, warnings = g_runs["scaled"]
    config = json.loads((folder / "config.json").read_text())
    assert config["epsilon_steps"] == 4_096  # the resolved value is what is recorded
    assert result.metrics[-1]["epsilon"] == pytest.approx(config["epsilon_end"])
    assert result.worse_than_prior is False
    assert result.metrics[-1]["mean_task_reward"] > result.prior_metrics["mean_task_reward"]
    assert "worse than the prior" not in warnings
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    assert summary["worse_than_prior"] is False
    assert summary["final"]["mean_task_reward"] == result.metrics[-1]["mean_task_reward"]


@pytest.mark.slow
def test_a_run_worse_than_the_prior_says_so(g_runs: dict[str, Any]) -> None:
    # an explicit 250,000-step exploration in a 16,384-step run: still near-uniform at the end
    result, folder, warnings = g_runs["unscaled"]
    assert result.metrics[-1]["epsilon"] > 0.9
    assert result.worse_than_prior is True
    final, prior = result.metrics[-1]["mean_task_reward"], result.prior_metrics["mean_task_reward"]
    assert final < prior
    assert f"{final:.3f} per step against the prior's {prior:.3f}" in warnings
    summary = json.loads((folder / SUMMARY_FILE).read_text())
    assert summary["worse_than_prior"] is True and summary["prior"]["mean_task_reward"] == prior
    # the same prior evaluation (same seed, same primers) in both runs: only the policy differs
    assert prior == g_runs["scaled"][0].prior_metrics["mean_task_reward"]
    note = worse_than_prior_note({"g": summary}, "the Note RNN", "r_MT")
    assert note.startswith(" Warning:") and f"g ({final:.3f} against {prior:.3f})" in note
    assert worse_than_prior_note({"g": {**summary, "worse_than_prior": False}}, "the Note RNN", "r_MT") == ""
