"""The issue #13 goals: pass/fail on hand-built metrics and on real measures of synthetic melodies."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rltuner.evaluation.evaluate import EvaluationResult, ModelEvaluation, diversity
from rltuner.evaluation.goals import GOALS, Goal, check_goals, goal_rows


def passing() -> dict[str, float]:
    """Metrics that meet every goal (just)."""
    return {
        "table1.notes_excessively_repeated": 0.0001,
        "table1.notes_not_in_key": 0.002,
        "table1.melodies_starting_with_tonic": 0.80,
        "table1.leaps_resolved": 0.95,
        "table1.melodies_with_unique_max_note": 0.65,
        "table1.melodies_with_unique_min_note": 0.60,
        "table1.notes_in_motif": 0.76,
        "table1.notes_in_repeated_motif": 0.0011,
        "mean_log_p": -1.69,
        "diversity.distinct_melodies": 0.95,
        "diversity.top_opening_8": 0.05,
    }


def test_every_goal_names_a_metric_the_evaluation_writes() -> None:
    ev = ModelEvaluation(
        name="x", table1={k.split(".", 1)[1]: 0.0 for k in passing() if k.startswith("table1.")}, counts={},
        mean_log_p=0.0, mean_task_reward=0.0, mean_kl=0.0, diversity=diversity(np.zeros((3, 32), np.int64)),
        copying=0.0, muspy={},
    )  # fmt: skip
    flat = ev.flat()
    assert all(g.key in flat for g in GOALS)


def test_thresholds_are_inclusive_and_each_goal_can_fail() -> None:
    prior = {"mean_log_p": -1.19}
    model = passing()
    checks = check_goals({"note_rnn": prior, "m": model})["m"]
    assert all(c.passed for c in checks)
    for i, goal in enumerate(GOALS):
        worse = dict(model)
        step = 0.001 if goal.percent else 0.01
        worse[goal.key] += step if goal.op == "<=" else -step
        failed = [not c.passed for c in check_goals({"note_rnn": prior, "m": worse})["m"]]
        assert failed == [j == i for j in range(len(GOALS))], goal.key


def test_log_p_goal_is_relative_to_the_prior_and_nan_fails() -> None:
    checks = check_goals({"note_rnn": {"mean_log_p": -1.2}, "q": {"mean_log_p": -1.75}})
    log_p = next(c for c in checks["q"] if c.goal.key == "mean_log_p")
    assert log_p.value == pytest.approx(-0.55) and not log_p.passed
    assert log_p.cell() == "-0.55 FAIL"
    prior_check = next(c for c in checks["note_rnn"] if c.goal.key == "mean_log_p")
    assert prior_check.value == 0.0 and prior_check.passed
    alone = check_goals({"q": {"mean_log_p": -1.75}}, prior="note_rnn")["q"]  # no prior: n/a
    assert all(math.isnan(c.value) and not c.passed for c in alone)


def test_goal_describe_and_cells() -> None:
    g = Goal("x", "Notes not in key", "<=", 0.002)
    assert g.describe() == "Notes not in key <= 0.2%"
    rows = goal_rows({"note_rnn": {"mean_log_p": -1.19}, "m": passing()})
    assert rows[-1] == ("Goals met", ["1/11", "11/11"])  # the prior meets only its own log p
    assert rows[0][1][1] == "0.01% pass"


def test_synthetic_collapsed_model_fails_the_opening_and_diversity_goals() -> None:
    rng = np.random.default_rng(0)
    varied = rng.integers(2, 38, size=(200, 32))
    collapsed = varied.copy()
    collapsed[:100] = collapsed[0]  # half the melodies are one melody
    results = {}
    for name, mel in (("note_rnn", varied), ("q", collapsed)):
        results[name] = ModelEvaluation(
            name=name, table1={}, counts={}, mean_log_p=-1.0, mean_task_reward=0.0, mean_kl=0.0,
            diversity=diversity(mel), copying=math.nan, muspy={},
        )  # fmt: skip
    result = EvaluationResult(models=results, settings={"n": 200, "length": 32})
    rows = dict(result.goal_rows())
    assert rows["Distinct melodies >= 95%"] == ["100% pass", "50.5% FAIL"]
    assert rows["Melodies opening with the most common 8 steps <= 5%"] == ["0.5% pass", "50% FAIL"]
    assert "goal (issue #13)" in result.format_table()
