import numpy as np
import pytest

from rltuner.encoding import (
    NO_EVENT,
    NOTE_OFF,
    Melody,
    Note,
    canonicalize,
    class_name,
    classes_to_notes,
    key_set_classes,
    normalize_notes,
    note_name_to_class,
    notes_to_classes,
    octave_shift_into_range,
    transposition_to_c,
    validate_classes,
)
from rltuner.errors import InvalidMelodyError, MelodyRangeError


def test_spec_examples_decode():
    assert classes_to_notes([2, 4, 6, 7]) == [Note(48, 0, 1), Note(50, 1, 1), Note(52, 2, 1), Note(53, 3, 1)]
    assert classes_to_notes([4, 1, 0, 1]) == [Note(50, 0, 2)]
    assert class_name(14) == "C4" and note_name_to_class("C4") == 14


def test_c_major_key_set_matches_spec():
    expected = {0, 1, 2, 4, 6, 7, 9, 11, 13, 14, 16, 18, 19, 21, 23, 25, 26, 28, 30, 31, 33, 35, 37}
    assert key_set_classes("C", "major") == expected
    assert key_set_classes("A", "minor") == expected
    assert 3 in key_set_classes("D", "major")  # C#3 is in D major


@pytest.mark.parametrize(
    "classes",
    [[14, 1, 18, 1, 0, 1, 21, 21], [1, 1, 14, 0], [0, 1, 2, 37, 1, 1], [26, 1, 1, 1], [14, 0, 16, 0]],
)
def test_canonical_round_trip(classes):
    arr = canonicalize(classes)
    assert np.array_equal(notes_to_classes(classes_to_notes(arr), length=len(arr)), arr)
    assert classes_to_notes(arr) == classes_to_notes(classes)


def test_encode_gaps_and_overlaps():
    notes = [Note(60, 0, 2), Note(64, 4, 1), Note(67, 4, 3), Note(62, 6, 4)]
    # the higher of two simultaneous notes wins; a later note-on cuts an earlier note
    assert notes_to_classes(notes).tolist() == [14, 1, NOTE_OFF, NO_EVENT, 21, 1, 16, 1, 1, 1]


def test_transposition_and_octave_shift():
    assert transposition_to_c(7, "major") == 5  # G major -> C major: up a fourth
    assert transposition_to_c(2, "minor") == -5  # D minor -> A minor: down a fourth
    assert octave_shift_into_range([30, 40]) == 24
    g_major = [Note(67, 0, 4), Note(71, 4, 4), Note(74, 8, 4)]
    assert [n.pitch for n in normalize_notes(g_major, 7, "major")] == [72, 76, 79]
    with pytest.raises(MelodyRangeError):
        octave_shift_into_range([40, 80])


def test_invalid_input():
    with pytest.raises(InvalidMelodyError):
        validate_classes([[1, 2], [3]])
    with pytest.raises(InvalidMelodyError):
        validate_classes([1, 38])
    with pytest.raises(InvalidMelodyError):
        validate_classes([])
    with pytest.raises(InvalidMelodyError):
        Melody(np.array([[1, 2]]))


def test_melody_value_semantics():
    m = Melody(np.array([14, 1, 0]))
    assert m == Melody([14, 1, 0]) and len(m) == 3 and m.describe() == "C4 HOLD OFF"
    with pytest.raises(ValueError):
        m.classes[0] = 3


def test_with_primers_puts_each_primer_first() -> None:
    from rltuner.encoding import with_primers

    mel = np.array([[1, 1, 16], [0, 18, 1]])
    assert with_primers(np.array([14, 21]), mel).tolist() == [[14, 1, 1, 16], [21, 0, 18, 1]]
    assert with_primers(np.array([[14, 1], [21, 0]]), mel).shape == (2, 5)  # a primer sequence per melody
    with pytest.raises(InvalidMelodyError):
        with_primers(np.array([14]), mel)  # one primer for two melodies
    with pytest.raises(InvalidMelodyError):
        with_primers(np.array([14, 40]), mel)  # not a class
