"""The music-quality goals of issue #13 as data, and their pass/fail per model.

One model should meet every row at once: the paper's best Table 1 figures, a mean log p(a|s) close to the Note
RNN's own samples, and no mode collapse. ``rltuner evaluate`` and the run report print these rows under the
metrics; a row whose value is missing (NaN) fails.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

PRIOR_NAME = "note_rnn"


@dataclass(frozen=True)
class Goal:
    """One goal row.

    Attributes:
        key: the metric in ``ModelEvaluation.flat()`` (e.g. ``table1.notes_not_in_key``).
        label: the row's name.
        op: ``">="`` or ``"<="``: how the value must compare with ``threshold``.
        threshold: fraction (0..1) or, for ``relative``, nats.
        relative: compare the model's value minus the Note RNN's (its own samples) instead of the value.
        percent: print value and threshold as percentages (else as numbers with 2 decimals).
    """

    key: str
    label: str
    op: Literal[">=", "<="]
    threshold: float
    relative: bool = False
    percent: bool = True

    def passes(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.threshold if self.op == ">=" else value <= self.threshold

    def describe(self) -> str:
        """The row label with its threshold, e.g. ``Notes not in key <= 0.2%``."""
        thr = f"{100 * self.threshold:.3g}%" if self.percent else f"{self.threshold:+.2f}"
        return f"{self.label} {self.op} {thr}"


#: The goals of issue #13 (the paper's best per row; log p and diversity added there).
GOALS: tuple[Goal, ...] = (
    Goal("table1.notes_excessively_repeated", "Notes excessively repeated", "<=", 0.0001),
    Goal("table1.notes_not_in_key", "Notes not in key", "<=", 0.002),
    Goal("table1.melodies_starting_with_tonic", "Melodies starting with tonic", ">=", 0.80),
    Goal("table1.leaps_resolved", "Leaps resolved", ">=", 0.95),
    Goal("table1.melodies_with_unique_max_note", "Melodies with unique max note", ">=", 0.65),
    Goal("table1.melodies_with_unique_min_note", "Melodies with unique min note", ">=", 0.60),
    Goal("table1.notes_in_motif", "Notes in motif", ">=", 0.76),
    Goal("table1.notes_in_repeated_motif", "Notes in repeated motif", ">=", 0.0011),
    Goal(
        "mean_log_p", "Mean log p(a|s) minus the Note RNN's (nats)", ">=", -0.5, relative=True, percent=False
    ),
    Goal("diversity.distinct_melodies", "Distinct melodies", ">=", 0.95),
    Goal("diversity.top_opening_8", "Melodies opening with the most common 8 steps", "<=", 0.05),
)


@dataclass(frozen=True)
class GoalCheck:
    """One model's value on one goal (after subtracting the Note RNN's for a relative goal)."""

    goal: Goal
    value: float
    passed: bool

    def cell(self) -> str:
        """``0.05% pass`` / ``38.2% FAIL`` / ``n/a FAIL``."""
        if math.isnan(self.value):
            shown = "n/a"
        elif self.goal.percent:
            pct = 100 * self.value
            shown = "<0.001%" if 0 < pct < 0.001 else f"{pct:.3g}%"
        else:
            shown = f"{self.value:+.2f}"
        return f"{shown} {'pass' if self.passed else 'FAIL'}"


def check_goals(
    metrics: Mapping[str, Mapping[str, float]],
    goals: tuple[Goal, ...] = GOALS,
    prior: str = PRIOR_NAME,
) -> dict[str, list[GoalCheck]]:
    """Every goal of every model.

    Args:
        metrics: model name -> its flat metrics (``ModelEvaluation.flat()``); the prior's own samples under
            ``prior`` (without them a relative goal is n/a).
        goals: the rows.
        prior: the name of the Note RNN's entry.

    Returns:
        model name -> one :class:`GoalCheck` per goal, in order.
    """
    base = metrics.get(prior, {})
    out: dict[str, list[GoalCheck]] = {}
    for name, flat in metrics.items():
        checks = []
        for goal in goals:
            value = float(flat.get(goal.key, math.nan))
            if goal.relative:
                value -= float(base.get(goal.key, math.nan))
            checks.append(GoalCheck(goal, value, goal.passes(value)))
        out[name] = checks
    return out


def goal_rows(metrics: Mapping[str, Mapping[str, float]]) -> list[tuple[str, list[str]]]:
    """The goals as table rows (label with threshold, one cell per model), then ``Goals met`` (k / all)."""
    checks = check_goals(metrics)
    names = list(metrics)
    rows = [(goal.describe(), [checks[n][i].cell() for n in names]) for i, goal in enumerate(GOALS)]
    rows.append(("Goals met", [f"{sum(c.passed for c in checks[n])}/{len(GOALS)}" for n in names]))
    return rows
