"""Melody -> audio (WAV) with a real instrument sound.

The SoundFont route: ``tinysoundfont`` (a small SoundFont synthesizer from PyPI, installed with ``--no-deps``
because its PyAudio dependency is only for live playback) plays the General MIDI SoundFont that ships inside
``pretty_midi`` (``TimGM6mb.sf2``). Nothing is downloaded. Where either is missing, a plain additive synth
(numpy) renders the melody instead and a :class:`UserWarning` says so.

The audio lasts exactly the melody (``T`` steps of a sixteenth at ``tempo``) plus a release ``tail`` (default
0.5 s) so the last note decays instead of being cut; the level is normalised to a peak of -1 dBFS.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import os
import warnings
import wave
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from rltuner.data.midi_io import (
    DEFAULT_TEMPO,
    DEFAULT_VELOCITY,
    MelodiesLike,
    as_melody_list,
    check_output_options,
    melody_to_notes,
    numbered_paths,
)
from rltuner.encoding import STEPS_PER_QUARTER, Note, validate_classes
from rltuner.errors import ConfigError, InputLimitError
from rltuner.fileio import atomic_path

DEFAULT_SAMPLE_RATE = 44100
DEFAULT_TAIL = 0.5  # seconds of release after the last step
PEAK_DBFS = -1.0
SOUNDFONT_NAME = "TimGM6mb.sf2"

PathLike = str | os.PathLike[str]
MelodyLike = Sequence[int] | npt.NDArray[np.integer]


def step_seconds(tempo: float) -> float:
    """Length of one step (a sixteenth) in seconds at ``tempo`` quarter notes per minute."""
    return 60.0 / tempo / STEPS_PER_QUARTER


def soundfont_path() -> Path | None:
    """The General MIDI SoundFont shipped inside ``pretty_midi``, or None where it is not installed."""
    spec = importlib.util.find_spec("pretty_midi")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / SOUNDFONT_NAME
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=2)
def _soundfont_bytes(path: str) -> bytes:
    # Read once per process: the file is ~6 MB and each render builds a fresh synth from these bytes.
    return Path(path).read_bytes()


def _render_soundfont(
    notes: list[Note], n_samples: int, spb: float, program: int, velocity: int, sample_rate: int
) -> npt.NDArray[np.float32] | None:
    """Render through tinysoundfont; None where it or the SoundFont is unavailable (caller falls back)."""
    try:
        import tinysoundfont
    except ImportError:
        return None
    sf_path = soundfont_path()
    if sf_path is None:
        return None
    synth = tinysoundfont.Synth(samplerate=sample_rate)
    sfid = synth.sfload(_soundfont_bytes(str(sf_path)))
    synth.program_select(0, sfid, 0, int(program))

    # Events at sample positions; offs before ons at one instant so a repeated pitch re-strikes.
    events: list[tuple[int, int, int]] = []  # (sample, 0=off / 1=on, pitch)
    for note in notes:
        events.append((round(note.start * spb * sample_rate), 1, note.pitch))
        events.append((round(note.end * spb * sample_rate), 0, note.pitch))
    events.sort()
    out = np.zeros((n_samples, 2), dtype=np.float32)  # stereo interleaved, as tinysoundfont renders
    pos = 0
    for sample, kind, pitch in [*events, (n_samples, -1, 0)]:
        sample = min(sample, n_samples)
        if sample > pos:
            buf = synth.generate_simple(sample - pos)
            out[pos:sample] = np.frombuffer(buf, dtype=np.float32).reshape(-1, 2)
            pos = sample
        if kind == 1:
            synth.noteon(0, pitch, int(velocity))
        elif kind == 0:
            synth.noteoff(0, pitch)
    return out.mean(axis=1)


def _render_plain(
    notes: list[Note], n_samples: int, spb: float, velocity: int, sample_rate: int
) -> npt.NDArray[np.float32]:
    """A plain synth: a few harmonics with an attack/decay envelope and a short release per note."""
    out = np.zeros(n_samples, dtype=np.float64)
    attack, release = 0.005, 0.08  # seconds
    for note in notes:
        start = round(note.start * spb * sample_rate)
        held = note.duration * spb
        length = min(n_samples - start, round((held + release) * sample_rate))
        if length <= 0:
            continue
        t = np.arange(length) / sample_rate
        freq = 440.0 * 2.0 ** ((note.pitch - 69) / 12)
        tone = (
            np.sin(2 * np.pi * freq * t)
            + 0.3 * np.sin(4 * np.pi * freq * t)
            + 0.1 * np.sin(6 * np.pi * freq * t)
        )
        env = np.minimum(t / attack, 1.0) * np.exp(-1.5 * t)
        env *= np.clip((held + release - t) / release, 0.0, 1.0)  # linear release after the note's end
        out[start : start + length] += (velocity / 127.0) * tone * env
    return out.astype(np.float32)


def normalize_peak(audio: npt.NDArray[np.float32], peak_dbfs: float = PEAK_DBFS) -> npt.NDArray[np.float32]:
    """Scale so the largest absolute sample is ``peak_dbfs`` (silence stays silence)."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak <= 0.0:
        return audio.astype(np.float32)
    return (audio * (10.0 ** (peak_dbfs / 20.0) / peak)).astype(np.float32)


def synthesize(
    classes: MelodyLike,
    *,
    tempo: float = DEFAULT_TEMPO,
    program: int = 0,
    transpose: int = 0,
    key: str | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    velocity: int = DEFAULT_VELOCITY,
    tail: float = DEFAULT_TAIL,
    soundfont: bool = True,
) -> npt.NDArray[np.float32]:
    """Render one melody to mono audio.

    Args:
        classes: one melody, shape (T,), classes 0..37.
        tempo: quarter notes per minute (one step is a sixteenth).
        program: General MIDI program 0..127 (0: acoustic grand piano).
        transpose, key: output transposition, as in :func:`rltuner.data.midi_io.write_midi`.
        sample_rate: samples per second.
        velocity: note loudness 1..127 (timbre; the level is normalised anyway).
        tail: seconds of release after the last step.
        soundfont: use the SoundFont route where available (False: always the plain synth).

    Returns:
        float32 array of shape (round((T * step + tail) * sample_rate),), peak at -1 dBFS (zeros for silence).

    Raises:
        InvalidMelodyError, MelodyRangeError, ConfigError: bad melody or options.
    """
    check_output_options(tempo, program, velocity)
    if not 8000 <= int(sample_rate) <= 192000:
        raise ConfigError(f"sample rate must be 8000..192000 Hz, got {sample_rate}")
    if not (math.isfinite(tail) and 0.0 <= tail <= 10.0):
        raise ConfigError(f"tail must be 0..10 seconds, got {tail}")
    notes = melody_to_notes(classes, transpose=transpose, key=key)
    length = len(validate_classes(classes, allow_empty=True))
    spb = step_seconds(tempo)
    n_samples = round((length * spb + tail) * sample_rate)
    from rltuner.limits import MAX_AUDIO_SECONDS

    if length * spb > MAX_AUDIO_SECONDS:  # before the buffer of n_samples is allocated
        raise InputLimitError(
            f"a melody of {length:,} steps at {tempo:g} qpm lasts {length * spb:,.0f} s; audio is rendered "
            f"for at most {MAX_AUDIO_SECONDS:,} s"
        )
    audio = _render_soundfont(notes, n_samples, spb, program, velocity, sample_rate) if soundfont else None
    if audio is None:
        if soundfont:
            warnings.warn(
                "tinysoundfont or the pretty_midi SoundFont is missing: rendering with a plain synth "
                "(install it with: pip install --no-deps tinysoundfont)",
                UserWarning,
                stacklevel=2,
            )
        audio = _render_plain(notes, n_samples, spb, velocity, sample_rate)
    return normalize_peak(audio)


def write_wav(
    audio: npt.NDArray[np.floating], path: PathLike, sample_rate: int = DEFAULT_SAMPLE_RATE
) -> Path:
    """Write mono float audio in -1..1 as a 16-bit PCM WAV file, atomically."""
    pcm = (np.clip(np.asarray(audio, dtype=np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    target = Path(path)
    with atomic_path(target) as tmp, wave.open(str(tmp), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(int(sample_rate))
        wav.writeframes(pcm.tobytes())
    return target


def read_wav(path: PathLike) -> tuple[npt.NDArray[np.float32], int]:
    """Read a 16-bit mono/stereo WAV file as mono float32 in -1..1; returns ``(audio, sample_rate)``."""
    with wave.open(str(path), "rb") as wav:
        rate, channels, width = wav.getframerate(), wav.getnchannels(), wav.getsampwidth()
        data = wav.readframes(wav.getnframes())
    if width != 2:
        raise ConfigError(f"{path}: only 16-bit WAV files are supported")
    pcm = np.frombuffer(data, dtype="<i2").reshape(-1, channels).astype(np.float32) / 32767.0
    return pcm.mean(axis=1), rate


def render_wav(
    classes: MelodyLike,
    path: PathLike,
    *,
    tempo: float = DEFAULT_TEMPO,
    program: int = 0,
    transpose: int = 0,
    key: str | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    velocity: int = DEFAULT_VELOCITY,
    tail: float = DEFAULT_TAIL,
) -> Path:
    """Render one melody to a 16-bit mono WAV file (see :func:`synthesize` for the options), atomically.

    Returns:
        The path written.
    """
    audio = synthesize(
        classes,
        tempo=tempo,
        program=program,
        transpose=transpose,
        key=key,
        sample_rate=sample_rate,
        velocity=velocity,
        tail=tail,
    )
    return write_wav(audio, path, sample_rate)


def render_wav_batch(
    melodies: MelodiesLike,
    folder: PathLike,
    *,
    prefix: str = "melody",
    tempo: float = DEFAULT_TEMPO,
    program: int = 0,
    transpose: int = 0,
    key: str | None = None,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
) -> list[Path]:
    """Render each melody of a batch to ``folder/{prefix}_{i:03d}.wav``; returns the paths in order."""
    items = as_melody_list(melodies)
    paths = numbered_paths(folder, prefix, len(items), ".wav")
    return [
        render_wav(
            m, path, tempo=tempo, program=program, transpose=transpose, key=key, sample_rate=sample_rate
        )
        for m, path in zip(items, paths, strict=True)
    ]
