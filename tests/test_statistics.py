"""Table 1 statistics on hand-built sets with known answers, and their detectors against the reward's."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reference_reward import autocorrelation
from rltuner.errors import InvalidMelodyError
from rltuner.rewards.music_theory import music_theory_rewards
from rltuner.rewards.statistics import (
    INTERVAL_NAMES,
    PAPER_TABLE1,
    TABLE1_ROWS,
    format_table1,
    melody_statistics,
)

SCALE = [14, 16, 18, 19, 21, 23, 25, 26]  # C major scale up: one motif step, unique max and min
HELD = [15, 1, 1, 1, 1, 1, 1, 1]  # C# held: not in key, rule 3 fires at steps 6 and 7


def test_hand_built_set() -> None:
    stats = melody_statistics([SCALE, HELD])
    assert stats["n_melodies"] == 2 and stats["n_steps"] == 16
    assert stats["notes_excessively_repeated"] == 2 / 16
    assert stats["notes_not_in_key"] == 1 / 16
    assert stats["melodies_starting_with_tonic"] == 0.5
    assert math.isnan(stats["leaps_resolved"])  # no leap at all
    assert stats["melodies_with_unique_max_note"] == 1.0
    assert stats["melodies_with_unique_min_note"] == 1.0
    assert stats["notes_in_motif"] == 1 / 16
    assert stats["notes_in_repeated_motif"] == 0.0
    for lag in (1, 2, 3):
        expected = (float(autocorrelation(SCALE, lag)) + float(autocorrelation(HELD, lag))) / 2  # type: ignore[arg-type]
        assert stats[f"mean_autocorrelation_lag_{lag}"] == pytest.approx(expected)
    counts = stats["interval_counts"]
    assert set(counts) == set(INTERVAL_NAMES)
    assert counts["major_second"] == 5 and counts["minor_second"] == 2
    assert counts["hold"] == 7 and counts["none"] == 2
    assert sum(counts.values()) == 16
    assert stats["intervals_per_melody"]["hold"] == 3.5
    assert stats["counts"]["notes_excessively_repeated"] == 2


def test_leaps_resolved_fraction() -> None:
    stats = melody_statistics([[14, 21, 19, 14], [14, 21, 28, 35]])
    assert stats["counts"]["leaps_resolved"] == 1 and stats["counts"]["leaps_doubled"] == 2
    assert stats["leaps_resolved"] == pytest.approx(1 / 3)


def test_repeated_motif_and_motif_counts() -> None:
    stats = melody_statistics([[14, 16, 18] * 5 + [14, 16]])  # 17 steps
    assert stats["counts"]["notes_in_motif"] == 10  # every window ending at 7..16
    assert stats["counts"]["notes_in_repeated_motif"] == 1  # only at step 16
    assert stats["notes_in_repeated_motif"] == 1 / 17


def test_autocorrelation_ignores_nan_melodies() -> None:
    stats = melody_statistics([[5] * 8, SCALE])
    assert stats["mean_autocorrelation_lag_1"] == pytest.approx(float(autocorrelation(SCALE, 1)))  # type: ignore[arg-type]
    assert stats["counts"]["autocorrelation_melodies_lag_1"] == 1
    assert math.isnan(melody_statistics([[5] * 8])["mean_autocorrelation_lag_2"])


def test_in_key_thirds_are_counted() -> None:
    stats = melody_statistics([[14, 18, 14, 21]])
    assert stats["interval_counts"]["in_key_third"] == 2  # C->E and E->C (the original dropped these)
    assert stats["interval_counts"]["in_key_fifth"] == 1


def test_unique_extremes_with_no_real_note() -> None:
    stats = melody_statistics([[1, 1, 1, 1], [0, 0, 0, 1]])
    assert stats["melodies_with_unique_max_note"] == 0.5
    assert stats["melodies_with_unique_min_note"] == 0.0


def test_non_c_key() -> None:
    stats = melody_statistics([[16, 20, 15, 1]], key="D")
    assert stats["notes_not_in_key"] == 0.0 and stats["melodies_starting_with_tonic"] == 1.0
    stats = melody_statistics([[16, 20, 15, 1]])
    assert stats["notes_not_in_key"] == 2 / 4 and stats["melodies_starting_with_tonic"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detectors_agree_with_reward(seed: int) -> None:
    rng = np.random.default_rng(seed)
    pool = np.array([0, 1, 1, 14, 16, 18, 21, 26, 2, 33])
    motif = np.tile(np.array([14, 16, 18, 21, 1, 0, 26, 1]), 4)
    melodies = np.concatenate([rng.choice(pool, size=(300, 32)), np.tile(motif, (5, 1))])
    melodies[-5:, -4:] = rng.choice(pool, size=(5, 4))  # vary the repeated motifs a little
    stats = melody_statistics(melodies)
    by_rule = music_theory_rewards(melodies, by_rule=True)
    assert isinstance(by_rule, dict)
    counts = stats["counts"]
    assert counts["notes_excessively_repeated"] == int((by_rule["repetition"] != 0).sum())
    assert counts["notes_in_motif"] == int((by_rule["motif"] != 0).sum())
    assert counts["notes_in_repeated_motif"] == int((by_rule["repeated_motif"] != 0).sum())
    assert counts["leaps_resolved"] == int((by_rule["leaps"] > 0).sum())
    assert counts["leaps_doubled"] == int((by_rule["leaps"] < 0).sum())
    assert counts["notes_not_in_key"] == int((by_rule["key"] != 0).sum())
    assert counts["notes_in_repeated_motif"] > 0 and counts["leaps_doubled"] > 0


def test_paper_table_and_formatter() -> None:
    assert set(PAPER_TABLE1) == {"Note RNN", "Q", "Psi", "G"}
    assert PAPER_TABLE1["Note RNN"]["notes_excessively_repeated"] == 0.633
    assert PAPER_TABLE1["G"]["mean_autocorrelation_lag_1"] == 0.55
    assert all(list(col) == list(TABLE1_ROWS) for col in PAPER_TABLE1.values())
    text = format_table1({"ours": melody_statistics([SCALE, HELD])})
    lines = text.splitlines()
    assert lines[0] == "| metric | ours | paper Note RNN | paper Q | paper Psi | paper G |"
    assert len(lines) == 2 + len(TABLE1_ROWS)
    assert "| Notes excessively repeated | 12.5% | 63.3% | 0% | 0.02% | 0.03% |" in lines
    assert "| Leaps resolved | n/a | 77.2% | 91.1% | 90% | 52.2% |" in lines


@pytest.mark.parametrize("bad", [[[14, 38]], [[1, 2], [1]], [], [[-1]]])
def test_bad_input(bad: object) -> None:
    with pytest.raises(ValueError):
        melody_statistics(bad)


def test_primer_steps_count_as_heard_except_in_the_key_and_tonic_rows() -> None:
    gen = np.array([[14, 1, 16, 1, 18, 1, 14, 1], [21, 1, 23, 1, 23, 1, 21, 0]])  # every note in key
    heard = np.concatenate([np.array([[15], [33]]), gen], axis=1)  # primers C#4 (out of key) and G5
    s = melody_statistics(heard, primer_steps=1)
    plain = melody_statistics(heard)  # the same steps read as melodies without a primer
    assert s["n_steps"] == 18 and s["primer_steps"] == 1
    assert s["notes_not_in_key"] == 0.0 and plain["notes_not_in_key"] == pytest.approx(1 / 18)
    assert s["melodies_starting_with_tonic"] == 0.5 and plain["melodies_starting_with_tonic"] == 0.0
    # the primer is heard: G5 makes row 1's highest note unique (A4 twice without it)
    assert s["melodies_with_unique_max_note"] == 1.0
    assert melody_statistics(gen)["melodies_with_unique_max_note"] == 0.5
    with pytest.raises(InvalidMelodyError, match="primer_steps"):
        melody_statistics(heard, primer_steps=9)


def _literal_repeat_scan(melodies: np.ndarray) -> int:
    """Rule 3 by the spec's literal backward scan from every step (the slow reference)."""
    total = 0
    for mel in melodies:
        for t in range(1, len(mel)):
            a, count, gap = mel[t], 0, False
            for c in mel[t - 1 :: -1]:
                if c == a:
                    count += 1
                elif c in (0, 1):  # a note-off or a hold: the scan goes on
                    gap = True
                else:
                    break
            total += bool((a == 0 and count > 1) or (not gap and count > 4) or (gap and count > 6))
    return total


def _materialised_motifs(melodies: np.ndarray, width: int = 8) -> tuple[int, int]:
    """Rules 5 and 6 over every window as a Python set and tuple (the slow reference)."""
    motif = repeated = 0
    for mel in melodies:
        windows = [tuple(mel[j : j + width]) for j in range(len(mel) - width + 1)]
        for j, w in enumerate(windows):
            if len({c for c in w if c >= 2}) >= 3:
                motif += 1
                repeated += w in windows[: max(j - width + 1, 0)]
    return motif, repeated


@pytest.mark.parametrize("seed", [0, 1])
def test_repeat_and_motif_detectors_equal_the_literal_definitions(seed: int) -> None:
    """The vectorised rule 3 scan and rule 5/6 windows count what the spec's step-by-step definitions count,
    on random melodies and on repetitive ones (long runs of one note, holds and rests between)."""
    rng = np.random.default_rng(seed)
    random = rng.integers(0, 38, size=(150, 33))
    pool = np.array([0, 0, 1, 1, 1, 14, 14, 14, 16])  # runs of C4 with rests and holds
    repetitive = rng.choice(pool, size=(150, 33))
    motifs = np.tile(np.array([14, 16, 1, 18, 0, 14, 16, 1]), (20, 5))[:, :33]
    melodies = np.concatenate([random, repetitive, motifs])
    stats = melody_statistics(melodies)["counts"]
    assert stats["notes_excessively_repeated"] == _literal_repeat_scan(melodies) > 50
    expected_motif, expected_repeated = _materialised_motifs(melodies)
    assert stats["notes_in_motif"] == expected_motif
    assert stats["notes_in_repeated_motif"] == expected_repeated > 100
