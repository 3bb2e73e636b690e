"""The busy-machine case (issue 15): a short fast-preset tuning slice, quiet and beside a CPU burner.

Each slice runs in a fresh Python process, because OpenMP reads its wait policy once, when torch loads: the
default policy (:mod:`rltuner.threads`: 1 thread, ``OMP_WAIT_POLICY=PASSIVE``), the old default (one thread
per core, the wait policy unset: the collapse of issue 15), and one thread per core with the passive policy
(what the wait policy alone recovers). The burner is one process spinning in a Python loop. Every figure is a
ratio of two slices of the same run. A slice of the other policies slower than 10x the default policy's quiet
one (at least 60 s) is a collapse: it is stopped there and reported as "at least".

Run with ``rltuner bench --only threads`` or ``python -m rltuner.benchmarks.threads [--quick]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rltuner.benchmarks import BenchResult
from rltuner.threads import DEFAULT_THREADS, WAIT_POLICY_VAR, available_cores

SLICE_STEPS = 16_384  # two rounds of the fast preset's 256 environments: ~3 s on one quiet Xeon core
QUICK_STEPS = 1_024
GOAL_RATIO = 1.5  # issue 15: busy <= 1.5x the quiet time with the default policy
MIN_LIMIT_S = 60.0  # a slice is stopped at COLLAPSE x the default policy's quiet time, but never before this
COLLAPSE = (
    10.0  # slower than this many times the default policy's quiet slice: a collapse; it is stopped there
)
BURNERS = 1


@contextmanager
def cpu_burner(n: int = BURNERS) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``n`` processes that spin on the CPU for the duration of the ``with`` block (yields them)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]
    try:
        time.sleep(0.5)  # let them start spinning
        yield procs
    finally:
        for p in procs:
            p.kill()
            p.wait()


def run_slice(
    threads: int, wait_policy: str | None, quick: bool, limit_s: float = 600.0
) -> tuple[float, dict[str, str]]:
    """Seconds of one tuning slice in a fresh process (``wait_policy`` None: the variable unset) and what
    that process saw (threads, wait policy); ``limit_s`` (it was stopped there) when it did not finish."""
    env = dict(os.environ)
    env.pop(WAIT_POLICY_VAR, None)
    if wait_policy is not None:
        env[WAIT_POLICY_VAR] = wait_policy
    cmd = [sys.executable, "-m", "rltuner.benchmarks.threads", "--slice", str(threads)]
    try:
        done = subprocess.run(
            cmd + (["--quick"] if quick else []),
            env=env,
            capture_output=True,
            text=True,
            timeout=limit_s,
        )
    except subprocess.TimeoutExpired:
        return limit_s, {"threads": str(threads), "wait": str(wait_policy), "timed_out": "yes"}
    if done.returncode != 0:
        raise RuntimeError(f"the tuning slice failed: {done.stderr.strip().splitlines()[-1:]}")
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    return float(seen.pop("seconds")), {k: str(v) for k, v in seen.items()}


def _slice_in_this_process(threads: int, quick: bool) -> dict[str, object]:
    """Time a fast-preset Q-learning slice here (the prior loaded first, outside the timing)."""
    import torch

    from rltuner.benchmarks import warm_up_optimizers
    from rltuner.benchmarks.rl import _prior
    from rltuner.domains.music import music_domain
    from rltuner.rl.config import preset
    from rltuner.rl.tuner import tune
    from rltuner.threads import set_threads

    count = set_threads(threads)
    domain = music_domain(_prior()[0])
    small: dict[str, Any] = (
        {"n_envs": 32, "batch_size": 256, "train_every": 64, "eval_episodes": 16} if quick else {}
    )
    cfg = preset(
        "fast", algorithm="q", total_steps=QUICK_STEPS if quick else SLICE_STEPS, eval_every=0,
        progress=False, tensorboard=False, threads=count, **small,
    )  # fmt: skip
    warm_up_optimizers()  # its own process: torch's one-time optimizer start-up is not the slice's
    t0 = time.perf_counter()
    tune(cfg, domain)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "threads": torch.get_num_threads(), "wait": os.environ.get(WAIT_POLICY_VAR)}


def measure(quick: bool = False) -> list[BenchResult]:
    """Quiet and busy seconds of the same slice under three policies; each busy/quiet ratio a row."""
    cores = max(available_cores(), 2)
    policies = [
        (f"default policy ({DEFAULT_THREADS} thread, {WAIT_POLICY_VAR}=PASSIVE)", DEFAULT_THREADS, "PASSIVE"),
        (f"old default ({cores} threads, one per core; {WAIT_POLICY_VAR} unset)", cores, None),
        (f"{cores} threads with {WAIT_POLICY_VAR}=PASSIVE", cores, "PASSIVE"),
    ]
    load = f"load average {os.getloadavg()[0]:.2f} before the run" if hasattr(os, "getloadavg") else ""
    steps = QUICK_STEPS if quick else SLICE_STEPS
    timings: list[tuple[str, float, float, dict[str, str]]] = []
    limit = 600.0  # the default policy's own slices run to the end; the others stop at a collapse
    for i, (name, threads, wait) in enumerate(policies):
        quiet, seen = run_slice(threads, wait, quick, limit)
        with cpu_burner():
            busy, _ = run_slice(threads, wait, quick, limit)
        timings.append((name, quiet, busy, seen))
        if i == 0:
            limit = max(MIN_LIMIT_S, COLLAPSE * quiet)
    base_quiet, base_busy = timings[0][1], timings[0][2]
    results: list[BenchResult] = []
    for i, (name, quiet, busy, seen) in enumerate(timings):
        stopped = [i > 0 and t >= limit for t in (quiet, busy)]
        ratio = float("nan") if stopped[0] else busy / quiet  # no ratio to a slice that did not finish
        cut = [f" (stopped at the {limit:.0f} s limit: at least)" if s else "" for s in stopped]
        versus = (
            f"; {quiet / base_quiet:.1f}x quiet and {busy / base_busy:.1f}x busy the default policy's time"
            if i
            else ""
        )
        results.append(
            BenchResult(
                name=f"busy / quiet time of a fast-preset tuning slice, {name}",
                value=ratio,
                unit="x",
                goal=f"<= {GOAL_RATIO}x" if i == 0 else "",
                met=(ratio <= GOAL_RATIO if not quick else None) if i == 0 else None,
                detail=f"q, {steps:,} env steps; quiet {quiet:.1f} s{cut[0]}, beside {BURNERS} spinning process "
                f"{busy:.1f} s{cut[1]}{versus}; the slice's process saw {seen.get('threads')} torch threads, "
                f"wait policy {seen.get('wait')}; {cores} cores; 'quiet' is without our burner: the machine's "
                f"other jobs run in both ({load})",
            )
        )
    return results


if __name__ == "__main__":
    if "--slice" in sys.argv:
        print(
            json.dumps(
                _slice_in_this_process(int(sys.argv[sys.argv.index("--slice") + 1]), "--quick" in sys.argv)
            )
        )
    else:
        for row in measure(quick="--quick" in sys.argv):
            print(
                f"{row['name']}: {row['value']:.2f} {row['unit']} (goal {row['goal'] or '-'}) {row['detail']}"
            )
