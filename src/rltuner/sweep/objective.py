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
from typing import Any

from rltuner.evaluation.goals import GOALS as _EVALUATION_GOALS

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


# Short names (the results table's ``goal.<name>`` columns) and shortfall scales of the goal rows of
# :data:`rltuner.evaluation.goals.GOALS`, the one table of the thresholds. An at-least rate's scale is its
# threshold; an at-most goal's scale is the size of a miss that counts as one unit.
_SWEEP_NAMES: dict[str, tuple[str, float]] = {
    "table1.notes_excessively_repeated": ("repeated", 0.01),
    "table1.notes_not_in_key": ("not_in_key", 0.01),
    "table1.melodies_starting_with_tonic": ("tonic_start", 0.0),
    "table1.leaps_resolved": ("leaps_resolved", 0.0),
    "table1.melodies_with_unique_max_note": ("unique_max", 0.0),
    "table1.melodies_with_unique_min_note": ("unique_min", 0.0),
    "table1.notes_in_motif": ("in_motif", 0.0),
    "table1.notes_in_repeated_motif": ("repeated_motif", 0.0),
    "mean_log_p": ("log_p_gap", 0.5),
    "diversity.distinct_melodies": ("distinct", 0.0),
    "diversity.top_opening_8": ("top_opening", 0.05),
}


def _sweep_goal(goal: Any) -> Goal:
    """A goal row of :mod:`rltuner.evaluation.goals` as the sweep scores it."""
    name, at_most_scale = _SWEEP_NAMES[goal.key]
    if goal.relative:  # model minus the Note RNN >= -t  <=>  the Note RNN minus the model <= t
        return Goal(name, (LOG_P_GAP,), -goal.threshold, False, at_most_scale)
    at_least = goal.op == ">="
    return Goal(name, (goal.key,), goal.threshold, at_least, goal.threshold if at_least else at_most_scale)


#: Issue #13's goal rows (fractions in 0..1), from the one table in :mod:`rltuner.evaluation.goals`.
GOALS: tuple[Goal, ...] = tuple(_sweep_goal(g) for g in _EVALUATION_GOALS)


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


TABLE1_DEFICIT = "table1_deficit"
"""The goal deficit over the Table 1 rows alone (the goals whose metric is a ``table1.`` one)."""

#: What the model-based searchers (``--searcher nsga2|tpe``) optimise at once: (reported metric, mode).
#: The Table 1 rows as one deficit, closeness to the data, and mode collapse as the share of the most
#: common 8-step opening (distinct melodies saturates near 100% on a round's 10,000 melodies; docs/sweep.md).
SEARCH_OBJECTIVES: tuple[tuple[str, str], ...] = (
    (TABLE1_DEFICIT, "min"),
    ("goal.log_p_gap", "min"),
    ("goal.top_opening", "min"),
)


def table1_deficit(s: Score, goals: Sequence[Goal] = GOALS) -> float:
    """The part of ``s.deficit`` that the Table 1 rows make up."""
    rows = {g.key for g in goals if any(m.startswith("table1.") for m in g.metrics)}
    return sum(v for k, v in s.shortfalls.items() if k in rows)


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
