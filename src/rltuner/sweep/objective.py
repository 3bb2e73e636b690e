"""What a sweep optimises: the goal deficit of issue #13's goal rows, and the Pareto front (docs/sweep.md).

Each goal reads one metric of :meth:`rltuner.evaluation.evaluate.ModelEvaluation.flat` by name (the first
of its names that is present), so a measure added later is picked up without changes here, and a goal whose
metric is absent is skipped (listed in ``missing``) instead of failing the trial.

The shortfall of a goal is how far its metric misses the threshold, divided by the goal's ``scale``:
``(threshold - value) / scale`` for an at-least goal, ``(value - threshold) / scale`` for an at-most goal,
and 0 when the goal is met. The goal deficit is the sum over the goals: 0 means every goal is met.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

LOG_P_GAP = "log_p_gap"
"""Mean log p(a|s) of the Note RNN's own samples minus the model's (nats per step; 0 = as close as the data)."""


@dataclass(frozen=True)
class Goal:
    """One goal row: ``metric >= threshold`` (``at_least``) or ``metric <= threshold``.

    Attributes:
        key: short name (a column of the results table).
        metrics: metric names to look up, first present wins.
        threshold: the goal.
        at_least: the direction.
        scale: what one unit of shortfall is (the threshold itself for at-least rates).
    """

    key: str
    metrics: tuple[str, ...]
    threshold: float
    at_least: bool
    scale: float

    def lookup(self, metrics: Mapping[str, float]) -> float | None:
        for name in self.metrics:
            value = metrics.get(name)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                return float(value)
        return None

    def shortfall(self, value: float) -> float:
        gap = self.threshold - value if self.at_least else value - self.threshold
        return max(0.0, gap) / self.scale


def _t1(row: str) -> tuple[str, ...]:
    return (f"table1.{row}",)


#: Issue #13's goal rows (fractions in 0..1).
GOALS: tuple[Goal, ...] = (
    Goal("repeated", _t1("notes_excessively_repeated"), 0.0001, False, 0.01),
    Goal("not_in_key", _t1("notes_not_in_key"), 0.002, False, 0.01),
    Goal("tonic_start", _t1("melodies_starting_with_tonic"), 0.80, True, 0.80),
    Goal("leaps_resolved", _t1("leaps_resolved"), 0.95, True, 0.95),
    Goal("unique_max", _t1("melodies_with_unique_max_note"), 0.65, True, 0.65),
    Goal("unique_min", _t1("melodies_with_unique_min_note"), 0.60, True, 0.60),
    Goal("in_motif", _t1("notes_in_motif"), 0.76, True, 0.76),
    Goal("repeated_motif", _t1("notes_in_repeated_motif"), 0.0011, True, 0.0011),
    Goal("log_p_gap", (LOG_P_GAP,), 0.5, False, 0.5),
    Goal("distinct", ("diversity.distinct_melodies",), 0.95, True, 0.95),
    # The opening measure comes from rltuner.evaluation (branch "measures"); skipped while it is absent.
    Goal("top_opening", ("openings.top_share", "openings.top_8_step_share"), 0.05, False, 0.05),
)


@dataclass(frozen=True)
class Score:
    """A trial's score: the deficit, each goal's value and shortfall, and the goals with no metric."""

    deficit: float
    values: dict[str, float]
    shortfalls: dict[str, float]
    missing: tuple[str, ...]

    @property
    def goals_met(self) -> int:
        return sum(1 for s in self.shortfalls.values() if s == 0.0)


def score(metrics: Mapping[str, float], goals: Sequence[Goal] = GOALS) -> Score:
    """The goal deficit of one evaluation (``metrics``: flat metric name -> value)."""
    values: dict[str, float] = {}
    shortfalls: dict[str, float] = {}
    missing: list[str] = []
    for goal in goals:
        value = goal.lookup(metrics)
        if value is None:
            missing.append(goal.key)
            continue
        values[goal.key] = value
        shortfalls[goal.key] = goal.shortfall(value)
    return Score(sum(shortfalls.values()), values, shortfalls, tuple(missing))


def pareto_front(points: Sequence[Sequence[float]], maximise: Sequence[bool]) -> list[int]:
    """Indices of the non-dominated points, in input order; a point with a NaN coordinate is never on it.

    A point dominates another when it is at least as good on every objective and better on one.
    """
    signed = [[-v if up else v for v, up in zip(p, maximise, strict=True)] for p in points]
    valid = [i for i, p in enumerate(signed) if not any(math.isnan(v) for v in p)]

    def dominates(a: list[float], b: list[float]) -> bool:
        pairs = list(zip(a, b, strict=True))
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    return [i for i in valid if not any(dominates(signed[j], signed[i]) for j in valid if j != i)]
