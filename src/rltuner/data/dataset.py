"""Melody datasets: build one from the folk corpus and/or MIDI folders, save it as one versioned file, load it.

A dataset file is an ``.npz`` (read with ``allow_pickle=False``) holding, for the train and validation
splits, the flat int8 tokens of all melodies and int64 offsets (``offsets[i]:offsets[i+1]`` is melody ``i``),
plus the manifest as a JSON string. The same manifest is written beside it as ``<name>.manifest.json``.
The split is by tune (every piece of one ABC tune or MIDI file lands on the same side), deterministic in the
seed and the tune's content.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rltuner.config import field
from rltuner.data.midi_import import DROP_REASONS, Extraction, ExtractSettings, empty_extraction
from rltuner.encoding import (
    FIRST_NOTE_CLASS,
    MAX_PITCH,
    MIN_PITCH,
    NO_EVENT,
    NOTE_OFF,
    NUM_CLASSES,
    STEPS_PER_QUARTER,
)
from rltuner.errors import ConfigError, DatasetError, RLTunerError
from rltuner.fileio import atomic_path, ensure_writable_dir, write_json_atomic

FORMAT_VERSION = 1
FORMAT_NAME = "rltuner-melody-dataset"
DEFAULT_OUT = Path("data") / "melodies.npz"
FOLK = "folk"

ENCODING_DESCRIPTION = {
    "name": "rltuner-38",
    "num_classes": NUM_CLASSES,
    "note_off": NOTE_OFF,
    "no_event": NO_EVENT,
    "first_note_class": FIRST_NOTE_CLASS,
    "pitch_of_class": f"MIDI {MIN_PITCH - FIRST_NOTE_CLASS} + class ({MIN_PITCH}..{MAX_PITCH})",
    "steps_per_quarter": STEPS_PER_QUARTER,
    "key": "transposed to C major (major tunes) / A minor (minor tunes)",
    "dtype": "int8",
}

Int8Array = npt.NDArray[np.int8]


@dataclass(frozen=True)
class BuildConfig:
    """What a dataset is built from and how (``rltuner data build`` options)."""

    sources: tuple[str, ...] = field(
        (FOLK,), "'folk' (music21's folk collections) and/or paths of MIDI files or folders"
    )
    collections: tuple[str, ...] = field((), "folk collections to use (empty: all): essen,oneills,ryans,...")
    exclude: tuple[str, ...] = field((), "folk collections to leave out")
    seed: int = field(0, "seed of the train/validation split")
    valid_fraction: float = field(0.1, "fraction of tunes (not melodies) in the validation split")
    min_length: int = field(32, "shortest melody kept, in sixteenth steps")
    triplets: Literal["round", "drop"] = field(
        "round", "off-grid onsets (triplets): round to the grid or drop"
    )
    polyphony: Literal["top", "drop"] = field("top", "simultaneous notes: keep the highest, or drop the tune")
    split_rest_bars: float = field(2.0, "split a line at rests this many 4/4 bars long")
    jobs: int = field(0, "worker processes (0: one per CPU core); does not change the result")

    def validate(self) -> None:
        """Raise :class:`ConfigError` on a nonsense setting."""
        if not self.sources:
            raise ConfigError("give at least one source: 'folk' or a MIDI folder")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ConfigError(f"valid_fraction must be in [0, 1), not {self.valid_fraction}")
        if self.jobs < 0:
            raise ConfigError(f"jobs must be >= 0 (0 = all cores), not {self.jobs}")
        self.extract_settings().validate()
        from rltuner.limits import check_seed

        check_seed(self.seed)
        if self.collections and FOLK not in self.sources:
            raise ConfigError("--collections selects folk collections: add --source folk, or leave it out")
        if any(s == FOLK for s in self.sources):
            from rltuner.data.abc_corpus import resolve_collections

            resolve_collections(self.collections or None, self.exclude)

    def extract_settings(self) -> ExtractSettings:
        return ExtractSettings(
            triplets=self.triplets,
            polyphony=self.polyphony,
            min_length=self.min_length,
            split_rest_bars=self.split_rest_bars,
        )

    def settings_dict(self) -> dict[str, Any]:
        """Everything that changes the content (``jobs`` does not)."""
        data = asdict(self)
        data.pop("jobs")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}  # as JSON reads back

    def settings_hash(self) -> str:
        """Short hash of :meth:`settings_dict` (names the cached default dataset)."""
        text = json.dumps(self.settings_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class MelodyDataset:
    """Train and validation melodies and the manifest that says where they came from.

    Attributes:
        train: int8 arrays of classes 0..37, shape (T_i,), lengths vary.
        valid: the same for the validation split.
        manifest: format version, sources, counts, encoding, split, settings, content hash, build time.
    """

    train: list[Int8Array]
    valid: list[Int8Array]
    manifest: dict[str, Any]

    @property
    def num_steps(self) -> int:
        return sum(len(m) for m in self.train) + sum(len(m) for m in self.valid)

    def content_hash(self) -> str:
        return content_hash(self.train, self.valid)


@dataclass(frozen=True)
class BuildReport:
    """What a build read, kept and dropped (returned by :func:`build_dataset` and printed by the CLI)."""

    path: Path
    counts: dict[str, int]
    train_melodies: int
    valid_melodies: int
    steps: int
    seconds: float
    manifest: dict[str, Any]
    dropped: tuple[tuple[str, str, int], ...] = ()  # (MIDI file, reason, candidates) for each loss

    def write_dropped(self, path: str | os.PathLike[str]) -> Path:
        """Write which file lost how many candidates and why, as tab-separated ``file reason count`` lines."""
        lines = ["file\treason\tcandidates"] + [f"{f}\t{r}\t{n}" for f, r, n in self.dropped]
        from rltuner.fileio import write_text_atomic

        return write_text_atomic(path, "\n".join(lines) + "\n")

    @property
    def drops(self) -> dict[str, int]:
        return {r: self.counts.get(r, 0) for r in DROP_REASONS}

    def format(self) -> str:
        """A human-readable multi-line summary."""
        c = self.counts
        lines = [
            f"dataset: {self.path}",
            f"  files read        {c.get('files', 0):>10,}",
            f"  tunes/tracks read {c.get('tunes', 0):>10,}",
            f"  melodies kept     {c.get('kept', 0):>10,}  (train {self.train_melodies:,}, "
            f"valid {self.valid_melodies:,})",
            f"  total steps       {self.steps:>10,}  (sixteenths)",
            "  dropped:",
        ]
        lines += [f"    {reason:<15}{n:>10,}" for reason, n in self.drops.items()]
        notes = [("rounded_off_grid", "kept after rounding off-grid onsets (triplets)")]
        notes += [("chords_reduced", "kept after reducing chords to the top note")]
        notes += [
            ("key_signature_overruled", "melodies whose key signature the notes contradict (key estimated)")
        ]
        notes += [("drum_tracks", "drum tracks skipped"), ("cached", "MIDI files taken from the cache")]
        lines += [f"  {c[k]:,} {text}" for k, text in notes if c.get(k)]
        lines.append(f"  content hash {self.manifest['content_hash'][:16]}..., built in {self.seconds:.1f} s")
        return "\n".join(lines)


def content_hash(train: Sequence[Int8Array], valid: Sequence[Int8Array]) -> str:
    """sha256 of the tokens and melody boundaries of both splits."""
    h = hashlib.sha256()
    for split in (train, valid):
        tokens, offsets = _flatten(split)
        h.update(offsets.tobytes())
        h.update(tokens.tobytes())
    return h.hexdigest()


def _flatten(melodies: Sequence[Int8Array]) -> tuple[Int8Array, npt.NDArray[np.int64]]:
    lengths = np.fromiter((len(m) for m in melodies), dtype=np.int64, count=len(melodies))
    offsets = np.zeros(len(melodies) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    tokens = np.concatenate(melodies).astype(np.int8) if melodies else np.zeros(0, dtype=np.int8)
    return tokens, offsets


def _unflatten(tokens: Int8Array, offsets: npt.NDArray[np.int64]) -> list[Int8Array]:
    return [tokens[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def manifest_path(path: str | os.PathLike[str]) -> Path:
    """``data/melodies.npz`` -> ``data/melodies.manifest.json``."""
    p = Path(path)
    return p.with_name(p.stem + ".manifest.json")


def split_by_group(
    melodies: Sequence[Int8Array], groups: Sequence[int], valid_fraction: float, seed: int
) -> tuple[list[Int8Array], list[Int8Array]]:
    """Deterministic train/validation split that keeps each group (a tune's melodies) on one side.

    Each group gets a key, sha256(seed, its tokens); the ``round(fraction * groups)`` smallest keys (at least
    one when the fraction is positive and there are two groups or more) go to validation. The split therefore
    depends only on the seed and the content, not on the order of sources, and identical tunes share a side.

    Returns:
        ``(train, valid)``, each in the original order.
    """
    if sum(groups) != len(melodies):
        raise ValueError("groups must add up to the number of melodies")
    bounds = np.concatenate([[0], np.cumsum(groups)]).astype(int)
    keys = []
    for g in range(len(groups)):
        h = hashlib.sha256(str(seed).encode())
        for m in melodies[bounds[g] : bounds[g + 1]]:
            h.update(m.tobytes())
            h.update(b"|")
        keys.append(h.hexdigest())
    n_valid = round(valid_fraction * len(groups))
    if valid_fraction > 0 and len(groups) >= 2:
        n_valid = min(max(n_valid, 1), len(groups) - 1)
    chosen = set(sorted(range(len(groups)), key=lambda g: (keys[g], g))[:n_valid])
    train: list[Int8Array] = []
    valid: list[Int8Array] = []
    for g in range(len(groups)):
        (valid if g in chosen else train).extend(melodies[bounds[g] : bounds[g + 1]])
    return train, valid


def save_dataset(dataset: MelodyDataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` atomically to ``path`` (``.npz``) and its manifest beside it.

    Raises:
        RLTunerError: the folder cannot be written.
    """
    target = Path(path)
    train_tokens, train_offsets = _flatten(dataset.train)
    valid_tokens, valid_offsets = _flatten(dataset.valid)
    manifest_json = json.dumps(dataset.manifest, sort_keys=False)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        # savez on an open handle: given a name, numpy would append ".npz" to the temporary file's name.
        np.savez(
            fh,
            train_tokens=train_tokens,
            train_offsets=train_offsets,
            valid_tokens=valid_tokens,
            valid_offsets=valid_offsets,
            manifest=np.array(manifest_json),
        )
        _make_readable(tmp)
    write_json_atomic(manifest_path(target), dataset.manifest)
    _make_readable(manifest_path(target))
    return target


def _make_readable(path: Path) -> None:
    """Give the file the usual permissions (the temporary file behind an atomic write is private, 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def load_dataset(path: str | os.PathLike[str]) -> MelodyDataset:
    """Read a dataset file written by :func:`save_dataset`.

    Raises:
        DatasetError: the file is missing, corrupt, not a dataset, or of another format version.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset {p} does not exist (build one with: rltuner data build --out {p})")
    with p.open("rb") as fh:
        if fh.read(4) != b"PK\x03\x04":  # an .npz is a zip archive; anything else is not a dataset
            raise DatasetError(
                f"{p} is not a dataset file (expected an .npz written by `rltuner data build`)"
            )
    from rltuner.data.arrays import ArrayFileError, load_npz

    expected = {"manifest": "U", "train_offsets": "i", "valid_offsets": "i"}
    expected |= {"train_tokens": "i", "valid_tokens": "i"}
    try:  # headers (dtype, size) are checked before any array is allocated
        arrays = load_npz(p, expected)
    except ArrayFileError as exc:
        raise DatasetError(f"{p} is not a readable dataset file ({exc})") from None
    except OSError as exc:
        raise DatasetError(f"cannot read dataset {p}: {exc.strerror or exc}") from None
    try:
        manifest = json.loads(str(arrays["manifest"]))
    except json.JSONDecodeError:
        raise DatasetError(f"{p} has a corrupt manifest") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise DatasetError(f"{p} is not an rltuner melody dataset")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{p} has dataset format version {manifest.get('format_version')}, this rltuner reads version "
            f"{FORMAT_VERSION}; rebuild it with: rltuner data build"
        )
    splits = []
    for name in ("train", "valid"):
        tokens, offsets = arrays[f"{name}_tokens"], arrays[f"{name}_offsets"]
        ok = (
            tokens.dtype == np.int8
            and offsets.dtype == np.int64
            and offsets.ndim == 1
            and len(offsets) >= 1
            and offsets[0] == 0
            and offsets[-1] == len(tokens)
            and bool(np.all(np.diff(offsets) >= 0))
            and (tokens.size == 0 or (int(tokens.min()) >= 0 and int(tokens.max()) < NUM_CLASSES))
        )
        if not ok:
            raise DatasetError(f"{p} is corrupt: the {name} split's tokens or offsets are inconsistent")
        splits.append(_unflatten(tokens, offsets))
    _repair_sidecar(p, manifest)
    return MelodyDataset(train=splits[0], valid=splits[1], manifest=manifest)


def _repair_sidecar(path: Path, manifest: dict[str, Any]) -> None:
    """Rewrite ``<name>.manifest.json`` when it does not match the manifest inside the ``.npz``.

    The two files are renamed into place one after the other, so a build killed between the renames leaves a
    sidecar of another build; the copy inside the ``.npz`` is the authoritative one.
    """
    side = manifest_path(path)
    try:
        current = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        current = None
    if current != json.loads(json.dumps(manifest)):
        try:
            write_json_atomic(side, manifest)
            _make_readable(side)
        except (OSError, RLTunerError):
            pass  # a read-only folder: the dataset itself is fine


def _extract_source(
    source: str, config: BuildConfig, progress: bool
) -> tuple[Extraction, list[dict[str, Any]]]:
    settings = config.extract_settings()
    if source == FOLK:
        from rltuner.data.abc_corpus import build_folk_corpus

        return build_folk_corpus(
            config.collections or None, config.exclude, settings, jobs=config.jobs, progress=progress
        )
    from rltuner.data.midi_import import import_midi_folder

    result = import_midi_folder(source, settings, jobs=config.jobs, progress=progress)
    record = {
        "kind": "midi",
        "path": str(Path(source).resolve()),
        "files": int(result.counts.get("files", 0)),
        "licence": "the user's own files: their licence applies",
    }
    return result, [record]


def build_dataset(
    config: BuildConfig | None = None,
    out_path: str | os.PathLike[str] = DEFAULT_OUT,
    *,
    progress: bool = True,
) -> BuildReport:
    """Build a dataset from the configured sources and write it atomically to ``out_path``.

    An interrupted or failed build leaves an existing file at ``out_path`` untouched.

    Args:
        config: sources and settings (defaults: the whole folk corpus, seed 0, 10 % validation).
        out_path: the ``.npz`` to write (its manifest goes beside it).
        progress: show progress bars on stderr.

    Returns:
        The :class:`BuildReport` (counts, split sizes, steps, time, manifest).

    Raises:
        ConfigError: a bad setting or collection name.
        MidiReadError: a missing MIDI path or a folder without MIDI files.
        DatasetError: nothing usable in the sources.
        RLTunerError: the output folder is not writable.
    """
    config = config or BuildConfig()
    config.validate()
    out = Path(out_path)
    ensure_writable_dir(out.parent if str(out.parent) else ".")  # fail before the long work, not after
    began = time.perf_counter()
    total = empty_extraction()
    sources: list[dict[str, Any]] = []
    for source in dict.fromkeys(config.sources):
        result, records = _extract_source(source, config, progress)
        total.merge(result)
        sources.extend(records)
    counts = Counter({k: int(v) for k, v in total.counts.items()})
    if not total.melodies:
        drops = ", ".join(f"{r} {counts[r]}" for r in DROP_REASONS if counts[r]) or "nothing read"
        raise DatasetError(f"no usable melody in {', '.join(config.sources)} ({drops})")
    train, valid = split_by_group(total.melodies, total.groups, config.valid_fraction, config.seed)
    steps = sum(len(m) for m in total.melodies)
    seconds = time.perf_counter() - began
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "sources": sources,
        "counts": {
            "files": counts["files"],
            "tunes": counts["tunes"],
            "kept": counts["kept"],
            "train_melodies": len(train),
            "valid_melodies": len(valid),
            "steps": steps,
            "drops": {r: counts[r] for r in DROP_REASONS},
            "rounded_off_grid": counts["rounded_off_grid"],
            "chords_reduced": counts["chords_reduced"],
            "key_signature_overruled": counts["key_signature_overruled"],
        },
        "encoding": ENCODING_DESCRIPTION,
        "split": {"by": "tune", "seed": config.seed, "valid_fraction": config.valid_fraction},
        "settings": config.settings_dict(),
        "content_hash": content_hash(train, valid),
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "build_seconds": round(seconds, 2),
    }
    save_dataset(MelodyDataset(train, valid, manifest), out)
    return BuildReport(
        out, dict(counts), len(train), len(valid), steps, seconds, manifest, tuple(total.dropped)
    )


def cache_dir() -> Path:
    """``$RLTUNER_CACHE``, or ``~/.cache/rltuner``."""
    base = os.environ.get("RLTUNER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "rltuner")
    return Path(base)


# Bumped whenever the build's output changes for the same settings, so that cached datasets are rebuilt.
BUILD_VERSION = 3  # 3: read limits, key signatures checked against the notes, one-note melodies dropped


def default_dataset_path(config: BuildConfig | None = None) -> Path:
    """Where the default (folk) dataset for these settings is cached: ``<cache>/datasets/folk-b<N>-<hash>.npz``."""
    config = config or BuildConfig()
    return cache_dir() / "datasets" / f"folk-b{BUILD_VERSION}-{config.settings_hash()}.npz"


def load_default_dataset(config: BuildConfig | None = None, *, progress: bool = True) -> MelodyDataset:
    """The default folk dataset: built once into the cache (about 15-30 s), then loaded from there.

    A cached file that cannot be read (corrupt, older format) is rebuilt.
    """
    config = config or BuildConfig()
    path = default_dataset_path(config)
    if path.exists():
        try:
            return load_dataset(path)
        except DatasetError:
            pass
    build_dataset(config, path, progress=progress)
    return load_dataset(path)


def dataset_stats(dataset: MelodyDataset) -> dict[str, Any]:
    """Summary statistics of all melodies (both splits).

    Returns:
        ``melodies``, ``steps``, ``class_counts`` (38 ints), ``length`` (min/mean/median/max), ``notes``,
        ``interval_counts`` (semitones between consecutive note-ons -> count, as str keys for JSON) and
        ``pitch_range`` (lowest/highest class used).
    """
    melodies = dataset.train + dataset.valid
    tokens = np.concatenate(melodies).astype(np.int64) if melodies else np.zeros(0, np.int64)
    lengths = np.array([len(m) for m in melodies], dtype=np.int64)
    class_counts = np.bincount(tokens, minlength=NUM_CLASSES)
    intervals: Counter[int] = Counter()
    for m in melodies:
        onsets = m[m >= FIRST_NOTE_CLASS].astype(np.int64)
        intervals.update(np.diff(onsets).tolist())
    used = np.nonzero(class_counts[FIRST_NOTE_CLASS:])[0]
    return {
        "melodies": len(melodies),
        "train": len(dataset.train),
        "valid": len(dataset.valid),
        "steps": int(tokens.size),
        "notes": int(class_counts[FIRST_NOTE_CLASS:].sum()),
        "class_counts": class_counts.tolist(),
        "length": {
            "min": int(lengths.min()) if lengths.size else 0,
            "mean": float(lengths.mean()) if lengths.size else 0.0,
            "median": float(np.median(lengths)) if lengths.size else 0.0,
            "max": int(lengths.max()) if lengths.size else 0,
        },
        "interval_counts": {str(k): v for k, v in sorted(intervals.items())},
        "pitch_range": [int(used.min()) + FIRST_NOTE_CLASS, int(used.max()) + FIRST_NOTE_CLASS]
        if used.size
        else None,
    }
