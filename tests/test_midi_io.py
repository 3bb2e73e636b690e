"""Melody <-> MIDI: exact round trips, options, other readers, overlap policy and bad files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mido
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rltuner.data.midi_io import (
    TICKS_PER_STEP,
    key_shift,
    midi_to_melody,
    parse_key,
    write_midi,
    write_midi_batch,
)
from rltuner.encoding import canonicalize
from rltuner.errors import ConfigError, InvalidMelodyError, MelodyRangeError, MidiReadError

# C4 (class 14) = MIDI 60; A4 = class 23.
ROUND_TRIPS = {
    "leading_and_trailing_rests": [1, 1, 1, 14, 1, 16, 0, 1, 1, 1],
    "repeated_same_pitch": [14, 14, 1, 14, 0, 14, 14, 14],
    "all_rest": [1] * 16,
    "held_to_the_end": [23] + [1] * 15,
    "one_step": [37],
    "extremes": [2, 0, 37, 1, 2, 37, 0, 1],
    "two_bars": [14, 1, 18, 1, 21, 1, 18, 1, 14, 16, 18, 19, 21, 1, 1, 0] * 2,
}


def _notes(path: Path) -> list[tuple[int, int, int, int]]:
    """(absolute tick, type 1=on 0=off, pitch, velocity) of the file's note events."""
    out = []
    for track in mido.MidiFile(str(path)).tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type in ("note_on", "note_off"):
                on = int(msg.type == "note_on" and msg.velocity > 0)
                out.append((tick, on, msg.note, msg.velocity))
    return out


@pytest.mark.parametrize("name", list(ROUND_TRIPS))
def test_exact_round_trip(tmp_path: Path, name: str) -> None:
    melody = np.array(ROUND_TRIPS[name])
    assert np.array_equal(canonicalize(melody), melody)  # the cases are canonical
    path = write_midi(melody, tmp_path / f"{name}.mid")
    back = midi_to_melody(path)
    assert back.dtype == np.int64 and back.tolist() == melody.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 37), min_size=1, max_size=40))
def test_round_trip_property(tmp_path_factory: pytest.TempPathFactory, raw: list[int]) -> None:
    melody = canonicalize(np.array(raw))
    path = write_midi(melody, tmp_path_factory.mktemp("rt") / "m.mid")
    assert midi_to_melody(path).tolist() == melody.tolist()


def test_file_content_and_options(tmp_path: Path) -> None:
    path = write_midi([14, 1, 0, 23], tmp_path / "m.mid", tempo=90, program=40, velocity=64)
    midi = mido.MidiFile(str(path))
    assert midi.type == 0 and midi.ticks_per_beat == 480
    metas = {m.type: m for m in midi.tracks[0] if m.is_meta}
    assert metas["set_tempo"].tempo == mido.bpm2tempo(90)
    assert metas["key_signature"].key == "C"
    assert [m.program for m in midi.tracks[0] if m.type == "program_change"] == [40]
    assert _notes(path) == [(0, 1, 60, 64), (240, 0, 60, 0), (360, 1, 69, 64), (480, 0, 69, 0)]
    # end-of-track at the melody's end: 4 steps
    assert sum(m.time for m in midi.tracks[0]) == 4 * TICKS_PER_STEP


def test_repeated_pitch_restrikes(tmp_path: Path) -> None:
    path = write_midi([14, 14], tmp_path / "m.mid")
    # the off of the first C4 comes before the second on at tick 120
    assert _notes(path) == [(0, 1, 60, 90), (120, 0, 60, 0), (120, 1, 60, 90), (240, 0, 60, 0)]


@pytest.mark.parametrize(
    ("key", "transpose", "shift", "signature"),
    [
        (None, 0, 0, "C"),
        ("G", 0, -5, "G"),
        ("F", 0, 5, "F"),
        ("F#", 0, -6, "F#"),
        ("Bb", 0, -2, "Bb"),
        ("D major", 0, 2, "D"),
        ("Em", 0, -5, "Em"),
        ("D minor", 0, 5, "Dm"),
        ("G", 12, 7, "G"),
        (None, 2, 2, "D"),
    ],
)
def test_transposition(tmp_path: Path, key: str | None, transpose: int, shift: int, signature: str) -> None:
    path = write_midi([14, 1, 23, 0], tmp_path / "m.mid", key=key, transpose=transpose)
    assert [p for _, on, p, _ in _notes(path) if on] == [60 + shift, 69 + shift]
    metas = [m for m in mido.MidiFile(str(path)).tracks[0] if m.type == "key_signature"]
    assert metas[0].key == signature


def test_parse_key_and_shift() -> None:
    assert parse_key("Bb") == (10, "major") and parse_key("F#m") == (6, "minor")
    assert parse_key("eb minor") == (3, "minor")
    assert key_shift("A minor") == 0 and key_shift("C") == 0 and key_shift("B") == -1
    with pytest.raises(ConfigError, match="unknown key 'H'"):
        parse_key("H")


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"tempo": 0}, ConfigError, "tempo"),
        ({"program": 128}, ConfigError, "program"),
        ({"velocity": 0}, ConfigError, "velocity"),
        ({"key": "Z"}, ConfigError, "unknown key"),
        ({"transpose": 1.5}, ConfigError, "whole number"),
        ({"transpose": 60}, MelodyRangeError, "outside 0..127"),
    ],
)
def test_bad_options(tmp_path: Path, kwargs: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        write_midi([37, 1], tmp_path / "m.mid", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "m.mid").exists()


def test_bad_melody(tmp_path: Path) -> None:
    with pytest.raises(InvalidMelodyError, match="invalid class 38"):
        write_midi([14, 38], tmp_path / "m.mid")
    with pytest.raises(InvalidMelodyError, match="1-D"):
        write_midi(np.ones((2, 3), dtype=int), tmp_path / "m.mid")


def test_batch(tmp_path: Path) -> None:
    batch = np.array([[14, 1, 0, 1], [16, 1, 1, 1], [1, 1, 18, 0]])
    paths = write_midi_batch(batch, tmp_path / "out", prefix="q")
    assert [p.name for p in paths] == ["q_000.mid", "q_001.mid", "q_002.mid"]
    assert [midi_to_melody(p).tolist() for p in paths] == batch.tolist()
    ragged = write_midi_batch([[14, 0], [16, 1, 1]], tmp_path / "ragged")
    assert [len(midi_to_melody(p)) for p in ragged] == [2, 3]
    one = write_midi_batch([14, 0, 16], tmp_path / "one")  # a plain list of ints is one melody
    assert len(one) == 1 and midi_to_melody(one[0]).tolist() == [14, 0, 16]


def test_other_readers(tmp_path: Path) -> None:
    melody = [1, 14, 1, 16, 0, 1, 23, 1]  # C4 at step 1 (2 steps), D4 at 3 (1), A4 at 6 (2)
    path = str(write_midi(melody, tmp_path / "m.mid", tempo=120))
    step = 0.125  # seconds per sixteenth at 120 qpm
    expected = [(60, 1 * step, 3 * step), (62, 3 * step, 4 * step), (69, 6 * step, 8 * step)]

    import pretty_midi

    pm = pretty_midi.PrettyMIDI(path)
    got = [(n.pitch, n.start, n.end) for n in pm.instruments[0].notes]
    assert [g[0] for g in got] == [e[0] for e in expected]
    assert np.allclose([g[1:] for g in got], [e[1:] for e in expected])
    assert pm.get_end_time() == pytest.approx(8 * step)

    import symusic

    score: Any = symusic.Score(path)  # ticks, 480 per quarter
    notes = [(n.pitch, n.time, n.duration) for t in score.tracks for n in t.notes]
    assert notes == [(60, 120, 240), (62, 360, 120), (69, 720, 240)]

    import music21

    parsed: Any = music21.converter.parse(path)
    m21 = [(n.pitch.midi, float(n.offset), float(n.quarterLength)) for n in parsed.flatten().notes]
    assert m21 == [(60, 0.25, 0.5), (62, 0.75, 0.25), (69, 1.5, 0.5)]


def _write_raw(path: Path, tracks: list[list[mido.Message | mido.MetaMessage]], tpq: int = 480) -> Path:
    midi = mido.MidiFile(type=1 if len(tracks) > 1 else 0, ticks_per_beat=tpq)
    for msgs in tracks:
        midi.tracks.append(mido.MidiTrack(msgs))
    midi.save(str(path))
    return path


def _on(note: int, time: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_on", note=note, velocity=80, time=time, channel=channel)


def _off(note: int, time: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", note=note, velocity=0, time=time, channel=channel)


def test_overlaps_keep_highest_and_drums_ignored(tmp_path: Path) -> None:
    # 96 ticks per quarter = 24 per step. C4 0..4 steps; E4 (higher) enters at step 2 and cuts it;
    # G3 (lower) at step 3 is under E4 and dropped; a drum hit on channel 9 is ignored.
    melody_track = [
        _on(60, 0), _on(64, 48), _on(55, 24), _off(60, 24), _off(55, 0), _off(64, 24),
    ]  # fmt: skip
    drums = [_on(36, 0, 9), _off(36, 24, 9), mido.MetaMessage("end_of_track", time=168)]
    path = _write_raw(tmp_path / "m.mid", [melody_track, drums], tpq=96)
    assert midi_to_melody(path).tolist() == [14, 1, 18, 1, 1, 0, 1, 1]
    assert midi_to_melody(path, length=4).tolist() == [14, 1, 18, 1]


def test_quantization(tmp_path: Path) -> None:
    # 480 ticks per quarter: 120 a step. C5 on at tick 3 (step 0), off at 235 (step 2); D5 at 242..478 (2..4).
    path = _write_raw(tmp_path / "m.mid", [[_on(72, 3), _off(72, 232), _on(74, 7), _off(74, 236)]])
    assert midi_to_melody(path).tolist() == [26, 1, 28, 1]


def test_octave_fit(tmp_path: Path) -> None:
    path = _write_raw(tmp_path / "m.mid", [[_on(96, 0), _on(100, 0), _off(96, 120), _off(100, 0)]])
    assert midi_to_melody(path).tolist() == [30]  # E7 (100) over C7 wins, shifted to E5 (76) = class 30
    with pytest.raises(MelodyRangeError, match=r"outside 48\.\.83"):
        midi_to_melody(path, fit_range=False)


def _good_bytes(tmp_path: Path) -> bytes:
    return write_midi([14, 1, 16, 0] * 4, tmp_path / "good.mid").read_bytes()


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("folder", "is a folder"),
        ("text", "not a MIDI file"),
        ("empty", "not a MIDI file"),
        ("truncated", "truncated"),
        ("corrupt", "MIDI file"),
    ],
)
def test_bad_files(tmp_path: Path, case: str, message: str) -> None:
    path = tmp_path / "bad.mid"
    good = _good_bytes(tmp_path)
    if case == "folder":
        path.mkdir()
    elif case == "text":
        path.write_text("this is not music\n")
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif case == "corrupt":
        path.write_bytes(good[:14] + b"MTrk\x00\x00\x00\x08\xff\xff\xff\xff\xff\xff\xff\xff")
    with pytest.raises(MidiReadError, match=message):
        midi_to_melody(path)
