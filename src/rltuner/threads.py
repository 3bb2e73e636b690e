"""How many CPU threads torch uses: the one thread policy of every command and API entry point.

Why a policy at all: torch's default is one thread per core, and its OpenMP runtime (GNU libgomp) lets idle
threads spin while they wait for work. When another process holds a core, the two threads of a 2-core machine
spin against it and a 30-second tuning run took 14 minutes (issue 15). So:

* the default is :data:`DEFAULT_THREADS` = 1 thread, the fastest setting on a busy machine and at most ~1.4x
  slower than 2 threads on a quiet one, and that only with OpenMP's spinning wait (under the passive policy
  below 2 threads are slower than 1; our batches are small; see ``docs/tuning.md``, "Threads");
* ``0`` means torch's own default (``OMP_NUM_THREADS`` when set, else one per physical core);
* the command line sets ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep) before torch is first imported,
  unless the user set the variable: :func:`set_passive_wait_policy`, called by ``rltuner.cli.main``.

Evaluation splits into independent batches, and runs :func:`batch_workers` of them side by side in Python
threads (``rltuner evaluate``, ``rltuner run``): at the default 1 thread on 2 cores, two batches at a time,
each op on one thread. That is not the spinning above: a Python thread that waits for its turn sleeps (it
blocks on the GIL or a queue), and single-thread torch ops start no OpenMP team. With more torch threads per
op there are fewer workers (``--threads 2`` on 2 cores: one, the sequential path). The results do not depend
on the count.

The count is a setting of the machine, not of the result: it is recorded in each run's ``config.json`` /
``run.json`` but left out of the fingerprints that decide whether a finished stage is redone. The float
results of one thread count are bit-identical run to run; another count may change the last digits (the
kernels split their sums differently), as another CPU does.
"""

from __future__ import annotations

import functools
import logging
import os
import statistics
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from rltuner.errors import ConfigError

DEFAULT_THREADS = 1
WAIT_POLICY_VAR = "OMP_WAIT_POLICY"
THREADS_HELP = (
    f"CPU threads for torch [default: {DEFAULT_THREADS}, the fastest on a busy machine; 0 = torch's default, "
    "one per core]."
)

_torch_default: int | None = None  # torch's count before rltuner first changed it in this process
_warned_counts: set[int] = set()  # thread counts above the cores already warned about (once per process)
log = logging.getLogger(__name__)


def set_passive_wait_policy(environ: MutableMapping[str, str] | None = None) -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the variable is set already; True when this set it.

    OpenMP reads the variable once, when torch loads its runtime: call this before ``import torch``.

    Args:
        environ: the environment to change (default ``os.environ``, which also changes the C environment).
    """
    env = os.environ if environ is None else environ
    if WAIT_POLICY_VAR in env:
        return False
    env[WAIT_POLICY_VAR] = "PASSIVE"
    return True


MAX_THREADS = 1024
"""The most threads accepted: OpenMP crashes (a segmentation fault) when asked for ~100,000."""


def check_threads(threads: object) -> int:
    """``threads`` as a thread count (an int in 0..MAX_THREADS); anything else is a :class:`ConfigError`."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_THREADS:
        raise ConfigError(
            f"threads must be a whole number in 0..{MAX_THREADS} (0 = torch's default), got {threads!r}"
        )
    return threads


def check_workers(workers: object) -> int:
    """``workers`` as a count of batch workers (an int >= 1); anything else is a :class:`ConfigError`."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers must be a whole number >= 1, got {workers!r}")
    return workers


def available_cores() -> int:
    """The CPU cores this process may use (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


_sharing_processes = 1  # processes of one command that share the cores (a ``run --jobs`` worker's count)


def share_cores(processes: int) -> None:
    """Tell this process that ``processes`` processes (itself included) share the cores: what
    :func:`batch_workers` assumes when not told (called in each ``rltuner run --jobs`` worker)."""
    global _sharing_processes
    _sharing_processes = max(1, processes)


def batch_workers(threads: int, processes: int | None = None) -> int:
    """How many pieces of work to run side by side in Python threads (evaluation's batches and measures,
    tuning's overlapped network passes).

    One per core left to each op's ``threads`` torch threads (0: torch's default) when ``processes``
    processes share the cores (``rltuner run --jobs``; default: :func:`share_cores`'s count, 1 unless set):
    ``cores // (threads * processes)``, at least 1. So each core runs one single-thread op at a time, and no
    worker waits on another's OpenMP team.

    Raises:
        ConfigError: a thread count out of range.
    """
    per_op = check_threads(threads) or torch_default_threads()
    procs = _sharing_processes if processes is None else processes
    return max(1, available_cores() // (per_op * max(1, procs)))


@functools.cache
def overlap_pool() -> ThreadPoolExecutor:
    """The one worker thread of the process that runs a network pass beside the main thread's (``overlap``).

    A thread, not a process: torch releases the GIL inside its kernels, so the two forwards run on two cores
    at once. Each runs with torch's intra-op thread count (1 by default): nothing spins while it waits, so a
    busy machine only time-shares the two (``docs/tuning.md``, Threads).
    """
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="rltuner-overlap")


class OverlapChooser:
    """Whether each piece of work (a gradient step, a rollout) overlaps its two network passes (``overlap``).

    ``fixed``: always (True) or never (False); None (``overlap=auto`` where it may pay): timed. Every ``every``
    pieces, the next ``2 * trial`` alternate between overlapped and not, and the faster median decides until
    the next trial.

    Why timed, not decided once: on the 2-core virtual machines we use, the two vCPUs ran as two cores at some
    times and as one core's two hyperthreads at others (minutes apart on one host), and overlap helps in the
    first case (a fast-preset step 1.1-1.4x faster) and hurts in the second (1.3-1.7x slower; issue 15).
    Overlap changes no number (the same kernels on the same operands), so switching keeps a run's results;
    the trials cost at most a few percent when one mode is much slower. A fixed probe at start-up (two matmul
    loops side by side vs one after the other) was tried first: it gave 0.55-1.38x on one host within minutes
    and could not foresee the later state.
    """

    def __init__(self, fixed: bool | None, every: int = 1024, trial: int = 16) -> None:
        self.fixed, self.every, self.trial = fixed, every, trial
        self.choice = False
        self.steps = 0
        self.overlapped = 0  # pieces that ran overlapped (of ``steps``)
        self.times: dict[bool, list[float]] = {True: [], False: []}

    def use(self) -> bool:
        """Whether the next piece of work overlaps."""
        if self.fixed is not None:
            return self.fixed
        phase = self.steps % self.every
        return phase % 2 == 0 if phase < 2 * self.trial else self.choice

    def record(self, used: bool, seconds: float) -> None:
        """Count a piece of work that took ``seconds`` (``used``: whether it overlapped)."""
        phase = self.steps % self.every
        self.steps += 1
        self.overlapped += used
        if self.fixed is not None or phase >= 2 * self.trial:
            return
        self.times[used].append(seconds)
        if phase == 2 * self.trial - 1:
            on, off = (statistics.median(self.times[k]) for k in (True, False))
            self.choice = on < off
            self.times = {True: [], False: []}


def torch_default_threads() -> int:
    """torch's own thread count in this process, as it was before rltuner first changed it."""
    import torch

    global _torch_default
    if _torch_default is None:
        _torch_default = torch.get_num_threads()
    return _torch_default


def set_threads(threads: int) -> int:
    """Make torch use ``threads`` CPU threads (0: torch's default); returns the count now in effect.

    This is the API form of ``--threads``: call it once before tuning, sampling or evaluating from Python.

    Raises:
        ConfigError: a negative or non-integer count.
    """
    import torch

    default = torch_default_threads()  # remembered before the first change
    count = check_threads(threads) or default
    cores = available_cores()
    if count > cores and count not in _warned_counts:
        _warned_counts.add(count)
        log.warning(
            "warning: %d torch threads on the %d CPU core(s) this process may use: each op's threads wait on "
            "each other (on 2 cores 8 threads made a short tune 3x slower); --threads 1 is the default",
            count, cores,
        )  # fmt: skip
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count


@contextmanager
def using_threads(threads: int) -> Iterator[int]:
    """``with using_threads(n):`` torch uses ``n`` threads (0: torch's default) inside; restored after."""
    import torch

    before = torch.get_num_threads()
    count = set_threads(threads)
    try:
        yield count
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
