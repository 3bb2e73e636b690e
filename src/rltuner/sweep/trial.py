"""One trial of a sweep: tune at a budget, and at each evaluation round score N sampled melodies.

Ray-free: the runner passes a ``report`` callable (``ray.tune.report``); tests pass a list's ``append``.
Every trial samples its evaluation melodies after the same primers and seed, so trials differ only in
their settings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from rltuner.sweep.objective import LOG_P_GAP, TABLE1_DEFICIT, score, table1_deficit
from rltuner.sweep.space import trial_settings

#: Settings of a whole sweep that every trial shares.
DEFAULT_STEPS = 1_000_000
DEFAULT_MELODIES = 10_000
DEFAULT_ROUNDS = 4


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a sweep shares.

    Attributes:
        steps: environment steps of each tuning run.
        rounds: evaluation rounds per trial (intermediate results for early stopping; the last is final).
        melodies: melodies sampled per evaluation round.
        seed: the tuning seed and the evaluation seed.
        reference_log_p: mean log p(a|s) of the Note RNN's own samples (the log p gap's zero).
        threads: torch threads per trial.
    """

    steps: int = DEFAULT_STEPS
    rounds: int = DEFAULT_ROUNDS
    melodies: int = DEFAULT_MELODIES
    seed: int = 0
    reference_log_p: float = float("nan")
    threads: int = 1


def evaluate_model(
    model: Any, prior: Any, melodies: int, seed: int, reference_log_p: float
) -> dict[str, float]:
    """Sample ``melodies`` from ``model`` (primers and seed fixed by ``seed``) and measure them.

    Returns:
        The flat metrics of :meth:`~rltuner.evaluation.evaluate.ModelEvaluation.flat` (no muspy, no copying)
        plus ``log_p_gap``.
    """
    from rltuner.encoding import DEFAULT_MELODY_LENGTH, random_note_primers
    from rltuner.evaluation.evaluate import measure_samples, sample_policy

    primers = random_note_primers(melodies, np.random.default_rng(seed))
    samples, scores = sample_policy(
        model,
        melodies,
        DEFAULT_MELODY_LENGTH,
        primers,
        seed=seed,
        reference=None if model is prior else prior,
    )
    evaluation = measure_samples(
        "trial", samples, primers, None if model is prior else model, prior, scores=scores
    )
    flat = evaluation.flat()
    flat[LOG_P_GAP] = reference_log_p - flat["mean_log_p"]
    return flat


def reference_log_p(melodies: int, seed: int) -> float:
    """Mean log p(a|s) of the shipped Note RNN's own samples, the zero of every trial's log p gap."""
    from rltuner.models.checkpoint import load_default_prior

    prior = load_default_prior()
    prior.eval()
    return evaluate_model(prior, prior, melodies, seed, 0.0)["mean_log_p"]


def report_row(metrics: Mapping[str, float], env_step: int, wall_s: float) -> dict[str, float | int | str]:
    """What a trial reports at one round: the goal deficit, each goal's value and the main metrics."""
    s = score(metrics)
    row: dict[str, float | int | str] = {
        "goal_deficit": s.deficit, TABLE1_DEFICIT: table1_deficit(s), "goals_met": s.goals_met,
        "goals_scored": len(s.shortfalls),
        "missing_goals": ",".join(s.missing), "env_step": env_step, "wall_s": round(wall_s, 2),
        "mean_log_p": metrics["mean_log_p"], "mean_task_reward": metrics["mean_task_reward"],
    }  # fmt: skip
    row.update({f"goal.{k}": v for k, v in s.values.items()})
    return row


def run_trial(
    params: Mapping[str, Any], settings: TrialSettings, report: Callable[[dict[str, Any]], None]
) -> None:
    """Tune with ``params`` and ``report`` a :func:`report_row` after each evaluation round.

    Raises:
        ConfigError: invalid settings (caught before the sweep by :func:`~rltuner.sweep.space.draw_trials`).
    """
    import time

    import torch

    from rltuner.domains.music import music_domain
    from rltuner.rl.tuner import tune

    torch.set_num_threads(settings.threads)
    cfg, reward = trial_settings(params, settings.steps, settings.rounds, settings.seed)
    domain = music_domain(reward_config=reward)
    t0 = time.perf_counter()

    def on_evaluation(row: dict[str, Any], policy: Any) -> None:
        if row["env_step"] == 0:
            return  # the untuned prior: nothing to decide on
        metrics = evaluate_model(
            policy, domain.prior, settings.melodies, settings.seed, settings.reference_log_p
        )
        report(report_row(metrics, int(row["env_step"]), time.perf_counter() - t0))

    tune(cfg, domain, on_evaluation=on_evaluation)
