"""``rltuner data build`` / ``rltuner data stats`` end to end on tiny inputs."""

from __future__ import annotations

import json

import mido
import pytest
from click.testing import CliRunner

from rltuner.cli import main as cli_main
from rltuner.cli.main import cli
from rltuner.data import abc_corpus
from rltuner.data.dataset import load_dataset

TUNES = """X:1
T:one
M:4/4
L:1/8
K:G
GABc d2B2|c2A2 B2G2|GABc d2B2|A2F2 G4|]

X:2
T:two
M:3/4
L:1/8
K:Dm
D2F2A2|d4A2|B2A2G2|F2E2D2|D2F2A2|d6|]

X:3
T:three
M:4/4
L:1/8
K:C
(3cBA G2 E2 C2|(3DEF G2 A4|(3cBA G2 E2 C2|D2 E2 C4|]
"""


@pytest.fixture
def fake_corpus(tmp_path, monkeypatch):
    root = tmp_path / "corpus"
    (root / "miscFolk").mkdir(parents=True)
    (root / "miscFolk" / "t.abc").write_text(TUNES)
    monkeypatch.setattr(abc_corpus, "music21_corpus_dir", lambda: root)
    return root


@pytest.fixture
def midi_folder(tmp_path):
    folder = tmp_path / "midi"
    folder.mkdir()
    for n in range(3):
        mid = mido.MidiFile(type=0, ticks_per_beat=480)
        track = mido.MidiTrack()
        for p in [60, 62, 64, 65, 67, 65, 64, 62] * 2:
            track.append(mido.Message("note_on", note=p + n, velocity=80, time=0))
            track.append(mido.Message("note_off", note=p + n, velocity=0, time=240))
        mid.tracks.append(track)
        mid.save(str(folder / f"song{n}.mid"))
    (folder / "broken.mid").write_text("not midi")
    return folder


def test_build_from_folk_then_stats(fake_corpus, tmp_path):
    out = tmp_path / "d.npz"
    runner = CliRunner()
    result = runner.invoke(
        cli, ["data", "build", "--collections", "misc", "--out", str(out), "--jobs", "1", "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "melodies kept" in result.output and "tunes/tracks read" in result.output
    assert len(load_dataset(out).train) + len(load_dataset(out).valid) == 3
    stats = runner.invoke(cli, ["data", "stats", str(out), "--json"])
    assert stats.exit_code == 0, stats.output
    summary = json.loads(stats.output)
    assert summary["melodies"] == 3 and len(summary["class_counts"]) == 38
    png = tmp_path / "stats.png"
    text = runner.invoke(cli, ["data", "stats", str(out), "--plot", str(png)])
    assert text.exit_code == 0, text.output
    assert "class histogram" in text.output and "intervals" in text.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_build_from_midi_folder(midi_folder, tmp_path):
    out = tmp_path / "m.npz"
    result = CliRunner().invoke(
        cli,
        [
            "data",
            "build",
            "--source",
            str(midi_folder),
            "--out",
            str(out),
            "--jobs",
            "1",
            "--min-length",
            "16",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "unparseable" in result.output
    manifest = load_dataset(out).manifest
    assert manifest["counts"]["kept"] == 3 and manifest["counts"]["drops"]["unparseable"] == 1
    assert manifest["sources"][0]["kind"] == "midi" and manifest["settings"]["min_length"] == 16


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "build", "--source", "NOPE"], "does not exist"),
        (["data", "build", "--collections", "bach"], "unknown collection"),
        (["data", "build", "--exclude", "essen,oneills,ryans,airds,misc"], "no collection left"),
        (["data", "build", "--valid-fraction", "1.5"], "valid_fraction"),
        (["data", "stats", "NOPE.npz"], "does not exist"),
    ],
)
def test_user_errors_are_one_line_and_exit_2(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli_main.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err and "Traceback" not in err


def test_nothing_usable_is_an_error(midi_folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["data", "build", "--source", str(midi_folder), "--out", str(tmp_path / "x.npz"),
                       "--min-length", "1000", "--quiet", "--jobs", "1"])  # fmt: skip
    assert exc.value.code == 2
    assert "no usable melody" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_help_texts():
    result = CliRunner().invoke(cli, ["data", "build", "--help"])
    assert result.exit_code == 0
    for option in ("--source", "--collections", "--exclude", "--out", "--seed", "--valid-fraction",
                   "--min-length", "--triplets", "--jobs"):  # fmt: skip
        assert option in result.output
