"""``rltuner render`` end to end: .npy and .mid inputs, output choice, options, and one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import mido
import numpy as np
import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli, main
from rltuner.data.audio import read_wav
from rltuner.data.midi_io import midi_to_melody, write_midi

BATCH = np.array([[14, 1, 16, 0, 18, 1, 1, 0], [23, 1, 1, 1, 21, 0, 1, 1], [1, 1, 30, 1, 1, 1, 1, 0]])


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_npy_all_outputs(tmp_path: Path) -> None:
    np.save(tmp_path / "samples.npy", BATCH)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["render", str(tmp_path / "samples.npy"), "--out", str(out), "--sample-rate", "8000"]
    )
    assert result.exit_code == 0, result.output
    stems = ["samples_000", "samples_001", "samples_002"]
    assert _names(out) == sorted([f"{s}.mid" for s in stems] + [f"{s}.wav" for s in stems] + ["samples.png"])
    assert [midi_to_melody(out / f"{s}.mid").tolist() for s in stems] == BATCH.tolist()
    audio, rate = read_wav(out / "samples_001.wav")
    assert rate == 8000 and len(audio) == round((8 * 0.125 + 0.5) * 8000)
    assert "wrote 7 file(s) for 3 melodies" in result.output


def test_selected_outputs_limit_and_options(tmp_path: Path) -> None:
    np.save(tmp_path / "one.npy", BATCH[1])  # a single melody (T,)
    np.save(tmp_path / "many.npy", BATCH)
    out = tmp_path / "out"
    args = ["render", str(tmp_path / "one.npy"), str(tmp_path / "many.npy"), "--midi", "--out", str(out)]
    args += ["--limit", "2", "--tempo", "90", "--program", "40", "--key", "G"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert _names(out) == ["many_000.mid", "many_001.mid", "one_000.mid"]
    midi = mido.MidiFile(str(out / "one_000.mid"))
    msgs = list(midi.tracks[0])
    assert [m.program for m in msgs if m.type == "program_change"] == [40]
    assert [m.tempo for m in msgs if m.type == "set_tempo"] == [mido.bpm2tempo(90)]
    assert [m.note for m in msgs if m.type == "note_on"] == [69 - 5, 67 - 5]  # A4, G4 in G major


def test_midi_inputs_and_folder(tmp_path: Path) -> None:
    songs = tmp_path / "songs"
    write_midi(BATCH[0], songs / "a.mid")
    write_midi(BATCH[2], songs / "deep" / "b.midi")
    write_midi(BATCH[1], tmp_path / "a.mid")  # same stem as songs/a.mid: its outputs become a_2
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["render", str(songs), str(tmp_path / "a.mid"), "--png", "--midi", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert _names(out) == ["a.mid", "a.png", "a_2.mid", "a_2.png", "b.mid", "b.png"]
    assert midi_to_melody(out / "a_2.mid").tolist() == BATCH[1].tolist()
    assert midi_to_melody(out / "b.mid").tolist() == BATCH[2].tolist()


def test_help_lists_options() -> None:
    result = CliRunner().invoke(cli, ["render", "--help"])
    assert result.exit_code == 0
    for option in ("--midi", "--wav", "--png", "--out", "--tempo", "--program", "--key", "--limit"):
        assert option in result.output


def _bad_input(tmp_path: Path, case: str) -> list[str]:
    good = tmp_path / "good.npy"
    np.save(good, BATCH)
    if case == "missing":
        return [str(tmp_path / "nope.mid")]
    if case == "text_as_mid":
        (tmp_path / "fake.mid").write_text("not midi")
        return [str(good), str(tmp_path / "fake.mid")]
    if case == "bad_class":
        np.save(tmp_path / "bad.npy", np.array([[14, 40]]))
        return [str(tmp_path / "bad.npy")]
    if case == "3d":
        np.save(tmp_path / "bad.npy", np.ones((2, 2, 2), dtype=int))
        return [str(tmp_path / "bad.npy")]
    if case == "garbage_npy":
        (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
        return [str(tmp_path / "bad.npy")]
    if case == "wrong_suffix":
        (tmp_path / "x.txt").write_text("1 2 3")
        return [str(tmp_path / "x.txt")]
    if case == "empty_folder":
        (tmp_path / "empty").mkdir()
        return [str(tmp_path / "empty")]
    if case == "overwrite_input":
        write_midi(BATCH[0], tmp_path / "in.mid")
        return [str(tmp_path / "in.mid"), "--out", str(tmp_path)]
    if case == "bad_key":
        return [str(good), "--key", "H"]
    if case == "bad_limit":
        return [str(good), "--limit", "-1"]
    if case == "bad_program":
        return [str(good), "--program", "200"]
    raise AssertionError(case)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "does not exist"),
        ("text_as_mid", "not a MIDI file"),
        ("bad_class", "invalid class 40"),
        ("3d", "expected (N, T)"),
        ("garbage_npy", "cannot read"),
        ("wrong_suffix", "expected a .mid/.midi file"),
        ("empty_folder", "holds no .mid"),
        ("overwrite_input", "would overwrite an input"),
        ("bad_key", "unknown key"),
        ("bad_limit", "--limit"),
        ("bad_program", "program"),
    ],
)
def test_bad_input_is_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str, message: str
) -> None:
    args = _bad_input(tmp_path, case)
    out = tmp_path / "out"
    if "--out" not in args:
        args += ["--out", str(out)]
    with pytest.raises(SystemExit) as exc:
        main(["render", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not out.exists()  # nothing written before the inputs are checked


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "s.npy", BATCH)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(SystemExit) as exc:
            main(["render", str(tmp_path / "s.npy"), "--out", str(locked / "sub")])
    finally:
        locked.chmod(0o700)
    assert exc.value.code == 2 and "not writable" in capsys.readouterr().err


def test_out_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    np.save(tmp_path / "s.npy", BATCH)
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exc:
        main(["render", str(tmp_path / "s.npy"), "--out", str(tmp_path / "file")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "file" in err and "Traceback" not in err
