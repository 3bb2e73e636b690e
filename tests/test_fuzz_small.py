"""The fuzz suite at a small size (seconds): every format, 0 crashes, 0 timeouts; hypothesis properties."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rltuner.data.dataset import load_dataset
from rltuner.data.midi_import import DROP_REASONS, ExtractSettings, _load_cache, midi_file_to_melodies
from rltuner.encoding import Note
from rltuner.errors import RLTunerError
from rltuner.fuzz import FORMATS, format_table, run_format
from rltuner.loading import load_model

# Inputs per format in `make test`; `python -m rltuner.fuzz --inputs 10000` is the large run.
SMALL = {"abc": 25, "checkpoint": 40}


@pytest.mark.parametrize("name", list(FORMATS))
def test_small_fuzz_run_has_no_crash_and_no_hang(name: str) -> None:
    result = run_format(name, SMALL.get(name, 80), seed=1, seconds_per_input=10.0)
    assert result.crashes == [] and result.timeouts == 0, result.crashes[:3]
    assert result.inputs == SMALL.get(name, 80)
    assert result.kept >= 1  # the unmutated seeds are read fine
    assert sum(result.outcomes.values()) == result.inputs
    assert name in format_table([result])


MIDI_HEADER = b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk"
midi_like = st.one_of(st.binary(max_size=300), st.binary(max_size=200).map(lambda b: MIDI_HEADER + b))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=midi_like)
def test_any_bytes_give_kept_melodies_or_a_counted_reason(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "x.mid"
    path.write_bytes(data)
    counts = midi_file_to_melodies(path, ExtractSettings(min_length=1)).counts
    assert counts["files"] == 1
    outcomes = counts["kept"] + sum(counts[r] for r in DROP_REASONS)
    assert outcomes >= 1  # every file ends as kept melodies or under a drop reason, never silently


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400).map(lambda b: b"PK\x03\x04" + b))
def test_any_bytes_are_a_dataset_or_one_dataset_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(data)
    with pytest.raises(RLTunerError):
        load_dataset(path)
    assert _load_cache(path) == {} and not path.exists()  # a bad cache is discarded, to be rebuilt


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=300))
def test_any_bytes_are_a_checkpoint_or_one_checkpoint_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "c.safetensors"
    path.write_bytes(data)
    with pytest.raises(RLTunerError):
        load_model(path)


def test_fuzz_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from rltuner.fuzz.__main__ import main

    assert main(["--inputs", "6", "--formats", "midi,npy"]) == 0
    out = capsys.readouterr().out
    assert "| midi | 6 |" in out and "| npy | 6 |" in out and "crashes" in out
    with pytest.raises(SystemExit):
        main(["--formats", "nope"])


def _notes_to_classes_reference(notes, length=None):
    """The former quadratic encoder (``ordered[i + 1:]`` per note): the definition the fast one must match."""
    import numpy as np

    from rltuner.encoding import NO_EVENT, NOTE_OFF, pitch_to_class

    ordered = sorted(notes, key=lambda n: (n.start, -n.pitch))
    if length is None:
        length = max((n.end for n in ordered), default=0)
    out = np.full(length, NO_EVENT, dtype=np.int64)
    last_start = -1
    for i, note in enumerate(ordered):
        if note.start == last_start or note.start >= length:
            continue
        out[note.start] = pitch_to_class(note.pitch)
        last_start = note.start
        next_start = next((n.start for n in ordered[i + 1 :] if n.start > note.start), None)
        if note.end < length and (next_start is None or note.end < next_start):
            out[note.end] = NOTE_OFF
    return out


note_st = st.builds(Note, st.integers(48, 83), st.integers(0, 60), st.integers(1, 20))


@settings(max_examples=200, deadline=None)
@given(notes=st.lists(note_st, max_size=40), length=st.one_of(st.none(), st.integers(0, 90)))
def test_fast_notes_to_classes_equals_the_reference(notes, length) -> None:
    from rltuner.encoding import notes_to_classes

    assert notes_to_classes(notes, length).tolist() == _notes_to_classes_reference(notes, length).tolist()


@settings(max_examples=25, deadline=None)
@given(text=st.text(alphabet="XTMLK:1/48CDEFGABcdefgab,'|:[]()z^_=2345 \n", max_size=120))
def test_any_abc_text_gives_kept_melodies_or_a_counted_reason(text: str) -> None:
    from rltuner.data.abc_corpus import abc_to_melodies

    counts = abc_to_melodies("X:1\nK:C\n" + text, ExtractSettings(min_length=1)).counts
    assert counts["tunes"] == 1 and counts["kept"] + sum(counts[r] for r in DROP_REASONS) >= 1
