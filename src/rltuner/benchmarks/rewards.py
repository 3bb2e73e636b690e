"""Speed of the music-theory reward and the Table 1 statistics (issue 4, section 5)."""

from __future__ import annotations

import time

import numpy as np

from rltuner.benchmarks import BenchResult


def measure(quick: bool = False) -> list[BenchResult]:
    """Whole-melody scoring, statistics and the incremental step on uniform random melodies of 32 steps.

    Args:
        quick: tiny sizes (a smoke test), not the issue's.
    """
    from rltuner.rewards.music_theory import MusicTheoryReward, music_theory_rewards
    from rltuner.rewards.statistics import melody_statistics

    n = 2_000 if quick else 100_000
    batch = 64 if quick else 1_024
    rng = np.random.default_rng(0)
    melodies = rng.integers(0, 38, size=(n, 32))

    start = time.perf_counter()
    music_theory_rewards(melodies)
    scoring = time.perf_counter() - start
    rate = n * 32 / scoring

    start = time.perf_counter()
    melody_statistics(melodies)
    statistics = time.perf_counter() - start

    reward = MusicTheoryReward()
    actions = rng.integers(0, 38, size=(32, batch))
    best = float("inf")
    for _ in range(2 if quick else 10):
        state = reward.reset(batch)
        start = time.perf_counter()
        for t in range(32):
            reward.step(state, actions[t])
        best = min(best, (time.perf_counter() - start) / 32)
    step_ms = best * 1e3

    full = not quick
    return [
        BenchResult(
            name=f"music-theory reward, whole melodies, {n:,} x 32, all rules",
            value=rate,
            unit="melody-steps/s",
            goal=">= 1,000,000 melody-steps/s (<= 3.2 s)",
            met=rate >= 1e6 if full else None,
            detail=f"{scoring:.2f} s; the original: ~15,000 melody-steps/s (pure Python, one melody)",
        ),
        BenchResult(
            name=f"Table 1 statistics, {n:,} melodies of 32 steps",
            value=statistics,
            unit="s",
            goal="<= 5 s",
            met=statistics <= 5.0 if full else None,
            detail="all rows, raw counts and interval tallies",
        ),
        BenchResult(
            name=f"music-theory reward, incremental step, B = {batch:,}",
            value=step_ms,
            unit="ms",
            goal="<= 1 ms",
            met=step_ms <= 1.0 if full else None,
            detail=f"best of {2 if quick else 10} melodies' mean step time; "
            f"{batch / best:,.0f} melody-steps/s (the original: ~66 us per step for one melody)",
        ),
    ]
