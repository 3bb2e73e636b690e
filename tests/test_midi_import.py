"""MIDI-folder import on MIDI files written here with mido: formats, tracks, drums, overlaps, tempo, triplets."""

from __future__ import annotations

import os
from pathlib import Path

import mido
import numpy as np
import pytest

from rltuner.data.midi_import import (
    ExtractSettings,
    estimate_key,
    find_midi_files,
    import_midi_folder,
    key_signature_tonic,
    midi_file_to_melodies,
)
from rltuner.errors import ConfigError, MidiReadError

TPQ = 480
STEP = TPQ // 4  # one sixteenth in ticks
ANY = ExtractSettings(min_length=1)


def _track(notes, *, channel=0, meta=(), name="melody"):
    """A mido track from (pitch, start_step, dur_steps) notes (may overlap); times in sixteenths.

    ``meta`` holds (tick, MetaMessage) pairs placed among the notes.
    """
    events = [(tick, 2, m) for tick, m in meta]
    for pitch, start, dur in notes:
        t0, t1 = round(start * STEP), round((start + dur) * STEP)
        events.append((t0, 1, mido.Message("note_on", note=pitch, velocity=80, channel=channel)))
        events.append((t1, 0, mido.Message("note_off", note=pitch, velocity=0, channel=channel)))
    events.sort(key=lambda e: (e[0], e[1]))
    track = mido.MidiTrack([mido.MetaMessage("track_name", name=name, time=0)])
    now = 0
    for tick, _, msg in events:
        track.append(msg.copy(time=tick - now))
        now = tick
    return track


def _write(path: Path, tracks, *, midi_type=1) -> Path:
    mid = mido.MidiFile(type=midi_type, ticks_per_beat=TPQ)
    mid.tracks.extend(tracks)
    path.parent.mkdir(parents=True, exist_ok=True)
    mid.save(str(path))
    return path


C_KEY = [(0, mido.MetaMessage("key_signature", key="C"))]
SCALE_C = [(60 + p, 4 * i, 4) for i, p in enumerate([0, 2, 4, 5, 7, 9, 11, 12])]  # C major, quarters


def _cls(pitch: int) -> int:
    return pitch - 46


def _quarters(*pitches: int) -> list[int]:
    out = []
    for p in pitches:
        out += [_cls(p), 1, 1, 1]
    return out


def test_format0_single_track_exact(tmp_path):
    path = _write(tmp_path / "a.mid", [_track(SCALE_C)], midi_type=0)
    res = midi_file_to_melodies(path, ANY)
    assert res.counts["files"] == 1 and res.counts["kept"] == 1 and res.groups == [1]
    assert res.melodies[0].dtype == np.int8
    assert res.melodies[0].tolist() == _quarters(60, 62, 64, 65, 67, 69, 71, 72)


def test_format1_several_tracks_and_a_drum_track(tmp_path):
    conductor = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=500000, time=0)])
    drums = _track([(36, i * 4, 1) for i in range(8)], channel=9, name="drums")
    bass = _track([(48, 0, 8), (43, 8, 8)], name="bass")
    path = _write(tmp_path / "b.mid", [conductor, _track(SCALE_C), drums, bass])
    res = midi_file_to_melodies(path, ANY)
    assert res.counts["drum_tracks"] == 1
    assert res.counts["tunes"] == 2 and res.counts["kept"] == 2 and res.groups == [2]
    assert res.melodies[0].tolist() == _quarters(60, 62, 64, 65, 67, 69, 71, 72)
    # the bass line: C3 then G2, already in C; G2 (43) cannot be encoded, so the line moves up an octave
    assert res.melodies[1].tolist() == [_cls(60)] + [1] * 7 + [_cls(55)] + [1] * 7


def test_overlapping_notes_keep_the_highest(tmp_path):
    notes = [
        (72, 0, 8),  # a long high note ...
        (64, 2, 4),  # ... under which a lower one starts: dropped
        (60, 8, 8),  # a low note ...
        (67, 10, 2),  # ... cut by a higher one
        (62, 16, 4),  # chord: two notes on one step, the higher wins
        (65, 16, 4),
    ]
    path = _write(tmp_path / "c.mid", [_track(notes)])
    res = midi_file_to_melodies(path, ANY)
    expected = [_cls(72)] + [1] * 7 + [_cls(60), 1, _cls(67), 1, 0, 1, 1, 1, _cls(65), 1, 1, 1]
    assert res.melodies[0].tolist() == expected
    assert res.counts["chords_reduced"] == 1
    dropped = midi_file_to_melodies(path, ExtractSettings(min_length=1, polyphony="drop"))
    assert dropped.counts["chords"] == 1 and dropped.melodies == []


def test_tempo_change_does_not_move_the_grid(tmp_path):
    meta = [
        (0, mido.MetaMessage("set_tempo", tempo=500000)),
        (8 * STEP, mido.MetaMessage("set_tempo", tempo=250000)),
    ]
    path = _write(tmp_path / "d.mid", [_track(SCALE_C, meta=meta)], midi_type=0)
    res = midi_file_to_melodies(path, ANY)
    assert res.melodies[0].tolist() == _quarters(60, 62, 64, 65, 67, 69, 71, 72)


def test_other_ticks_per_quarter(tmp_path):
    mid = mido.MidiFile(type=0, ticks_per_beat=96)
    track = mido.MidiTrack()
    for p in (60, 64, 67, 72):
        track.append(mido.Message("note_on", note=p, velocity=80, time=0))
        track.append(mido.Message("note_off", note=p, velocity=0, time=48))  # eighth notes
    mid.tracks.append(track)
    mid.save(str(tmp_path / "e.mid"))
    res = midi_file_to_melodies(tmp_path / "e.mid", ANY)
    assert res.melodies[0].tolist() == [_cls(60), 1, _cls(64), 1, _cls(67), 1, _cls(72), 1]


TRIPLET = [(60, 0, 4 / 3), (62, 4 / 3, 4 / 3), (64, 8 / 3, 4 / 3), (65, 4, 4)]  # quarter-note triplet + F


@pytest.mark.parametrize(
    ("policy", "expected", "count"),
    [
        ("round", [_cls(60), _cls(62), 1, _cls(64), _cls(65), 1, 1, 1], "rounded_off_grid"),
        ("drop", None, "off_grid"),
    ],
)
def test_triplet_policy(tmp_path, policy, expected, count):
    path = _write(tmp_path / "t.mid", [_track(TRIPLET, meta=C_KEY)])
    res = midi_file_to_melodies(path, ExtractSettings(min_length=1, triplets=policy))  # type: ignore[arg-type]
    assert res.counts[count] == 1
    assert [m.tolist() for m in res.melodies] == ([expected] if expected else [])


def test_key_signature_transposes_to_c(tmp_path):
    g_major = [(67 + p, 4 * i, 4) for i, p in enumerate([0, 2, 4, 5, 7])]  # G A B C D
    meta = [(0, mido.MetaMessage("key_signature", key="G"))]
    path = _write(tmp_path / "g.mid", [_track(g_major, meta=meta)], midi_type=0)
    res = midi_file_to_melodies(path, ANY)
    assert res.melodies[0].tolist() == _quarters(72, 74, 76, 77, 79)


def test_estimated_key_when_no_signature(tmp_path):
    # D minor without a signature: D E F G A Bb A F D, the tonic held longest
    notes, t = [], 0
    for p, d in [(62, 8), (64, 2), (65, 4), (67, 2), (69, 8), (70, 2), (69, 2), (65, 4), (62, 8)]:
        notes.append((p, t, d))
        t += d
    path = _write(tmp_path / "dm.mid", [_track(notes)], midi_type=0)
    res = midi_file_to_melodies(path, ANY)
    first_pitch = res.melodies[0][0] + 46
    assert first_pitch % 12 == 9  # D minor -> A minor: the tonic D became A


def test_estimate_key_exact():
    assert estimate_key([60, 62, 64, 65, 67, 69, 71, 72]) == (0, "major")
    assert estimate_key([57, 59, 60, 62, 64, 65, 68, 69], [4, 1, 2, 1, 3, 1, 1, 4]) == (9, "minor")
    assert estimate_key([]) == (0, "major")
    assert key_signature_tonic(-2, True) == (7, "minor")  # G minor: two flats
    assert key_signature_tonic(3, False) == (9, "major")  # A major


def test_split_at_long_silence(tmp_path):
    notes = [(60, 0, 16), (62, 16, 16), (64, 80, 16), (65, 96, 16)]  # a three-bar rest in the middle
    path = _write(tmp_path / "s.mid", [_track(notes, meta=C_KEY)])
    res = midi_file_to_melodies(path, ExtractSettings(min_length=1, split_rest_bars=2))
    assert len(res.melodies) == 2 and res.groups == [2]
    assert res.melodies[1].tolist() == [_cls(64)] + [1] * 15 + [_cls(65)] + [1] * 15
    whole = midi_file_to_melodies(path, ExtractSettings(min_length=1, split_rest_bars=4))
    assert len(whole.melodies) == 1 and len(whole.melodies[0]) == 112


def test_range_and_length_drops(tmp_path):
    wide = [(36, 0, 4), (90, 4, 4)]
    _write(tmp_path / "f" / "wide.mid", [_track(wide)])
    _write(tmp_path / "f" / "short.mid", [_track([(60, 0, 4)])])
    res = import_midi_folder(tmp_path / "f", ExtractSettings(min_length=8), jobs=1, progress=False)
    assert res.counts["range"] == 1 and res.counts["too_short"] == 1 and res.counts["kept"] == 0


@pytest.fixture
def messy_folder(tmp_path):
    folder = tmp_path / "midi"
    good = _write(folder / "good.mid", [_track(SCALE_C)])
    _write(folder / "sub" / "deeper.MIDI", [_track(SCALE_C)])
    (folder / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06" + os.urandom(40))
    (folder / "truncated.mid").write_bytes(good.read_bytes()[:60])
    (folder / "text.mid").write_text("this is not a MIDI file\n")
    (folder / "empty.mid").write_bytes(b"")
    _write(folder / "silent.mid", [mido.MidiTrack([mido.MetaMessage("track_name", name="x", time=0)])])
    (folder / "notes.txt").write_text("ignored: not .mid")
    return folder


def test_bad_files_are_skipped_and_counted(messy_folder):
    res = import_midi_folder(messy_folder, ANY, jobs=1, progress=False, use_cache=False)
    assert res.counts["files"] == 7
    assert res.counts["unparseable"] == 4  # corrupt, truncated, text, empty
    assert res.counts["no_notes"] == 1
    assert res.counts["kept"] == 2 and len(res.melodies) == 2


def test_cache_makes_rerun_reuse_results(messy_folder):
    first = import_midi_folder(messy_folder, ANY, jobs=1, progress=False)
    assert first.counts["cached"] == 0
    again = import_midi_folder(messy_folder, ANY, jobs=1, progress=False)
    assert again.counts["cached"] == 7
    assert [m.tolist() for m in again.melodies] == [m.tolist() for m in first.melodies]
    assert {k: v for k, v in again.counts.items() if k != "cached"} == {
        k: v for k, v in first.counts.items() if k != "cached"
    }
    # a changed file is read again; other settings use another cache
    _write(messy_folder / "good.mid", [_track(SCALE_C[:4])])
    changed = import_midi_folder(messy_folder, ANY, jobs=1, progress=False)
    assert changed.counts["cached"] == 6 and len(changed.melodies[0]) == 16
    other = import_midi_folder(messy_folder, ExtractSettings(min_length=2), jobs=1, progress=False)
    assert other.counts["cached"] == 0


def test_parallel_equals_serial(messy_folder):
    serial = import_midi_folder(messy_folder, ANY, jobs=1, progress=False, use_cache=False)
    parallel = import_midi_folder(messy_folder, ANY, jobs=2, progress=False, use_cache=False)
    assert [m.tolist() for m in parallel.melodies] == [m.tolist() for m in serial.melodies]
    assert parallel.counts == serial.counts


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(MidiReadError, match="does not exist"):
        find_midi_files(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(MidiReadError, match=r"no \.mid or \.midi files"):
        import_midi_folder(tmp_path / "empty", progress=False)


@pytest.mark.parametrize(
    "kwargs", [{"min_length": 0}, {"split_rest_bars": 0}, {"triplets": "keep"}, {"polyphony": "all"}]
)
def test_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        ExtractSettings(**kwargs).validate()
