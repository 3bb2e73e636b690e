"""Run a sweep on Ray Tune: a local Ray instance (workers = cores) or a cluster by address (docs/sweep.md).

With the ``random`` searcher the configurations are drawn beforehand
(:func:`~rltuner.sweep.space.draw_trials`) and handed to Ray as a grid, one trial each. With ``nsga2`` or
``tpe``, Optuna (through Ray Tune's ``OptunaSearch``) picks each configuration from the results so far,
on several objectives at once (:data:`~rltuner.sweep.objective.SEARCH_OBJECTIVES`). Either way ASHA stops
trials whose scalar goal deficit trails at an evaluation round. The only module that imports Ray.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rltuner.errors import ConfigError, RLTunerError
from rltuner.fileio import write_json_atomic
from rltuner.sweep.objective import SEARCH_OBJECTIVES
from rltuner.sweep.space import SearchSpace, applies, draw_trials, optuna_distributions
from rltuner.sweep.trial import TrialSettings, reference_log_p, run_trial

RAY_VERSION = "2.60.0"
OPTUNA_VERSION = "5.0.0"
INSTALL_HINT = (
    f"pip install 'rltuner[sweep]' (Ray Tune {RAY_VERSION}; or pip install 'ray[tune]=={RAY_VERSION}')"
)
METRIC = "goal_deficit"
EXPERIMENT = "ray"  # the Ray Tune experiment folder inside the sweep's output folder
MARKER = "sweep.json"  # the searcher and seed a sweep started with, which --resume must match
#: The searchers of ``--searcher``: random search drawn by rltuner, or an Optuna sampler.
SEARCHERS = ("random", "nsga2", "tpe")
MODEL_BASED = ("nsga2", "tpe")
FIXED = "fixed"  # the config key of a model-based sweep's fixed settings (Optuna searches the rest)


def require_ray() -> Any:
    """The ``ray`` module, or one clear error saying how to install it."""
    try:
        import ray
        from ray import tune  # noqa: F401  (ray without its tune extra has no tune dependencies)
    except ImportError:
        raise RLTunerError(f"rltuner sweep needs Ray Tune, which is not installed: {INSTALL_HINT}") from None
    return ray


def require_optuna(searcher: str) -> Any:
    """The ``optuna`` module, or one clear error saying how to install it."""
    try:
        import optuna
    except ImportError:
        raise RLTunerError(
            f"rltuner sweep --searcher {searcher} needs Optuna, which is not installed: pip install "
            f"'rltuner[sweep]' (or pip install 'optuna=={OPTUNA_VERSION}')"
        ) from None
    return optuna


def nsga2_population(samples: int) -> int:
    """NSGA-II's generation size for a sweep of ``samples`` trials: a quarter of them (2 to 50), so that a
    sweep sees about four generations (Optuna's default of 50 would leave a 32-trial sweep random)."""
    return max(2, min(50, samples // 4))


def make_sampler(searcher: str, samples: int, seed: int) -> Any:
    """The Optuna multi-objective sampler of ``searcher``, seeded.

    Raises:
        ConfigError: not a model-based searcher.
    """
    optuna = require_optuna(searcher)
    if searcher == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=nsga2_population(samples), seed=seed)
    if searcher == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, samples // 4)))
    raise ConfigError(f"no Optuna sampler for searcher {searcher!r}; searchers: {', '.join(MODEL_BASED)}")


@dataclass(frozen=True)
class SweepOptions:
    """How to run a sweep (the trial settings are :class:`~rltuner.sweep.trial.TrialSettings`).

    Attributes:
        samples: how many configurations to run.
        workers: trials at a time in local mode (None: the machine's cores); a cluster is not sized by it.
            A model-based searcher asks for at most this many configurations at a time (None: the CPUs).
        address: a Ray cluster (``ray://host:10001`` or ``auto``); None starts a local Ray.
        early_stop: ASHA stops trials that trail at an evaluation round.
        resume: continue the sweep in the output folder (finished trials are kept).
        searcher: ``random`` (drawn beforehand), ``nsga2`` or ``tpe`` (Optuna, multi-objective).
        quiet: no progress from Ray Tune (its trial status table on the console); the results are the same.
    """

    samples: int = 32
    workers: int | None = None
    address: str | None = None
    early_stop: bool = True
    resume: bool = False
    searcher: str = "random"
    quiet: bool = False


def _params(config: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's configuration (setting -> value) from its Ray config, under either searcher."""
    if "trial" in config:  # random: the drawn configuration, as handed to Ray's grid
        return dict(config["trial"]["params"])
    # a model-based searcher: Optuna's values beside the fixed ones; settings the algorithm ignores dropped
    params = {**config.get(FIXED, {}), **{k: v for k, v in config.items() if k != FIXED}}
    algorithm = str(params.get("algorithm", "q"))
    return {k: v for k, v in params.items() if applies(k, algorithm)}


def _trainable(config: dict[str, Any], settings: dict[str, Any]) -> None:
    from ray import tune

    run_trial(_params(config), TrialSettings(**settings), tune.report)


def _check_resume(out: Path, searcher: str, seed: int) -> None:
    """Refuse to resume with another searcher or seed than the sweep started with (``sweep.json``; a sweep
    without one started before there was a choice, with random search)."""
    import json

    marker = out / MARKER
    try:
        started = (
            json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {"searcher": "random"}
        )
    except (OSError, ValueError) as exc:
        raise RLTunerError(f"cannot read {marker}: {exc}") from None
    was = (started.get("searcher", "random"), started.get("seed", seed))
    if was != (searcher, seed):
        raise ConfigError(
            f"{out} holds a sweep started with --searcher {was[0]} --seed {was[1]}: resume it with those"
        )


def run_sweep(
    space: SearchSpace, trial: TrialSettings, options: SweepOptions, out_dir: str | Path
) -> list[dict[str, Any]]:
    """Run ``options.samples`` trials on Ray Tune; return one row per trial (settings + last report).

    Raises:
        RLTunerError: Ray (or, for ``nsga2``/``tpe``, Optuna) is missing, Ray cannot start or reach the
            cluster, or ``resume`` finds no sweep or one of another searcher or seed.
        ConfigError: a drawn configuration is invalid, or an unknown searcher.
    """
    ray = require_ray()
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if options.searcher not in SEARCHERS:
        raise ConfigError(f"unknown searcher {options.searcher!r}; searchers: {', '.join(SEARCHERS)}")
    model_based = options.searcher in MODEL_BASED
    out = Path(out_dir).resolve()
    experiment = out / EXPERIMENT
    if options.samples < 1 or trial.rounds < 1 or trial.melodies < 1 or trial.steps < 1:
        raise ConfigError("samples, rounds, melodies and steps must each be at least 1")
    if options.resume and not tune.Tuner.can_restore(str(experiment)):
        raise RLTunerError(f"{out} holds no sweep to resume ({experiment} is missing)")
    if not options.resume and experiment.exists():
        raise RLTunerError(f"{out} already holds a sweep: resume it with --resume or choose another folder")
    if options.resume:
        _check_resume(out, options.searcher, trial.seed)
    if model_based:
        sampler = make_sampler(options.searcher, options.samples, trial.seed)  # Optuna: before Ray starts
        searched, fixed = optuna_distributions(space)
        # Optuna picks configurations as it goes: check the space on a random draw of the same size instead
        draw_trials(space, options.samples, trial.seed, trial.steps, trial.rounds)
        if not searched:
            raise ConfigError(f"{space.source}: every setting is fixed: nothing for --searcher to search")
    else:
        trials = draw_trials(space, options.samples, trial.seed, trial.steps, trial.rounds)
    if trial.reference_log_p != trial.reference_log_p:  # NaN: measure the Note RNN's own samples once
        trial = dataclasses.replace(trial, reference_log_p=reference_log_p(trial.melodies, trial.seed))

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    local = options.address is None
    workers = (options.workers or os.cpu_count() or 1) if local else None
    try:
        ray.init(
            address=options.address,
            num_cpus=workers,
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
    verbosity = 0 if options.quiet else 1  # Ray Tune's: 0 silent, 1 the trial status table
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, settings=dataclasses.asdict(trial)), {"cpu": trial.threads}
        )
        if options.resume:
            tuner = tune.Tuner.restore(
                str(experiment), trainable, resume_unfinished=True, restart_errored=True
            )
            _set_verbosity(tuner, verbosity)
        else:
            # ASHA decides on the scalar goal deficit; its metric is its own, apart from the searcher's
            scheduler: Any = (
                ASHAScheduler(
                    metric=METRIC, mode="min", max_t=trial.rounds, grace_period=1, reduction_factor=2
                )
                if options.early_stop and trial.rounds > 1
                else FIFOScheduler()
            )
            run_config = tune.RunConfig(name=EXPERIMENT, storage_path=str(out), verbose=verbosity)
            if model_based:
                # at most as many configurations asked for as can run: --workers, else the local or cluster CPUs
                concurrent = options.workers or workers or int(ray.cluster_resources().get("CPU", 1))
                tune_config = _search_config(searched, sampler, options, max(1, concurrent), scheduler)
                param_space: dict[str, Any] = {FIXED: fixed}
            else:
                tune_config = tune.TuneConfig(scheduler=scheduler, trial_dirname_creator=_trial_dirname)
                param_space = {
                    "trial": tune.grid_search(
                        [{"id": _trial_id(i), "params": p} for i, p in enumerate(trials)]
                    )
                }
            write_json_atomic(out / MARKER, {"searcher": options.searcher, "seed": trial.seed})
            tuner = tune.Tuner(
                trainable, param_space=param_space, tune_config=tune_config, run_config=run_config
            )
        # Ray prints the experiment's header box and results path to stdout at every verbosity: -q drops
        # the driver's stdout while it runs (the trials run in workers; errors are logged on stderr)
        with contextlib.ExitStack() as stack:
            if options.quiet:
                stack.enter_context(contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w"))))
            grid = tuner.fit()
    finally:
        ray.shutdown()
    return _rows(grid, trial.rounds, trial.steps)


def _set_verbosity(tuner: Any, verbose: int) -> None:
    """A restored Tuner keeps the verbosity its sweep started with; ``--resume`` sets this run's instead.

    Ray has no public way to do that: it is the local tuner's run config (none through Ray Client, which
    then keeps the saved one).
    """
    local: Any = getattr(tuner, "_local_tuner", None)
    run_config = local.get_run_config() if hasattr(local, "get_run_config") else None
    if run_config is not None:
        run_config.verbose = verbose


def _search_config(
    searched: Mapping[str, Any], sampler: Any, options: SweepOptions, concurrent: int, scheduler: Any
) -> Any:
    """Ray Tune's settings for a model-based searcher: Optuna on :data:`SEARCH_OBJECTIVES`, at most
    ``concurrent`` configurations asked for at a time."""
    import optuna
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial otherwise
    search = OptunaSearch(
        space=dict(searched),
        metric=[m for m, _ in SEARCH_OBJECTIVES],
        mode=[mode for _, mode in SEARCH_OBJECTIVES],
        sampler=sampler,
    )
    return tune.TuneConfig(
        search_alg=ConcurrencyLimiter(search, max_concurrent=concurrent),
        scheduler=scheduler,
        num_samples=options.samples,
        trial_dirname_creator=_trial_dirname,
    )


def _trial_label(trial: Any) -> str:
    """``t000``...: the drawn index (random), or the order Ray created the trial in (its experiment tag
    starts with a counter from 1)."""
    config = trial.config or {}
    if "trial" in config:
        return str(config["trial"]["id"])
    counter = str(getattr(trial, "experiment_tag", "")).split("_", 1)[0]
    return _trial_id(int(counter) - 1) if counter.isdigit() else str(trial.trial_id)


def _trial_dirname(trial: Any) -> str:
    return f"{_trial_label(trial)}-{trial.trial_id}"


def _trial_id(index: int) -> str:
    return f"t{index:03d}"


def _rows(grid: Any, rounds: int, steps: int = 0) -> list[dict[str, Any]]:
    """One row per trial, in trial order. Ray's per-trial status (finished, stopped by ASHA, not yet run
    because the sweep was interrupted) is read from the grid's experiment analysis where it has one."""
    trials = list(getattr(getattr(grid, "_experiment_analysis", None), "trials", None) or [])
    if trials:
        rows = [
            _row(
                _trial_label(t),
                t.config or {},
                t.last_result or {},
                rounds,
                steps,
                status=str(t.status),
                failed=t.status == "ERROR",
            )
            for t in trials
        ]
    else:  # another Ray version: the public result grid (without statuses of trials that never ran)
        results = [grid[i] for i in range(len(grid))]
        rows = [
            _row(
                str((r.config or {}).get("trial", {}).get("id", (r.metrics or {}).get("trial_id", "?"))),
                r.config or {},
                r.metrics or {},
                rounds,
                steps,
                failed=r.error is not None,
            )
            for r in results
        ]
    return sorted(rows, key=lambda r: str(r["trial"]))


def _row(
    label: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    rounds: int,
    steps: int = 0,
    status: str = "",
    failed: bool = False,
) -> dict[str, Any]:
    done = int(metrics.get("training_iteration", 0))
    if failed:
        state = "error"
    elif done >= rounds or (steps > 0 and int(metrics.get("env_step", 0)) >= steps):
        # a budget under one round of episodes is played in one round: fewer evaluations than --rounds, all played
        state = "finished"
    elif done > 0 and status in ("", "TERMINATED"):
        state = "stopped early"  # by ASHA, which decides only at a report
    else:  # PENDING, RUNNING, PAUSED, or never reported: the sweep stopped before this trial ended
        state = "unfinished"
    reported = {k: v for k, v in metrics.items() if k == METRIC or k.startswith("goal") or k in _KEPT}
    return {"trial": label, "status": state, "rounds": done, **_params(config), **reported}


_KEPT = ("missing_goals", "env_step", "wall_s", "mean_log_p", "mean_task_reward", "table1_deficit")
