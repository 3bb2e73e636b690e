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
    NUM_PITCHES,
    STEPS_PER_BAR,
    STEPS_PER_QUARTER,
    Note,
    normalize_notes,
    notes_to_classes,
)
from rltuner.errors import ConfigError, MelodyRangeError, MidiReadError, RLTunerError

# Why a melody candidate (a tune, a track or a segment of one) was not kept. The build report lists all.
DROP_REASONS = ("unparseable", "no_notes", "chords", "off_grid", "range", "too_short")
DROP_HELP = {
    "unparseable": "file or tune could not be parsed (corrupt, truncated, not MIDI/ABC)",
    "no_notes": "file, tune or track without a single note",
    "chords": "notes sounding together where the policy is to drop polyphonic tunes",
    "off_grid": "onsets off the sixteenth grid (triplets) where the triplet policy is 'drop'",
    "range": f"pitch range wider than the {NUM_PITCHES} semitones the encoding holds",
    "too_short": "shorter than the minimum length",
}
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
        if self.split_rest_bars <= 0:
            raise ConfigError(f"split_rest_bars must be positive, not {self.split_rest_bars}")

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

    def merge(self, other: Extraction) -> None:
        self.melodies.extend(other.melodies)
        self.counts.update(other.counts)
        self.groups.extend(other.groups)


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
    best: tuple[float, int, str] = (-2.0, 0, "major")
    for mode, profile in (("major", _KK_MAJOR), ("minor", _KK_MINOR)):
        for tonic in range(12):
            r = float(np.corrcoef(hist, np.roll(profile, tonic))[0, 1])
            if r > best[0] + 1e-12:
                best = (r, tonic, mode)
    return best[1], best[2]


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
) -> Extraction:
    """One line of notes (times in sixteenth steps, floats) -> encoded melodies.

    Args:
        starts, ends: note onsets and offsets in steps, shape (N,).
        pitches: MIDI pitches, shape (N,).
        settings: triplet and polyphony policies, minimum length, split rests.
        key: ``(tonic_pc, mode)`` from the key signature, or None to estimate it per segment.

    Returns:
        An :class:`Extraction` whose counts hold exactly one outcome per candidate melody (a segment).
    """
    out = empty_extraction()
    if len(pitches) == 0:
        out.counts["no_notes"] += 1
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
        seg_notes = [Note(n.pitch, n.start - offset, n.duration) for n in seg]
        if key is None:
            tonic, mode = estimate_key([n.pitch for n in seg_notes], [n.duration for n in seg_notes])
        else:
            tonic, mode = key
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


def score_to_melodies(score: Any, settings: ExtractSettings, *, first_track_only: bool = False) -> Extraction:
    """A ``symusic.Score`` (any time unit) -> melodies from each non-drum track.

    Args:
        score: the parsed score.
        settings: extraction settings.
        first_track_only: keep only the first track with notes (ABC: the first voice is the tune).

    Returns:
        An :class:`Extraction`; ``counts["tunes"]`` is the number of tracks looked at.
    """
    score = score.to("tick")
    tpq = float(score.ticks_per_quarter)
    key = None
    if len(score.key_signatures):
        ks = score.key_signatures[0]
        key = key_signature_tonic(int(ks.key), bool(ks.tonality))
    out = empty_extraction()
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
        result = track_to_melodies(starts, ends, arrays["pitch"].astype(np.int64), settings, key)
        out.merge(result)
    out.groups = [len(out.melodies)] if out.melodies else []  # one score = one tune or file
    return out


def midi_file_to_melodies(path: str | os.PathLike[str], settings: ExtractSettings) -> Extraction:
    """Read one MIDI file and extract its melodies; a bad file is counted (``unparseable``), not raised.

    Returns:
        An :class:`Extraction` with ``counts["files"] == 1``.
    """
    import symusic

    out = empty_extraction()
    out.counts["files"] += 1
    try:
        data = Path(path).read_bytes()
        if data[:4] != b"MThd":
            raise MidiReadError("not a standard MIDI file (no MThd header)")
        score: Any = symusic.Score.from_midi(data)
    except Exception:  # symusic raises plain RuntimeError/ValueError on bad data
        out.counts["tunes"] += 1
        out.counts["unparseable"] += 1
        return out
    if sum(len(t.notes) for t in score.tracks) == 0:
        out.counts["tunes"] += 1
        out.counts["no_notes"] += 1
        return out
    out.merge(score_to_melodies(score, settings))
    return out


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


def _settings_digest(settings: ExtractSettings) -> str:
    return hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest()[:16]


def _load_cache(path: Path) -> dict[str, Extraction]:
    """The per-file results of an earlier run, or nothing if the cache is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            index = json.loads(str(npz["index"]))
            tokens = npz["tokens"]
            offsets = npz["offsets"]
    except (OSError, ValueError, KeyError):
        return {}
    entries: dict[str, Extraction] = {}
    for key, first, last, counts in index:
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


def _extract_one(args: tuple[str, ExtractSettings]) -> Extraction:
    return midi_file_to_melodies(args[0], args[1])


def import_midi_folder(
    folder: str | os.PathLike[str],
    settings: ExtractSettings | None = None,
    *,
    jobs: int = 0,
    use_cache: bool = True,
    progress: bool = True,
) -> Extraction:
    """Extract melodies from every MIDI file under ``folder`` (or one file).

    Args:
        folder: a folder (searched recursively for ``.mid``/``.midi``) or one MIDI file.
        settings: extraction settings (defaults when None).
        jobs: worker processes; 0 = one per CPU core, 1 = in this process.
        use_cache: reuse results of unchanged files from ``$RLTUNER_CACHE/midi`` and store new ones.
        progress: show a tqdm progress bar on stderr.

    Returns:
        All melodies (in file order) and the summed counts; ``counts["cached"]`` files came from the cache.

    Raises:
        MidiReadError: missing path or no MIDI file in the folder.
    """
    settings = settings or ExtractSettings()
    settings.validate()
    files = find_midi_files(folder)
    cache_path = _cache_folder() / (
        hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]
        + f"-{_settings_digest(settings)}.npz"
    )
    cached = _load_cache(cache_path) if use_cache else {}
    keys = [_file_key(p) for p in files]
    todo = [(str(p), k) for p, k in zip(files, keys, strict=True) if k not in cached]
    fresh: dict[str, Extraction] = {}
    try:
        for key, result in zip(
            (k for _, k in todo),
            parallel_map(_extract_one, [(p, settings) for p, _ in todo], jobs, progress, "files"),
            strict=False,
        ):
            fresh[key] = result
    finally:
        if use_cache and fresh:  # Ctrl-C keeps what is done for the next run
            _save_cache(cache_path, {k: v for k in keys if (v := fresh.get(k) or cached.get(k)) is not None})
    total = empty_extraction()
    for key in keys:
        total.merge(fresh[key] if key in fresh else cached[key])
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
        try:
            for i, result in enumerate(pool.map(fn, items, chunksize=chunksize)):
                bar.update(weights[i])
                yield result
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    finally:
        bar.close()
