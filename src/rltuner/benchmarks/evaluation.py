"""Benchmark: evaluating 100,000 sampled melodies of one model (the original needed ~19 minutes per model)."""

from __future__ import annotations

import time

import numpy as np

from rltuner.benchmarks import BenchResult

GOAL_S = 10.0  # issue #15: one model's 100,000 melodies, every measure, on the 2-core machine (was 60 s)


def measure(quick: bool = False) -> list[BenchResult]:
    """Time :func:`evaluate_models`'s parts for one tuned-model stand-in against a Note RNN-sized prior
    (wall and CPU time of the sampling and of the measures, and each measure's own time).

    Both models are untrained LSTMs of the paper's size (speed does not depend on the weights), so the
    benchmark needs no shipped checkpoint. It runs as ``rltuner evaluate`` does: with
    :func:`~rltuner.threads.batch_workers` workers for the torch threads in effect. ``quick`` uses 2,000
    melodies.
    """
    import torch

    from rltuner.encoding import random_note_primers
    from rltuner.evaluation.evaluate import (
        corpus_window_index,
        measure_samples,
        sample_policy,
    )
    from rltuner.models.prior import build_prior
    from rltuner.threads import batch_workers

    n = 2_000 if quick else 100_000
    torch.manual_seed(0)
    prior = build_prior({"arch": "lstm", "hidden_size": 100}).eval()
    model = build_prior({"arch": "lstm", "hidden_size": 100}).eval()
    rng = np.random.default_rng(0)
    primers = random_note_primers(n, rng)
    corpus = list(rng.integers(0, 38, size=(2_000, 64)))  # a stand-in corpus of 128,000 steps
    index = corpus_window_index(corpus)
    muspy_n = min(1_000, n)
    threads = torch.get_num_threads()
    workers = batch_workers(threads)
    # CPU seconds (of all the process's threads) too: wall time alone also counts others' jobs on a shared
    # machine, and CPU / wall shows how much of the time two workers really ran side by side
    cpu0, t0 = time.process_time(), time.perf_counter()
    melodies, scores = sample_policy(model, n, 32, primers, seed=0, reference=prior, workers=workers)
    cpu1, t1 = time.process_time(), time.perf_counter()
    ev = measure_samples(
        "bench",
        melodies,
        primers,
        model,
        prior,
        index=index,
        muspy_index=np.arange(muspy_n, dtype=np.int64),
        scores=scores,
        workers=workers,
    )
    cpu2, t2 = time.process_time(), time.perf_counter()
    total, cpu = t2 - t0, cpu2 - cpu0
    own = ", ".join(f"{k} {v:.1f} s" for k, v in ev.seconds.items() if k != "log_p_kl")
    return [
        BenchResult(
            name=f"evaluate one model: {n:,} melodies x 32 steps, every measure",
            value=round(total, 2),
            unit="s",
            goal=f"<= {GOAL_S:.0f} s for 100,000 (issue #15; the original: ~19 min)",
            met=None if quick else total <= GOAL_S,
            detail=(
                f"sample + log p + KL {t1 - t0:.1f} s wall / {cpu1 - cpu0:.1f} s CPU; the measures "
                f"{t2 - t1:.1f} s wall / {cpu2 - cpu1:.1f} s CPU (each on its own: {own}; muspy on "
                f"{muspy_n:,} melodies); in all {cpu:.1f} s CPU in {total:.1f} s wall (CPU / wall "
                f"{cpu / total:.2f}: {workers} batch workers x {threads} torch thread{'s' * (threads != 1)})"
            ),
        )
    ]
