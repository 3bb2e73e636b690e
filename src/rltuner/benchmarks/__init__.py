"""Speed benchmarks. Each module exposes ``measure(quick: bool = False) -> list[BenchResult]``.

``rltuner bench`` runs them all in one process and rewrites BENCHMARKS.md.
"""

from __future__ import annotations

from typing import TypedDict


class BenchResult(TypedDict):
    name: str  # what was measured, e.g. "whole-melody scoring, 100,000 x 32, all rules"
    value: float  # the measured figure
    unit: str  # e.g. "melody-steps/s", "s", "ms"
    goal: str  # the goal in words, e.g. ">= 1,000,000 melody-steps/s"
    met: bool | None  # whether the goal is met (None where there is no goal)
    detail: str  # anything a reader needs: sizes, threads, ratios


def warm_up_optimizers() -> None:
    """Pay torch's one-time optimizer start-up before a timing starts.

    A process's first ``torch.optim`` optimizer imports ``torch._dynamo`` (torch wraps some ``Optimizer``
    methods to disable it), ~1-1.5 s on the project's 2-core machines: timed inside a tuning run it adds a
    constant to that run alone (the first of a row's alternated runs, or every run of its own process).
    """
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
