"""RL tuning speed: acting + reward, the full budget per algorithm beside a plain eager-PyTorch reference of the
same work (:mod:`rltuner.benchmarks.eager`), peak memory, and where the time goes.

Run with ``rltuner bench`` (all benchmarks) or ``python -m rltuner.benchmarks.rl [--quick]``.
"""

from __future__ import annotations

import cProfile
import functools
import pstats
import resource
import sys
import time
from dataclasses import dataclass
from typing import Any

from rltuner.benchmarks import BenchResult


def _prior() -> tuple[Any, str]:
    from rltuner.errors import CheckpointError
    from rltuner.models.checkpoint import load_default_prior
    from rltuner.models.prior import build_prior

    try:
        return load_default_prior(), "shipped Note RNN"
    except CheckpointError:  # same size and speed as the Note RNN, untrained
        import torch

        torch.manual_seed(0)
        return build_prior(
            {"arch": "lstm", "hidden_size": 100}
        ).eval(), "untrained LSTM-100 (no shipped prior)"


def _acting(quick: bool, prior: Any, prior_name: str) -> list[BenchResult]:
    import numpy as np
    import torch

    from rltuner.domains.music import music_domain
    from rltuner.rl.config import preset
    from rltuner.rl.env import BatchedEnv
    from rltuner.rl.targets import get_algorithm
    from rltuner.rl.tuner import make_actor

    domain = music_domain(prior)
    results: list[BenchResult] = []
    for n_envs in (16,) if quick else (256, 1024):
        cfg = preset("fast", n_envs=n_envs)
        env = BatchedEnv(prior, prior, domain.make_reward(), domain.sample_primers, 32, n_envs)
        rng = np.random.default_rng(0)
        act = make_actor(get_algorithm("q"), cfg, torch.Generator().manual_seed(0), 0, n_envs)
        env.rollout(act, rng)  # warm-up
        rounds = 1 if quick else max(2, 200_000 // (n_envs * 32))
        t0 = time.perf_counter()
        for _ in range(rounds):
            env.rollout(act, rng)
        rate = rounds * n_envs * 32 / (time.perf_counter() - t0)
        results.append(
            BenchResult(
                name=f"acting + reward, no learning, {n_envs} envs",
                value=rate,
                unit="env steps/s",
                goal=">= 200,000 env steps/s",
                met=rate >= 200_000 if not quick else None,
                detail=f"{prior_name}, epsilon-greedy, Q-net + Reward RNN step + music-theory reward, "
                f"{torch.get_num_threads()} threads",
            )
        )
    return results


ORIGINAL_PAPER_RATE = 232.0  # env steps/s of the original TensorFlow code, paper schedule (issue #15)


def _per_call_us(fn: Any, n: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def _one_melody_paths(quick: bool, prior: Any, prior_name: str) -> list[BenchResult]:
    """The paper schedule's hot paths at one melody, each beside the path it replaced, in the same run."""
    import numpy as np
    import torch

    from rltuner.rewards.music_theory import MusicTheoryReward, sum_in_order

    n = 64 if quick else 2_000
    reward = MusicTheoryReward()
    melody = np.random.default_rng(0).integers(0, 38, size=(n, 32))

    def score(one_melody: bool) -> None:
        for row in melody[: max(1, n // 32)]:
            state = reward.reset(1)
            for a in row:
                x = np.array([a])
                sum_in_order(reward._advance_one(state, x)) if one_melody else sum(reward._advance(state, x))

    calls = max(1, n // 32) * 32
    batched_us, one_us = (
        _per_call_us(lambda: score(False), 1) / calls,
        _per_call_us(lambda: score(True), 1) / calls,
    )
    tokens = [torch.tensor([int(a)]) for a in melody[:, 0]]
    with torch.no_grad():
        state = [prior.initial_state(1), prior.initial_state(1)]
        q_step, p_step = prior.stepper(1), prior.stepper(1)
        feed = iter(tokens * 3)

        def generic() -> None:
            tok = next(feed)
            _, state[0] = prior.step(tok, state[0])
            _, state[1] = prior.step(tok, state[1])

        def fast() -> None:
            tok = next(feed)
            q_step(tok)
            p_step(tok)

        step_us, stepper_us = _per_call_us(generic, n - 1), _per_call_us(fast, n - 1)
    threads = f"{torch.get_num_threads()} threads"
    return [
        BenchResult(
            name="music-theory reward at one melody (the paper schedule's per-step reward)",
            value=one_us, unit="us/step", goal="", met=None,
            detail=f"one-melody path {one_us:.1f} us vs the batched path at B = 1 {batched_us:.1f} us: "
            f"{batched_us / one_us:.1f}x (the same values, tested); {threads}",
        ),
        BenchResult(
            name="both networks' steps at one melody (Q-network + Reward RNN)",
            value=stepper_us, unit="us/step", goal="", met=None,
            detail=f"Prior.stepper (preallocated) {stepper_us:.0f} us vs Prior.step {step_us:.0f} us: "
            f"{step_us / stepper_us:.2f}x (the same logits to the bit); {prior_name}, {threads}",
        ),
    ]  # fmt: skip


def _tanh_paths(quick: bool, prior: Any, prior_name: str) -> list[BenchResult]:
    """Both networks' steps at 256 melodies with the LSTM's tanh through sigmoid (the default from
    ``SIGMOID_TANH_MIN_BATCH`` sequences) beside ``torch.tanh``, alternated in this run."""
    import torch

    from rltuner.models import rnn

    batch, n = (16, 8) if quick else (256, 400)
    tokens = [torch.randint(0, prior.vocab_size, (batch,), generator=torch.Generator().manual_seed(i))
              for i in range(8)]  # fmt: skip
    times = {"sigmoid": 0.0, "tanh": 0.0}
    default = rnn.SIGMOID_TANH_MIN_BATCH
    try:
        with torch.no_grad():
            for _ in range(3):
                for path in times:
                    rnn.SIGMOID_TANH_MIN_BATCH = default if path == "sigmoid" else batch + 1
                    q_step, p_step = prior.stepper(batch), prior.stepper(batch)
                    feed = iter(tokens * (n // 8 + 2))

                    def both(q_step: Any = q_step, p_step: Any = p_step, feed: Any = feed) -> None:
                        tok = next(feed)
                        q_step(tok)
                        p_step(tok)

                    times[path] += _per_call_us(both, n)
    finally:
        rnn.SIGMOID_TANH_MIN_BATCH = default
    fast, slow = times["sigmoid"] / 3, times["tanh"] / 3
    return [
        BenchResult(
            name=f"both networks' steps at {batch} melodies (Q-network + Reward RNN)",
            value=fast, unit="us/step", goal="", met=None,
            detail=f"tanh as 2 sigmoid(2x) - 1 {fast:.0f} us vs torch.tanh {slow:.0f} us: {slow / fast:.2f}x "
            f"(alternated, 3 x {n} steps each; torch's CPU tanh is not vectorised); {prior_name}, "
            f"{torch.get_num_threads()} threads",
        )
    ]  # fmt: skip


def _learner_settings(quick: bool, prior: Any) -> list[BenchResult]:
    """One gradient step at the paper's shape (1 episode) and the fast preset's (32 episodes), per setting."""
    import numpy as np
    import torch

    from rltuner.domains.music import music_domain
    from rltuner.rl.config import preset
    from rltuner.rl.learner import cpu_has_bf16
    from rltuner.rl.targets import get_algorithm
    from rltuner.rl.tuner import ValueLearner

    domain = music_domain(prior)
    results: list[BenchResult] = []
    shapes = (("paper", 32), ("fast", 1024))
    for name, batch_size in shapes:
        variants: dict[str, dict[str, Any]] = {
            "per-tensor Adam": {"fused_adam": False, "learner_bf16": "off", "overlap": "off"},
            "fused Adam": {"fused_adam": True, "learner_bf16": "off", "overlap": "off"},
        }
        if name == "fast":
            bf16 = {"fused_adam": True, "learner_bf16": "on"}
            variants["fused Adam + bf16 autocast"] = {**bf16, "overlap": "off"}
            variants["fused Adam + bf16 + overlapped target forward"] = {**bf16, "overlap": "on"}
        if name == "paper":
            variants["fused Adam, stored states (32 single transitions)"] = {
                "fused_adam": True, "learner_bf16": "off", "overlap": "off", "stored_states": True,
            }  # fmt: skip
        times: dict[str, float] = {}
        for label, settings in variants.items():
            cfg = preset(name, batch_size=batch_size, **settings)
            learner = ValueLearner(prior, get_algorithm("q"), cfg, torch.device("cpu"), 32)
            env = learner.make_env(domain, batch_size // 32)
            batch = env.rollout(learner.actor(torch.Generator().manual_seed(0), 0), np.random.default_rng(0))
            reps = 3 if quick else (200 if name == "paper" else 20)
            if cfg.stored_states:
                learner.replay.add(batch)
                sample = learner.replay.sample_transitions(batch_size, torch.Generator().manual_seed(0))
                step = functools.partial(learner.step_transitions, sample)
            else:
                step = functools.partial(learner.step, batch)
            times[label] = _per_call_us(step, reps) / 1e3
        base = times["per-tensor Adam"]
        ratios = "; ".join(f"{k} {v:.2f} ms ({base / v:.2f}x)" for k, v in times.items())
        bf16_note = (
            ""
            if name == "paper"
            else f"; bf16 faster here (AMX, or AVX512-BF16 on AMD; learner_bf16=auto's rule): {cpu_has_bf16()}"
        )
        results.append(
            BenchResult(
                name=f"one gradient step, {name} preset's shape ({batch_size // 32} episodes x 32 steps)",
                value=times["fused Adam"],
                unit="ms",
                goal="",
                met=None,
                detail=f"{ratios}{bf16_note}; {torch.get_num_threads()} threads",
            )
        )
    return results


def _paper_preset(quick: bool, prior: Any, prior_name: str) -> BenchResult:
    import torch

    from rltuner.domains.music import music_domain
    from rltuner.rl.config import PRESETS, preset
    from rltuner.rl.tuner import tune

    steps = 320 if quick else 8_000
    domain = music_domain(prior)

    def run(total_steps: int, stored: bool) -> None:
        tune(preset("paper", total_steps=total_steps, eval_every=0, eval_episodes=1, progress=False,
                    tensorboard=False, stored_states=stored), domain)  # fmt: skip

    # Untimed first (warm_up_optimizers and the shapes' first kernels): otherwise the first timed run, the
    # default's, paid ~1.3 s more than the others and looked ~10% slower.
    run(160, False)
    seconds = {False: 0.0, True: 0.0}  # stored_states: off, on
    for _ in range(2):  # alternated, twice each: the host's speed drifts
        for stored in seconds:
            t0 = time.perf_counter()
            run(steps, stored)
            seconds[stored] += time.perf_counter() - t0
    rates = {stored: 2 * steps / s for stored, s in seconds.items()}
    default = PRESETS["paper"].stored_states
    rate, other = rates[default], rates[not default]
    label = {True: "stored states", False: "whole episodes"}
    return BenchResult(
        name=f"--preset paper (1 environment, batch 32, a gradient step every 5 env steps), 2 x {steps:,} env "
        f"steps, {label[default]} (its default)",
        value=rate,
        unit="env steps/s",
        goal=f">= 1,100 env steps/s (5x the original's {ORIGINAL_PAPER_RATE:.0f})",
        met=rate >= 1_100 if not quick else None,
        detail=f"{rate / ORIGINAL_PAPER_RATE:.2f}x the original's {ORIGINAL_PAPER_RATE:.0f} env steps/s (measured "
        f"side by side on this machine class, issue #15); with {label[not default]} (stored_states="
        f"{str(not default).lower()}) {other:,.0f} env steps/s ({other / rate:.2f}x the default's), the two "
        "alternated in this run; "
        f"{prior_name}, {torch.get_num_threads()} threads",
    )


def _budget_overrides(quick: bool) -> dict[str, Any]:
    """The settings of the full-budget rows over the fast preset (``--quick``: a tiny budget, smaller shapes)."""
    import torch

    # the thread count `rltuner bench --threads` chose (tune() would otherwise apply TuneConfig's default)
    overrides: dict[str, Any] = {"progress": False, "tensorboard": False, "threads": torch.get_num_threads()}
    if quick:
        overrides.update(total_steps=2048, n_envs=32, batch_size=256, train_every=256, eval_every=0)
    return overrides


VALUE_BUDGET_S = 60.0  # issue #15: a value-family fast-preset run in <= 60 s ...
EAGER_RATIO_GOAL = 0.65  # ... and in <= 0.65x the plain eager-torch work measured in the same run
POLICY_BUDGET_S = 120.0  # the on-policy rows (about 1/6 of the sample-updates) keep the older goal


def eager_ratio(wall_s: float, reference_s: float) -> float:
    """rltuner's time over the plain eager-torch reference's (projected) time for the same work."""
    return wall_s / reference_s


def _eager_reference(quick: bool, prior: Any, prior_name: str) -> tuple[BenchResult, float]:
    """The plain eager-PyTorch reference row (:mod:`rltuner.benchmarks.eager`) and its projected seconds."""
    import torch

    from rltuner.benchmarks.eager import FRACTION, measure_reference
    from rltuner.domains.music import music_domain
    from rltuner.rl.config import preset

    cfg = preset("fast", algorithm="q", **_budget_overrides(quick))
    fraction = 1 / 2 if quick else FRACTION
    domain = music_domain(prior)
    timing = measure_reference(prior, domain, cfg, fraction)
    size, L = prior.config, domain.episode_length
    row = BenchResult(
        name=f"plain eager PyTorch, the fast preset's work: {timing.rounds} rounds of {cfg.n_envs} envs x {L} "
        f"steps, {timing.gradient_steps:,} Q gradient steps of {cfg.batch_size // L} episodes x {L} steps "
        "(projected)",
        value=timing.projected_s,
        unit="s",
        goal="",
        met=None,
        detail=f"acting {timing.projected_acting_s:.1f} s + learning {timing.projected_learning_s:.1f} s, "
        f"scaled linearly from {timing.timed_rounds} rounds ({timing.acting_s:.2f} s) and {timing.timed_steps} "
        f"gradient steps ({timing.learning_s:.2f} s) timed (process CPU time {timing.cpu_s:.2f} s of "
        f"{timing.acting_s + timing.learning_s:.2f} s: below it, other jobs shared the CPU); "
        f"torch.nn.LSTM({size.vocab_size}, {size.hidden_size}) + nn.Linear stepped one token at a time over "
        f"one-hot inputs, fp32, {cfg.exploration} exploration, the music-theory reward (the project's numpy "
        f"code) per step; TD loss of Q-learning (online + target forward, backward, clip, torch.optim.Adam's "
        f"default per-tensor loop, soft target update per parameter); no evaluation; {prior_name}, {torch.get_num_threads()} threads",
    )
    return row, timing.projected_s


def budget_row(
    name: str,
    value_family: bool,
    result: Any,
    wall_s: float,
    reference_s: float,
    quick: bool,
    prior_name: str,
    cpu_s: float | None = None,
) -> BenchResult:
    """The row of one algorithm's fast-preset run (``result``: its :class:`~rltuner.rl.tuner.TuneResult`).

    A value-family row's goal is issue #15's: <= 60 s and <= 0.65x the plain eager-torch reference's
    ``reference_s`` measured in the same run, with the budget's work done; ``met`` is None for ``--quick``.
    ``cpu_s``, the run's process CPU time (every thread), is reported beside the wall time: the learner's
    overlapped target forward (``overlap``) uses a second core, the reference one.
    """
    # On-policy rows learn once from each sampled episode: ~1,000,000 sample-updates, not 6,400,000.
    updates_goal = 6_400_000 if value_family else 1_000_000
    budget = f"1,000,000 env steps, >= {updates_goal:,} sample-updates"
    work_done = result.env_steps >= 1_000_000 and result.sample_updates >= updates_goal
    if value_family:
        ratio = eager_ratio(wall_s, reference_s)
        goal = f"<= {VALUE_BUDGET_S:.0f} s and <= {EAGER_RATIO_GOAL}x plain eager torch ({budget})"
        met = wall_s <= VALUE_BUDGET_S and ratio <= EAGER_RATIO_GOAL and work_done
        vs = f"ratio {ratio:.2f}x plain eager torch ({wall_s:.1f} s / {reference_s:.1f} s, this run); "
        if cpu_s is not None:
            vs += (
                f"CPU time {cpu_s:.1f} s, {eager_ratio(cpu_s, reference_s):.2f}x the reference's one-core wall "
                f"time ({cpu_s / wall_s:.2f} cores busy on average); "
            )
    else:
        goal = f"<= {POLICY_BUDGET_S:.0f} s ({budget})"
        met = wall_s <= POLICY_BUDGET_S and work_done
        vs = ""
    last = result.metrics[-1]
    return BenchResult(
        name=f"{name}: {'tiny shapes (--quick)' if quick else 'fast preset'}, {result.env_steps:,} env steps, "
        f"{result.sample_updates:,} sample-updates",
        value=wall_s,
        unit="s",
        goal=goal,
        met=None if quick else met,
        detail=f"{vs}{result.env_steps / wall_s:,.0f} env steps/s, {result.sample_updates / wall_s:,.0f} "
        f"sample-updates/s, {result.gradient_steps} gradient steps; final eval mean log p "
        f"{last['mean_log_p']:.3f}, mean r_MT {last['mean_task_reward']:.3f}, KL {last['mean_kl']:.3f}; {prior_name}",
    )


@dataclass(frozen=True)
class BudgetRun:
    """One algorithm's fast-preset run: its result (a TuneResult), wall and process CPU seconds."""

    name: str
    value_family: bool
    result: Any
    wall_s: float
    cpu_s: float


def _full_budget(quick: bool, prior: Any) -> list[BudgetRun]:
    """One fast-preset run per algorithm (the rows are made once the reference's second timing is in)."""
    from rltuner.domains.music import music_domain
    from rltuner.rl.config import preset
    from rltuner.rl.targets import ALGORITHMS
    from rltuner.rl.tuner import tune

    domain = music_domain(prior)
    runs: list[BudgetRun] = []
    overrides = _budget_overrides(quick)
    names = list(ALGORITHMS)
    for name in names[:1] if quick else names:
        cfg = preset("fast", algorithm=name, **overrides)
        t0, c0 = time.perf_counter(), time.process_time()
        result = tune(cfg, domain)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        runs.append(BudgetRun(name, ALGORITHMS[name].family == "value", result, wall, cpu))
    return runs


def _profile(quick: bool, prior: Any) -> BenchResult:
    import torch

    from rltuner.domains.music import music_domain
    from rltuner.rl.config import preset
    from rltuner.rl.tuner import tune

    steps = 4096 if quick else 131_072
    cfg = preset(
        "fast", algorithm="q", total_steps=steps, eval_every=0, progress=False, tensorboard=False,
        threads=torch.get_num_threads(),
    )  # fmt: skip
    if quick:
        cfg = cfg.with_overrides(n_envs=32, batch_size=256, train_every=256)
    profiler = cProfile.Profile()
    profiler.enable()
    tune(cfg, music_domain(prior))
    profiler.disable()
    stats: Any = pstats.Stats(profiler)
    total = max(sum(v[3] for k, v in stats.stats.items() if k[2] == "tune"), 1e-9)

    def cumulative(func: str, file_part: str) -> float:
        return sum(v[3] for k, v in stats.stats.items() if k[2] == func and file_part in k[0])

    parts = {
        "acting (rollout)": cumulative("rollout", "env.py"),
        "  music-theory reward": cumulative("step", "music_theory.py"),
        "  network steps": cumulative("step", "rnn.py"),
        "learning (gradient steps)": cumulative("step", "tuner.py"),
        "evaluation": cumulative("evaluate_policy", "tuner.py"),
    }
    detail = "; ".join(f"{k.strip()} {100 * v / total:.0f}%" for k, v in parts.items())
    return BenchResult(
        name=f"where the time goes (cProfile, q, {steps:,} env steps)",
        value=total,
        unit="s",
        goal="",
        met=None,
        detail=detail,
    )


def measure(quick: bool = False) -> list[BenchResult]:
    """Acting speed, the full fast-preset budget per algorithm beside plain eager torch, peak memory, a profile.

    Torch runs with the threads in effect (``rltuner bench --threads``, default 1: rltuner's thread policy).
    """
    prior, prior_name = _prior()
    results = _acting(quick, prior, prior_name)
    results += _one_melody_paths(quick, prior, prior_name)
    results += _tanh_paths(quick, prior, prior_name)
    results.append(_paper_preset(quick, prior, prior_name))
    results += _learner_settings(quick, prior)
    # The reference is timed before and after the tuning runs (minutes apart on a shared machine, whose speed
    # drifts): the ratios use the mean of the two, and the reference's row gives both.
    before, before_s = _eager_reference(quick, prior, prior_name)
    runs = _full_budget(quick, prior)
    _, after_s = _eager_reference(quick, prior, prior_name)
    reference_s = (before_s + after_s) / 2
    results.append(
        {
            **before,
            "value": reference_s,
            "detail": f"mean of two timings, before the tuning rows ({before_s:.1f} s) and after them "
            f"({after_s:.1f} s); before: {before['detail']}",
        }
    )
    for run in runs:
        results.append(
            budget_row(
                run.name, run.value_family, run.result, run.wall_s, reference_s, quick, prior_name, run.cpu_s
            )
        )
    results.append(_profile(quick, prior))
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak_kb / 1024 if sys.platform != "darwin" else peak_kb / 1024 / 1024
    results.append(
        BenchResult(
            name="peak memory of the RL benchmarks (process max RSS)",
            value=peak_mb,
            unit="MB",
            goal="<= 1,024 MB",
            met=peak_mb <= 1024 if not quick else None,
            detail="resource.getrusage ru_maxrss over the whole process (torch and numpy included)",
        )
    )
    return results


if __name__ == "__main__":
    from rltuner.threads import DEFAULT_THREADS, set_threads

    set_threads(DEFAULT_THREADS)
    for row in measure(quick="--quick" in sys.argv):
        print(
            f"{row['name']}: {row['value']:,.3f} {row['unit']} (goal {row['goal']}; met {row['met']}) {row['detail']}"
        )
