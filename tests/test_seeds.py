"""Aggregation over tuning seeds (rltuner.evaluation.seeds): exact values on hand-made results."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from rltuner.evaluation.evaluate import EvaluationResult, ModelEvaluation
from rltuner.evaluation.seeds import (
    SeedStatistic,
    aggregate_seeds,
    markdown_table,
    mean_and_sd_results,
    mean_sd_rows,
    overlap,
    seed_statistic,
    supported_differences,
)


def test_seed_statistic_mean_sd_and_t_interval() -> None:
    s = seed_statistic([1.0, 2.0, 6.0])
    assert s.mean == pytest.approx(3.0) and s.n == 3
    assert s.sd == pytest.approx(math.sqrt(7.0))  # ((1-3)^2 + (2-3)^2 + (6-3)^2) / 2 = 7
    half = stats.t.ppf(0.975, 2) * math.sqrt(7.0) / math.sqrt(3)
    assert (s.low, s.high) == pytest.approx((3.0 - half, 3.0 + half))


def test_seed_statistic_leaves_out_nan_and_has_no_spread_with_one_value() -> None:
    s = seed_statistic([2.0, math.nan])
    assert s.n == 1 and s.mean == 2.0 and math.isnan(s.sd) and math.isnan(s.low)
    assert seed_statistic([math.nan]).n == 0
    assert s.to_dict() == {"mean": 2.0, "sd": None, "n": 1, "ci95_low": None, "ci95_high": None}


def test_aggregate_seeds_is_generic_over_models_and_metrics() -> None:
    per_seed = [
        {"a": {"x": 1.0, "new_metric": 10.0}, "b": {"x": 5.0}},
        {"a": {"x": 3.0, "new_metric": 14.0}, "b": {"x": 7.0, "only_here": 1.0}},
    ]
    out = aggregate_seeds(per_seed)
    assert list(out) == ["a", "b"] and list(out["a"]) == ["x", "new_metric"]
    assert out["a"]["new_metric"].mean == 12.0 and out["a"]["new_metric"].sd == pytest.approx(math.sqrt(8))
    assert out["b"]["only_here"].n == 1 and out["b"]["x"].n == 2


def test_only_differences_with_separate_intervals_are_stated() -> None:
    apart = {"q": SeedStatistic(5.0, 0.1, 3, 4.8, 5.2), "g": SeedStatistic(3.0, 0.1, 3, 2.8, 3.2)}
    close = {"q": SeedStatistic(5.0, 1.0, 3, 3.0, 7.0), "g": SeedStatistic(4.0, 1.0, 3, 2.0, 6.0)}
    assert not overlap(apart["q"], apart["g"]) and overlap(close["q"], close["g"])
    assert overlap(SeedStatistic(1.0, math.nan, 1, math.nan, math.nan), apart["g"])  # no interval: no claim
    summary = {m: {"reward": apart[m], "kl": close[m], "seconds.tune": apart[m]} for m in ("q", "g")}
    assert supported_differences(summary) == ["reward: q > g"]  # timings are not results


def _evaluation(name: str, tonic: float, reward: float) -> ModelEvaluation:
    return ModelEvaluation(
        name=name, table1={"tonic_start": tonic}, counts={"melodies": 10.0}, mean_log_p=-1.0,
        mean_task_reward=reward, mean_kl=0.0, diversity={"distinct_melodies": 1.0}, copying=math.nan, muspy={},
        top_opening="C4 - - - - - G4 E4",
    )  # fmt: skip


def test_mean_sd_rows_use_the_one_table_formatter() -> None:
    results = [
        EvaluationResult({"q": _evaluation("q", 0.5, 1.0)}, {"n": 10, "seed": 0}),
        EvaluationResult({"q": _evaluation("q", 0.7, 3.0)}, {"n": 10, "seed": 1}),
    ]
    mean, sd = mean_and_sd_results(results)
    assert mean.models["q"].table1["tonic_start"] == pytest.approx(0.6)
    assert sd.models["q"].mean_task_reward == pytest.approx(math.sqrt(2))
    rows = dict(mean_sd_rows(results))
    assert rows["Mean r_MT per step"][0] == "2.000 ± 1.414"
    assert (
        rows["Melodies copying a 16-step corpus run (>= 4 notes)"][0] == "n/a"
    )  # not measured: no spread printed
    tonic = next(cells for label, cells in mean_sd_rows(results) if "tonic" in label.lower())
    assert tonic[0] == "60% ± 14.1"  # percentage points
    # text cells (the most common opening, as notes) carry no spread
    assert (
        "±"
        not in next(
            cells for label, cells in mean_sd_rows(results) if "opening" in label and "that" in label
        )[0]
    )
    # one seed: exactly what that seed's table shows
    assert mean_sd_rows(results[:1]) == results[0].table_rows()


def test_markdown_table_escapes_pipes() -> None:
    text = markdown_table(["metric", "q"], [("log p(a|s)", ["1 ± 0"])])
    assert text.splitlines() == ["| metric | q |", "| --- | --- |", "| log p(a\\|s) | 1 ± 0 |"]
