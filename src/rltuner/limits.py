"""Documented bounds on everything rltuner reads, so that a hostile or broken input costs bounded memory and time.

Every reader checks its input against these numbers *before* it allocates anything sized by that input (a
melody grid, a model, a replay memory). Beyond a limit, a build counts the candidate as dropped (reason
``limit`` or ``too_long``) and a single input (``tune --primer x.mid``, ``load_prior``) raises one
:class:`~rltuner.errors.RLTunerError`. The numbers are far above any real melody or model of this project
(the folk corpus's longest tune is 2,816 steps; the shipped Note RNN has 59,838 parameters) and far below what
would exhaust a laptop. ``docs/data.md`` and ``docs/prior.md`` list them; change one for a run with
``dataclasses.replace(limits.DEFAULT, ...)`` and pass it where a function takes ``limits=``.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rltuner.config import field
from rltuner.errors import ConfigError, ReadTimeoutError


@dataclass(frozen=True)
class ReadLimits:
    """Bounds on MIDI/ABC/array/checkpoint input. The defaults are what every rltuner reader uses."""

    max_file_bytes: int = field(64 * 2**20, "largest MIDI or ABC file read (bytes)")
    max_ticks_per_quarter: int = field(32767, "largest MIDI time division (the format's own maximum)")
    max_tracks: int = field(1024, "most tracks in one MIDI file")
    max_notes: int = field(1_000_000, "most notes in one MIDI file or ABC tune")
    max_note_steps: int = field(4096, "longest single note, in sixteenth steps (256 bars of 4/4)")
    max_melody_steps: int = field(65_536, "longest melody (time span from first onset to last end), in steps")
    max_file_seconds: float = field(
        20.0, "wall-clock time one file may take in the importer (else 'timeout')"
    )
    max_array_elements: int = field(2**27, "largest melody array read from .npy/.npz/cache (elements)")
    max_model_parameters: int = field(2**28, "largest model a config may ask for (parameters, 1 GiB of fp32)")
    max_model_width: int = field(8192, "largest hidden_size of a prior")
    max_model_layers: int = field(64, "most layers of a prior")
    max_context: int = field(8192, "largest Transformer context")
    max_vocab_size: int = field(65_536, "largest vocabulary")

    def validate(self) -> None:
        for name, value in self.__dict__.items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"limit {name} must be a positive finite number, got {value!r}")


DEFAULT = ReadLimits()

# Upper bounds of run settings whose memory grows with the value (checked by the configs' validate()).
MAX_SEED = 2**63 - 1  # numpy and torch both take any seed in 0..2^63-1
MAX_ENVS = 65_536  # tune: episodes in lockstep
MAX_REPLAY = 2**25  # tune: replay transitions (about 33 M)
MAX_EVAL_EPISODES = 1_000_000  # tune: episodes sampled per evaluation
MAX_BATCH = 65_536  # pretrain / tune: sequences or transitions per gradient step
MAX_WINDOW = 8192  # pretrain: predictions per training window
MAX_BATCH_TOKENS = 2**22  # pretrain: batch_size x window (4 M tokens per step)
MAX_SAMPLE_STEPS = 2**27  # generate / evaluate: melodies x length sampled in one call (1 GiB of int64)
MAX_MELODY_LENGTH = 65_536  # generate / tune: steps per sampled melody
MAX_LEARNING_RATE = 10.0  # anything larger diverges at once
MIN_REWARD_SCALE = 1e-6  # c: r_MT / c must stay finite
MIN_TEMPERATURE = 1e-3  # below, logits / T overflow to NaN probabilities (greedy is the limit T -> 0)
MAX_TEMPERATURE = 1e3
MAX_AUDIO_SECONDS = 3600  # render / generate: one WAV file (an hour of audio: 318 MB of float64 samples)
MAX_REWARD_SCALE = 1e6


def check_seed(seed: int, name: str = "seed") -> None:
    """Raise :class:`ConfigError` unless ``seed`` is an integer in 0..2^63-1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ConfigError(f"{name} must be an integer in 0..{MAX_SEED}, got {seed!r}")


def check_finite(value: float, name: str) -> None:
    """Raise :class:`ConfigError` when ``value`` is NaN or infinite."""
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")


def check_at_most(value: int | float, bound: int | float, name: str, why: str = "") -> None:
    """Raise :class:`ConfigError` when ``value`` exceeds ``bound`` (the message names the bound)."""
    if value > bound:
        reason = f" ({why})" if why else ""
        raise ConfigError(f"{name} must be at most {bound:,}{reason}, got {value:,}")


def check_model_size(
    arch: str, vocab_size: int, hidden_size: int, num_layers: int, ff_mult: int, context: int
) -> None:
    """Raise :class:`ConfigError` when a prior of this shape is beyond the model limits (before building it)."""
    check_at_most(hidden_size, DEFAULT.max_model_width, "hidden_size", "max_model_width")
    check_at_most(num_layers, DEFAULT.max_model_layers, "num_layers", "max_model_layers")
    check_at_most(vocab_size, DEFAULT.max_vocab_size, "vocab_size", "max_vocab_size")
    check_at_most(context, DEFAULT.max_context, "context", "max_context")
    check_at_most(ff_mult, 64, "ff_mult")
    count = prior_parameter_count(arch, vocab_size, hidden_size, num_layers, ff_mult, context)
    check_at_most(count, DEFAULT.max_model_parameters, "the model's parameter count", "max_model_parameters")


def check_tune_config(cfg: Any) -> None:
    """Bounds of a :class:`~rltuner.rl.config.TuneConfig` whose memory or numerics grow with the value."""
    check_seed(cfg.seed)
    for name in ("learning_rate", "grad_clip", "gamma", "target_update_rate", "reward_scale"):
        check_finite(getattr(cfg, name), name)
    for name in ("epsilon_start", "epsilon_end"):
        check_finite(getattr(cfg, name), name)
    check_at_most(cfg.n_envs, MAX_ENVS, "n_envs", "episodes held in memory at once")
    check_at_most(cfg.replay_size, MAX_REPLAY, "replay_size")
    check_at_most(cfg.eval_episodes, MAX_EVAL_EPISODES, "eval_episodes")
    check_at_most(cfg.batch_size, 16 * MAX_BATCH, "batch_size")
    check_at_most(cfg.learning_rate, MAX_LEARNING_RATE, "learning_rate")
    if not MIN_REWARD_SCALE <= cfg.reward_scale <= MAX_REWARD_SCALE:
        raise ConfigError(
            f"reward_scale (c) must be in [{MIN_REWARD_SCALE:g}, {MAX_REWARD_SCALE:g}] (r_MT / c must stay "
            f"finite), got {cfg.reward_scale!r}"
        )


def check_pretrain_config(cfg: Any) -> None:
    """Bounds of a :class:`~rltuner.models.train.PretrainConfig` (memory per step, numerics, seed)."""
    check_seed(cfg.seed)
    for name in ("lr", "grad_clip", "l2"):
        check_finite(getattr(cfg, name), name)
    check_at_most(cfg.lr, MAX_LEARNING_RATE, "lr")
    check_at_most(cfg.batch_size, MAX_BATCH, "batch_size")
    check_at_most(cfg.window, MAX_WINDOW, "window")
    check_at_most(cfg.batch_size * cfg.window, MAX_BATCH_TOKENS, "batch_size x window", "tokens per step")


def check_sample_size(n: int, length: int) -> None:
    """Bounds of one sampling call: ``n`` melodies of ``length`` steps (the output alone is n x length int64)."""
    check_at_most(length, MAX_MELODY_LENGTH, "length", "steps per melody")
    check_at_most(n * length, MAX_SAMPLE_STEPS, "melodies x length", "1 GiB of int64 output")


def prior_parameter_count(
    arch: str, vocab_size: int, hidden_size: int, num_layers: int, ff_mult: int, context: int
) -> int:
    """Parameters a prior of this shape would have (an upper estimate, computed without building it)."""
    v, h, n = vocab_size, hidden_size, num_layers
    if arch in ("lstm", "gru"):
        gates = 4 if arch == "lstm" else 3
        recurrent = gates * (h * h + h * h + 2 * h) * n  # input and hidden weights and biases per layer
        return v * h + recurrent + h * v + v  # embedding/one-hot input, layers, output head
    block = 4 * h * h + 2 * ff_mult * h * h + 8 * h  # attention, feed-forward, norms and biases
    return v * h + context * h + n * block + h * v + v


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise :class:`ReadTimeoutError` in the block once ``seconds`` of wall-clock time have passed.

    Uses ``SIGALRM``, so it only acts in the main thread of a process on a POSIX system (the importer's
    worker processes, or a single-process build); elsewhere the block runs without a limit. Code inside a C
    extension is interrupted when it returns to Python; the other limits keep such calls short.
    """
    usable = (
        seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0  # do not clobber an outer timer
    )
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise ReadTimeoutError(f"took longer than {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
