"""Any MIDI file or folder -> monophonic melodies on the 38-class grid.

Each non-drum track becomes one monophonic line (the highest sounding note wins where notes overlap), is
quantized to sixteenths in the file's own beats (ticks per quarter, so tempo changes do not move the grid),
split at long silences, transposed to C major / A minor (by the key signature when the file has one, by a
Krumhansl-Kessler key estimate otherwise), shifted by whole octaves into MIDI 48..83 and encoded.

The quantizer here (:func:`track_to_melodies`) is shared with the ABC corpus, which is parsed through
abc2midi and so arrives as MIDI too. Large folders run over a process pool with a progress bar, and a cache
keyed by each file's path, size, modification time and the settings makes an unchanged re-run instant.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import signal
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rltuner.config import field
from rltuner.encoding import (
    NUM_CLASSES,
    NUM_PITCHES,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    Note,
    normalize_notes,
    notes_to_classes,
)
from rltuner.errors import ConfigError, MelodyRangeError, MidiReadError, ReadTimeoutError, RLTunerError
from rltuner.limits import DEFAULT as LIMITS
from rltuner.limits import ReadLimits, time_limit

# Why a melody candidate (a tune, a track or a segment of one) was not kept. The build report lists all.
DROP_REASONS = (
    "unparseable", "no_notes", "chords", "off_grid", "range", "too_short", "too_long", "limit", "timeout",
)  # fmt: skip
DROP_HELP = {
    "unparseable": "file or tune could not be parsed (corrupt, truncated, not MIDI/ABC)",
    "no_notes": "file, tune or track without a single note",
    "chords": "notes sounding together where the policy is to drop polyphonic tunes",
    "off_grid": "onsets off the sixteenth grid (triplets) where the triplet policy is 'drop'",
    "range": f"pitch range wider than the {NUM_PITCHES} semitones the encoding holds",
    "too_short": "shorter than the minimum length",
    "too_long": "a note or a melody longer than the limits (max_note_steps, max_melody_steps)",
    "limit": "a file beyond a read limit (size, ticks per quarter, tracks, notes; rltuner.limits)",
    "timeout": "a file that took longer than the per-file time limit (max_file_seconds)",
}
# Share of note time (in points) by which a key signature may trail the best-fitting diatonic set before
# the key is estimated from the notes instead (a signature contradicted by the notes, counted).
KEY_SIGNATURE_SLACK = 0.15
MIDI_SUFFIXES = (".mid", ".midi")

# An onset further than this from the nearest sixteenth (in steps) is off the grid. abc2midi puts notes one
# tick late (1/120 step at 480 ticks per quarter); triplets sit a third of a step away.
GRID_TOLERANCE = 0.1

# Krumhansl & Kessler (1982) key profiles: probe-tone ratings of the 12 pitch classes above the tonic.
_KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
_KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])

Int8Array = npt.NDArray[np.int8]


@dataclass(frozen=True)
class ExtractSettings:
    """How notes become melodies; shared by the ABC corpus and MIDI import."""

    triplets: Literal["round", "drop"] = field(
        "round", "onsets off the 16th grid (triplets): 'round' to the nearest step, or 'drop' the tune"
    )
    polyphony: Literal["top", "drop"] = field(
        "top", "notes sounding together: keep the 'top' (highest) note, or 'drop' the tune/track"
    )
    min_length: int = field(32, "shortest melody kept, in sixteenth steps (32 = two 4/4 bars)")
    split_rest_bars: float = field(2.0, "split a line into separate melodies at rests of this many bars")

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense setting."""
        if self.triplets not in ("round", "drop"):
            raise ConfigError(f"triplets must be 'round' or 'drop', not {self.triplets!r}")
        if self.polyphony not in ("top", "drop"):
            raise ConfigError(f"polyphony must be 'top' or 'drop', not {self.polyphony!r}")
        if self.min_length < 1:
            raise ConfigError(f"min_length must be at least 1 step, not {self.min_length}")
        if not 0 < self.split_rest_bars <= 4096:  # also refuses NaN and infinity
            raise ConfigError(f"split_rest_bars must be in (0, 4096], not {self.split_rest_bars}")
        if self.min_length > LIMITS.max_melody_steps:
            raise ConfigError(
                f"min_length must be at most {LIMITS.max_melody_steps:,} (max_melody_steps), not "
                f"{self.min_length:,}"
            )

    @property
    def split_rest_steps(self) -> int:
        return max(1, round(self.split_rest_bars * STEPS_PER_BAR))


@dataclass
class Extraction:
    """Melodies taken from one source unit, and what happened to the rest.

    Attributes:
        melodies: int8 class arrays of shape (T_i,).
        groups: how many consecutive melodies came from each source unit (an ABC tune, a MIDI file), so a
            train/validation split can keep a tune's pieces together; sums to ``len(melodies)``.
        counts: ``tunes`` (candidates read), ``kept``, one entry per drop reason, and notes such as
            ``rounded_off_grid`` (tunes kept after rounding triplets) or ``chords_reduced``.
    """

    melodies: list[Int8Array]
    counts: Counter[str]
    groups: list[int]
    dropped: list[tuple[str, str, int]] = dataclasses.field(default_factory=list)
    """(source file, drop reason, candidates) for every file that lost a candidate: the build's --report."""

    def merge(self, other: Extraction) -> None:
        self.melodies.extend(other.melodies)
        self.counts.update(other.counts)
        self.groups.extend(other.groups)
        self.dropped.extend(other.dropped)


def empty_extraction() -> Extraction:
    return Extraction([], Counter(), [])


def estimate_key(pitches: Sequence[int], durations: Sequence[float] | None = None) -> tuple[int, str]:
    """Estimate the key of notes by Krumhansl-Kessler profile correlation.

    The duration-weighted pitch-class histogram is correlated (Pearson) with the major and minor profile
    rotated to each of the 12 tonics; the best of the 24 wins (ties: the first, C major before C# major ...).

    Args:
        pitches: MIDI pitches.
        durations: weights (e.g. lengths in steps); all 1 when omitted.

    Returns:
        ``(tonic_pitch_class, "major" | "minor")``; ``(0, "major")`` for no notes.
    """
    if len(pitches) == 0:
        return 0, "major"
    weights = np.ones(len(pitches)) if durations is None else np.asarray(durations, dtype=np.float64)
    hist = np.bincount(np.asarray(pitches, dtype=np.int64) % 12, weights=weights, minlength=12)
    if np.ptp(hist) == 0:
        return 0, "major"
    centred = hist - hist.mean()
    r = _PROFILES_STD @ centred / np.sqrt(centred @ centred)  # (24,) Pearson correlations
    best = int(np.argmax(r > r.max() - 1e-12))  # ties: the first (C major before C# major ...)
    return best % 12, "major" if best < 12 else "minor"


def _standardised_profiles() -> npt.NDArray[np.float64]:
    """(24, 12): the major then the minor profile rotated to each tonic, centred and of unit norm."""
    rows = [np.roll(p, t) for p in (_KK_MAJOR, _KK_MINOR) for t in range(12)]
    mat = np.array(rows) - np.array(rows).mean(axis=1, keepdims=True)
    return np.asarray(mat / np.linalg.norm(mat, axis=1, keepdims=True))


_PROFILES_STD = _standardised_profiles()
_DIATONIC = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=np.float64)  # C major's pitch classes


def in_key_share(pitches: Sequence[int], durations: Sequence[float], tonic: int, mode: str) -> float:
    """Share of note time on the diatonic scale of ``(tonic, mode)`` (0..1)."""
    hist = np.bincount(np.asarray(pitches, dtype=np.int64) % 12, weights=durations, minlength=12)
    major_tonic = tonic if mode == "major" else (tonic + 3) % 12
    total = hist.sum()
    return float(np.roll(_DIATONIC, major_tonic) @ hist / total) if total else 1.0


def best_in_key_share(pitches: Sequence[int], durations: Sequence[float]) -> float:
    """The largest :func:`in_key_share` over the 12 diatonic sets (the best transposition)."""
    hist = np.bincount(np.asarray(pitches, dtype=np.int64) % 12, weights=durations, minlength=12)
    total = hist.sum()
    if not total:
        return 1.0
    return float(max(np.roll(_DIATONIC, t) @ hist for t in range(12)) / total)


def key_signature_tonic(sharps: int, minor: bool) -> tuple[int, str]:
    """Tonic pitch class and mode of a key signature (``sharps`` < 0 counts flats)."""
    major_tonic = (7 * sharps) % 12
    return ((major_tonic + 9) % 12, "minor") if minor else (major_tonic, "major")


def _quantize(
    starts: npt.NDArray[np.float64], ends: npt.NDArray[np.float64], pitches: npt.NDArray[np.int64]
) -> tuple[list[Note], bool, bool]:
    """Notes in (float) steps -> monophonic grid notes; also whether onsets were off-grid / polyphonic.

    Notes whose onsets lie within :data:`GRID_TOLERANCE` of the previous one form a chord (abc2midi strums
    chords, 1/12 step apart) placed at its first onset; its highest note is kept. Otherwise where notes
    overlap the highest sounding one wins: a note that starts under a higher note still sounding is
    dropped, a higher note cuts a lower one. Two notes that round onto the same step (triplets) keep the
    earlier.
    """
    order = np.lexsort((-pitches, starts))  # by onset, then highest first
    notes: list[Note] = []
    off_grid = polyphonic = False
    member_raw = -np.inf  # raw onset of the latest note of the current chord group
    group_start = 0  # grid step of the current chord group
    last_group = -1  # group of notes[-1]
    group = -1
    sounding_until = -np.inf  # raw end of every note so far
    for i in order.tolist():
        raw, pitch = float(starts[i]), int(pitches[i])
        if raw - member_raw <= GRID_TOLERANCE:
            polyphonic = True  # another note of the same chord
        else:
            group += 1
            group_start = int(np.rint(raw))
            off_grid |= abs(raw - group_start) > GRID_TOLERANCE
            polyphonic |= raw < sounding_until - GRID_TOLERANCE
        member_raw = raw
        sounding_until = max(sounding_until, float(ends[i]))
        note = Note(pitch, group_start, max(group_start + 1, int(np.rint(ends[i]))) - group_start)
        if notes and notes[-1].start == group_start:
            if last_group == group and pitch > notes[-1].pitch:
                notes[-1] = note  # a higher chord tone
            continue  # a lower chord tone, or a triplet note rounded onto an occupied step
        if notes and group_start < notes[-1].end and pitch < notes[-1].pitch:
            continue  # starts under a higher note that is still sounding
        notes.append(note)
        last_group = group
    return notes, off_grid, polyphonic


def _split_at_rests(notes: list[Note], min_rest: int) -> list[list[Note]]:
    """Cut a line wherever the silence between two notes lasts ``min_rest`` steps or more."""
    segments: list[list[Note]] = []
    current: list[Note] = []
    end = 0  # where the current segment's sound stops
    for note in notes:
        if current and note.start - end >= min_rest:
            segments.append(current)
            current = []
        end = max(end, note.end) if current else note.end
        current.append(note)
    if current:
        segments.append(current)
    return segments


def track_to_melodies(
    starts: npt.NDArray[np.float64],
    ends: npt.NDArray[np.float64],
    pitches: npt.NDArray[np.int64],
    settings: ExtractSettings,
    key: tuple[int, str] | None,
    limits: ReadLimits = LIMITS,
) -> Extraction:
    """One line of notes (times in sixteenth steps, floats) -> encoded melodies.

    Args:
        starts, ends: note onsets and offsets in steps, shape (N,).
        pitches: MIDI pitches, shape (N,).
        settings: triplet and polyphony policies, minimum length, split rests.
        key: ``(tonic_pc, mode)`` from the key signature, or None to estimate it per segment. A signature
            whose scale holds more than :data:`KEY_SIGNATURE_SLACK` less of a segment's note time than the
            best-fitting scale is overruled by the estimate (counted as ``key_signature_overruled``).
        limits: a line with a note longer than ``max_note_steps`` is dropped (``too_long``), and so is a
            segment spanning more than ``max_melody_steps``; both are checked before encoding.

    Returns:
        An :class:`Extraction` whose counts hold exactly one outcome per candidate melody (a segment).
    """
    out = empty_extraction()
    if len(pitches) == 0:
        out.counts["no_notes"] += 1
        return out
    if float(np.max(ends - starts)) > limits.max_note_steps:
        out.counts["too_long"] += 1
        return out
    notes, off_grid, polyphonic = _quantize(starts, ends, pitches)
    if polyphonic and settings.polyphony == "drop":
        out.counts["chords"] += 1
        return out
    if off_grid and settings.triplets == "drop":
        out.counts["off_grid"] += 1
        return out
    segments = _split_at_rests(notes, settings.split_rest_steps)
    for seg in segments:
        offset = seg[0].start  # a melody begins with its first note
        span = max(n.end for n in seg) - offset  # the encoded length, known before encoding
        if span > limits.max_melody_steps:
            out.counts["too_long"] += 1
            continue
        if span < settings.min_length or len(seg) < 2:  # one held note is not a melody, however long
            out.counts["too_short"] += 1
            continue
        seg_notes = [Note(n.pitch, n.start - offset, n.duration) for n in seg]
        seg_pitches, seg_durations = [n.pitch for n in seg_notes], [n.duration for n in seg_notes]
        if key is None:
            tonic, mode = estimate_key(seg_pitches, seg_durations)
        else:
            tonic, mode = key
            signed = in_key_share(seg_pitches, seg_durations, tonic, mode)
            if signed < best_in_key_share(seg_pitches, seg_durations) - KEY_SIGNATURE_SLACK:
                tonic, mode = estimate_key(seg_pitches, seg_durations)
                out.counts["key_signature_overruled"] += 1
        try:
            moved = normalize_notes(seg_notes, tonic, "minor" if mode == "minor" else "major")
        except MelodyRangeError:
            out.counts["range"] += 1
            continue
        classes = notes_to_classes(moved)
        if len(classes) < settings.min_length:
            out.counts["too_short"] += 1
            continue
        out.melodies.append(classes.astype(np.int8))
        out.counts["kept"] += 1
        if off_grid:
            out.counts["rounded_off_grid"] += 1
        if polyphonic:
            out.counts["chords_reduced"] += 1
    return out


def score_to_melodies(
    score: Any, settings: ExtractSettings, *, first_track_only: bool = False, limits: ReadLimits = LIMITS
) -> Extraction:
    """A ``symusic.Score`` (any time unit) -> melodies from each non-drum track.

    Args:
        score: the parsed score.
        settings: extraction settings.
        first_track_only: keep only the first track with notes (ABC: the first voice is the tune).
        limits: a score with no valid time division is ``unparseable``; one beyond ``max_ticks_per_quarter``,
            ``max_tracks`` or ``max_notes`` is dropped as ``limit`` (before any per-track work).

    Returns:
        An :class:`Extraction`; ``counts["tunes"]`` is the number of tracks looked at.
    """
    score = score.to("tick")
    tpq = float(score.ticks_per_quarter)
    out = empty_extraction()
    if not 0 < tpq <= limits.max_ticks_per_quarter or len(score.tracks) > limits.max_tracks:
        out.counts["tunes"] += 1
        out.counts["unparseable" if tpq <= 0 else "limit"] += 1
        return out
    if sum(len(t.notes) for t in score.tracks) > limits.max_notes:
        out.counts["tunes"] += 1
        out.counts["limit"] += 1
        return out
    key = None
    if len(score.key_signatures):
        ks = score.key_signatures[0]
        key = key_signature_tonic(int(ks.key), bool(ks.tonality))
    tracks = [t for t in score.tracks if not t.is_drum]
    out.counts["drum_tracks"] += len(score.tracks) - len(tracks)
    if first_track_only:
        tracks = [t for t in tracks if len(t.notes)][:1] or tracks[:1]
    if not tracks:
        out.counts["tunes"] += 1
        out.counts["no_notes"] += 1
        return out
    for track in tracks:
        out.counts["tunes"] += 1
        arrays = track.notes.numpy()  # dict of (N,) arrays: time, duration, pitch, velocity
        starts = arrays["time"].astype(np.float64) * STEPS_PER_QUARTER / tpq
        ends = starts + arrays["duration"].astype(np.float64) * STEPS_PER_QUARTER / tpq
        result = track_to_melodies(starts, ends, arrays["pitch"].astype(np.int64), settings, key, limits)
        out.merge(result)
    out.groups = [len(out.melodies)] if out.melodies else []  # one score = one tune or file
    return out


def midi_file_to_melodies(
    path: str | os.PathLike[str], settings: ExtractSettings, limits: ReadLimits = LIMITS
) -> Extraction:
    """Read one MIDI file and extract its melodies; a bad file is counted, never raised.

    The header is checked before the file is parsed: a file larger than ``limits.max_file_bytes``, with more
    than ``max_tracks`` tracks or a time division beyond ``max_ticks_per_quarter`` is dropped as ``limit``; a
    time division of 0 or in SMPTE frames, like any corrupt file, is ``unparseable``.

    Returns:
        An :class:`Extraction` with ``counts["files"] == 1`` and one outcome per candidate melody.
    """
    import symusic

    out = empty_extraction()
    out.counts["files"] += 1
    out.counts["tunes"] += 1  # the file itself, until it turns out to hold tracks
    try:
        if Path(path).stat().st_size > limits.max_file_bytes:
            out.counts["limit"] += 1
            return out
        data = Path(path).read_bytes()
    except OSError:
        out.counts["unparseable"] += 1
        return out
    problem = midi_header_problem(data, limits)
    if problem is not None:
        out.counts[problem] += 1
        return out
    try:
        score: Any = symusic.Score.from_midi(data)
    except Exception:  # symusic raises plain RuntimeError/ValueError on bad data
        out.counts["unparseable"] += 1
        return out
    if sum(len(t.notes) for t in score.tracks) == 0:
        out.counts["no_notes"] += 1
        return out
    out.counts["tunes"] -= 1
    out.merge(score_to_melodies(score, settings, limits=limits))
    return out


def midi_header_problem(data: bytes, limits: ReadLimits = LIMITS) -> str | None:
    """Why a MIDI file's bytes should not be parsed (``"unparseable"`` or ``"limit"``), or None.

    Reads only the 14-byte header chunk: ``MThd``, its length, format, track count and time division.
    """
    if len(data) < 14 or data[:4] != b"MThd" or int.from_bytes(data[4:8], "big") < 6:
        return "unparseable"
    fmt, tracks, division = (int.from_bytes(data[i : i + 2], "big") for i in (8, 10, 12))
    if fmt > 2 or division == 0 or division & 0x8000:  # no time division, or SMPTE frames
        return "unparseable"
    if tracks == 0 or b"MTrk" not in data[14:]:  # a header alone holds no music at all
        return "unparseable"
    if tracks > limits.max_tracks or division > limits.max_ticks_per_quarter:
        return "limit"
    return None


def find_midi_files(folder: str | os.PathLike[str]) -> list[Path]:
    """Every ``.mid``/``.midi`` file under ``folder`` (recursive, sorted); a single file is returned as is.

    Raises:
        MidiReadError: the path does not exist, or a folder holds no MIDI file.
    """
    root = Path(folder)
    if not root.exists():
        raise MidiReadError(f"MIDI source {root} does not exist")
    if root.is_file():
        return [root]
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in MIDI_SUFFIXES and p.is_file())
    if not files:
        raise MidiReadError(f"no .mid or .midi files under {root}")
    return files


def _cache_folder() -> Path:
    base = os.environ.get("RLTUNER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rltuner")
    return Path(base) / "midi"


def _file_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"


# Bumped when the importer's output changes for the same settings, so that older caches are not reused.
_CACHE_VERSION = 2  # 2: read limits, key signatures checked against the notes, one-note melodies dropped


def _settings_digest(settings: ExtractSettings, limits: ReadLimits = LIMITS) -> str:
    text = json.dumps([_CACHE_VERSION, asdict(settings), asdict(limits)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _load_cache(path: Path) -> dict[str, Extraction]:
    """The per-file results of an earlier run, or nothing if the cache is missing or fails verification.

    Every part is checked (array headers, dtypes, offsets, the index's structure and ranges, the counts), so a
    truncated or tampered cache costs one re-parse of the folder and is then rewritten, never a crash.
    """
    from rltuner.data.arrays import ArrayFileError, load_npz

    if not path.is_file():
        return {}
    try:
        arrays = load_npz(path, {"index": "U", "tokens": "i", "offsets": "i"})
        index = json.loads(str(arrays["index"]))
        return _cache_entries(index, arrays["tokens"], arrays["offsets"])
    except (OSError, ArrayFileError, ValueError, TypeError, KeyError):
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # rebuilt from the files on this run (or overwritten then)
        return {}


def _cache_entries(index: Any, tokens: Int8Array, offsets: npt.NDArray[np.int64]) -> dict[str, Extraction]:
    """Check a cache's parts against each other; raise ValueError where they disagree."""
    if tokens.dtype != np.int8 or tokens.ndim != 1 or offsets.dtype != np.int64 or offsets.ndim != 1:
        raise ValueError("cache arrays of the wrong dtype or shape")
    n = len(offsets) - 1
    if n < 0 or offsets[0] != 0 or offsets[-1] != len(tokens) or np.any(np.diff(offsets) < 0):
        raise ValueError("cache offsets inconsistent")
    if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= NUM_CLASSES):
        raise ValueError("cache tokens out of range")
    if not isinstance(index, list):
        raise ValueError("cache index is not a list")
    entries: dict[str, Extraction] = {}
    for item in index:
        key, first, last, counts = item  # ValueError/TypeError when malformed
        ok = (
            isinstance(key, str)
            and isinstance(first, int)
            and isinstance(last, int)
            and 0 <= first <= last <= n
        )
        if not ok or not isinstance(counts, dict):
            raise ValueError("cache index entry malformed")
        if not all(isinstance(k, str) and isinstance(v, int) and v >= 0 for k, v in counts.items()):
            raise ValueError("cache counts malformed")
        melodies = [tokens[offsets[i] : offsets[i + 1]] for i in range(first, last)]
        entries[key] = Extraction(melodies, Counter(counts), [len(melodies)] if melodies else [])
    return entries


def _save_cache(path: Path, entries: dict[str, Extraction]) -> None:
    from rltuner.fileio import atomic_path

    index: list[tuple[str, int, int, dict[str, int]]] = []
    chunks: list[Int8Array] = []
    for key, ext in entries.items():
        index.append((key, len(chunks), len(chunks) + len(ext.melodies), dict(ext.counts)))
        chunks.extend(ext.melodies)
    lengths = np.array([len(c) for c in chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate(chunks).astype(np.int8) if chunks else np.zeros(0, np.int8)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, index=np.array(json.dumps(index)), tokens=tokens, offsets=offsets)
    except (OSError, RLTunerError):
        pass  # a cache that cannot be written only costs time on the next run


def _extract_one(args: tuple[str, ExtractSettings, ReadLimits]) -> Extraction:
    """One file under the per-file time limit; running past it counts the file as ``timeout``."""
    path, settings, limits = args
    try:
        with time_limit(limits.max_file_seconds):
            return midi_file_to_melodies(path, settings, limits)
    except ReadTimeoutError:
        out = empty_extraction()
        out.counts.update({"files": 1, "tunes": 1, "timeout": 1})
        return out


def import_midi_folder(
    folder: str | os.PathLike[str],
    settings: ExtractSettings | None = None,
    *,
    jobs: int = 0,
    use_cache: bool = True,
    progress: bool = True,
    limits: ReadLimits | None = None,
) -> Extraction:
    """Extract melodies from every MIDI file under ``folder`` (or one file).

    Args:
        folder: a folder (searched recursively for ``.mid``/``.midi``) or one MIDI file.
        settings: extraction settings (defaults when None).
        jobs: worker processes; 0 = one per CPU core, 1 = in this process.
        use_cache: reuse results of unchanged files from ``$RLTUNER_CACHE/midi`` and store new ones.
        progress: show a tqdm progress bar on stderr.
        limits: read limits (default ``rltuner.limits.DEFAULT``); part of the cache key.

    Returns:
        All melodies (in file order) and the summed counts; ``counts["cached"]`` files came from the cache.

    Raises:
        MidiReadError: missing path or no MIDI file in the folder.
    """
    settings = settings or ExtractSettings()
    settings.validate()
    limits = limits or LIMITS
    limits.validate()
    files = find_midi_files(folder)
    cache_path = _cache_folder() / (
        hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]
        + f"-{_settings_digest(settings, limits)}.npz"
    )
    cached = _load_cache(cache_path) if use_cache else {}
    keys = [_file_key(p) for p in files]
    todo = [(str(p), k) for p, k in zip(files, keys, strict=True) if k not in cached]
    fresh: dict[str, Extraction] = {}
    try:
        for key, result in zip(
            (k for _, k in todo),
            parallel_map(_extract_one, [(p, settings, limits) for p, _ in todo], jobs, progress, "files"),
            strict=False,
        ):
            fresh[key] = result
    finally:
        if use_cache and fresh:  # Ctrl-C keeps what is done for the next run
            _save_cache(cache_path, {k: v for k in keys if (v := fresh.get(k) or cached.get(k)) is not None})
    total = empty_extraction()
    for path, key in zip(files, keys, strict=True):
        result = fresh[key] if key in fresh else cached[key]
        total.merge(result)
        total.dropped.extend((str(path), r, result.counts[r]) for r in DROP_REASONS if result.counts.get(r))
    total.counts["cached"] += len(keys) - len(todo)
    return total


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def parallel_map(
    fn: Callable[[Any], Extraction],
    items: Sequence[Any],
    jobs: int,
    progress: bool,
    unit: str,
    *,
    sizes: Sequence[int] | None = None,
    chunksize: int | None = None,
) -> Iterator[Extraction]:
    """``map(fn, items)`` in order, over a process pool when ``jobs != 1``, with a tqdm bar on stderr.

    Args:
        fn: a picklable top-level function.
        items: its arguments.
        jobs: worker processes; 0 = one per CPU core.
        progress: show the bar.
        unit: what the bar counts (e.g. "tunes").
        sizes: how many units each item holds (default 1 each).
        chunksize: items per pool task (default: about 4 tasks per worker, at most 64 items).
    """
    from tqdm import tqdm

    workers = (os.cpu_count() or 1) if jobs <= 0 else jobs
    weights = list(sizes) if sizes is not None else [1] * len(items)
    bar = tqdm(
        total=sum(weights), unit=unit, disable=not progress or not items, leave=False, dynamic_ncols=True
    )
    try:
        if workers == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                result = fn(item)
                bar.update(weights[i])
                yield result
            return
        if chunksize is None:
            chunksize = max(1, min(64, len(items) // (4 * workers)))
        # Workers ignore Ctrl-C (no traceback from each of them); the parent stops and cancels what is queued.
        pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), initializer=_ignore_sigint)
        finished = False
        try:
            for i, result in enumerate(pool.map(fn, items, chunksize=chunksize)):
                bar.update(weights[i])
                yield result
            finished = True
        finally:
            # After a complete run, wait for the workers to exit: leaving them to the interpreter's shutdown
            # raced with it ("Exception ignored in threading._shutdown ... Bad file descriptor"). On Ctrl-C
            # or an error, cancel what is queued and return at once.
            pool.shutdown(wait=finished, cancel_futures=True)
    finally:
        bar.close()
