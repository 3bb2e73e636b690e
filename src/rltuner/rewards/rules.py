"""Pure, vectorised building blocks of the music-theory rules (``shared/spec/music-theory-reward.md``).

Nothing here keeps state: the reward (:mod:`rltuner.rewards.music_theory`) and the statistics
(:mod:`rltuner.rewards.statistics`) each track their own per-melody state and call these functions. Arrays
are over a batch ``B`` of melodies; classes are int64 in 0..37 (0 = REST/NOTE_OFF, 1 = HOLD/NO_EVENT).
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from rltuner.encoding import (
    FIRST_NOTE_CLASS,
    MIN_PITCH,
    NO_EVENT,
    NOTE_OFF,
    NUM_CLASSES,
    key_set_classes,
    pitch_class_of,
)
from rltuner.errors import ConfigError, InvalidMelodyError

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]

# Interval classes of rule 7. A plain interval d (0..35 semitones) is its own class index; the special
# classes follow, so one lookup table of NUM_INTERVAL_CLASSES entries gives any class's reward.
NUM_PLAIN = NUM_CLASSES - FIRST_NOTE_CLASS  # 36 possible |a - p|, 0..35
IV_NONE = NUM_PLAIN
IV_REST = NUM_PLAIN + 1
IV_HOLD = NUM_PLAIN + 2
IV_REST_AFTER = NUM_PLAIN + 3
IV_HOLD_AFTER = NUM_PLAIN + 4
IV_FIFTH_IN_KEY = NUM_PLAIN + 5
IV_THIRD_IN_KEY = NUM_PLAIN + 6
NUM_INTERVAL_CLASSES = NUM_PLAIN + 7

# Leap outcomes of rule 8.
LEAP_NONE = 0
LEAP_RESOLVED = 1
LEAP_DOUBLED = -1

BITS_PER_CLASS = 6  # 38 classes fit in 6 bits: a window of up to 10 classes packs into one int64


@dataclass(frozen=True)
class KeyTables:
    """Lookup tables of one key. Each boolean table has NUM_CLASSES + 1 entries: index -1 (the last entry,
    always False) stands for "no previous real note", so ``table[prev]`` needs no masking.

    Attributes:
        tonic: the tonic class used by rule 2 (the tonic in MIDI 60..71; 14 in C).
        in_key: (39,) class is in the key set (special events count as in key).
        tonic_or_fifth: (39,) pitch class is the tonic or the fifth of the key.
        tonic_or_third: (39,) pitch class is the tonic or the third of the key.
        third: semitones of the key's third (4 in major, 3 in minor): the "in-key third" interval.
    """

    tonic: int
    in_key: BoolArray
    tonic_or_fifth: BoolArray
    tonic_or_third: BoolArray
    third: int


def key_tables(key: str | int = "C", mode: str = "major") -> KeyTables:
    """Tables of ``key`` (a note name such as ``"D"`` or ``"Bb"``, or a pitch class 0..11) and ``mode``.

    Raises:
        ConfigError: unknown key name or mode.
    """
    if mode not in ("major", "minor"):
        raise ConfigError(f"mode must be 'major' or 'minor', not {mode!r}")
    try:
        pc = pitch_class_of(key) if isinstance(key, str) else int(key) % 12
    except InvalidMelodyError as exc:
        raise ConfigError(f"unknown key {key!r} (expected a note name such as C, F# or Bb)") from exc
    third = 4 if mode == "major" else 3
    in_key = np.zeros(NUM_CLASSES + 1, dtype=bool)
    in_key[sorted(key_set_classes(pc, mode))] = True  # type: ignore[arg-type]
    pcs = (np.arange(NUM_CLASSES) - FIRST_NOTE_CLASS + MIN_PITCH) % 12
    real = np.arange(NUM_CLASSES) >= FIRST_NOTE_CLASS
    tonic_or_fifth = np.zeros(NUM_CLASSES + 1, dtype=bool)
    tonic_or_fifth[:NUM_CLASSES] = real & ((pcs == pc) | (pcs == (pc + 7) % 12))
    tonic_or_third = np.zeros(NUM_CLASSES + 1, dtype=bool)
    tonic_or_third[:NUM_CLASSES] = real & ((pcs == pc) | (pcs == (pc + third) % 12))
    tonic = 60 + pc - MIN_PITCH + FIRST_NOTE_CLASS
    return KeyTables(tonic, in_key, tonic_or_fifth, tonic_or_third, third)


def interval_class(prev: IntArray, action: IntArray, tables: KeyTables) -> IntArray:
    """Rule 7's class of each step: a plain interval 0..35 or one of the ``IV_*`` codes.

    Args:
        prev: (B,) the previous real note, -1 where there is none (or the composition is empty).
        action: (B,) the class played now.
        tables: the key's tables.

    Returns:
        (B,) int64 interval class.
    """
    d = np.abs(action - prev)
    cls = np.where(
        (d == 7) & tables.tonic_or_fifth[prev],
        IV_FIFTH_IN_KEY,
        np.where((d == tables.third) & tables.tonic_or_third[prev], IV_THIRD_IN_KEY, d),
    )
    after = tables.tonic_or_fifth[prev]
    cls = np.where(action == NO_EVENT, np.where(after, IV_HOLD_AFTER, IV_HOLD), cls)
    cls = np.where(action == NOTE_OFF, np.where(after, IV_REST_AFTER, IV_REST), cls)
    return np.where(prev < 0, IV_NONE, cls)


def leap_transition(
    direction: IntArray,
    leapt_from: IntArray,
    since: IntArray,
    prev: IntArray,
    action: IntArray,
    *,
    leap_size: int = 7,
    min_steps_between: int = 6,
) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """One step of rule 8's leap tracker, for a non-empty composition (step t >= 1).

    Args:
        direction: (B,) 0, +1 (after an upward leap) or -1.
        leapt_from: (B,) the note the pending leap started from (-1: none).
        since: (B,) steps since the last leap.
        prev: (B,) previous real note (-1: none).
        action: (B,) the class played now.
        leap_size: a leap is an interval of at least this many semitones.
        min_steps_between: leaping back resolves only if more than this many steps passed since the leap.

    Returns:
        (outcome, direction, leapt_from, since), each (B,) int64; outcome is LEAP_NONE, LEAP_RESOLVED or
        LEAP_DOUBLED. The inputs are not modified.
    """
    note = action >= FIRST_NOTE_CLASS
    leap = note & (prev >= 0) & (np.abs(action - prev) >= leap_size)
    dir_now = np.where(action > prev, 1, -1)
    pending = direction != 0
    back = leap & pending & (dir_now != direction)
    doubled = leap & pending & (dir_now == direction)
    start = leap & ~pending
    gradual = (
        note
        & ~leap
        & (((direction == 1) & (action <= leapt_from)) | ((direction == -1) & (action >= leapt_from)))
    )
    resolved = (back & (since > min_steps_between)) | gradual
    clear = back | gradual
    outcome = resolved.astype(np.int64) - doubled.astype(np.int64)
    new_direction = np.where(start, dir_now, np.where(clear, 0, direction))
    new_from = np.where(start, prev, np.where(clear, -1, leapt_from))
    new_since = np.where(leap, 0, since + 1)
    return outcome, new_direction, new_from, new_since


def distinct_real_notes(window: IntArray) -> IntArray:
    """(B, W) classes -> (B,) number of distinct real notes (classes >= 2) in each row."""
    bits = np.bitwise_or.reduce(np.left_shift(np.int64(1), window), axis=1) & ~np.int64(3)
    return popcount(bits)


def popcount(bits: IntArray) -> IntArray:
    """Number of set bits of each non-negative int64."""
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(bits).astype(np.int64)
    count = np.zeros(bits.shape, dtype=np.int64)
    rest = bits.copy()
    while rest.any():
        count += rest & 1
        rest >>= 1
    return count


def exact_threshold(threshold: float) -> Fraction:
    """The decimal a user wrote (0.15) as an exact fraction (3/20), for the integer autocorrelation test."""
    return Fraction(repr(float(threshold))).limit_denominator(10**6)


def autocorrelation_terms(
    n: int,
    total: IntArray,
    total_sq: IntArray,
    lag_product: IntArray,
    head: IntArray,
    tail: IntArray,
    lag: int,
) -> tuple[IntArray, IntArray]:
    """Numerator and denominator (int64) of rule 4's rho for prefixes of length ``n``, denominators cleared.

    With S = sum x, Q = sum x^2, P = sum_{i>=lag} x_i x_{i-lag}, ``head`` = sum of the first ``lag`` classes
    and ``tail`` = sum of the last ``lag``: rho = num / den with
    num = n^2 P - n S (2S - head - tail) + (n - lag) S^2 and den = n (n Q - S^2) >= 0 (0: constant, NaN).
    Only meaningful for n > lag. All arrays (B,).
    """
    num = n * n * lag_product - n * total * (2 * total - head - tail) + (n - lag) * total * total
    den = n * (n * total_sq - total * total)
    return num, den


def autocorrelation_value(num: IntArray, den: IntArray) -> FloatArray:
    """rho = num / den in float64 (NaN where den == 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return num.astype(np.float64) / den.astype(np.float64)
