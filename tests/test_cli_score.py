"""``rltuner score`` on .npy and MIDI input, tables and JSON, and its one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli, main
from spec_examples import WORKED


def test_one_melody_table(tmp_path: Path) -> None:
    path = tmp_path / "one.npy"
    np.save(path, np.array(WORKED))
    result = CliRunner().invoke(cli, ["score", str(path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "L = 32" in lines[0]
    assert lines[-1].split()[0] == "sum" and lines[-1].split()[-1] == "-0.7934"
    assert len(lines) == 2 + 32 + 1


def test_one_melody_json(tmp_path: Path) -> None:
    path = tmp_path / "one.npy"
    np.save(path, np.array([WORKED]))
    result = CliRunner().invoke(cli, ["score", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["sum"] == pytest.approx(-0.7934, abs=5e-5)
    assert data["steps"][0]["tonic"] == 3.0 and data["steps"][0]["name"] == "C4"
    assert data["steps"][31]["total"] == pytest.approx(4.8065, abs=5e-5)


def test_many_melodies_json_and_table(tmp_path: Path) -> None:
    path = tmp_path / "many.npy"
    np.save(path, np.array([WORKED, [1] * 32]))
    result = CliRunner().invoke(cli, ["score", str(path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n_melodies"] == 2 and data["melodies_starting_with_tonic"] == 0.5
    assert data["leaps_resolved"] is None  # NaN becomes null
    assert data["mean_reward_per_step"] == pytest.approx((-0.7934 - 2691) / 64, abs=1e-4)
    result = CliRunner().invoke(cli, ["score", str(path)])
    assert result.exit_code == 0 and "| Notes excessively repeated |" in result.output


def test_many_melodies_with_their_primers(tmp_path: Path) -> None:
    path = tmp_path / "primed.npy"  # as rltuner generate writes them: the primer, then the generated steps
    np.save(path, np.array([[15, *WORKED], [33] + [1] * 32]))
    result = CliRunner().invoke(cli, ["score", str(path), "--json", "--primer-steps", "1"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n_steps"] == 66 and data["primer_steps"] == 1
    assert data["melodies_starting_with_tonic"] == 0.5  # WORKED's first step, not the C#4 primer
    assert data["notes_not_in_key"] == 0.0  # the C#4 primer is not counted by the key row
    assert data["melodies_with_unique_max_note"] == 1.0  # G5 before the holds is heard, and unique
    assert data["mean_reward_per_step"] == pytest.approx((-0.7934 - 2691) / 64, abs=1e-4)  # generated steps


def test_midi_file_and_folder(tmp_path: Path) -> None:
    write_midi = pytest.importorskip("rltuner.data.midi_io").write_midi
    write_midi(np.array(WORKED), tmp_path / "songs" / "a.mid")
    write_midi(np.array([14, 16, 18, 19] * 8), tmp_path / "songs" / "b.mid")
    result = CliRunner().invoke(cli, ["score", str(tmp_path / "songs" / "a.mid"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["sum"] == pytest.approx(-0.7934, abs=5e-5)
    result = CliRunner().invoke(cli, ["score", str(tmp_path / "songs"), "--json", "--length", "32"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["n_melodies"] == 2


@pytest.mark.parametrize(
    ("content", "args", "message"),
    [
        ("text", [], "expected a .mid/.midi file"),
        (np.array([[14, 40]]), [], "invalid class 40"),
        (np.array([WORKED]), ["--length", "8"], "longer than --length 8"),
        (np.array([WORKED]), ["--key", "H"], "unknown key"),
        (np.array([WORKED, WORKED]), ["--primer-steps", "32"], "leaves none of the 32 steps"),
    ],
)
def test_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, args: list[str], message: str
) -> None:
    if isinstance(content, str):
        path = tmp_path / "melodies.txt"
        path.write_text(content)
    else:
        path = tmp_path / "melodies.npy"
        np.save(path, content)
    with pytest.raises(SystemExit) as exc:
        main(["score", str(path), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
