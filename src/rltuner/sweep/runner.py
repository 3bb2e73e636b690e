"""Run a sweep on Ray Tune: a local Ray instance (workers = cores) or a cluster by address (docs/sweep.md).

The configurations are drawn beforehand (:func:`~rltuner.sweep.space.draw_trials`) and handed to Ray as a
grid, one trial each; ASHA stops trials whose goal deficit trails at an evaluation round. The only module
that imports Ray.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rltuner.errors import ConfigError, RLTunerError
from rltuner.sweep.space import SearchSpace, draw_trials
from rltuner.sweep.trial import TrialSettings, reference_log_p, run_trial

RAY_VERSION = "2.60.0"
INSTALL_HINT = (
    f"pip install 'rltuner[sweep]' (Ray Tune {RAY_VERSION}; or pip install 'ray[tune]=={RAY_VERSION}')"
)
METRIC = "goal_deficit"
EXPERIMENT = "ray"  # the Ray Tune experiment folder inside the sweep's output folder


def require_ray() -> Any:
    """The ``ray`` module, or one clear error saying how to install it."""
    try:
        import ray
        from ray import tune  # noqa: F401  (ray without its tune extra has no tune dependencies)
    except ImportError:
        raise RLTunerError(f"rltuner sweep needs Ray Tune, which is not installed: {INSTALL_HINT}") from None
    return ray


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep (the trial settings are :class:`~rltuner.sweep.trial.TrialSettings`).

    Attributes:
        samples: how many configurations to draw and run.
        workers: trials at a time in local mode (None: the machine's cores); ignored on a cluster.
        address: a Ray cluster (``ray://host:10001`` or ``auto``); None starts a local Ray.
        early_stop: ASHA stops trials that trail at an evaluation round.
        resume: continue the sweep in the output folder (finished trials are kept).
    """

    samples: int = 32
    workers: int | None = None
    address: str | None = None
    early_stop: bool = True
    resume: bool = False


def _trainable(config: dict[str, Any], settings: dict[str, Any]) -> None:
    from ray import tune

    run_trial(config["trial"]["params"], TrialSettings(**settings), tune.report)


def run_sweep(
    space: SearchSpace, trial: TrialSettings, options: SweepOptions, out_dir: str | Path
) -> list[dict[str, Any]]:
    """Run every drawn configuration as a Ray Tune trial; return one row per trial (settings + last report).

    Raises:
        RLTunerError: Ray is missing, cannot start or reach the cluster, or ``resume`` finds no sweep.
        ConfigError: a drawn configuration is invalid.
    """
    ray = require_ray()
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    out = Path(out_dir).resolve()
    experiment = out / EXPERIMENT
    if options.samples < 1 or trial.rounds < 1 or trial.melodies < 1 or trial.steps < 1:
        raise ConfigError("samples, rounds, melodies and steps must each be at least 1")
    if options.resume and not tune.Tuner.can_restore(str(experiment)):
        raise RLTunerError(f"{out} holds no sweep to resume ({experiment} is missing)")
    if not options.resume and experiment.exists():
        raise RLTunerError(f"{out} already holds a sweep: resume it with --resume or choose another folder")
    trials = draw_trials(space, options.samples, trial.seed, trial.steps, trial.rounds)
    if trial.reference_log_p != trial.reference_log_p:  # NaN: measure the Note RNN's own samples once
        trial = dataclasses.replace(trial, reference_log_p=reference_log_p(trial.melodies, trial.seed))

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local = options.address is None
    try:
        ray.init(
            address=options.address,
            num_cpus=(options.workers or os.cpu_count() or 1) if local else None,
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=False,
            configure_logging=False,
            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(trial.threads)}},
        )
    except Exception as exc:  # ConnectionError, a bad address, a cluster of another Ray version
        raise RLTunerError(
            f"cannot start Ray{'' if local else ' at ' + str(options.address)}: {exc}"
        ) from None
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, settings=dataclasses.asdict(trial)), {"cpu": trial.threads}
        )
        if options.resume:
            tuner = tune.Tuner.restore(
                str(experiment), trainable, resume_unfinished=True, restart_errored=True
            )
        else:
            scheduler: Any = (
                ASHAScheduler(max_t=trial.rounds, grace_period=1, reduction_factor=2)
                if options.early_stop and trial.rounds > 1
                else FIFOScheduler()
            )
            tuner = tune.Tuner(
                trainable,
                param_space={
                    "trial": tune.grid_search(
                        [{"id": _trial_id(i), "params": p} for i, p in enumerate(trials)]
                    )
                },
                tune_config=tune.TuneConfig(
                    metric=METRIC, mode="min", scheduler=scheduler, trial_dirname_creator=_trial_dirname
                ),
                run_config=tune.RunConfig(name=EXPERIMENT, storage_path=str(out), verbose=1),
            )
        grid = tuner.fit()
    finally:
        ray.shutdown()
    return _rows(grid, trial.rounds)


def _trial_dirname(trial: Any) -> str:
    return f"{trial.config['trial']['id']}-{trial.trial_id}"


def _trial_id(index: int) -> str:
    return f"t{index:03d}"


def _rows(grid: Any, rounds: int) -> list[dict[str, Any]]:
    """One row per trial, in trial order. Ray's per-trial status (finished, stopped by ASHA, not yet run
    because the sweep was interrupted) is read from the grid's experiment analysis where it has one."""
    trials = list(getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or [])
    if trials:
        rows = [
            _row(
                t.config or {}, t.last_result or {}, rounds, status=str(t.status), failed=t.status == "ERROR"
            )
            for t in trials
        ]
    else:  # another Ray version: the public result grid (without statuses of trials that never ran)
        results = [grid[i] for i in range(len(grid))]
        rows = [_row(r.config or {}, r.metrics or {}, rounds, failed=r.error is not None) for r in results]
    return sorted(rows, key=lambda r: str(r["trial"]))


def _row(
    config: Mapping[str, Any], metrics: Mapping[str, Any], rounds: int, status: str = "", failed: bool = False
) -> dict[str, Any]:
    spec: Mapping[str, Any] = config.get("trial", {})
    done = int(metrics.get("training_iteration", 0))
    if failed:
        state = "error"
    elif done >= rounds:
        state = "finished"
    elif done > 0 and status in ("", "TERMINATED"):
        state = "stopped early"  # by ASHA, which decides only at a report
    else:  # PENDING, RUNNING, PAUSED, or never reported: the sweep stopped before this trial ended
        state = "unfinished"
    reported = {k: v for k, v in metrics.items() if k == METRIC or k.startswith("goal") or k in _KEPT}
    return {
        "trial": spec.get("id", "?"),
        "status": state,
        "rounds": done,
        **spec.get("params", {}),
        **reported,
    }


_KEPT = ("missing_goals", "env_step", "wall_s", "mean_log_p", "mean_task_reward")
