"""The paper's Table 1 statistics of a set of melodies (``shared/spec/melody-statistics.md``).

The detectors here are independent of the reward computation: they run the rules' tests over whole melodies
with their own per-melody state (the rule-8 leap tracker advanced exactly once per step, the spec's backward
scan for repetition answered by running counts, every window's note set and packed classes for motifs),
sharing only pure helpers from :mod:`rltuner.rewards.rules`. That makes them a cross-check of
:mod:`rltuner.rewards.music_theory`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from rltuner.encoding import FIRST_NOTE_CLASS, NO_EVENT, NOTE_OFF, NUM_CLASSES, validate_classes
from rltuner.errors import InvalidMelodyError
from rltuner.rewards.rules import (
    BITS_PER_CLASS,
    IV_FIFTH_IN_KEY,
    IV_HOLD,
    IV_HOLD_AFTER,
    IV_NONE,
    IV_REST,
    IV_REST_AFTER,
    IV_THIRD_IN_KEY,
    LEAP_DOUBLED,
    LEAP_RESOLVED,
    NUM_INTERVAL_CLASSES,
    IntArray,
    autocorrelation_terms,
    interval_class,
    key_tables,
    leap_transition,
    popcount,
)

#: The Table 1 rows, in the paper's order.
TABLE1_ROWS: tuple[str, ...] = (
    "notes_excessively_repeated",
    "mean_autocorrelation_lag_1",
    "mean_autocorrelation_lag_2",
    "mean_autocorrelation_lag_3",
    "notes_not_in_key",
    "melodies_starting_with_tonic",
    "leaps_resolved",
    "melodies_with_unique_max_note",
    "melodies_with_unique_min_note",
    "notes_in_motif",
    "notes_in_repeated_motif",
)

ROW_LABELS: dict[str, str] = {
    "notes_excessively_repeated": "Notes excessively repeated",
    "mean_autocorrelation_lag_1": "Mean autocorrelation lag 1",
    "mean_autocorrelation_lag_2": "Mean autocorrelation lag 2",
    "mean_autocorrelation_lag_3": "Mean autocorrelation lag 3",
    "notes_not_in_key": "Notes not in key",
    "melodies_starting_with_tonic": "Melodies starting with tonic",
    "leaps_resolved": "Leaps resolved",
    "melodies_with_unique_max_note": "Melodies with unique max note",
    "melodies_with_unique_min_note": "Melodies with unique min note",
    "notes_in_motif": "Notes in motif",
    "notes_in_repeated_motif": "Notes in repeated motif",
}

_AUTOCORRELATION_ROWS = (
    "mean_autocorrelation_lag_1",
    "mean_autocorrelation_lag_2",
    "mean_autocorrelation_lag_3",
)


def _paper_column(values: tuple[float, ...]) -> dict[str, float]:
    return dict(zip(TABLE1_ROWS, values, strict=True))


#: The paper's Table 1 (100,000 melodies per model), as fractions (63.3% -> 0.633) and coefficients.
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "Note RNN": _paper_column((0.633, -0.16, 0.14, -0.13, 0.001, 0.009, 0.772, 0.647, 0.494, 0.059, 0.00007)),
    "Q": _paper_column((0.0, -0.11, 0.03, 0.03, 0.01, 0.288, 0.911, 0.564, 0.519, 0.757, 0.0011)),
    "Psi": _paper_column((0.0002, -0.10, -0.01, 0.01, 0.006, 0.287, 0.900, 0.594, 0.583, 0.738, 0.0009)),
    "G": _paper_column((0.0003, 0.55, 0.31, 0.17, 0.287, 0.0, 0.522, 0.371, 0.565, 0.693, 0.0001)),
}

#: Names of rule 7's interval classes, as counted by ``interval_counts`` (each class on its own).
_PLAIN_NAMES = (
    "unison",
    "minor_second",
    "major_second",
    "minor_third",
    "major_third",
    "fourth",
    "tritone",
    "fifth",
    "minor_sixth",
    "major_sixth",
    "minor_seventh",
    "major_seventh",
    "octave",
)
INTERVAL_NAMES: tuple[str, ...] = (
    *_PLAIN_NAMES,
    "over_octave",
    "rest",
    "hold",
    "rest_after_tonic_or_fifth",
    "hold_after_tonic_or_fifth",
    "in_key_fifth",
    "in_key_third",
    "none",
)


def _interval_name_index() -> IntArray:
    """Map each rule-7 interval class code to its position in INTERVAL_NAMES."""
    index = np.full(NUM_INTERVAL_CLASSES, INTERVAL_NAMES.index("over_octave"), dtype=np.int64)
    index[: len(_PLAIN_NAMES)] = np.arange(len(_PLAIN_NAMES))
    for code, name in (
        (IV_REST, "rest"),
        (IV_HOLD, "hold"),
        (IV_REST_AFTER, "rest_after_tonic_or_fifth"),
        (IV_HOLD_AFTER, "hold_after_tonic_or_fifth"),
        (IV_FIFTH_IN_KEY, "in_key_fifth"),
        (IV_THIRD_IN_KEY, "in_key_third"),
        (IV_NONE, "none"),
    ):
        index[code] = INTERVAL_NAMES.index(name)
    return index


def _ratio(num: int, den: int) -> float:
    return num / den if den else math.nan


def _excessive_repeats(melodies: IntArray) -> int:
    """Steps where rule 3 fires: the spec's backward scan, answered by one forward pass over the steps.

    The scan from step t back over steps that repeat t's class or are rests / holds stops at the first other
    class. What it counts follows from a few running values per melody (vectorised over melodies):

    * a real note: the scan stops at the last real note of another pitch, so it counts the trailing run of
      that pitch among the real notes (``run``, when ``last`` is that pitch; else 0), and it saw a rest or
      hold if one came after that other note (``gap``);
    * a note-off or a hold: the scan stops at the last real note, so it counts the rests / holds since then
      (``rests``, ``holds``); for a hold the gap is a rest among them.

    ``tests/test_statistics.py`` holds this to the literal scan on random and repetitive melodies.
    """
    n_mel, length = melodies.shape
    last = np.full(n_mel, -1, dtype=np.int64)  # the last real note so far
    run = np.zeros(n_mel, dtype=np.int64)  # how many real notes in a row (rests / holds between) are `last`
    gap = np.zeros(n_mel, dtype=bool)  # a rest or hold since the last real note other than `last`
    rests = np.zeros(n_mel, dtype=np.int64)  # note-offs since the last real note
    holds = np.zeros(n_mel, dtype=np.int64)  # holds since the last real note
    total = 0
    by_step = np.ascontiguousarray(melodies.T)  # (L, N): each step one contiguous row, not a strided column
    for t in range(length):
        a = by_step[t]
        real = a >= FIRST_NOTE_CLASS
        is_off, is_hold = a == NOTE_OFF, a == NO_EVENT
        same = real & (a == last)
        fire = (same & np.where(gap, run > 6, run > 4)) | (is_off & (rests > 1))
        fire |= is_hold & np.where(rests > 0, holds > 6, holds > 4)
        total += int(fire.sum())
        new = real & ~same  # a new pitch: its scan would reach back to the stretch before it
        gap = np.where(new, (rests + holds) > 0, gap | ~real)
        run = np.where(new, 1, run + same)
        last = np.where(real, a, last)
        rests = np.where(real, 0, rests + is_off)
        holds = np.where(real, 0, holds + is_hold)
    return total


def _motif_counts(melodies: IntArray, width: int = 8, min_notes: int = 3) -> tuple[int, int]:
    """(steps ending a motif, steps ending a repeated motif) of rules 5 and 6.

    Each window's note set (a bitmask, as ``rules.distinct_real_notes`` builds it) and its packed classes are
    accumulated over the ``width`` offsets, (N, L - W + 1) at a time: the (N, L - W + 1, W) array of windows
    is never materialised (at 100,000 melodies it was ~170 MB and most of the Table 1 time).
    """
    n_mel, length = melodies.shape
    if length < width:
        return 0, 0
    n_win = length - width + 1
    arr = melodies.astype(np.int64, copy=False)
    note_bits = np.left_shift(np.int64(1), arr)  # (N, L): the class of each step as one bit
    bits = np.zeros((n_mel, n_win), dtype=np.int64)
    codes = np.zeros((n_mel, n_win), dtype=np.int64)  # each window packed into one int64
    for k in range(width):
        bits |= note_bits[:, k : k + n_win]
        codes = (codes << BITS_PER_CLASS) | arr[:, k : k + n_win]
    distinct = popcount(bits & ~np.int64(3))  # real notes are the classes >= 2
    motif = distinct >= min_notes
    repeated = 0
    by_window = np.ascontiguousarray(codes.T)  # (L - W + 1, N): one contiguous row per window start
    for j in range(width, n_win):  # window j starts at step j; earlier ones must end before step j
        found = np.zeros(n_mel, dtype=bool)
        for i in range(j - width + 1):  # window by window: an any() over a few columns walks row by row
            found |= by_window[i] == by_window[j]
        repeated += int((found & motif[:, j]).sum())
    return int(motif.sum()), repeated


def _autocorrelations(melodies: IntArray, lag: int) -> tuple[float, int]:
    """(mean rho_lag over melodies ignoring NaN, number of non-NaN melodies) on the full melodies."""
    n_mel, n = melodies.shape
    if n <= lag:
        return 0.0, n_mel  # the spec's rho = 0 when n <= lag
    total = melodies.sum(axis=1)
    total_sq = (melodies * melodies).sum(axis=1)
    product = (melodies[:, lag:] * melodies[:, :-lag]).sum(axis=1)
    head = melodies[:, :lag].sum(axis=1)
    tail = melodies[:, -lag:].sum(axis=1)
    num, den = autocorrelation_terms(n, total, total_sq, product, head, tail, lag)
    valid = den > 0
    rho = num[valid] / den[valid]
    return (float(rho.mean()) if rho.size else math.nan), int(valid.sum())


def melody_statistics(
    melodies: object,
    *,
    key: str = "C",
    mode: str = "major",
    primer_steps: int = 0,
) -> dict[str, Any]:
    """The Table 1 statistics of N melodies of length L (each melody as a whole, starting at step 0).

    Args:
        melodies: (N, L) int classes 0..37 (a list of lists is accepted; a 1-D melody counts as N = 1).
        key: tonic of the key the key, tonic and interval tests use (default C).
        mode: ``"major"`` or ``"minor"``.
        primer_steps: how many leading steps of each melody are its primer (``encoding.with_primers``): an
            input the model was fed, not a choice it made. Every row counts them as part of the melody as
            heard (repeats, leaps, extremes, motifs, autocorrelation; ``n_steps`` is N * L), except the two
            whose answer the primer alone would fix: "notes not in key" counts the L - primer_steps
            generated steps only (a uniformly random primer is out of key 15 times in 36, a floor of ~1.3%
            for every model), and "starting with tonic" reads the first generated step (else it would be
            the primer's 1 in 36 for every model; the tonic rule rewards that step).

    Returns:
        A dict with the eleven rows of ``TABLE1_ROWS`` (fractions in [0, 1]; the autocorrelations are mean
        coefficients; ``leaps_resolved`` and a mean autocorrelation are NaN where nothing was counted),
        ``n_melodies``, ``n_steps``, ``counts`` (the raw count behind every row, plus ``leaps_doubled``),
        ``interval_counts`` (rule 7's class of every step, each class on its own, ``INTERVAL_NAMES``) and
        ``intervals_per_melody`` (those counts / N).

    Raises:
        InvalidMelodyError (a ValueError): classes outside 0..37, ragged or empty input.
        ConfigError: unknown key or mode.
    """
    arr = validate_classes(melodies)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InvalidMelodyError(f"melodies must be a 2-D array (N, L), got shape {arr.shape}")
    tables = key_tables(key, mode)
    n_mel, length = arr.shape
    n_steps = n_mel * length
    if not 0 <= primer_steps < length:
        raise InvalidMelodyError(
            f"primer_steps ({primer_steps}) must be in 0..{length - 1} (melodies of {length})"
        )
    own = arr[:, primer_steps:]  # the steps the model chose

    # Per-step detectors with their own state: previous real note and rule 8's leap tracker.
    prev = np.full(n_mel, -1, dtype=np.int64)
    direction = np.zeros(n_mel, dtype=np.int64)
    leapt_from = np.full(n_mel, -1, dtype=np.int64)
    since = np.zeros(n_mel, dtype=np.int64)
    interval_tally = np.zeros(NUM_INTERVAL_CLASSES, dtype=np.int64)
    resolved = doubled = 0
    by_step = np.ascontiguousarray(arr.T)  # (L, N): each step one contiguous row, not a strided column
    for t in range(length):
        a = by_step[t]
        interval_tally += np.bincount(interval_class(prev, a, tables), minlength=NUM_INTERVAL_CLASSES)
        if t:
            outcome, direction, leapt_from, since = leap_transition(direction, leapt_from, since, prev, a)
            resolved += int((outcome == LEAP_RESOLVED).sum())
            doubled += int((outcome == LEAP_DOUBLED).sum())
        prev = np.where(a >= FIRST_NOTE_CLASS, a, prev)

    repeats = _excessive_repeats(arr)
    motif_steps, repeated_steps = _motif_counts(arr)
    not_in_key = int((~tables.in_key[own]).sum())
    starts_tonic = int((own[:, 0] == tables.tonic).sum())
    top = arr.max(axis=1)
    unique_max = int(((arr == top[:, None]).sum(axis=1) == 1).sum())
    low = np.where(arr >= FIRST_NOTE_CLASS, arr, NUM_CLASSES).min(axis=1)
    unique_min = int(((arr == low[:, None]).sum(axis=1) == 1).sum())

    stats: dict[str, Any] = {"notes_excessively_repeated": repeats / n_steps}
    counts: dict[str, int] = {"notes_excessively_repeated": repeats}
    for lag, row in enumerate(_AUTOCORRELATION_ROWS, start=1):
        stats[row], counts[f"autocorrelation_melodies_lag_{lag}"] = _autocorrelations(arr, lag)
    stats["notes_not_in_key"] = not_in_key / own.size
    stats["melodies_starting_with_tonic"] = starts_tonic / n_mel
    stats["leaps_resolved"] = _ratio(resolved, resolved + doubled)
    stats["melodies_with_unique_max_note"] = unique_max / n_mel
    stats["melodies_with_unique_min_note"] = unique_min / n_mel
    stats["notes_in_motif"] = motif_steps / n_steps
    stats["notes_in_repeated_motif"] = repeated_steps / n_steps
    counts.update(
        notes_not_in_key=not_in_key,
        melodies_starting_with_tonic=starts_tonic,
        leaps_resolved=resolved,
        leaps_doubled=doubled,
        melodies_with_unique_max_note=unique_max,
        melodies_with_unique_min_note=unique_min,
        notes_in_motif=motif_steps,
        notes_in_repeated_motif=repeated_steps,
    )
    by_name = np.zeros(len(INTERVAL_NAMES), dtype=np.int64)
    np.add.at(by_name, _interval_name_index(), interval_tally)
    stats["n_melodies"] = n_mel
    stats["n_steps"] = n_steps
    stats["primer_steps"] = primer_steps
    stats["counts"] = counts
    stats["interval_counts"] = {name: int(c) for name, c in zip(INTERVAL_NAMES, by_name, strict=True)}
    stats["intervals_per_melody"] = {
        name: int(c) / n_mel for name, c in zip(INTERVAL_NAMES, by_name, strict=True)
    }
    return stats


def _format_value(row: str, value: float | None) -> str:
    if value is None:
        return "-"
    if math.isnan(value):
        return "n/a"
    if row in _AUTOCORRELATION_ROWS:
        return f"{value:+.2f}"
    return f"{100 * value:.3g}%"


def format_table1(
    results: Mapping[str, Mapping[str, Any]],
    *,
    paper_models: tuple[str, ...] = ("Note RNN", "Q", "Psi", "G"),
) -> str:
    """A plain-text Table 1: our models' statistics beside the paper's.

    Args:
        results: model name -> the dict of :func:`melody_statistics` (or any mapping with the row names).
        paper_models: which of the paper's columns (``PAPER_TABLE1``) to show beside ours.

    Returns:
        The table as Markdown (one header, one line per row).
    """
    headers = ["metric", *results, *(f"paper {m}" for m in paper_models)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in TABLE1_ROWS:
        cells = [ROW_LABELS[row]]
        cells += [_format_value(row, stats.get(row)) for stats in results.values()]
        cells += [_format_value(row, PAPER_TABLE1[m][row]) for m in paper_models]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
