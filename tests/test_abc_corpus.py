"""The ABC folk corpus: splitting, cleaning, transposition, octave shift, triplets, grace notes, bad tunes."""

from __future__ import annotations

import numpy as np
import pytest

from rltuner.data.abc_corpus import (
    COLLECTIONS,
    abc_texts_to_melodies,
    abc_to_melodies,
    clean_abc_body,
    iter_collection_tunes,
    music21_corpus_dir,
    resolve_collections,
    split_abc_tunes,
)
from rltuner.data.midi_import import ExtractSettings
from rltuner.errors import ConfigError

ANY = ExtractSettings(min_length=1)


def _cls(pitch: int) -> int:
    return pitch - 46


def _held(pitch: int, steps: int) -> list[int]:
    return [_cls(pitch)] + [1] * (steps - 1)


def _tune(key: str, body: str, *, unit: str = "1/4", meter: str = "4/4") -> str:
    return f"X:1\nT:test\nM:{meter}\nL:{unit}\nK:{key}\n{clean_abc_body(body)}\n"


def _one(text: str, settings: ExtractSettings = ANY) -> list[int]:
    res = abc_to_melodies(text, settings)
    assert res.counts["tunes"] == 1 and res.counts["kept"] == 1, dict(res.counts)
    return res.melodies[0].tolist()


def _quarters(*pitches: int) -> list[int]:
    return [c for p in pitches for c in _held(p, 4)]


def test_g_major_goes_to_c_major():
    # G A B c d (G4..D5) -> up a fourth: C5 D5 E5 F5 G5
    assert _one(_tune("G", "G A B c | d4 |]")) == _quarters(72, 74, 76, 77) + _held(79, 16)


def test_d_minor_goes_to_a_minor():
    # D E F G A (D4..A4) -> down a fourth: A3 B3 C4 D4 E4
    assert _one(_tune("Dm", "D E F G | A |]")) == _quarters(57, 59, 60, 62, 64)


def test_tune_too_high_is_moved_down_an_octave():
    # c'' .. g'' is C6..G6 (84..91), above B5: one octave down
    assert _one(_tune("C", "c'' d'' e'' f'' | g''4 |]"))[:5] == [_cls(72), 1, 1, 1, _cls(74)]


def test_tune_wider_than_three_octaves_is_dropped():
    res = abc_to_melodies(_tune("C", "C,, E,, G,, C, | c'' e'' g'' c'' |]"), ANY)
    assert res.counts["range"] == 1 and res.melodies == []


@pytest.mark.parametrize(
    ("policy", "expected", "count"),
    [
        # (3CDE: three eighths in the time of two (4 steps): onsets 0, 4/3, 8/3 -> 0, 1, 3
        ("round", [_cls(60), _cls(62), 1, _cls(64), *_held(60, 4), *_held(62, 8)], "rounded_off_grid"),
        ("drop", None, "off_grid"),
    ],
)
def test_triplets(policy, expected, count):
    text = _tune("C", "(3CDE C2 D4 |]", unit="1/8")
    res = abc_to_melodies(text, ExtractSettings(min_length=1, triplets=policy))  # type: ignore[arg-type]
    assert res.counts[count] == 1
    assert [m.tolist() for m in res.melodies] == ([expected] if expected else [])


def test_grace_notes_and_decorations_are_stripped():
    plain = _one(_tune("C", "C D E F | G4 |]"))
    assert _one(_tune("C", "{B,}C ~D !trill!E .F | {AG}TG4 |]")) == plain
    assert clean_abc_body('"Am"{g}~A.B !fermata!c +trill+d') == "AB c d"


def test_chords_keep_the_top_note_or_drop():
    text = _tune("C", "[CEG] [DF] E F | G4 |]")
    melody = _one(text)
    assert melody[:8] == [_cls(67), 1, 1, 1, _cls(65), 1, 1, 1]
    res = abc_to_melodies(text, ExtractSettings(min_length=1, polyphony="drop"))
    assert res.counts["chords"] == 1 and res.melodies == []


def test_bad_tunes_are_counted():
    texts = ["garbage without any header", "X:1\nT:empty\nK:C\n", _tune("C", "C D E F |]")]
    res = abc_texts_to_melodies(texts, ExtractSettings(min_length=32), jobs=1, progress=False)
    assert res.counts["tunes"] == 3
    assert res.counts["unparseable"] == 1 and res.counts["no_notes"] == 1 and res.counts["too_short"] == 1
    assert res.melodies == [] and res.groups == []


def test_split_abc_tunes_prepends_file_header_and_cleans_bodies():
    text = 'L:1/8\n%%comment\n\nX:1\nT:one\nK:G\n"G"{a}GABc|\n\nX:2\nT:two\nK:D\nDEF|\n'
    tunes = split_abc_tunes(text)
    assert len(tunes) == 2
    assert tunes[0].splitlines() == ["X:1", "L:1/8", "%%comment", "T:one", "K:G", "GABc|", ""]
    assert tunes[1].splitlines()[:3] == ["X:2", "L:1/8", "%%comment"]


def test_resolve_collections():
    assert resolve_collections() == list(COLLECTIONS)
    assert resolve_collections(["Essen", "oneills1850"]) == ["essen", "oneills"]
    assert resolve_collections(None, ["essen", "ryans"]) == ["oneills", "airds", "misc"]
    with pytest.raises(ConfigError, match="unknown collection"):
        resolve_collections(["bach"])
    with pytest.raises(ConfigError, match="no collection left"):
        resolve_collections(["misc"], ["misc"])


def test_real_collection_file_parses():
    # the first 40 tunes of the small miscFolk collection, in this process
    tunes = []
    for tune in iter_collection_tunes(["misc"], music21_corpus_dir()):
        tunes.append(tune.text)
        if len(tunes) == 40:
            break
    res = abc_texts_to_melodies(tunes, jobs=1, progress=False)
    assert res.counts["tunes"] == 40
    assert res.counts["kept"] >= 30
    for m in res.melodies:
        assert m.dtype == np.int8 and len(m) >= 32
        assert m.min() >= 0 and m.max() <= 37 and m[0] >= 2  # a melody begins with a note
