"""The rl benchmark's plain eager-torch reference and the fast-preset rows measured beside it (issue #15)."""

import re
from types import SimpleNamespace

import pytest
import torch

from rltuner.benchmarks import eager
from rltuner.benchmarks import rl as bench
from rltuner.domains.music import music_domain
from rltuner.models.prior import build_prior
from rltuner.rl.config import preset

TINY = {"total_steps": 2048, "n_envs": 32, "batch_size": 256, "train_every": 96, "eval_every": 0}


@pytest.fixture(scope="module")
def prior():
    torch.manual_seed(0)
    return build_prior({"arch": "lstm", "hidden_size": 16}).eval()


def test_plain_copy_computes_the_priors_logits(prior) -> None:
    tokens = torch.randint(0, prior.vocab_size, (3, 7))
    plain = eager.plain_copy(prior)
    one_hot = torch.nn.functional.one_hot(tokens, prior.vocab_size).float()
    with torch.no_grad():
        torch.testing.assert_close(plain(one_hot)[0], prior(tokens)[0])
    with pytest.raises(ValueError, match="LSTM"):
        eager.plain_copy(build_prior({"arch": "gru", "hidden_size": 8}))


def test_budget_counts_are_the_work_tune_does(prior) -> None:
    from rltuner.rl.tuner import tune

    cfg = preset("fast", progress=False, tensorboard=False, eval_episodes=4, **TINY)
    result = tune(cfg, music_domain(prior))
    rounds, steps = eager.budget_counts(cfg, 32)
    assert (rounds * cfg.n_envs * 32, steps) == (result.env_steps, result.gradient_steps)
    # and at the fast preset itself: the 1,007,616 env steps and 6,297 gradient steps of BENCHMARKS.md
    assert eager.budget_counts(preset("fast"), 32) == (123, 6297)


def test_the_projection_scales_each_part_by_its_own_fraction() -> None:
    timing = eager.EagerTiming(
        rounds=10, gradient_steps=100, timed_rounds=2, timed_steps=25, acting_s=1.0, learning_s=2.0, cpu_s=3.0
    )
    assert (timing.projected_acting_s, timing.projected_learning_s, timing.projected_s) == (5.0, 8.0, 13.0)


def test_measure_reference_times_the_fraction_it_reports(prior) -> None:
    cfg = preset("fast", **TINY)
    timing = eager.measure_reference(prior, music_domain(prior), cfg, fraction=0.5)
    assert (timing.rounds, timing.gradient_steps) == eager.budget_counts(cfg, 32) == (2, 21)
    assert (timing.timed_rounds, timing.timed_steps) == (1, 11)
    assert timing.acting_s > 0 and timing.learning_s > 0
    with pytest.raises(ValueError, match="fraction"):
        eager.measure_reference(prior, music_domain(prior), cfg, fraction=0)


def _result(env_steps: int, sample_updates: int) -> SimpleNamespace:
    last = {"mean_log_p": -1.6, "mean_task_reward": 3.0, "mean_kl": 1.0}
    return SimpleNamespace(
        env_steps=env_steps, sample_updates=sample_updates, gradient_steps=6297, metrics=[last]
    )


@pytest.mark.parametrize(
    ("wall", "reference", "met"),
    [(50.0, 100.0, True), (50.0, 70.0, False), (61.0, 200.0, False), (39.0, 60.0, True)],
)
def test_a_value_row_meets_its_goal_only_in_time_and_in_ratio(wall, reference, met) -> None:
    row = bench.budget_row("q", True, _result(1_007_616, 6_448_128), wall, reference, False, "p")
    assert row["goal"].startswith("<= 60 s and <= 0.65x plain eager torch")
    assert row["met"] is met and row["value"] == wall
    assert (
        f"ratio {wall / reference:.2f}x plain eager torch ({wall:.1f} s / {reference:.1f} s" in row["detail"]
    )
    short = bench.budget_row("q", True, _result(999_999, 6_448_128), wall, reference, False, "p")
    assert short["met"] is False  # the budget's work not done


def test_a_value_row_gives_the_cpu_time_beside_the_wall_time() -> None:
    row = bench.budget_row("q", True, _result(1_007_616, 6_448_128), 40.0, 80.0, False, "p", cpu_s=60.0)
    assert (
        "CPU time 60.0 s, 0.75x the reference's one-core wall time (1.50 cores busy on average)"
        in row["detail"]
    )
    assert row["met"] is True  # the goal is the wall time's


def test_an_on_policy_row_keeps_its_own_goal() -> None:
    row = bench.budget_row("rloo", False, _result(1_001_472, 1_001_472), 100.0, 10.0, False, "p")
    assert row["goal"].startswith("<= 120 s") and row["met"] is True and "eager" not in row["detail"]


def test_quick_rl_bench_reports_the_reference_and_the_ratio_to_it(monkeypatch, prior) -> None:
    # Only the reference and the full-budget rows: the other rows have their own figures and cost time.
    for part in ("_acting", "_one_melody_paths", "_tanh_paths", "_learner_settings"):
        monkeypatch.setattr(bench, part, lambda *args: [])
    placeholder = {"value": 1.0, "unit": "s", "goal": "", "met": None, "detail": ""}
    monkeypatch.setattr(bench, "_paper_preset", lambda *args: {"name": "paper", **placeholder})
    monkeypatch.setattr(bench, "_profile", lambda *args: {"name": "profile", **placeholder})
    monkeypatch.setattr(bench, "_prior", lambda: (prior, "tiny LSTM"))
    rows = {r["name"].split(":")[0]: r for r in bench.measure(quick=True)}
    reference, q = rows["plain eager PyTorch, the fast preset's work"], rows["q"]
    assert reference["unit"] == "s" and reference["value"] > 0 and "nn.LSTM(38, 16)" in reference["detail"]
    assert "2 rounds of 32 envs x 32 steps, 8 Q gradient steps of 8 episodes" in reference["name"]
    found = re.search(r"ratio ([\d.]+)x plain eager torch \(([\d.]+) s / ([\d.]+) s, this run\)", q["detail"])
    assert found is not None
    assert float(found[1]) == pytest.approx(q["value"] / reference["value"], abs=0.006)
    assert float(found[3]) == pytest.approx(reference["value"], abs=0.06)
    timings = re.search(r"mean of two timings, before the tuning rows \(([\d.]+) s\) and after them \(([\d.]+) s\)",
                        reference["detail"])  # fmt: skip
    assert timings is not None
    assert reference["value"] == pytest.approx((float(timings[1]) + float(timings[2])) / 2, abs=0.06)
    assert q["goal"].startswith("<= 60 s and <= 0.65x plain eager torch") and q["met"] is None
    assert re.search(r"CPU time [\d.]+ s, [\d.]+x the reference's one-core wall time", q["detail"])


def test_the_tanh_row_times_both_paths_and_restores_the_threshold(prior) -> None:
    from rltuner.models import rnn

    (row,) = bench._tanh_paths(True, prior, "tiny LSTM")
    found = re.search(r"2 sigmoid\(2x\) - 1 (\d+) us vs torch.tanh (\d+) us: ([\d.]+)x", row["detail"])
    assert found is not None and row["unit"] == "us/step" and row["value"] > 0
    assert rnn.SIGMOID_TANH_MIN_BATCH == 16


def test_warm_up_optimizers_does_the_one_time_import_a_timing_would_pay() -> None:
    # A fresh process (this one imported torch._dynamo long ago): torch imports it at the first optimizer,
    # so after the warm-up a tuning run's optimizer finds it loaded.
    import subprocess
    import sys

    code = (
        "import sys, torch; from rltuner.benchmarks import warm_up_optimizers; "
        "before = 'torch._dynamo' in sys.modules; warm_up_optimizers(); "
        "print(before, 'torch._dynamo' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["False", "True"]
