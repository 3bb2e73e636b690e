"""Compare models the way the paper does (Table 1, Figure 2's two curves) plus what it did not measure.

For each model we sample ``n`` melodies from its stochastic policy (temperature 1, each primed with one
uniformly random note-on class), then compute:

- Table 1 (``rewards.statistics.melody_statistics``) on the melodies as heard, the primer first
  (``encoding.with_primers``), printed beside the paper's numbers;
- mean ``log p(a|s)`` of the sampled steps under the Note RNN (the Reward RNN) and mean ``r_MT`` per step;
- mean per-step ``KL(pi || p)`` between the model's policy and the Note RNN, exact over the 38 classes on the
  states the model visited;
- diversity: the share of distinct 16-step windows among all 16-step windows of the samples (every offset),
  and the share of distinct whole melodies;
- mode collapse: distinct 4- and 8-step n-grams ("distinct-n") and the share of melodies that open with the most
  common 8-step opening (and which opening it is);
- copying: the share of melodies holding a run of 16 steps with at least 4 note-ons that occurs somewhere in the
  training corpus (a run of holds and rests is no copy);
- muspy's standard metrics on a subsample, as an outside cross-check of our own detectors.

Everything is batched: the model's own sampling logits and one forward pass of the Note RNN score all sampled steps.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from rltuner.encoding import (
    FIRST_NOTE_CLASS,
    MIN_PITCH,
    NO_EVENT,
    NUM_CLASSES,
    class_name,
    classes_to_notes,
    random_note_primers,
    validate_classes,
    with_primers,
)
from rltuner.errors import ConfigError, InvalidMelodyError
from rltuner.fileio import nan_to_null, write_json_atomic, write_text_atomic
from rltuner.threads import check_workers

if TYPE_CHECKING:
    import torch

    from rltuner.models.prior import Prior

DEFAULT_SAMPLES = 100_000
DEFAULT_MUSPY_SAMPLES = 1_000
COPY_WINDOW = 16  # one 4/4 bar of sixteenths
COPY_MIN_NOTES = (
    4  # a matched window counts as a copy only with this many note-ons (holds and rests are no tune)
)
NGRAM_SIZES = (4, 8)  # distinct-n of steps: one beat and half a bar
OPENING_STEPS = 8  # the opening whose most common value shows mode collapse (half a bar)
_HASH_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit multiplier of the rolling window hash
_SEPARATOR = NUM_CLASSES  # a value no melody holds: corpus windows that span two songs never match

# the order of models in tables: the paper's columns first
PAPER_COLUMNS = {"note_rnn": "Note RNN", "q": "Q", "psi": "Psi", "g": "G"}


# ---------------------------------------------------------------------------------------------------------
# diversity and copying (pure numpy)


def window_hashes(sequences: npt.NDArray[np.int64], window: int = COPY_WINDOW) -> npt.NDArray[np.uint64]:
    """64-bit hashes of every ``window``-step run of each sequence.

    Args:
        sequences: (N, T) int array.
        window: run length.

    Returns:
        (N, max(T - window + 1, 0)) uint64 array; equal runs give equal hashes. Distinct runs collide with
        probability about 2**-64 per pair (a polynomial hash modulo 2**64), negligible at our sizes.
    """
    arr = np.asarray(sequences)
    if arr.ndim != 2:
        raise InvalidMelodyError(f"expected a (N, T) batch of melodies, got shape {arr.shape}")
    n, t = arr.shape
    if t < window:
        return np.zeros((n, 0), dtype=np.uint64)
    # (+1 so that class 0 also moves the hash); uint64 arithmetic wraps modulo 2**64 on purpose
    vals = arr.astype(np.uint64) + np.uint64(1)
    h = np.zeros((n, t - window + 1), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(window):
            h = h * _HASH_MULT + vals[:, k : t - window + 1 + k]
    return h


def sorted_unique(values: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Sorted distinct values of a hash array (``np.unique`` by sorting: numpy 2's hash-table ``unique`` is
    ~100x slower on millions of uint64 hashes)."""
    s = np.sort(np.asarray(values).ravel())
    if s.size == 0:
        return s
    return s[np.concatenate([[True], s[1:] != s[:-1]])]


def sorted_contains(index: npt.NDArray[np.uint64], values: npt.NDArray[np.uint64]) -> npt.NDArray[np.bool_]:
    """Whether each of ``values`` (1-D uint64 hashes) is in ``index`` (sorted, distinct): exact.

    The same answer as a binary search (``np.searchsorted``), but the index is cut into about one bucket per
    entry by the hashes' top bits (a sorted index holds each bucket as one run), and each value is compared
    only with the few entries of its own bucket: 1.8M look-ups into 150,000 entries in ~0.05 s instead of
    ~0.22 s, most of the copying measure's time.
    """
    vals = np.asarray(values, dtype=np.uint64).ravel()
    found = np.zeros(vals.size, dtype=bool)
    if index.size == 0 or vals.size == 0:
        return found
    bits = int(index.size).bit_length()  # 2**bits buckets: at most one entry per bucket on average
    shift = np.uint64(64 - bits)
    counts = np.bincount((index >> shift).astype(np.int64), minlength=1 << bits)
    starts = np.concatenate([[0], np.cumsum(counts)])  # bucket b holds index[starts[b] : starts[b + 1]]
    bucket = (vals >> shift).astype(np.int64)
    todo = np.nonzero(counts[bucket])[0]  # values whose bucket has entries left to compare with
    pos = starts[bucket[todo]]
    end = starts[bucket[todo] + 1]
    while todo.size:
        found[todo] |= index[pos] == vals[todo]
        pos += 1
        more = pos < end
        todo, pos, end = todo[more], pos[more], end[more]
    return found


def corpus_window_index(
    corpus: Sequence[npt.ArrayLike] | npt.NDArray[np.int64], window: int = COPY_WINDOW
) -> npt.NDArray[np.uint64]:
    """Sorted unique hashes of every ``window``-step run in a corpus of (ragged) melodies.

    Args:
        corpus: a list of 1-D class arrays (any lengths) or an (N, T) array.
        window: run length.

    Returns:
        sorted 1-D uint64 array, for :func:`copying_share`.
    """
    pieces: list[npt.NDArray[np.int64]] = []
    sep = np.full(window - 1, _SEPARATOR, dtype=np.int64)
    for seq in corpus:
        pieces.append(np.asarray(seq, dtype=np.int64).ravel())
        pieces.append(sep)  # windows across two songs contain the separator and so never match a melody
    if not pieces:
        return np.zeros(0, dtype=np.uint64)
    flat = np.concatenate(pieces)
    return sorted_unique(window_hashes(flat[None, :], window))


def copying_flags(
    melodies: npt.NDArray[np.int64],
    index: npt.NDArray[np.uint64],
    window: int = COPY_WINDOW,
    min_notes: int = COPY_MIN_NOTES,
) -> npt.NDArray[np.bool_]:
    """(N,) bool: whether each melody holds a ``window``-step run found in the corpus ``index``.

    Only runs with at least ``min_notes`` note-ons count: a matched bar of holds and rests (which every corpus
    has) is not a copied tune.
    """
    arr = np.asarray(melodies)
    h = window_hashes(arr, window)
    if h.size == 0 or index.size == 0:
        return np.zeros(len(arr), dtype=bool)
    found = sorted_contains(index, h.ravel()).reshape(h.shape)
    # note-ons in each window: a cumulative sum over steps, differenced at the window's ends -> (N, T-w+1)
    ons: npt.NDArray[np.int64] = np.cumsum(arr >= FIRST_NOTE_CLASS, axis=1, dtype=np.int64)
    ons = np.concatenate([np.zeros((len(arr), 1), dtype=np.int64), ons], axis=1)
    notes = ons[:, window:] - ons[:, :-window]
    return np.asarray((found & (notes >= min_notes)).any(axis=1))


def copying_share(
    melodies: npt.NDArray[np.int64],
    index: npt.NDArray[np.uint64],
    window: int = COPY_WINDOW,
    min_notes: int = COPY_MIN_NOTES,
) -> float:
    """Share of melodies that reproduce a run of ``window`` steps from the corpus (see :func:`copying_flags`)."""
    flags = copying_flags(melodies, index, window, min_notes)
    return float(flags.mean()) if flags.size else math.nan


_TABLE_CODES = 1 << 22  # n-grams with at most this many possible values are counted in a table, not sorted


def distinct_ngrams(melodies: npt.NDArray[np.int64], n: int) -> float:
    """distinct-n: distinct ``n``-step runs / all ``n``-step runs (every offset of every melody); NaN if none.

    Short runs of classes (38**n <= 4M values: n <= 4) are counted exactly in a table of every possible run
    instead of sorting their hashes (2.9M 4-step runs of 100,000 melodies: ~0.03 s against ~0.15-0.3 s).
    The same count: :func:`window_hashes` gives every run of n <= 4 classes its own hash
    (``tests/test_evaluate.py`` checks all 2.1M 4-step runs).
    """
    arr = np.asarray(melodies)
    small = arr.ndim == 2 and arr.shape[1] >= n >= 1 and arr.size > 0 and NUM_CLASSES**n <= _TABLE_CODES
    if small and arr.min() >= 0 and arr.max() < NUM_CLASSES:
        codes = np.zeros((arr.shape[0], arr.shape[1] - n + 1), dtype=np.int64)  # each run as a base-38 number
        for k in range(n):
            codes = codes * NUM_CLASSES + arr[:, k : arr.shape[1] - n + 1 + k]
        seen = np.zeros(NUM_CLASSES**n, dtype=bool)
        seen[codes.ravel()] = True
        return float(np.count_nonzero(seen) / codes.size)
    h = window_hashes(arr, n)
    return float(sorted_unique(h).size / h.size) if h.size else math.nan


def top_opening(
    melodies: npt.NDArray[np.int64], steps: int = OPENING_STEPS
) -> tuple[float, npt.NDArray[np.int64]]:
    """The most common opening of ``steps`` steps and the share of melodies that begin with it.

    Returns:
        (share in 0..1, the opening as a (steps,) class array); (NaN, empty) for melodies shorter than
        ``steps``. Among equally common openings, the one whose hash sorts first.
    """
    arr = np.asarray(melodies)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] < steps:
        return math.nan, np.zeros(0, dtype=np.int64)
    h = window_hashes(arr[:, :steps], steps)[:, 0]  # (N,)
    _, inverse, counts = np.unique(h, return_inverse=True, return_counts=True)
    best = int(counts.argmax())
    first = int(np.argmax(inverse.ravel() == best))
    return float(counts[best] / len(arr)), arr[first, :steps].astype(np.int64)


def steps_to_names(classes: npt.ArrayLike) -> str:
    """Classes as note names for people: ``C4 - - - - - G4 E4`` (``-`` a held step, ``OFF`` a note-off)."""
    return " ".join("-" if int(c) == NO_EVENT else class_name(int(c)) for c in np.asarray(classes).ravel())


def diversity(melodies: npt.NDArray[np.int64], window: int = COPY_WINDOW) -> dict[str, float]:
    """Distinctness of a batch of samples, and how many share one opening (mode collapse).

    Returns:
        ``distinct_windows``: distinct ``window``-step runs / all runs (every offset of every melody);
        ``distinct_melodies``: distinct whole melodies / N; ``distinct_{n}grams`` for n in
        :data:`NGRAM_SIZES`: :func:`distinct_ngrams`; ``top_opening_{OPENING_STEPS}``: the share of melodies
        that begin with the most common ``OPENING_STEPS``-step opening (:func:`top_opening`). The distinct
        shares are 1.0 when nothing repeats.
    """
    arr = np.asarray(melodies)
    whole = window_hashes(arr, arr.shape[1]).ravel() if arr.shape[1] else np.zeros(0, np.uint64)
    out = {
        "distinct_windows": distinct_ngrams(arr, window),
        "distinct_melodies": float(sorted_unique(whole).size / whole.size) if whole.size else math.nan,
    }
    out.update({f"distinct_{n}grams": distinct_ngrams(arr, n) for n in NGRAM_SIZES})
    out[f"top_opening_{OPENING_STEPS}"] = top_opening(arr)[0]
    return out


# ---------------------------------------------------------------------------------------------------------
# log p, KL (torch)


def policy_inputs(melodies: npt.NDArray[np.int64], primers: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """The inputs a policy saw while producing ``melodies``: (N, T) = primer, then each melody shifted by one."""
    return np.concatenate([primers.reshape(-1, 1), melodies[:, :-1]], axis=1)


def _log_probs(model: Prior, tokens: torch.Tensor) -> torch.Tensor:
    logits, _ = model(tokens)  # (B, T, V)
    return logits.float().log_softmax(-1)


def score_policy(
    model: Prior | None,
    prior: Prior,
    melodies: npt.NDArray[np.int64],
    primers: npt.NDArray[np.int64],
    *,
    batch_size: int = 8192,
    device: str | None = None,
) -> dict[str, float]:
    """Mean log p(a|s) under ``prior`` and mean KL(pi || p) per step, over sampled melodies.

    Args:
        model: the policy that produced the melodies (its logits are the sampling policy's logits); ``None``
            means the prior itself (KL = 0 without a second pass).
        prior: the Note RNN (the Reward RNN).
        melodies: (N, T) sampled classes.
        primers: (N,) the primer each melody was sampled after.
        batch_size: melodies scored per forward pass.
        device: torch device (default CPU).

    Returns:
        ``{"mean_log_p": ..., "mean_kl": ...}``, both averaged over all N * T steps.
    """
    import torch

    from rltuner.models.sampling import kl_divergence

    melodies = validate_classes(melodies)
    inputs = policy_inputs(melodies, np.asarray(primers, dtype=np.int64))
    dev = torch.device(device or "cpu")
    total_log_p = 0.0
    total_kl = 0.0
    with torch.inference_mode():
        for start in range(0, len(melodies), batch_size):
            x = torch.from_numpy(inputs[start : start + batch_size]).to(dev)
            a = torch.from_numpy(melodies[start : start + batch_size]).to(dev)
            log_p = _log_probs(prior, x)  # (B, T, V)
            total_log_p += float(log_p.gather(-1, a.unsqueeze(-1)).sum(dtype=torch.float64))
            if model is not None and model is not prior:
                kl = kl_divergence(_log_probs(model, x), log_p)  # (B, T)
                total_kl += float(kl.sum(dtype=torch.float64))
    steps = melodies.size
    return {"mean_log_p": total_log_p / steps, "mean_kl": total_kl / steps}


def step_probabilities(
    model: Prior, melody: npt.ArrayLike, primer: int, device: str | None = None
) -> npt.NDArray[np.float64]:
    """The policy's distribution before each step of one melody (for Figure 4).

    Returns:
        (T, 38) float array: row t is pi(. | primer, melody[:t]).
    """
    import torch

    mel = validate_classes(melody).reshape(1, -1)
    inputs = policy_inputs(mel, np.array([primer], dtype=np.int64))
    with torch.inference_mode():
        x = torch.from_numpy(inputs).to(torch.device(device or "cpu"))
        probs = _log_probs(model, x).exp()[0]  # (T, V)
    return np.asarray(probs.double().cpu().numpy())


# ---------------------------------------------------------------------------------------------------------
# muspy cross-check

MUSPY_METRICS = (
    "pitch_class_entropy",
    "pitch_entropy",
    "scale_consistency",
    "pitch_in_scale_rate_c_major",
    "pitch_range",
    "n_pitches_used",
    "n_pitch_classes_used",
    "empty_beat_rate",
)


def melody_to_muspy(melody: npt.ArrayLike) -> Any:
    """One melody as a ``muspy.Music`` (resolution 4 steps per quarter, 120 bpm, one piano track)."""
    import muspy

    notes = [
        muspy.Note(time=n.start, pitch=n.pitch, duration=n.duration, velocity=80)
        for n in classes_to_notes(np.asarray(melody))
    ]
    return muspy.Music(
        resolution=4, tempos=[muspy.Tempo(time=0, qpm=120.0)], tracks=[muspy.Track(program=0, notes=notes)]
    )


def muspy_metrics(melodies: npt.NDArray[np.int64]) -> dict[str, float]:
    """muspy's metrics of each melody as :func:`melody_to_muspy` would give them, averaged over melodies (NaN
    results, e.g. of a silent melody, ignored).

    The same definitions as muspy's functions (``pitch_class_entropy``, ``pitch_entropy``,
    ``scale_consistency``, ``pitch_in_scale_rate`` in C major, ``pitch_range``, ``n_pitches_used``,
    ``n_pitch_classes_used``, ``empty_beat_rate``), computed on the whole (N, T) grid at once: building a
    ``muspy.Music`` per melody and calling each function took ~36 ms a melody, the whole evaluation's largest
    part. ``tests/test_evaluate.py`` holds every value to muspy's own on random melodies.
    """
    grid = np.asarray(melodies, dtype=np.int64)
    if grid.ndim != 2 or grid.shape[0] == 0:
        return dict.fromkeys(MUSPY_METRICS, math.nan)
    n = grid.shape[0]
    onset = grid >= FIRST_NOTE_CLASS
    rows = np.nonzero(onset)[0]
    offsets = grid[onset] - FIRST_NOTE_CLASS  # pitch - MIN_PITCH of every note: 0..35
    k = NUM_CLASSES - FIRST_NOTE_CLASS  # the histogram over the grid's 36 pitches (muspy's other 92 are 0)
    pitch_hist = np.bincount(rows * k + offsets, minlength=n * k).reshape(n, k).astype(np.float64)
    classes = (offsets + MIN_PITCH) % 12
    class_hist = np.bincount(rows * 12 + classes, minlength=n * 12).reshape(n, 12).astype(np.float64)
    notes = pitch_hist.sum(axis=1)  # (N,) note count
    has_notes = notes >= 1
    with np.errstate(divide="ignore", invalid="ignore"):
        scales = np.stack(
            [np.roll(_MUSPY_MAJOR, r) for r in range(12)] + [np.roll(_MUSPY_MINOR, r) for r in range(12)]
        )
        rates = (class_hist @ scales.T.astype(np.float64)) / notes[:, None]  # (N, 24) in-scale rates
        out = {
            "pitch_class_entropy": _entropy_rows(class_hist, notes),
            "pitch_entropy": _entropy_rows(pitch_hist, notes),
            "scale_consistency": np.where(has_notes, rates.max(axis=1), math.nan),
            "pitch_in_scale_rate_c_major": np.where(has_notes, rates[:, 0], math.nan),
        }
    used = pitch_hist > 0
    highest = np.where(used, np.arange(k), -1).max(axis=1)
    lowest = np.where(used, np.arange(k), k).min(axis=1)
    out["pitch_range"] = np.where(has_notes, highest - lowest, 0).astype(np.float64)
    out["n_pitches_used"] = used.sum(axis=1).astype(np.float64)
    out["n_pitch_classes_used"] = (class_hist > 0).sum(axis=1).astype(np.float64)
    out["empty_beat_rate"] = _empty_beat_rate(grid, onset)
    return {
        k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan
        for k, v in ((k, out[k]) for k in MUSPY_METRICS)
    }


_MUSPY_MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)  # muspy's C major, then minor
_MUSPY_MINOR = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)
_MUSPY_RESOLUTION = 4  # steps per beat of melody_to_muspy


def _entropy_rows(hist: npt.NDArray[np.float64], total: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """muspy's entropy (bits) of each row's normalised histogram; NaN for an empty row."""
    with np.errstate(divide="ignore", invalid="ignore"):
        prob = hist / total[:, None]
        ent = -np.nansum(prob * np.log2(prob), axis=1)
    return np.where(total >= 1, ent, math.nan)


def _empty_beat_rate(grid: npt.NDArray[np.int64], onset: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """muspy's empty-beat rate: beats ``start // 4 .. end // 4`` (both ends) of every note count as used."""
    n, length = grid.shape
    steps = np.arange(length)
    # The last non-hold event at or before each step decides whether a note sounds there.
    last = np.maximum.accumulate(np.where(grid != NO_EVENT, steps, -1), axis=1)
    sounding = (last >= 0) & onset[np.arange(n)[:, None], np.maximum(last, 0)]
    # A note ends at step e (exclusive) where it sounded at e - 1 and e is the end or a non-hold event.
    boundary = np.ones((n, length), dtype=bool)
    boundary[:, :-1] = grid[:, 1:] != NO_EVENT
    ends = sounding & boundary  # end time = this step + 1
    end_time = np.where(ends, steps + 1, 0).max(axis=1)  # (N,) muspy's length: the last note's end
    n_beats = end_time // _MUSPY_RESOLUTION + 1
    used = np.zeros((n, length // _MUSPY_RESOLUTION + 2), dtype=bool)
    r, t = np.nonzero(sounding)
    used[r, t // _MUSPY_RESOLUTION] = True
    r, t = np.nonzero(ends)
    used[r, (t + 1) // _MUSPY_RESOLUTION] = True
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = 1 - used.sum(axis=1) / n_beats
    return np.where(end_time >= 1, rate, math.nan)


# ---------------------------------------------------------------------------------------------------------
# the music-theory side (other people's modules, adapted here)


def _table1(
    melodies: npt.NDArray[np.int64], primer_steps: int = 0
) -> tuple[dict[str, float], dict[str, float]]:
    """Table 1 rows (fractions) and the raw counts and per-melody interval counts behind them.

    ``melodies`` are as heard (primer first, ``primer_steps`` of it; see ``melody_statistics``).
    """
    from rltuner.rewards.statistics import TABLE1_ROWS, melody_statistics

    stats = melody_statistics(melodies, primer_steps=primer_steps)
    rows = {row: float(stats[row]) for row in TABLE1_ROWS}
    counts: dict[str, float] = {
        "n_melodies": float(stats["n_melodies"]),
        "n_steps": float(stats["n_steps"]),
        "primer_steps": float(stats["primer_steps"]),
    }
    counts.update({k: float(v) for k, v in stats["counts"].items()})
    counts.update({f"intervals_per_melody.{k}": float(v) for k, v in stats["intervals_per_melody"].items()})
    return rows, counts


def mean_music_theory_reward(melodies: npt.NDArray[np.int64]) -> float:
    """Mean r_MT per step (the sum of the nine rules, default weights) over all N * T steps."""
    from rltuner.rewards.music_theory import music_theory_rewards

    rewards = np.asarray(music_theory_rewards(melodies), dtype=np.float64)  # (N, T)
    return float(rewards.mean())


# ---------------------------------------------------------------------------------------------------------
# results


@dataclass
class ModelEvaluation:
    """Everything measured for one model. Fractions are in 0..1 (tables print them as percentages)."""

    name: str
    table1: dict[str, float]
    counts: dict[str, float]
    mean_log_p: float
    mean_task_reward: float
    mean_kl: float
    diversity: dict[str, float]
    copying: float
    muspy: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
    top_opening: str = ""  # the most common OPENING_STEPS-step opening, as note names (steps_to_names)

    def flat(self) -> dict[str, float]:
        """All figures in one flat ``metric -> value`` dict (the CSV's rows)."""
        out: dict[str, float] = {}
        out.update({f"table1.{k}": v for k, v in self.table1.items()})
        out["mean_log_p"] = self.mean_log_p
        out["mean_task_reward"] = self.mean_task_reward
        out["mean_kl"] = self.mean_kl
        out.update({f"diversity.{k}": v for k, v in self.diversity.items()})
        out["copying.share_16_step_run"] = self.copying
        out.update({f"muspy.{k}": v for k, v in self.muspy.items()})
        out.update({f"counts.{k}": v for k, v in self.counts.items()})
        out.update({f"seconds.{k}": v for k, v in self.seconds.items()})
        return out


@dataclass
class EvaluationResult:
    """The evaluation of several models on the same settings.

    Attributes:
        models: name -> :class:`ModelEvaluation`, in evaluation order (the Note RNN first).
        settings: n, length, seed, muspy subsample, corpus size.
        samples: name -> (n, length) sampled melodies (kept in memory, not written to JSON).
        primers: name -> (n,) primers of those melodies.
    """

    models: dict[str, ModelEvaluation]
    settings: dict[str, Any]
    samples: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict, repr=False)
    primers: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no samples)."""
        return {
            "settings": self.settings,
            "models": {k: dataclasses.asdict(v) for k, v in self.models.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationResult:
        """Rebuild a result written by :meth:`write` (without samples)."""
        models = {k: ModelEvaluation(**v) for k, v in data["models"].items()}
        return cls(models=models, settings=dict(data.get("settings", {})))

    def to_csv(self) -> str:
        """One row per metric, one column per model."""
        names = list(self.models)
        flats = {n: self.models[n].flat() for n in names}
        metrics: list[str] = []
        for n in names:
            metrics.extend(m for m in flats[n] if m not in metrics)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["metric", *names])
        for m in metrics:
            writer.writerow([m, *(_csv_value(flats[n].get(m, math.nan)) for n in names)])
        return buf.getvalue()

    def table_rows(self) -> list[tuple[str, list[str]]]:
        """Rows of the summary table: (label, one formatted cell per model, then the paper's columns)."""
        paper = _paper_table()
        names = list(self.models)
        keys: list[str] = []
        for m in self.models.values():
            keys.extend(k for k in m.table1 if k not in keys)
        rows: list[tuple[str, list[str]]] = []
        for key in keys:
            label, paper_cells = paper.get(key, (key, {}))
            cells = [_pct(self.models[n].table1.get(key, math.nan), key) for n in names]
            cells += [paper_cells.get(col, "") for col in PAPER_COLUMNS]
            rows.append((label, cells))
        blank = [""] * len(PAPER_COLUMNS)
        for label, getter, fmt in (
            ("Mean log p(a|s) under Note RNN", lambda m: m.mean_log_p, "{:.3f}"),
            ("Mean r_MT per step", lambda m: m.mean_task_reward, "{:.3f}"),
            ("Mean KL(pi || p) per step", lambda m: m.mean_kl, "{:.3f}"),
            ("Distinct 16-step runs", lambda m: m.diversity.get("distinct_windows", math.nan), "{:.1%}"),
            ("Distinct melodies", lambda m: m.diversity.get("distinct_melodies", math.nan), "{:.1%}"),
            *((f"Distinct {k}-grams of steps", _getter(f"distinct_{k}grams"), "{:.1%}") for k in NGRAM_SIZES),
            (
                f"Melodies opening with the most common {OPENING_STEPS} steps",
                _getter(f"top_opening_{OPENING_STEPS}"),
                "{:.1%}",
            ),
            (
                f"Melodies copying a {COPY_WINDOW}-step corpus run (>= {COPY_MIN_NOTES} notes)",
                lambda m: m.copying,
                "{:.2%}",
            ),
        ):
            rows.append((label, [_fmt(getter(self.models[n]), fmt) for n in names] + blank))
            if label.startswith("Melodies opening"):
                rows.append(
                    (
                        f"  that {OPENING_STEPS}-step opening",
                        [self.models[n].top_opening for n in names] + blank,
                    )
                )
        for key in MUSPY_METRICS:
            rows.append(
                (
                    f"muspy {key}",
                    [_fmt(self.models[n].muspy.get(key, math.nan), "{:.3f}") for n in names] + blank,
                )
            )
        return rows

    def header(self) -> list[str]:
        return ["metric", *self.models, *(f"paper {c}" for c in PAPER_COLUMNS.values())]

    def format_table(self) -> str:
        """A plain-text table for the terminal: our models, then the paper's Table 1 columns."""
        header = self.header()
        rows = [[label, *cells] for label, cells in self.table_rows()]
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = [_line(header, widths), "  ".join("-" * w for w in widths)]
        lines.extend(_line(r, widths) for r in rows)
        s = self.settings
        lines.append(
            f"({s.get('n')} melodies per model of a primer note + {s.get('length')} steps, seed {s.get('seed')}; "
            f"Table 1, copying and muspy count the primer; muspy on "
            f"{s.get('muspy_samples')} of them; paper: 100,000 melodies, their Note RNN and data)"
        )
        goal_header = ["goal (issue #13)", *self.models]
        goal_rows = [[label, *cells] for label, cells in self.goal_rows()]
        widths = [max(len(str(r[i])) for r in [goal_header, *goal_rows]) for i in range(len(goal_header))]
        lines += ["", _line(goal_header, widths), "  ".join("-" * w for w in widths)]
        lines.extend(_line(r, widths) for r in goal_rows)
        return "\n".join(lines)

    def goal_rows(self) -> list[tuple[str, list[str]]]:
        """The goals of issue #13 (``evaluation.goals.GOALS``): each row's value and pass/FAIL per model."""
        from rltuner.evaluation.goals import goal_rows

        return goal_rows({name: m.flat() for name, m in self.models.items()})

    def write(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``evaluation.json``, ``evaluation.csv`` and ``evaluation.txt`` atomically into ``out_dir``."""
        out = Path(out_dir)
        paths = {
            "json": write_json_atomic(out / "evaluation.json", nan_to_null(self.to_dict())),
            "csv": write_text_atomic(out / "evaluation.csv", self.to_csv()),
            "txt": write_text_atomic(out / "evaluation.txt", self.format_table() + "\n"),
        }
        return paths


def _getter(key: str) -> Callable[[ModelEvaluation], float]:
    return lambda m: m.diversity.get(key, math.nan)


def _paper_table() -> dict[str, tuple[str, dict[str, str]]]:
    """Table 1 row key -> (the paper's row name, our model key -> the paper's value, formatted)."""
    from rltuner.rewards.statistics import PAPER_TABLE1, ROW_LABELS

    out: dict[str, tuple[str, dict[str, str]]] = {}
    for key, label in ROW_LABELS.items():
        cells = {ours: _pct(PAPER_TABLE1[theirs][key], key) for ours, theirs in PAPER_COLUMNS.items()}
        out[key] = (label, cells)
    return out


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    # first column (labels) left-aligned, numbers right-aligned
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def _pct(value: float, key: str) -> str:
    # the paper's style: autocorrelations as signed coefficients, the rest as percentages (3 significant digits)
    if "autocorrelation" in key:
        return _fmt(value, "{:+.2f}")
    if math.isnan(value):
        return "n/a"
    pct = 100 * value
    if 0 < pct < 0.001:
        return "<0.001%"  # never scientific notation in a table people read
    return f"{pct:.3g}%"


def _fmt(value: float, fmt: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else fmt.format(value)


def _csv_value(v: float) -> str:
    return "" if isinstance(v, float) and math.isnan(v) else repr(float(v))


# ---------------------------------------------------------------------------------------------------------
# the driver


def sample_policy(
    model: Prior,
    n: int,
    length: int,
    primers: npt.NDArray[np.int64],
    *,
    seed: int,
    reference: Prior | None = None,
    chunk: int = 25_000,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> tuple[npt.NDArray[np.int64], dict[str, float] | None]:
    """(n, length) melodies from the model's stochastic policy at temperature 1, after the given primers.

    With a ``reference`` (the Note RNN), it also measures the mean log p(a|s) of the sampled steps under it
    and the mean KL(pi || p) per step (``{"mean_log_p", "mean_kl"}``; else None): one forward pass of the
    reference over each sampled batch (:func:`rltuner.models.sampling.sample_scored`).
    The model samples on its own device; ``chunk`` melodies at a time (one progress tick each), ``workers``
    batches side by side (the same melodies and scores, bit for bit, as one).
    """
    from rltuner.models.sampling import sample_scored

    out = np.empty((n, length), dtype=np.int64)
    total_log_p = total_kl = 0.0
    for i, start in enumerate(range(0, n, chunk)):
        stop = min(start + chunk, n)
        # (n, 1): one primer token per melody (a 1-D primer would be one sequence shared by all)
        block = primers[start:stop].reshape(-1, 1)
        drawn = sample_scored(
            model, stop - start, length, reference=reference, primer=block, seed=seed + i, workers=workers
        )
        out[start:stop] = drawn.melodies
        if drawn.ref_log_p is not None and drawn.kl is not None:
            total_log_p += float(drawn.ref_log_p.sum())
            total_kl += float(drawn.kl.sum())
        if progress is not None:
            progress(stop - start)
    if reference is None:
        return out, None
    return out, {"mean_log_p": total_log_p / out.size, "mean_kl": total_kl / out.size}


def measure_samples(
    name: str,
    melodies: npt.NDArray[np.int64],
    primers: npt.NDArray[np.int64],
    model: Prior | None,
    prior: Prior,
    *,
    index: npt.NDArray[np.uint64] | None = None,
    muspy_index: npt.NDArray[np.int64] | None = None,
    device: str | None = None,
    scores: dict[str, float] | None = None,
    workers: int = 1,
) -> ModelEvaluation:
    """Every measure of one model's samples (the part of :func:`evaluate_models` after sampling).

    Args:
        name: the model's name.
        melodies: (N, T) its samples (the generated steps); primers: (N,) or (N, k) the primer of each.
        model: the model (None: the samples are the prior's own, KL = 0).
        prior: the Note RNN that log p and KL refer to.
        index: :func:`corpus_window_index` of the training corpus (None: copying is NaN).
        muspy_index: which melodies muspy scores (None or empty: none).
        device: torch device of the scoring.
        scores: ``{"mean_log_p", "mean_kl"}`` already measured while sampling (:func:`sample_policy`);
            None: score the melodies here with :func:`score_policy`.
        workers: the measures computed side by side in Python threads (numpy releases the GIL in its array
            loops); each measure is the same computation either way, so the results are the same.

    Returns:
        a :class:`ModelEvaluation` whose ``seconds`` hold each part's time (with several workers the parts
        overlap: their sum exceeds the wall time).
    """
    check_workers(workers)
    sec: dict[str, float] = {}
    t0 = time.perf_counter()
    if scores is None:
        scores = score_policy(model, prior, melodies, primers, device=device)
    sec["log_p_kl"] = time.perf_counter() - t0
    # What is heard (Table 1, copying, muspy) counts the primer; what the model chose (r_MT, log p, KL,
    # diversity, openings) is the generated steps: a random primer would make every model look varied.
    heard = with_primers(primers, melodies)
    primer_steps = heard.shape[1] - np.asarray(melodies).shape[1]
    use_muspy = muspy_index is not None and len(muspy_index) > 0
    # (part of `seconds`, the measure), the slowest first so that two workers finish together
    parts: dict[str, tuple[str, Callable[[], Any]]] = {
        "r_mt": ("music_theory", lambda: mean_music_theory_reward(melodies)),
        "table1": ("music_theory", lambda: _table1(heard, primer_steps)),
        "diversity": ("diversity_copying", lambda: diversity(melodies)),
        "opening": ("diversity_copying", lambda: steps_to_names(top_opening(melodies)[1])),
        "copying": (
            "diversity_copying",
            lambda: copying_share(heard, index) if index is not None else math.nan,
        ),
        "muspy": ("muspy", lambda: muspy_metrics(heard[muspy_index]) if use_muspy else {}),
    }
    done, took = _run_parts({k: fn for k, (_, fn) in parts.items()}, workers)
    for key, (part, _) in parts.items():
        sec[part] = sec.get(part, 0.0) + took[key]
    table1, counts = done["table1"]
    return ModelEvaluation(
        name=name,
        table1=table1,
        counts=counts,
        mean_log_p=scores["mean_log_p"],
        mean_task_reward=done["r_mt"],
        mean_kl=scores["mean_kl"],
        diversity=done["diversity"],
        copying=done["copying"],
        muspy=done["muspy"],
        seconds=sec,
        top_opening=done["opening"],
    )


def _run_parts(
    parts: Mapping[str, Callable[[], Any]], workers: int
) -> tuple[dict[str, Any], dict[str, float]]:
    """Each part's result and seconds: one after another in this thread, or ``workers`` at a time in threads
    (taken in the given order). An error in a part is raised here, after the running parts end."""

    def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
        t0 = time.perf_counter()
        return fn(), time.perf_counter() - t0

    if workers <= 1:
        runs = {key: timed(fn) for key, fn in parts.items()}
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(workers, thread_name_prefix="rltuner-measure") as pool:
            futures = {key: pool.submit(timed, fn) for key, fn in parts.items()}
            try:
                runs = {key: future.result() for key, future in futures.items()}
            except BaseException:
                for future in futures.values():
                    future.cancel()
                raise
    return {k: r[0] for k, r in runs.items()}, {k: r[1] for k, r in runs.items()}


def _load(model: Prior | str | Path) -> Prior:
    if isinstance(model, (str, Path)):
        from rltuner.loading import load_model

        return load_model(model)
    return model


def evaluate_models(
    models: Mapping[str, Prior | str | Path],
    n: int = DEFAULT_SAMPLES,
    length: int = 32,
    seed: int = 0,
    corpus: Sequence[npt.ArrayLike] | npt.NDArray[np.int64] | None = None,
    *,
    prior: Prior | str | Path | None = None,
    muspy_samples: int = DEFAULT_MUSPY_SAMPLES,
    device: str | None = None,
    show_progress: bool = True,
    only: Collection[str] | None = None,
    workers: int = 1,
) -> EvaluationResult:
    """Sample from each model and measure it against the Note RNN.

    Args:
        models: name -> a Prior or a checkpoint path (a prior or a tuned model). The Note RNN is evaluated
            too: under the name ``note_rnn`` unless ``models`` already names it.
        n: melodies sampled per model (the paper: 100,000).
        length: steps per melody (32).
        seed: seeds the primers and the sampling; every model gets the same primers.
        corpus: training melodies for the copying measure (list of 1-D class arrays); ``None``: not measured.
        prior: the Note RNN (the Reward RNN) that ``log p`` and KL refer to; default the shipped one.
        muspy_samples: how many of the n melodies muspy scores (it is a Python loop: ~1 ms per melody).
        device: torch device for sampling and scoring (default CPU).
        show_progress: a tqdm bar on stderr.
        only: measure only these of the models (``note_rnn`` included); each is sampled exactly as in the
            evaluation of all of them (its seed depends on its place among all), so that the results of
            several calls with ``only`` merged (:func:`merge_evaluations`) equal one call without it.
        workers: batches sampled and scored, and measures computed, side by side in Python threads (on the
            CPU; ``rltuner.threads.batch_workers`` gives one per core, what ``rltuner evaluate`` uses). The
            results do not depend on it, bit for bit.

    Returns:
        an :class:`EvaluationResult` (with the samples kept in memory).

    Raises:
        ConfigError: n, length or muspy_samples out of range, or ``only`` names an unknown model.
        CheckpointError: a checkpoint path cannot be loaded.
    """
    from tqdm import tqdm

    if n < 1 or length < 1 or muspy_samples < 0:
        raise ConfigError(
            f"n ({n}) and length ({length}) must be >= 1 and muspy_samples ({muspy_samples}) >= 0"
        )
    check_workers(workers)
    if prior is None:
        from rltuner.models.checkpoint import load_default_prior

        prior_model = load_default_prior()
    else:
        prior_model = _load(prior)
    names = [*([] if "note_rnn" in models else ["note_rnn"]), *models]  # each model's place sets its seed
    if only is not None and set(only) - set(names):
        raise ConfigError(
            f"only: no model {', '.join(sorted(set(only) - set(names)))} among {', '.join(names)}"
        )
    loaded: dict[str, Prior] = {}  # only the models measured here are loaded (the others may not exist yet)
    for name in names:
        if only is None or name in only:
            loaded[name] = prior_model if name not in models else _load(models[name])
    for m in loaded.values():
        m.eval()
        if device is not None:
            m.to(device)

    rng = np.random.default_rng(seed)
    primers = random_note_primers(n, rng)
    index = corpus_window_index(corpus) if corpus is not None else None
    n_mus = min(muspy_samples, n)
    mus_idx = np.sort(rng.choice(n, size=n_mus, replace=False)).astype(np.int64)

    results: dict[str, ModelEvaluation] = {}
    samples: dict[str, npt.NDArray[np.int64]] = {}
    bar = tqdm(
        total=n * len(loaded), unit="mel", desc="evaluate", disable=not show_progress, dynamic_ncols=True
    )
    try:
        for i, name in enumerate(names):
            if name not in loaded:
                continue
            model = loaded[name]
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            mel, scores = sample_policy(
                model, n, length, primers, seed=seed * 1000 + i, reference=prior_model, progress=bar.update,
                workers=workers,
            )  # fmt: skip
            results[name] = measure_samples(
                name,
                mel,
                primers,
                None if model is prior_model else model,
                prior_model,
                index=index,
                muspy_index=mus_idx,
                device=device,
                scores=scores,
                workers=workers,
            )
            results[name].seconds = {"sample": time.perf_counter() - t0, **results[name].seconds}
            samples[name] = mel
    finally:
        bar.close()
    settings = {
        "n": n,
        "length": length,
        "seed": seed,
        "muspy_samples": n_mus,
        "corpus_melodies": None if corpus is None else len(corpus),
        "copy_window": COPY_WINDOW,
        "copy_min_notes": COPY_MIN_NOTES,
        "policy": "stochastic, temperature 1, primed with one uniformly random note-on class",
        "melody": "primer + generated steps (Table 1, copying, muspy, MIDI/WAV); the rest: generated steps",
    }
    return EvaluationResult(
        models=results, settings=settings, samples=samples, primers={k: primers for k in samples}
    )


def merge_evaluations(parts: Sequence[EvaluationResult], order: Sequence[str]) -> EvaluationResult:
    """One :class:`EvaluationResult` of several made on the same settings with ``evaluate_models(only=...)``.

    Args:
        parts: the results, each of some of the models.
        order: every model's name, in the order of the evaluation of all of them (the Note RNN first).

    Raises:
        ConfigError: the parts were made on different settings, or a model of ``order`` is in none of them.
    """
    if not parts or any(p.settings != parts[0].settings for p in parts):
        raise ConfigError("merge_evaluations: the parts must share their settings (n, length, seed, ...)")
    models = {k: v for p in parts for k, v in p.models.items()}
    missing = [name for name in order if name not in models]
    if missing:
        raise ConfigError(f"merge_evaluations: no part measured {', '.join(missing)}")
    samples = {k: v for p in parts for k, v in p.samples.items()}
    primers = {k: v for p in parts for k, v in p.primers.items()}
    return EvaluationResult(
        models={k: models[k] for k in order},
        settings=dict(parts[0].settings),
        samples={k: samples[k] for k in order if k in samples},
        primers={k: primers[k] for k in order if k in primers},
    )


def load_result(path: str | Path) -> EvaluationResult:
    """Read an ``evaluation.json`` written by :meth:`EvaluationResult.write`."""
    data = json.loads(Path(path).read_text())

    def nan(obj: Any) -> Any:
        if obj is None:
            return math.nan
        if isinstance(obj, dict):
            return {k: nan(v) for k, v in obj.items()}
        return obj

    models = {k: nan(v) for k, v in data["models"].items()}
    return EvaluationResult.from_dict({"settings": data.get("settings", {}), "models": models})
