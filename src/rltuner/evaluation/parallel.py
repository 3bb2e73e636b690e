"""``rltuner run --jobs N``: the independent stages of the main job in N worker processes.

The tuning runs (one per model and seed) do not depend on each other, and each model's evaluation depends only
on its own tuning run (the Note RNN's on none), so they run side by side in a pool of spawned processes, each
with the run's torch threads (default 1). Every task is the same computation as in the sequential job, with the
same seeds: a tuning run is seeded by its config, a model's evaluation by the run's seed and the model's place
among all models (:func:`rltuner.evaluation.evaluate.evaluate_models`, ``only``). So ``--jobs 2`` writes the
same results as ``--jobs 1``; only the time each stage took and the order they finished in differ.

The main process alone writes the record of finished stages (``stages.json``), once per finished tuning run and
once per seed when all of its models are evaluated (it merges their results and writes the evaluation files).
Ctrl-C is passed to every worker once: a tuning run stops at its next step boundary and saves its state for a
resume (:mod:`rltuner.interrupts`), an evaluation stops at once; the stages that finished stay recorded. A task
that fails stops the others the same way, and its error is reported with the stage's name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rltuner.errors import RLTunerError

log = logging.getLogger(__name__)


def default_jobs() -> int:
    """The default worker count: the CPU cores this process may use."""
    from rltuner.threads import available_cores

    return available_cores()


@dataclass(frozen=True)
class MusicSetup:
    """How a worker rebuilds what the main process holds: the prior, the reward of each model, the user rules.

    Attributes:
        prior: the Note RNN checkpoint (None: the shipped one).
        length: melody length in steps.
        device: torch device.
        rules: user reward rules (``MODULE:FUNCTION`` specs, registered again in each worker).
        rewards: model key -> its music-theory ``RewardConfig`` (None or absent: the paper's reward).
    """

    prior: str | None
    length: int
    device: str
    rules: tuple[str, ...] = ()
    rewards: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TuneTask:
    """One ``tune/<key>`` stage: its name, key, config, folder, whether it starts afresh, its inputs'
    fingerprint (an interrupted run started with others is not resumed), and the record of the reward terms
    added to the task's (its ``reward.json``; None: none)."""

    name: str
    key: str
    config: Any
    folder: Path
    fresh: bool
    inputs: str | None = None
    reward: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class EvalTask:
    """One model's part of a seed's ``evaluate`` stage.

    Attributes:
        seed: the tuning seed (its evaluation samples with it).
        model: the model measured (``note_rnn`` or a key of ``checkpoints``).
        checkpoints: every tuned model of the seed, key -> checkpoint path, in the evaluation's order.
    """

    seed: int
    model: str
    checkpoints: Mapping[str, Path]
    n: int
    muspy_samples: int
    copying: bool


@dataclass
class _Outcome:
    """What a task sends back: its seconds, whether Ctrl-C stopped it, and its result (an evaluation part)."""

    seconds: float
    interrupted: bool = False
    result: Any = None
    started: bool = True


_SETUP: MusicSetup | None = None
_STOP: Any = None  # the main process's stop event (a multiprocessing Event): set on Ctrl-C or a failed task
_PARENT: int | None = None  # the main process's pid: a worker whose main process died stops as on Ctrl-C
_EVAL_WORKERS = 1  # batch workers of an evaluation here: the cores left by the other worker processes


def _init_worker(setup: MusicSetup, threads: int, stop: Any, processes: int = 1) -> None:
    """Runs once in each worker: its own process group (a terminal's Ctrl-C reaches only the main process, which
    sets ``stop``), SIGINT ignored outside a task's own handling, the run's thread count, the user rules, and
    how many processes share the cores (``rltuner.threads.share_cores``), from which the evaluation's batch
    workers and tuning's ``overlap`` follow."""
    global _SETUP, _STOP, _PARENT, _EVAL_WORKERS
    _PARENT = os.getppid()
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # started with SIGINT blocked (_sigint_held): ignored from here on
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    from rltuner.threads import batch_workers, set_threads, share_cores

    set_threads(threads)
    share_cores(processes)
    _EVAL_WORKERS = batch_workers(threads)
    if setup.rules:
        from rltuner.rewards.user_rules import register_rule_specs

        register_rule_specs(setup.rules)
    _SETUP, _STOP = setup, stop


def _setup() -> MusicSetup:
    if _SETUP is None:  # pragma: no cover - only when called outside a worker
        raise RuntimeError("a worker task ran in a process that _init_worker did not set up")
    return _SETUP


def _run_task(task: TuneTask | EvalTask) -> _Outcome:
    if _stop_requested():
        return _Outcome(0.0, interrupted=True, started=False)
    done = threading.Event()
    threading.Thread(target=_pass_on_stop, args=(done,), daemon=True).start()
    try:
        outcome = _run_tune(task) if isinstance(task, TuneTask) else _run_evaluation(task)
    finally:
        done.set()
    if _PARENT is not None and os.getppid() != _PARENT:  # the main process is gone: no one to report to, and
        os._exit(1)  # the pool would keep this worker waiting forever (the tuning run saved its state above)
    return outcome


def _pass_on_stop(done: threading.Event) -> None:
    """While a task runs: once the main process says stop, one SIGINT to this process as soon as the task handles
    it (a tuning loop: it stops at its next step and saves, as after Ctrl-C in one process; an evaluation: at
    once). Until then SIGINT is ignored, so a stop that comes while a run is starting is not lost."""
    while not done.wait(0.2):
        if _stop_requested() and signal.getsignal(signal.SIGINT) not in (signal.SIG_IGN, None):
            os.kill(os.getpid(), signal.SIGINT)
            return


def _stop_requested() -> bool:
    """The main process set the stop event, or is gone (killed, e.g. by SIGTERM: the worker, in its own process
    group, would otherwise tune on in the run folder with no one to record it)."""
    return (_STOP is not None and _STOP.is_set()) or (_PARENT is not None and os.getppid() != _PARENT)


def _run_tune(task: TuneTask) -> _Outcome:
    from rltuner.domains.music import music_domain
    from rltuner.evaluation.pipeline import _tune

    setup = _setup()
    start = time.perf_counter()
    domain = music_domain(setup.prior, length=setup.length, reward_config=setup.rewards.get(task.key),
                          device=setup.device)  # fmt: skip
    try:  # the tuner acts on Ctrl-C at its next step boundary (it saves, then _tune raises)
        _tune(task.config, domain, task.folder, task.fresh, task.inputs, task.reward)
    except KeyboardInterrupt:
        return _Outcome(time.perf_counter() - start, interrupted=True)
    return _Outcome(time.perf_counter() - start)


def _run_evaluation(task: EvalTask) -> _Outcome:
    from rltuner.evaluation.evaluate import evaluate_models
    from rltuner.evaluation.pipeline import _load_corpus

    setup = _setup()
    start = time.perf_counter()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # nothing to save: stop at once
    try:
        result = evaluate_models(
            dict(task.checkpoints), n=task.n, length=setup.length, seed=task.seed,
            corpus=_load_corpus() if task.copying else None, prior=setup.prior, muspy_samples=task.muspy_samples,
            device=setup.device, show_progress=False, only=[task.model], workers=_EVAL_WORKERS,
        )  # fmt: skip
    except KeyboardInterrupt:
        return _Outcome(time.perf_counter() - start, interrupted=True)
    finally:
        signal.signal(signal.SIGINT, previous)
    return _Outcome(time.perf_counter() - start, result=result)


@dataclass
class SeedPlan:
    """One seed's work: the tuning stages to run and, when its evaluation must run, the models to measure."""

    seed: int
    tune: list[TuneTask]
    evaluate: list[EvalTask]
    eval_name: str
    eval_inputs: str
    eval_dir: Path


def run_plans(
    plans: Sequence[SeedPlan],
    setup: MusicSetup,
    jobs: int,
    threads: int,
    record: Callable[[str, float, str], None],
    tune_inputs: Mapping[str, str],
    write_evaluation: Callable[[Any, Path], None],
) -> set[int]:
    """Run every task of ``plans`` in ``jobs`` worker processes; returns the seeds whose stages ran.

    Args:
        record: (stage name, seconds, inputs) -> records a finished stage (``stages.json``).
        tune_inputs: tuning stage name -> its fingerprint.
        write_evaluation: (merged result, evaluation folder) -> writes a seed's evaluation files.

    Raises:
        KeyboardInterrupt: Ctrl-C (the finished stages are recorded, the tuning runs saved for a resume).
        RLTunerError: a stage failed (its name and error); the stages that finished are recorded.
    """
    import multiprocessing

    from rltuner.evaluation.evaluate import merge_evaluations

    tune_tasks = {t.name: t for p in plans for t in p.tune}
    seed_of = {t.name: p.seed for p in plans for t in p.tune}
    waiting: list[tuple[EvalTask, str | None]] = []  # an evaluation part and the tuning stage it waits for
    for p in plans:
        names = {t.key: t.name for t in p.tune}
        waiting += [(e, names.get(e.model)) for e in p.evaluate]
    queue: list[TuneTask | EvalTask] = list(tune_tasks.values())
    parts: dict[int, list[Any]] = {p.seed: [] for p in plans}
    seconds: dict[int, float] = {p.seed: 0.0 for p in plans}
    by_seed = {p.seed: p for p in plans}
    total = len(queue) + len(waiting)
    ran: set[int] = set()
    done_tunes: set[str] = set()
    running: dict[Future[_Outcome], TuneTask | EvalTask] = {}
    finished = 0
    failure: tuple[str, BaseException] | None = None
    stopping = False

    def label(task: TuneTask | EvalTask) -> str:
        if isinstance(task, TuneTask):
            return task.name
        return f"{by_seed[task.seed].eval_name} ({task.model})"

    def release() -> None:  # evaluation parts whose tuning run is done (or was done before) join the queue
        for item in list(waiting):
            if item[1] is None or item[1] in done_tunes:
                waiting.remove(item)
                queue.append(item[0])

    log.info("running %d tasks (tuning runs and model evaluations) in %d worker processes", total, jobs)
    release()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    pool = ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_init_worker,
        initargs=(setup, threads, stop, jobs),
    )  # fmt: skip
    started = False
    interrupts = [0]

    def on_sigint(signum: int, frame: Any) -> None:
        # The first Ctrl-C only asks: the loop below sees it between tasks, so no finished task's outcome is lost
        # half-recorded. A second one aborts at once, as in one process.
        interrupts[0] += 1
        stop.set()
        if interrupts[0] > 1:
            _interrupt_workers(pool)
            raise KeyboardInterrupt

    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    try:
        while queue or running or (waiting and not stopping):
            if interrupts[0] and not stopping:
                stopping = True
                log.info("stopping: each tuning run saves at its next step (Ctrl-C again to abort)")
                queue.clear()
            with _sigint_held(not started):  # the workers start (at the first submit) with SIGINT blocked
                while queue and len(running) < jobs and not stopping:
                    task = queue.pop(0)
                    running[pool.submit(_run_task, task)] = task
                    log.debug("started %s", label(task))
            started = True
            if not running:
                break
            ready, _ = wait(list(running), timeout=0.2, return_when=FIRST_COMPLETED)
            for future in ready:
                task = running.pop(future)
                try:
                    outcome = future.result()
                except BaseException as exc:  # reported with the stage's name below
                    if failure is None:
                        failure = (label(task), exc)
                        stopping = True
                        queue.clear()
                        stop.set()
                    continue
                if outcome.interrupted:
                    if not outcome.started:
                        log.info("%s: not started (Ctrl-C)", label(task))
                    else:
                        log.info("%s: stopped (Ctrl-C)%s", label(task),
                                 "; saved, it resumes on the next run" if isinstance(task, TuneTask) else "")  # fmt: skip
                    stopping = True
                    continue
                finished += 1
                log.info("%s: done in %.1f s [%d of %d]", label(task), outcome.seconds, finished, total)
                if isinstance(task, TuneTask):
                    record(task.name, outcome.seconds, tune_inputs[task.name])
                    done_tunes.add(task.name)
                    ran.add(seed_of[task.name])
                    release()
                    continue
                plan = by_seed[task.seed]
                parts[task.seed].append(outcome.result)
                seconds[task.seed] += outcome.seconds
                if len(parts[task.seed]) == len(plan.evaluate):
                    order = ["note_rnn", *task.checkpoints]
                    write_evaluation(merge_evaluations(parts[task.seed], order), plan.eval_dir)
                    record(plan.eval_name, seconds[task.seed], plan.eval_inputs)
                    ran.add(task.seed)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    pool.shutdown(wait=True)
    if failure is not None:
        name, error = failure
        if isinstance(error, RLTunerError):
            raise RLTunerError(f"stage {name} failed: {error}") from None
        log.error("stage %s failed: %s: %s", name, type(error).__name__, error)
        raise error
    if stopping or interrupts[0]:
        raise KeyboardInterrupt
    return ran


@contextlib.contextmanager
def _sigint_held(active: bool) -> Iterator[None]:
    """SIGINT held back inside (when ``active`` and in the main thread): processes started here inherit the
    blocked signal until their initializer ignores it, and a Ctrl-C that comes meanwhile is delivered when the
    block ends instead of being lost (starting a worker can block here for seconds while it imports torch)."""
    if not active or threading.current_thread() is not threading.main_thread():
        yield
        return
    if not hasattr(signal, "pthread_sigmask"):  # pragma: no cover - Windows: ignore instead
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _interrupt_workers(pool: ProcessPoolExecutor) -> None:
    """Send SIGINT once to each worker process (they run in their own process groups)."""
    for process in list(getattr(pool, "_processes", {}).values()):  # the executor keeps no public list
        try:
            if process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
                log.debug("sent SIGINT to worker %d", process.pid)
        except (ProcessLookupError, PermissionError):
            continue


def quiet_config(config: Any) -> Any:
    """A tuning config without progress bars (workers report one line per finished stage instead)."""
    return replace(config, progress=False)
