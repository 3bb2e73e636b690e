"""Melody <-> standard MIDI file.

:func:`write_midi` writes one melody (an array of the 38 classes, ``rltuner.encoding``) as a format-0 MIDI
file through ``mido``: tempo, 4/4 time signature, key signature, one General MIDI program on channel 0, and an
end-of-track event at the melody's last step, so that trailing rests survive and reading the file back gives
the same length. :func:`midi_to_melody` reads a (monophonic) MIDI file back into classes.

Transposition: melodies live in C major / A minor. ``key="G"`` moves them to G major by the smaller of the
two possible shifts (-5 rather than +7 semitones); ``key="Em"`` moves A minor to E minor. ``transpose`` adds a
shift in semitones (``key="G", transpose=12`` is G major an octave higher).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rltuner.encoding import (
    MAX_PITCH,
    MIN_PITCH,
    NO_EVENT,
    STEPS_PER_QUARTER,
    ClassArray,
    Note,
    classes_to_notes,
    notes_to_classes,
    octave_shift_into_range,
    pitch_class_of,
    validate_classes,
)
from rltuner.errors import ConfigError, InputLimitError, InvalidMelodyError, MelodyRangeError, MidiReadError
from rltuner.fileio import atomic_path

TICKS_PER_QUARTER = 480
TICKS_PER_STEP = TICKS_PER_QUARTER // STEPS_PER_QUARTER  # 120 ticks = one sixteenth
DEFAULT_TEMPO = 120.0
DEFAULT_VELOCITY = 90
DRUM_CHANNEL = 9  # General MIDI percussion (channel 10, 0-based 9): never part of a melody

PathLike = str | os.PathLike[str]
MelodyLike = Sequence[int] | npt.NDArray[np.integer]
MelodiesLike = MelodyLike | Sequence[MelodyLike]  # one melody, an (N, T) batch or a list of melodies

_MINOR_SUFFIXES = ("minor", "min", "m")
_MAJOR_SUFFIXES = ("major", "maj")


def parse_key(key: str) -> tuple[int, str]:
    """Read a key name such as ``"G"``, ``"F# major"``, ``"Bb"``, ``"Em"`` or ``"D minor"``.

    Returns:
        ``(tonic pitch class 0..11, "major" | "minor")``.

    Raises:
        ConfigError: the name is not a key.
    """
    text = key.strip().replace("_", " ")
    mode = "major"
    low = text.lower()
    for suffix in _MAJOR_SUFFIXES + _MINOR_SUFFIXES:
        # "m" alone must not swallow the flat sign of "Bb"/"Eb": only a trailing m/min/minor counts.
        if low.endswith(suffix) and len(text) > len(suffix):
            mode = "minor" if suffix in _MINOR_SUFFIXES else "major"
            text = text[: len(text) - len(suffix)].strip()
            break
    try:
        return pitch_class_of(text), mode
    except InvalidMelodyError:
        raise ConfigError(
            f"unknown key {key!r}: use a note name with an optional mode, e.g. G, Bb, F#m, D minor"
        ) from None


def key_shift(key: str | None) -> int:
    """Semitone shift (-6..+5) that moves a C-major / A-minor melody to ``key`` by the nearer octave."""
    if key is None:
        return 0
    tonic, mode = parse_key(key)
    origin = 0 if mode == "major" else 9  # C major, A minor: the pitch classes the melodies are written in
    shift = (tonic - origin) % 12
    return shift - 12 if shift > 5 else shift


def total_shift(transpose: int = 0, key: str | None = None) -> int:
    """The whole transposition applied on output: ``key``'s shift plus ``transpose`` semitones."""
    if isinstance(transpose, bool) or int(transpose) != transpose:
        raise ConfigError(f"transpose must be a whole number of semitones, got {transpose!r}")
    return key_shift(key) + int(transpose)


def melody_to_notes(classes: MelodyLike, *, transpose: int = 0, key: str | None = None) -> list[Note]:
    """Decode one melody to notes and transpose them; the pitches must stay in MIDI 0..127.

    Raises:
        InvalidMelodyError: not a 1-D melody of classes 0..37.
        MelodyRangeError: the transposition leaves the MIDI range.
    """
    arr = validate_classes(classes, allow_empty=True)
    if arr.ndim != 1:
        raise InvalidMelodyError(f"expected one melody (1-D), got shape {arr.shape}")
    shift = total_shift(transpose, key)
    notes = [Note(n.pitch + shift, n.start, n.duration) for n in classes_to_notes(arr)]
    bad = [n.pitch for n in notes if not 0 <= n.pitch <= 127]
    if bad:
        raise MelodyRangeError(f"transposing by {shift:+d} semitones puts MIDI pitch {bad[0]} outside 0..127")
    return notes


def check_output_options(tempo: float, program: int, velocity: int) -> None:
    """Raise :class:`ConfigError` for a tempo outside 1..1000 qpm, a program outside 0..127 or a bad velocity."""
    if not (math.isfinite(tempo) and 1.0 <= tempo <= 1000.0):
        raise ConfigError(f"tempo must be between 1 and 1000 quarter notes per minute, got {tempo}")
    if not 0 <= int(program) <= 127:
        raise ConfigError(f"General MIDI program must be 0..127, got {program}")
    if not 1 <= int(velocity) <= 127:
        raise ConfigError(f"velocity must be 1..127, got {velocity}")


def _key_signature(key: str | None, transpose: int = 0) -> str:
    """The key the written melody is in, as mido spells it (``"G"``, ``"Bb"``, ``"F#m"``).

    The melody is in C major / A minor before the shift, so the key is that origin moved by the whole
    transposition (``key`` plus ``transpose``); without ``key`` the mode is taken as major.
    """
    mode = parse_key(key)[1] if key is not None else "major"
    origin = 0 if mode == "major" else 9
    tonic = (origin + total_shift(transpose, key)) % 12
    # Black keys spelled the way key signatures usually are (fewest accidentals).
    major_names = ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
    minor_names = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B")
    return major_names[tonic] if mode == "major" else minor_names[tonic] + "m"


def write_midi(
    classes: MelodyLike,
    path: PathLike,
    *,
    tempo: float = DEFAULT_TEMPO,
    program: int = 0,
    transpose: int = 0,
    key: str | None = None,
    velocity: int = DEFAULT_VELOCITY,
) -> Path:
    """Write one melody as a standard MIDI file (format 0, 480 ticks per quarter), atomically.

    Args:
        classes: one melody, shape (T,), classes 0..37.
        path: the ``.mid`` file to write (its folder is created).
        tempo: quarter notes per minute (one step is a sixteenth).
        program: General MIDI program 0..127 (0: acoustic grand piano).
        transpose: extra shift in semitones.
        key: move the C-major / A-minor melody to this key (``"G"``, ``"Bb"``, ``"Em"``), nearest octave.
        velocity: note-on velocity 1..127.

    Returns:
        The path written.

    Raises:
        InvalidMelodyError: ``classes`` is not one melody.
        MelodyRangeError: the transposed pitches leave MIDI 0..127.
        ConfigError: a nonsense option (tempo, program, velocity, key).
    """
    import mido

    check_output_options(tempo, program, velocity)
    notes = melody_to_notes(classes, transpose=transpose, key=key)
    length = len(validate_classes(classes, allow_empty=True))

    # Absolute-tick events; at one tick note-offs come before note-ons so a repeated pitch re-strikes.
    events: list[tuple[int, int, mido.Message]] = []
    for note in notes:
        on, off = note.start * TICKS_PER_STEP, note.end * TICKS_PER_STEP
        events.append((on, 1, mido.Message("note_on", note=note.pitch, velocity=int(velocity), channel=0)))
        events.append((off, 0, mido.Message("note_off", note=note.pitch, velocity=0, channel=0)))
    events.sort(key=lambda e: (e[0], e[1]))

    track = mido.MidiTrack()
    track.append(mido.MetaMessage("track_name", name="rltuner melody", time=0))
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(tempo), time=0))
    track.append(mido.MetaMessage("time_signature", numerator=4, denominator=4, time=0))
    track.append(mido.MetaMessage("key_signature", key=_key_signature(key, transpose), time=0))
    track.append(mido.Message("program_change", program=int(program), channel=0, time=0))
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    # The end-of-track marks the melody's length, trailing rests included.
    track.append(mido.MetaMessage("end_of_track", time=length * TICKS_PER_STEP - now))

    midi = mido.MidiFile(type=0, ticks_per_beat=TICKS_PER_QUARTER)
    midi.tracks.append(track)
    target = Path(path)
    with atomic_path(target) as tmp:
        midi.save(str(tmp))
    return target


def write_midi_batch(
    melodies: MelodiesLike,
    folder: PathLike,
    *,
    prefix: str = "melody",
    tempo: float = DEFAULT_TEMPO,
    program: int = 0,
    transpose: int = 0,
    key: str | None = None,
    velocity: int = DEFAULT_VELOCITY,
) -> list[Path]:
    """Write each melody of a batch as ``folder/{prefix}_{i:03d}.mid`` (one file per melody).

    Args:
        melodies: an (N, T) array or a list of 1-D melodies (lengths may differ).
        folder: output folder (created).
        prefix: file-name prefix.
        tempo, program, transpose, key, velocity: as in :func:`write_midi`.

    Returns:
        The paths written, in the order of ``melodies``.
    """
    items = as_melody_list(melodies)
    paths = numbered_paths(folder, prefix, len(items), ".mid")
    return [
        write_midi(m, path, tempo=tempo, program=program, transpose=transpose, key=key, velocity=velocity)
        for m, path in zip(items, paths, strict=True)
    ]


def numbered_paths(folder: str | os.PathLike[str], prefix: str, count: int, suffix: str) -> list[Path]:
    """``folder/{prefix}_000{suffix}``, ... : zero-padded so that the files sort in order."""
    width = max(3, len(str(count - 1)))
    return [Path(folder) / f"{prefix}_{i:0{width}d}{suffix}" for i in range(count)]


def as_melody_list(melodies: MelodiesLike) -> list[ClassArray]:
    """One melody (T,), a batch (N, T) or a list of 1-D melodies (lengths may differ) -> list of melodies.

    Raises:
        InvalidMelodyError: a melody is not 1-D or holds an invalid class.
    """
    if not isinstance(melodies, np.ndarray) and len(melodies) and all(np.ndim(m) == 0 for m in melodies):
        melodies = validate_classes(list(melodies), allow_empty=True)  # a plain list of ints: one melody
    if isinstance(melodies, np.ndarray):
        arr = validate_classes(melodies, allow_empty=True)
        if arr.ndim == 1:
            return [arr]
        if arr.ndim != 2:
            raise InvalidMelodyError(f"expected melodies of shape (N, T), got {arr.shape}")
        return list(arr)
    items = [validate_classes(m, allow_empty=True) for m in melodies]
    for i, item in enumerate(items):
        if item.ndim != 1:
            raise InvalidMelodyError(f"melody {i} should be 1-D, got shape {item.shape}")
    return items


def _read_midi_notes(path: Path) -> tuple[list[tuple[float, float, int]], float]:
    """Notes ``(start, end, pitch)`` in quarter notes, and the file's end (last end-of-track) in quarters."""
    import mido

    if not path.exists():
        raise MidiReadError(f"MIDI file {path} does not exist")
    if path.is_dir():
        raise MidiReadError(f"{path} is a folder, not a MIDI file")
    try:
        with path.open("rb") as fh:
            header = fh.read(4)
    except OSError as exc:
        raise MidiReadError(f"cannot read {path}: {exc.strerror or exc}") from None
    if header != b"MThd":
        raise MidiReadError(f"{path} is not a MIDI file (no MThd header)")
    _check_limits(path)
    try:
        midi = mido.MidiFile(str(path))
    except EOFError:
        raise MidiReadError(f"{path} is a truncated MIDI file (it ends in the middle of a track)") from None
    except Exception as exc:  # mido raises OSError, ValueError, KeyError... on malformed data
        raise MidiReadError(f"{path} is a corrupt MIDI file ({type(exc).__name__}: {exc})") from None
    if midi.type == 2:
        raise MidiReadError(f"{path} is a format-2 MIDI file (independent sequences), which is not supported")
    if midi.ticks_per_beat <= 0:
        raise MidiReadError(f"{path} uses SMPTE time division, which is not supported")

    tpq = float(midi.ticks_per_beat)
    notes: list[tuple[float, float, int]] = []
    end_tick = 0
    for track in midi.tracks:
        tick = 0
        sounding: dict[tuple[int, int], list[int]] = {}  # (channel, pitch) -> start ticks (stacked)
        for msg in track:
            tick += msg.time
            if msg.type == "note_on" and msg.velocity > 0 and msg.channel != DRUM_CHANNEL:
                sounding.setdefault((msg.channel, msg.note), []).append(tick)
            elif msg.type in ("note_off", "note_on") and msg.channel != DRUM_CHANNEL:
                starts = sounding.get((msg.channel, msg.note))
                if starts:
                    start = starts.pop(0)
                    notes.append((start / tpq, tick / tpq, msg.note))
        for (_, pitch), starts in sounding.items():  # notes never switched off end with the track
            notes.extend((start / tpq, tick / tpq, pitch) for start in starts)
        end_tick = max(end_tick, tick)
    return notes, end_tick / tpq


def _check_limits(path: Path) -> None:
    """Refuse a MIDI file beyond the read limits (``rltuner.limits``) before it is parsed."""
    from rltuner.data.midi_import import midi_header_problem
    from rltuner.limits import DEFAULT as LIMITS

    size = path.stat().st_size
    if size > LIMITS.max_file_bytes:
        raise InputLimitError(f"{path} is {size:,} bytes, over the limit of {LIMITS.max_file_bytes:,}")
    with path.open("rb") as fh:
        head = fh.read(4096)
    problem = midi_header_problem(head, LIMITS)
    if problem == "unparseable":
        raise MidiReadError(
            f"{path} is a corrupt MIDI file (its header has no valid time division or tracks)"
        )
    if problem == "limit":
        raise InputLimitError(
            f"{path} has more than {LIMITS.max_tracks:,} tracks or more than "
            f"{LIMITS.max_ticks_per_quarter:,} ticks per quarter"
        )


def midi_to_melody(path: PathLike, length: int | None = None, *, fit_range: bool = True) -> ClassArray:
    """Read a (monophonic) MIDI file back into classes on the sixteenth grid.

    Times are quantized to sixteenths of a quarter note (the tempo does not matter). Where notes overlap the
    highest wins: a note that starts while a higher one sounds is dropped, one that starts over a lower note
    cuts it. Drum-channel notes are ignored.

    Args:
        path: a standard MIDI file (format 0 or 1).
        length: melody length in steps; defaults to the end of the file (its end-of-track event), so that
            trailing rests written by :func:`write_midi` come back.
        fit_range: shift pitches outside MIDI 48..83 by whole octaves into it (else raise).

    Returns:
        int64 array of shape (length,).

    Raises:
        MidiReadError: the file is missing, not MIDI, truncated, corrupt, or holds nothing.
        MelodyRangeError: the pitches do not fit the three-octave range.
    """
    source = Path(path)
    raw, end_quarters = _read_midi_notes(source)
    if length is None:
        length = round(end_quarters * STEPS_PER_QUARTER)
        if raw:
            last_end = max(round(e * STEPS_PER_QUARTER) for _, e, _ in raw)
            length = max(length, int(last_end))
    if length < 0:
        raise ConfigError(f"length must be >= 0, got {length}")
    from rltuner.limits import DEFAULT as LIMITS

    if length > LIMITS.max_melody_steps or len(raw) > LIMITS.max_notes:
        raise InputLimitError(
            f"{source} is too long to read as one melody: {length:,} steps and {len(raw):,} notes (the limits "
            f"are {LIMITS.max_melody_steps:,} steps and {LIMITS.max_notes:,} notes)"
        )
    if length == 0 and not raw:
        raise MidiReadError(f"{source} holds no notes and has zero length")

    # Quantize to the step grid; a note keeps at least one step.
    grid: list[tuple[int, int, int]] = []
    for s, e, p in raw:
        start = round(s * STEPS_PER_QUARTER)
        grid.append((start, max(round(e * STEPS_PER_QUARTER), start + 1), p))
    grid.sort(key=lambda n: (n[0], -n[2]))
    kept: list[list[int]] = []  # [start, end, pitch]
    for start, end, pitch in grid:
        if kept and kept[-1][0] == start:
            continue  # same onset: the higher note (sorted first) wins
        if kept and kept[-1][1] > start:
            if kept[-1][2] > pitch:
                continue  # starts under a higher sounding note
            kept[-1][1] = start  # a higher note cuts the lower one
        kept.append([start, end, pitch])

    pitches = [p for _, _, p in kept]
    shift = 0
    if pitches and (min(pitches) < MIN_PITCH or max(pitches) > MAX_PITCH):
        if not fit_range:
            raise MelodyRangeError(
                f"{source}: pitches MIDI {min(pitches)}..{max(pitches)} are outside {MIN_PITCH}..{MAX_PITCH}"
            )
        shift = octave_shift_into_range(pitches)
    notes = [Note(p + shift, s, e - s) for s, e, p in kept]
    if not notes:
        return np.full(length, NO_EVENT, dtype=np.int64)
    return notes_to_classes(notes, length=length)
