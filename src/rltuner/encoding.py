"""The 38-class melody grid (``shared/spec/encoding.md``).

One step is a sixteenth note. Class 0 is NOTE_OFF (the sounding note stops), class 1 is NO_EVENT (hold the
note or continue the rest), classes 2..37 are note-ons of MIDI pitch ``46 + class`` (48 = C3 .. 83 = B5).

Conversions are named ``x_to_y``; a :class:`Melody` is an immutable array of classes with helpers around it.
The canonical encoding of a list of notes (what :func:`notes_to_classes` produces) puts NOTE_OFF exactly where
a note ends before a rest, and NO_EVENT on every other silent or held step; decoding and re-encoding a
canonical melody gives it back exactly.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from rltuner.errors import InputLimitError, InvalidMelodyError, MelodyRangeError

NOTE_OFF = 0
NO_EVENT = 1
FIRST_NOTE_CLASS = 2
NUM_SPECIAL = 2
MIN_PITCH = 48  # C3, class 2
MAX_PITCH = 83  # B5, class 37
NUM_PITCHES = MAX_PITCH - MIN_PITCH + 1  # 36: three octaves
NUM_CLASSES = NUM_SPECIAL + NUM_PITCHES  # 38
STEPS_PER_QUARTER = 4
STEPS_PER_BAR = 16
DEFAULT_MELODY_LENGTH = 32

Mode = Literal["major", "minor"]
PITCH_CLASS_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_NAME_TO_PC = {
    "C": 0, "B#": 0, "C#": 1, "DB": 1, "D": 2, "D#": 3, "EB": 3, "E": 4, "FB": 4, "F": 5, "E#": 5,
    "F#": 6, "GB": 6, "G": 7, "G#": 8, "AB": 8, "A": 9, "A#": 10, "BB": 10, "B": 11, "CB": 11,
}  # fmt: skip

ClassArray = npt.NDArray[np.int64]


def pitch_to_class(pitch: int) -> int:
    """MIDI pitch (48..83) to its note-on class (2..37)."""
    if not MIN_PITCH <= pitch <= MAX_PITCH:
        raise MelodyRangeError(f"MIDI pitch {pitch} is outside the encodable range {MIN_PITCH}..{MAX_PITCH}")
    return pitch - MIN_PITCH + FIRST_NOTE_CLASS


def class_to_pitch(cls: int) -> int:
    """Note-on class (2..37) to its MIDI pitch."""
    if not FIRST_NOTE_CLASS <= cls < NUM_CLASSES:
        raise InvalidMelodyError(f"class {cls} is not a note-on (note-ons are {FIRST_NOTE_CLASS}..37)")
    return cls - FIRST_NOTE_CLASS + MIN_PITCH


def pitch_class_of(name: str) -> int:
    """Pitch class (0..11) of a note name such as ``"C"``, ``"F#"`` or ``"Bb"``."""
    key = name.strip().upper().replace("♯", "#").replace("♭", "B")
    if len(key) == 2 and key[1] == "B":
        key = key[0] + "B"
    if key not in _NAME_TO_PC:
        raise InvalidMelodyError(f"unknown note name {name!r} (expected e.g. C, F#, Bb)")
    return _NAME_TO_PC[key]


def key_set_classes(tonic: str | int = "C", mode: Mode = "major") -> frozenset[int]:
    """Classes that count as "in key" for the reward rules: the two special events and every scale degree.

    ``key_set_classes("C", "major")`` is the spec's C-major key set.
    """
    tonic_pc = pitch_class_of(tonic) if isinstance(tonic, str) else int(tonic) % 12
    steps = (0, 2, 4, 5, 7, 9, 11) if mode == "major" else (0, 2, 3, 5, 7, 8, 10)
    if mode not in ("major", "minor"):
        raise InvalidMelodyError(f"mode must be 'major' or 'minor', not {mode!r}")
    pcs = {(tonic_pc + s) % 12 for s in steps}
    notes = {c for c in range(FIRST_NOTE_CLASS, NUM_CLASSES) if class_to_pitch(c) % 12 in pcs}
    return frozenset({NOTE_OFF, NO_EVENT} | notes)


def validate_classes(melodies: object, *, allow_empty: bool = False) -> ClassArray:
    """Return ``melodies`` as an int64 array, or raise :class:`InvalidMelodyError` saying what is wrong.

    Accepts a 1-D or 2-D array or a (non-ragged) list of lists of ints in 0..37.
    """
    if isinstance(melodies, np.ndarray):
        arr = melodies
    else:
        try:
            arr = np.asarray(melodies)
        except ValueError as exc:  # ragged nested lists
            raise InvalidMelodyError(f"melodies must all have the same length ({exc})") from None
        if arr.dtype == object:
            raise InvalidMelodyError("melodies must all have the same length (got a ragged list)")
    if arr.size == 0 and not allow_empty:
        raise InvalidMelodyError("no melody given (empty input)")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.mod(arr, 1) == 0):
            if not np.all((arr >= 0) & (arr < NUM_CLASSES)):  # before the cast: 1e30 would wrap around
                bad_value = float(arr[~((arr >= 0) & (arr < NUM_CLASSES))].flat[0])
                raise InvalidMelodyError(f"invalid class {bad_value:g}: classes are 0..{NUM_CLASSES - 1}")
            arr = arr.astype(np.int64)
        else:
            raise InvalidMelodyError(f"melody classes must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    if arr.size:
        bad = (arr < 0) | (arr >= NUM_CLASSES)
        if bad.any():
            idx = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InvalidMelodyError(
                f"invalid class {int(arr[idx])} at position {idx}: classes are 0 (NOTE_OFF), 1 (NO_EVENT) "
                f"and 2..37 (note-ons of MIDI 48..83)"
            )
    return arr


@dataclass(frozen=True)
class Note:
    """One note on the sixteenth grid: MIDI pitch, start step and duration in steps (>= 1)."""

    pitch: int
    start: int
    duration: int

    @property
    def end(self) -> int:
        return self.start + self.duration


def classes_to_notes(classes: Sequence[int] | npt.NDArray[np.integer]) -> list[Note]:
    """Decode a melody: a note-on starts a note that lasts until the next note-on, NOTE_OFF or the end."""
    arr = validate_classes(classes, allow_empty=True)
    if arr.ndim != 1:
        raise InvalidMelodyError(f"expected one melody (1-D), got shape {arr.shape}")
    notes: list[Note] = []
    current: tuple[int, int] | None = None  # (pitch, start)
    for step, cls in enumerate(arr.tolist()):
        if cls == NO_EVENT:
            continue
        if current is not None:
            notes.append(Note(current[0], current[1], step - current[1]))
            current = None
        if cls >= FIRST_NOTE_CLASS:
            current = (class_to_pitch(cls), step)
    if current is not None:
        notes.append(Note(current[0], current[1], len(arr) - current[1]))
    return notes


def notes_to_classes(notes: Iterable[Note], length: int | None = None) -> ClassArray:
    """Encode notes (on the step grid, MIDI 48..83) canonically, in O(N log N) for N notes.

    Where notes overlap, a later note-on cuts the earlier note (the line stays monophonic); of two notes that
    start on the same step, the higher one is kept. ``length`` defaults to the end of the last note; notes
    beyond it are cut.

    Raises:
        InvalidMelodyError: a note starts before step 0 or lasts less than one step.
        InputLimitError: the melody would be longer than ``limits.DEFAULT.max_melody_steps`` x 256 steps
            (checked before anything is allocated; readers apply the tighter per-melody limit first).
    """
    from rltuner.limits import DEFAULT as LIMITS

    ordered = sorted(notes, key=lambda n: (n.start, -n.pitch))
    if length is None:
        length = max((n.end for n in ordered), default=0)
    hard_cap = 256 * LIMITS.max_melody_steps
    if length > hard_cap:
        raise InputLimitError(f"a melody of {length:,} steps is longer than the limit of {hard_cap:,} steps")
    out = np.full(length, NO_EVENT, dtype=np.int64)
    starts = np.fromiter((n.start for n in ordered), dtype=np.int64, count=len(ordered))
    # Index of the first note starting strictly after each note: where its sound is cut at the latest.
    after = np.searchsorted(starts, starts, side="right").tolist()
    last_start = -1
    for i, note in enumerate(ordered):
        if note.start == last_start or note.start >= length:
            continue
        if note.duration < 1 or note.start < 0:
            raise InvalidMelodyError(f"note {note} must start at a step >= 0 and last at least one step")
        out[note.start] = pitch_to_class(note.pitch)
        last_start = note.start
        j = after[i]
        if note.end < length and (j == len(ordered) or note.end < ordered[j].start):
            out[note.end] = NOTE_OFF
    return out


def octave_shift_into_range(pitches: Sequence[int] | npt.NDArray[np.integer]) -> int:
    """Whole-octave shift (in semitones, a multiple of 12) that puts every pitch into MIDI 48..83.

    Of the shifts that fit, the one closest to zero is chosen. Raises :class:`MelodyRangeError` when the
    melody spans more than three octaves.
    """
    arr = np.asarray(pitches)
    if arr.size == 0:
        return 0
    lo, hi = int(arr.min()), int(arr.max())
    if hi - lo > MAX_PITCH - MIN_PITCH:
        raise MelodyRangeError(
            f"melody spans {hi - lo} semitones (MIDI {lo}..{hi}); the encoding holds at most "
            f"{MAX_PITCH - MIN_PITCH} (three octaves, MIDI {MIN_PITCH}..{MAX_PITCH})"
        )
    fits = [12 * k for k in range(-11, 12) if lo + 12 * k >= MIN_PITCH and hi + 12 * k <= MAX_PITCH]
    if not fits:
        raise MelodyRangeError(
            f"melody MIDI {lo}..{hi} cannot be moved by whole octaves into {MIN_PITCH}..{MAX_PITCH}"
        )
    return min(fits, key=abs)


def transposition_to_c(tonic_pc: int, mode: Mode) -> int:
    """Semitone shift (-6..+5) that takes a key to C major (major) or A minor (minor)."""
    target = 0 if mode == "major" else 9
    shift = (target - tonic_pc) % 12
    return shift - 12 if shift > 6 else shift


def normalize_notes(notes: Sequence[Note], tonic_pc: int = 0, mode: Mode = "major") -> list[Note]:
    """Transpose notes to C major / A minor, then shift by whole octaves into MIDI 48..83."""
    shift = transposition_to_c(tonic_pc, mode)
    moved = [n.pitch + shift for n in notes]
    octave = octave_shift_into_range(moved)
    return [Note(p + octave, n.start, n.duration) for n, p in zip(notes, moved, strict=True)]


def canonicalize(classes: Sequence[int] | npt.NDArray[np.integer]) -> ClassArray:
    """The canonical form of a melody: what decoding then re-encoding it gives (same sound, same length)."""
    arr = validate_classes(classes, allow_empty=True)
    return notes_to_classes(classes_to_notes(arr), length=len(arr))


def random_note_primers(n: int, rng: np.random.Generator) -> ClassArray:
    """(n,) uniformly random note-on classes (2..37): the paper's one priming note per melody."""
    return rng.integers(FIRST_NOTE_CLASS, NUM_CLASSES, size=n, dtype=np.int64)


def with_primers(primers: npt.ArrayLike, melodies: npt.ArrayLike) -> ClassArray:
    """The melodies as heard: each primer, then the steps generated after it.

    A sampled melody is fed its primer as the first input and does not choose it (``spec/encoding.md``), but
    the primer is what a listener hears first: without it, a melody whose first generated step is HOLD or
    NOTE_OFF opens with silence. Rendering (MIDI, WAV, piano rolls), ``rltuner generate``'s files and the
    Table 1 statistics all use this form (Magenta's melody RNN keeps the primer in its output the same way).

    Args:
        primers: (N,) one primer class per melody, or (N, k) a primer sequence per melody.
        melodies: (N, L) the generated steps.

    Returns:
        (N, k + L) int64 classes.

    Raises:
        InvalidMelodyError: row counts differ, or a class is outside 0..37.
    """
    mel = validate_classes(np.asarray(melodies))
    pre = validate_classes(np.asarray(primers))
    if mel.ndim != 2 or pre.ndim not in (1, 2) or len(pre) != len(mel):
        raise InvalidMelodyError(
            f"primers {pre.shape} and melodies {mel.shape} need one primer (or primer row) per melody"
        )
    return np.concatenate([pre.reshape(len(pre), -1), mel], axis=1).astype(np.int64)


def class_name(cls: int) -> str:
    """Human-readable name of a class: ``OFF``, ``HOLD`` or a note name such as ``C4``."""
    if cls == NOTE_OFF:
        return "OFF"
    if cls == NO_EVENT:
        return "HOLD"
    pitch = class_to_pitch(cls)
    return f"{PITCH_CLASS_NAMES[pitch % 12]}{pitch // 12 - 1}"


def note_name_to_class(name: str) -> int:
    """Class of a note name with octave, e.g. ``"C4"`` -> 14 (MIDI 60), ``"F#3"`` -> 8."""
    text = name.strip()
    i = len(text)
    while i > 0 and (text[i - 1].isdigit() or text[i - 1] == "-"):
        i -= 1
    if i == 0 or i == len(text):
        raise InvalidMelodyError(f"note name {name!r} needs a pitch and an octave, e.g. C4 or F#3")
    pitch = 12 * (int(text[i:]) + 1) + pitch_class_of(text[:i])
    return pitch_to_class(pitch)


@dataclass(frozen=True, eq=False)
class Melody:
    """An immutable monophonic melody on the 38-class grid.

    Attributes:
        classes: int64 array of shape (T,), values in 0..37.
    """

    classes: ClassArray

    def __post_init__(self) -> None:
        arr = validate_classes(self.classes, allow_empty=True)
        if arr.ndim != 1:
            raise InvalidMelodyError(f"a Melody is one sequence (1-D), got shape {arr.shape}")
        arr = arr.copy()
        arr.setflags(write=False)
        object.__setattr__(self, "classes", arr)

    @classmethod
    def from_notes(cls, notes: Iterable[Note], length: int | None = None) -> Melody:
        return cls(notes_to_classes(notes, length))

    def to_notes(self) -> list[Note]:
        return classes_to_notes(self.classes)

    def __len__(self) -> int:
        return int(self.classes.shape[0])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Melody) and np.array_equal(self.classes, other.classes)

    def __hash__(self) -> int:
        return hash(self.classes.tobytes())

    def __repr__(self) -> str:
        return f"Melody({self.classes.tolist()})"

    def describe(self) -> str:
        """Space-separated class names, e.g. ``C4 HOLD E4 OFF``."""
        return " ".join(class_name(int(c)) for c in self.classes)
