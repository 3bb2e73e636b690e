"""Melody -> audio: pitch (FFT), duration, level, onsets, WAV files and the plain-synth fallback."""

from __future__ import annotations

import contextlib
import sys
import warnings
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from rltuner.data import audio
from rltuner.data.audio import (
    normalize_peak,
    read_wav,
    render_wav,
    render_wav_batch,
    soundfont_path,
    step_seconds,
    synthesize,
)
from rltuner.errors import ConfigError, InvalidMelodyError

SR = 22050
A4 = 23  # class of MIDI 69
HELD_A4 = [A4] + [1] * 15  # one bar: 2 s at 120 qpm
PEAK = 10 ** (-1 / 20)  # -1 dBFS


def dominant_hz(signal: npt.NDArray[np.float32], sample_rate: int) -> float:
    """Frequency of the largest FFT bin (Hann window) of ``signal``."""
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.fft.rfftfreq(len(signal), 1 / sample_rate)[np.argmax(spectrum)])


@contextlib.contextmanager
def _no_warnings() -> Iterator[None]:
    """Fail on any warning inside (the SoundFont route must not warn where it is installed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _no_tinysoundfont(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # makes `import tinysoundfont` fail


def test_soundfont_is_found() -> None:
    path = soundfont_path()
    assert path is not None and path.name == "TimGM6mb.sf2" and path.stat().st_size > 1_000_000


@pytest.mark.parametrize(
    ("key", "transpose", "program", "hz"),
    # Low notes of piano or flute samples have a stronger 2nd harmonic than fundamental: a square lead (80).
    [(None, 0, 0, 440.0), (None, 12, 0, 880.0), ("D", 0, 0, 493.88), (None, -12, 80, 220.0)],
)
def test_held_note_pitch_soundfont(key: str | None, transpose: int, program: int, hz: float) -> None:
    with _no_warnings():
        sound = synthesize(HELD_A4, sample_rate=SR, key=key, transpose=transpose, program=program)
    # analyse the held part, after the attack
    assert dominant_hz(sound[SR // 10 : SR], SR) == pytest.approx(hz, rel=0.01)


@pytest.mark.parametrize(("tempo", "steps"), [(120.0, 16), (60.0, 8), (200.0, 32)])
def test_duration_follows_tempo(tempo: float, steps: int) -> None:
    sound = synthesize([A4] + [1] * (steps - 1), tempo=tempo, sample_rate=SR, tail=0.25)
    seconds = steps * 60.0 / tempo / 4 + 0.25
    assert sound.dtype == np.float32 and sound.ndim == 1
    assert len(sound) == round(seconds * SR)
    assert step_seconds(tempo) == pytest.approx(60.0 / tempo / 4)


@pytest.mark.parametrize("soundfont", [True, False])
def test_level_normalised_and_onset(soundfont: bool) -> None:
    # 8 steps of rest (1 s at 120 qpm), then A4: silence before the onset, sound after.
    sound = synthesize([1] * 8 + [A4] + [1] * 7, sample_rate=SR, soundfont=soundfont)
    assert float(np.max(np.abs(sound))) == pytest.approx(PEAK, abs=1e-4)
    assert float(np.max(np.abs(sound[: int(0.95 * SR)]))) < 1e-3
    assert float(np.sqrt(np.mean(sound[int(1.05 * SR) : int(1.5 * SR)] ** 2))) > 0.05


def test_silence_stays_silent() -> None:
    sound = synthesize([1] * 8, sample_rate=SR)
    assert len(sound) == round((1.0 + 0.5) * SR) and not sound.any()
    assert not normalize_peak(np.zeros(4, dtype=np.float32)).any()


def test_program_changes_the_sound() -> None:
    piano = synthesize(HELD_A4, sample_rate=SR, program=0)
    flute = synthesize(HELD_A4, sample_rate=SR, program=73)
    assert not np.allclose(piano, flute, atol=1e-3)
    assert dominant_hz(flute[SR // 10 : SR], SR) == pytest.approx(440.0, rel=0.01)


@pytest.mark.parametrize("route", ["import", "soundfont_file"])
def test_fallback_warns_and_keeps_pitch(monkeypatch: pytest.MonkeyPatch, route: str) -> None:
    if route == "import":
        _no_tinysoundfont(monkeypatch)
    else:
        monkeypatch.setattr(audio, "soundfont_path", lambda: None)
    with pytest.warns(UserWarning, match="plain synth"):
        sound = synthesize(HELD_A4, sample_rate=SR)
    assert dominant_hz(sound[SR // 10 : SR], SR) == pytest.approx(440.0, rel=0.01)
    assert float(np.max(np.abs(sound))) == pytest.approx(PEAK, abs=1e-4)
    assert len(sound) == round(2.5 * SR)


def test_plain_synth_on_request_does_not_warn() -> None:
    with _no_warnings():
        sound = synthesize(HELD_A4, sample_rate=SR, soundfont=False)
    assert dominant_hz(sound[SR // 10 : SR], SR) == pytest.approx(440.0, rel=0.01)


def test_render_wav_file(tmp_path: Path) -> None:
    path = render_wav(HELD_A4, tmp_path / "sub" / "a4.wav", sample_rate=SR, tempo=240)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SR)
        assert wav.getnframes() == round((16 * 0.0625 + 0.5) * SR)
    sound, rate = read_wav(path)
    assert rate == SR and float(np.max(np.abs(sound))) == pytest.approx(PEAK, abs=1e-3)
    assert dominant_hz(sound[SR // 10 : SR // 2], SR) == pytest.approx(440.0, rel=0.01)
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["a4.wav"]  # no temporary left


def test_render_batch(tmp_path: Path) -> None:
    paths = render_wav_batch(np.array([[A4, 1], [14, 0]]), tmp_path, prefix="s", sample_rate=8000)
    assert [p.name for p in paths] == ["s_000.wav", "s_001.wav"]
    assert all(read_wav(p)[1] == 8000 for p in paths)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"sample_rate": 100}, ConfigError, "sample rate"),
        ({"tail": -1.0}, ConfigError, "tail"),
        ({"tempo": float("nan")}, ConfigError, "tempo"),
        ({"program": -1}, ConfigError, "program"),
        ({"key": "Q"}, ConfigError, "unknown key"),
    ],
)
def test_bad_options(kwargs: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        synthesize(HELD_A4, **kwargs)  # type: ignore[arg-type]


def test_bad_melody(tmp_path: Path) -> None:
    with pytest.raises(InvalidMelodyError, match="invalid class"):
        render_wav([A4, 99], tmp_path / "x.wav")
    assert not list(tmp_path.iterdir())
