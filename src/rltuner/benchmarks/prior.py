"""Speed of the prior: batched sampling, the single-step interface, and forward over sequences.

Measured on the default Note RNN (LSTM, 100 cells, 38 classes); the weights do not change the speed, so a
freshly initialised model is used. Pretraining time is recorded from the real run (docs/prior.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from rltuner.benchmarks import BenchResult


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` runs (seconds): the least disturbed by other work on the machine."""
    fn()  # warm-up (allocator, kernels)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure(quick: bool = False) -> list[BenchResult]:
    """Sampling rate (100,000 x 32), step time at batch 1,024, forward throughput (128 x 128)."""
    from rltuner.models.prior import build_prior
    from rltuner.models.sampling import sample

    torch.manual_seed(0)
    model = build_prior({"arch": "lstm"}).eval()
    threads = torch.get_num_threads()
    results: list[BenchResult] = []

    n, length = (2_000, 32) if quick else (100_000, 32)
    secs = _best_time(lambda: sample(model, n, length, seed=0), 1 if quick else 2)
    rate = n * length / secs
    results.append(
        BenchResult(
            name=f"batched sampling, {n:,} melodies x {length} steps (LSTM 100)",
            value=rate,
            unit="note-steps/s",
            goal=">= 300,000 note-steps/s (100,000 x 32 in about 10 s)",
            met=rate >= 300_000 if not quick else None,
            detail=f"{secs:.2f} s in all, batch 1,024, {threads} torch thread(s)",
        )
    )

    batch = 1_024
    reps = 20 if quick else 200
    tokens = torch.randint(2, 38, (batch,))
    with torch.inference_mode():
        state = model.initial_state(batch)

        def steps() -> None:
            s = state
            for _ in range(reps):
                _, s = model.step(tokens, s)

        per_step = _best_time(steps, 3) / reps
    results.append(
        BenchResult(
            name="single step at batch 1,024 (LSTM 100, lookup input)",
            value=per_step * 1e3,
            unit="ms",
            goal="as fast as possible (RL hot path)",
            met=None,
            detail=f"{batch / per_step:,.0f} sequence-steps/s, {threads} torch thread(s)",
        )
    )

    b, t = (32, 64) if quick else (128, 128)
    seq = torch.randint(0, 38, (b, t))
    with torch.inference_mode():
        fwd = _best_time(lambda: model(seq), 3)
    results.append(
        BenchResult(
            name=f"forward over sequences, {b} x {t} (LSTM 100, no grad)",
            value=b * t / fwd,
            unit="note-steps/s",
            goal="",
            met=None,
            detail=f"{fwd * 1e3:.1f} ms per batch, {threads} torch thread(s)",
        )
    )
    return results


if __name__ == "__main__":  # pragma: no cover
    for r in measure():
        print(f"{r['name']}: {r['value']:,.2f} {r['unit']} ({r['detail']})")
