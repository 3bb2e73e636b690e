"""The music-theory reward: spec worked checks, one hand-made case per rule branch, and the fast paths
(whole-melody and incremental) against the plain oracle in ``reference_reward.py``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_reward import RULES, reference_rewards
from rltuner.config import apply_overrides
from rltuner.errors import ConfigError, InvalidMelodyError
from rltuner.rewards.music_theory import (
    RULE_NAMES,
    MusicTheoryReward,
    RewardConfig,
    music_theory_rewards,
    register_rule,
    registered_rules,
    unregister_rule,
)
from spec_examples import WORKED


def rule(melody: list[int], name: str, length: int | None = None, **kwargs: object) -> list[float]:
    out = music_theory_rewards([melody], length=length, by_rule=True, **kwargs)  # type: ignore[arg-type]
    assert isinstance(out, dict)
    return [float(v) for v in out[name][0]]


# ------------------------------------------------------------------------------------------- worked checks
def test_32_holds_sum_and_rules() -> None:
    out = music_theory_rewards([[1] * 32], by_rule=True)
    assert isinstance(out, dict)
    assert list(out) == list(RULE_NAMES)
    assert np.all(out["repetition"][0, :5] == 0) and np.all(out["repetition"][0, 5:] == -100)
    assert np.flatnonzero(out["tonic"][0]).tolist() == [29, 30, 31]
    for name in ("key", "autocorrelation", "motif", "repeated_motif", "intervals", "leaps", "extremes"):
        assert np.all(out[name] == 0), name
    total = music_theory_rewards([[1] * 32])
    assert float(np.asarray(total).sum()) == -2691.0


def test_long_worked_example() -> None:
    out = music_theory_rewards([WORKED], by_rule=True)
    total = music_theory_rewards([WORKED])
    assert isinstance(out, dict) and not isinstance(total, dict)
    assert np.flatnonzero(out["tonic"][0]).tolist() == [0, 28, 29, 30, 31]
    assert np.flatnonzero(out["extremes"][0]).tolist() == [31] and out["extremes"][0, 31] == 3.0
    assert out["motif"][0, 7:12].tolist() == pytest.approx([3.0, 3.0, 3.3, 3.3, 3.6])
    assert np.all(out["motif"][0, :7] == 0)
    assert out["autocorrelation"][0, 0] == 0 and np.all(out["autocorrelation"][0, 1:] < 0)
    assert out["autocorrelation"][0, 1] == pytest.approx(-1.5)
    assert out["autocorrelation"][0, 31] == pytest.approx(-1.9435, abs=5e-5)
    for name in ("repeated_motif", "key", "leaps", "repetition"):
        assert np.all(out[name] == 0), name
    assert total[0, 0] == 3.0
    assert total[0, 31] == pytest.approx(4.8065, abs=5e-5)
    assert total.sum() == pytest.approx(-0.7934, abs=5e-5)
    np.testing.assert_array_equal(sum(out[r] for r in RULE_NAMES), total)


# ------------------------------------------------------------------------------------- one case per branch
@pytest.mark.parametrize(
    ("melody", "fires"),
    [
        ([14] * 6, [5]),  # 5 equal notes before, no gap: n = 5 > 4
        ([14] * 5, []),  # n = 4 is allowed
        ([14, 1, 14, 14, 14, 14, 14, 14, 14], [8]),  # a hold in the run: n = 7 > 6 fires, n = 5 and 6 do not
        ([14, 0, 0, 0], [3]),  # rests: n = 2 > 1
        ([14, 0, 1, 0, 1, 0], [5]),  # holds between rests do not stop the count
        ([14, 1, 1, 1, 1, 1, 1], [6]),  # holds after a note: n = 5 > 4
        ([14, 0, 1, 1, 1, 1, 1, 1, 1, 1], [9]),  # holds with a rest among them: n = 7 > 6
        ([14, 14, 14, 14, 16, 14, 14], []),  # the scan stops at another note
        ([1, 1, 1, 1, 1, 1], [5]),  # no real note at all
    ],
)
def test_repetition_thresholds(melody: list[int], fires: list[int]) -> None:
    values = rule(melody, "repetition")
    assert [t for t, v in enumerate(values) if v] == fires
    assert all(v in (0.0, -100.0) for v in values)


@pytest.mark.parametrize("length", [32, 8])
def test_tonic_beats(length: int) -> None:
    f = length - 4
    melody = [16] * length
    melody[0] = melody[f] = 14
    melody[f + 1], melody[f + 2], melody[f + 3] = 1, 0, 1
    melody[3] = 14  # the tonic elsewhere earns nothing
    assert [t for t, v in enumerate(rule(melody, "tonic")) if v] == [0, f, f + 1, f + 2, f + 3]
    melody[f + 1] = 0  # a rest right after the last tonic does not count (a hold does)
    assert [t for t, v in enumerate(rule(melody, "tonic")) if v] == [0, f, f + 2, f + 3]


def test_tonic_of_partial_melody_uses_length() -> None:
    assert rule([14, 16, 18, 19, 14, 1], "tonic", length=8) == [3, 0, 0, 0, 3, 3]
    assert rule([14, 16, 18, 19, 14, 1], "tonic") == [3, 0, 0, 0, 0, 3]  # L = T = 6: f = 2, t = 5 holds


def test_key_rule() -> None:
    assert rule([14, 15, 16, 0, 1, 37, 36], "key") == [0, -1, 0, 0, 0, 0, -1]


@pytest.mark.parametrize(
    ("melody", "expected"),
    [
        ([2, 4, 6], [0.0, -1.5, -1.5]),  # t=1: rho_1 = -0.5; t=2: rho_1 = 0, rho_2 = -0.5
        ([5, 5, 5, 5], [0.0, 0.0, 0.0, 0.0]),  # constant: rho is NaN, skipped silently
        ([14, 1], [0.0, -1.5]),  # n = 2: only lag 1 exists (n <= lag gives 0)
    ],
)
def test_autocorrelation_values(melody: list[int], expected: list[float]) -> None:
    assert rule(melody, "autocorrelation") == pytest.approx(expected)


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ([14, 16, 14, 16, 1, 1, 0, 1], 0.0),  # 2 distinct notes: no motif
        ([14, 16, 18, 1, 1, 1, 1, 1], 3.0),  # 3 distinct notes
        ([14, 16, 18, 19, 21, 1, 1, 1], 3.6),  # 5 distinct notes: 3 + 0.3 * 2
    ],
)
def test_motif(window: list[int], expected: float) -> None:
    values = rule(window, "motif")
    assert values[:7] == [0.0] * 7
    assert values[7] == pytest.approx(expected)


def test_repeated_motif_found() -> None:
    a = [14, 16, 18, 19, 1, 1, 1, 1]  # 4 distinct notes: 4 + 1
    values = rule(a + a, "repeated_motif")
    assert values[15] == 5.0 and sum(values) == 5.0
    values = rule([*a, 0, 0, *a], "repeated_motif")
    assert values[17] == 5.0 and sum(values) == 5.0


def test_repeated_motif_needs_a_window_before_the_current_one() -> None:
    periodic = [14, 16, 18] * 6
    # windows repeat from step 10 on, but only overlapping ones until step 16
    assert [t for t, v in enumerate(rule(periodic[:16], "repeated_motif")) if v] == []
    assert [t for t, v in enumerate(rule(periodic[:17], "repeated_motif")) if v] == [16]
    assert rule(periodic[:17], "repeated_motif")[16] == 4.0
    assert rule([14, 16] * 9, "repeated_motif") == [0.0] * 18  # repeated, but no motif


@pytest.mark.parametrize(
    ("prev", "action", "expected"),
    [
        (14, 21, 0.5),  # in-key fifth from C
        (21, 28, 0.5),  # in-key fifth from G
        (16, 23, 0.1),  # a fifth from D: plain fifth
        (14, 18, 0.75),  # in-key third from C
        (18, 22, 0.75),  # in-key third from E (G#: the original's rule, kept)
        (16, 20, 0.45),  # a major third from D: plain
        (14, 16, 0.4),
        (14, 19, 0.35),
        (14, 23, 0.25),
        (14, 25, -1.5),
        (14, 27, -5.0),  # more than an octave
        (27, 14, -5.0),
        (14, 26, 0.0),  # octave
        (14, 15, 0.0),
        (14, 14, 0.0),  # same pitch
        (14, 1, 1.5),  # hold after the tonic
        (16, 1, 0.375),
        (21, 0, 0.75),  # rest after the fifth
        (16, 0, 0.25),
    ],
)
def test_interval_classes(prev: int, action: int, expected: float) -> None:
    assert rule([prev, action], "intervals") == pytest.approx([0.0, expected])


def test_interval_uses_last_real_note_and_none() -> None:
    assert rule([1, 0, 14, 1, 0, 21], "intervals") == pytest.approx([0, 0, 0, 1.5, 0.75, 0.5])


@pytest.mark.parametrize(
    ("melody", "expected"),
    [
        ([14, 21, 19, 14], [0, 0, 0, 5]),  # leap up, gradual return to the start note
        ([26, 14, 16, 18, 20, 22, 24, 26], [0, 0, 0, 0, 0, 0, 0, 5]),  # leap down, gradual return
        ([14, 21, 28, 35], [0, 0, -5, -5]),  # double leaps keep the state: punished again
        ([14, 26, 14, 2], [0, 0, 0, 0]),  # leap back too soon: no reward, state cleared, 14->2 starts anew
        ([14, 26, 24, 26, 24, 26, 24, 26, 14], [0] * 9),  # leap back after 6 steps: since = 6, not > 6
        ([14, 26, 24, 26, 24, 26, 24, 26, 24, 14], [0] * 9 + [5]),  # after 7 steps: resolved
        ([14, 26, 1, 1, 1, 1, 1, 1, 1, 14], [0] * 9 + [5]),  # holds count as steps
        ([14, 1, 0, 26, 24, 20, 16, 14], [0] * 7 + [5]),  # the leap is measured from the last real note
        ([1, 14, 21, 19, 14], [0, 0, 0, 0, 5]),
        ([14, 21, 14], [0, 0, 0]),  # 21 -> 14 is itself a leap (back, too soon), not a gradual return
    ],
)
def test_leaps(melody: list[int], expected: list[int]) -> None:
    assert rule(melody, "leaps") == [float(v) for v in expected]


@pytest.mark.parametrize(
    ("melody", "expected"),
    [
        ([14, 16, 18, 16, 14], 3.0),  # unique max, min twice
        ([14, 1, 1, 1], 6.0),  # unique max and min (the same note)
        ([1, 1, 1, 1], 0.0),  # no real note: the max (HOLD) is not unique
        ([0, 0, 0, 1], 3.0),  # no real note but a unique HOLD: the original's quirk, kept
        ([18, 16, 14, 18], 3.0),  # unique min only
    ],
)
def test_extremes(melody: list[int], expected: float) -> None:
    values = rule(melody, "extremes")
    assert values[-1] == expected and sum(values[:-1]) == 0.0
    assert rule(melody, "extremes", length=len(melody) + 1) == [0.0] * len(melody)  # not the last step


# ------------------------------------------------------------------------------- fast paths vs the oracle
def _biased(draw: st.DrawFn, n: int, t: int) -> list[list[int]]:
    style = draw(st.sampled_from(["uniform", "pool", "motif", "leapy"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if style == "uniform":
        return rng.integers(0, 38, size=(n, t)).tolist()
    if style == "pool":  # few classes, many holds and rests: repetition and resolution fire
        pool = np.concatenate([rng.integers(2, 38, size=rng.integers(1, 5)), [0, 1, 1]])
        return rng.choice(pool, size=(n, t)).tolist()
    if style == "leapy":
        pool = np.array([2, 9, 14, 21, 26, 33, 37, 1, 0, 12, 16])
        return rng.choice(pool, size=(n, t)).tolist()
    out = []
    for _ in range(n):  # repeat a random 8-step motif with a little noise
        motif = rng.choice(np.array([14, 16, 18, 19, 21, 1, 0]), size=8)
        mel = np.tile(motif, t // 8 + 1)[:t].copy()
        noise = rng.random(t) < 0.1
        mel[noise] = rng.integers(0, 38, size=int(noise.sum()))
        out.append(mel.tolist())
    return out


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[list[int]], int]:
    n = draw(st.integers(1, 4))
    t = draw(st.integers(1, 40))
    return _biased(draw, n, t), t + draw(st.integers(0, 2))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches())
def test_whole_and_incremental_equal_reference(batch: tuple[list[list[int]], int]) -> None:
    melodies, length = batch
    by_rule = music_theory_rewards(melodies, length=length, by_rule=True)
    total = music_theory_rewards(melodies, length=length)
    assert isinstance(by_rule, dict) and not isinstance(total, dict)
    for i, melody in enumerate(melodies):
        ref = reference_rewards(melody, length)
        for name in RULES:
            assert by_rule[name][i].tolist() == [s[name] for s in ref], name
        assert total[i].tolist() == [s["total"] for s in ref]
    reward = MusicTheoryReward(RewardConfig(length=length))
    state = reward.reset(len(melodies))
    arr = np.array(melodies, dtype=np.int64)
    for t in range(arr.shape[1]):
        assert reward.step(state, arr[:, t]).tolist() == total[:, t].tolist()
    assert state.t == arr.shape[1]


def test_many_random_melodies_against_reference() -> None:
    rng = np.random.default_rng(7)
    pool = np.array([0, 1, 1, 14, 16, 21, 26, 2, 33])
    melodies = np.concatenate([rng.integers(0, 38, size=(40, 32)), rng.choice(pool, size=(40, 32))])
    total = music_theory_rewards(melodies)
    assert not isinstance(total, dict)
    for i in range(len(melodies)):
        assert total[i].tolist() == [s["total"] for s in reference_rewards(melodies[i].tolist())]


def test_step_by_rule_and_state_fields() -> None:
    reward = MusicTheoryReward()
    state = reward.reset(2)
    melodies = np.array([WORKED, [1] * 32])
    whole = music_theory_rewards(melodies, by_rule=True)
    assert isinstance(whole, dict)
    for t in range(32):
        values = reward.step_by_rule(state, melodies[:, t])
        for name in RULE_NAMES:
            assert values[name].tolist() == whole[name][:, t].tolist()
    np.testing.assert_array_equal(state.history, melodies)
    assert state.prev_note.tolist() == [0 + 14, -1]
    with pytest.raises(InvalidMelodyError, match="already have all 32 steps"):
        reward.step(state, np.array([1, 1]))


def test_single_melody_gives_1d() -> None:
    out = music_theory_rewards(WORKED)
    assert isinstance(out, np.ndarray) and out.shape == (32,)
    assert out.dtype == np.float64


# --------------------------------------------------------------------------------- weights, keys, own rules
def test_weights_switch_rules_off_and_scale() -> None:
    base = music_theory_rewards([WORKED], by_rule=True)
    out = music_theory_rewards([WORKED], by_rule=True, weights={"autocorrelation": 0, "tonic": 2})
    assert isinstance(base, dict) and isinstance(out, dict)
    assert np.all(out["autocorrelation"] == 0)
    np.testing.assert_array_equal(out["tonic"], 2 * base["tonic"])
    with pytest.raises(ConfigError, match="unknown rule"):
        music_theory_rewards([WORKED], weights={"nope": 1})


def test_config_overrides_and_validation() -> None:
    cfg = apply_overrides(RewardConfig(), {"weights.leaps": "0", "repetition_penalty": "50"})
    assert cfg.weights.leaps == 0.0 and cfg.repetition_penalty == 50.0
    out = music_theory_rewards([[14] * 6], by_rule=True, config=cfg)
    assert isinstance(out, dict) and out["repetition"][0, 5] == -50
    with pytest.raises(ConfigError):
        RewardConfig(motif_length=11).validate()
    with pytest.raises(ConfigError, match="unknown key"):
        music_theory_rewards([WORKED], key="H")
    with pytest.raises(ConfigError, match="mode"):
        music_theory_rewards([WORKED], mode="dorian")


def test_non_c_key() -> None:
    # D major: F#4 (class 20) is in key, the tonic is D4 (class 16), D and A are tonic/fifth.
    assert rule([20, 15], "key", key="D") == [0, 0]
    assert rule([20, 15], "key") == [-1, -1]
    assert rule([16, 1, 1, 1], "tonic", key="D", length=32)[0] == 3.0
    assert rule([16, 1], "intervals", key="D") == pytest.approx([0, 1.5])
    assert rule([16, 23], "intervals", key="D") == pytest.approx([0, 0.5])  # in-key fifth D -> A
    # A minor: the tonic is A4 (class 23); its third is a minor third (3 semitones)
    assert rule([23, 26], "intervals", key="A", mode="minor") == pytest.approx([0, 0.75])
    assert rule([23, 26], "intervals") == pytest.approx([0, 0.0])
    assert rule([23], "tonic", key="A", mode="minor", length=32) == [3.0]


def test_c_major_explicit_equals_default() -> None:
    a = music_theory_rewards([WORKED], key="C", mode="major")
    b = music_theory_rewards([WORKED])
    np.testing.assert_array_equal(a, b)  # type: ignore[arg-type]


@pytest.fixture
def strong_beat_rule():
    def strong_beats(history: np.ndarray, action: np.ndarray, t: int, length: int) -> np.ndarray:
        assert history.shape == (action.shape[0], t)
        return np.where((t % 4 == 0) & (action >= 2), 1.0, 0.0)

    register_rule("strong_beats", strong_beats)
    yield "strong_beats"
    unregister_rule("strong_beats")


def test_custom_rule_in_both_paths(strong_beat_rule: str) -> None:
    assert registered_rules() == (strong_beat_rule,)
    out = music_theory_rewards([WORKED], by_rule=True)
    total = music_theory_rewards([WORKED])
    assert isinstance(out, dict) and not isinstance(total, dict)
    assert list(out) == [*RULE_NAMES, strong_beat_rule]
    assert np.flatnonzero(out[strong_beat_rule][0]).tolist() == [0, 4, 8, 12, 16, 20, 24, 28]
    reference = np.array([s["total"] for s in reference_rewards(WORKED)])
    np.testing.assert_allclose(total[0], reference + out[strong_beat_rule][0])
    reward = MusicTheoryReward()
    state = reward.reset(1)
    steps = [reward.step(state, np.array([c]))[0] for c in WORKED]
    assert steps == total[0].tolist()
    halved = music_theory_rewards([WORKED], by_rule=True, weights={strong_beat_rule: 0.5})
    assert isinstance(halved, dict) and halved[strong_beat_rule][0, 0] == 0.5
    with pytest.raises(ConfigError, match="already registered"):
        register_rule(strong_beat_rule, lambda h, a, t, n: a * 0.0)
    with pytest.raises(ConfigError):
        register_rule("key", lambda h, a, t, n: a * 0.0)


# ---------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("melodies", "kwargs", "message"),
    [
        ([[14, 38]], {}, "invalid class 38"),
        ([[14, -1]], {}, "invalid class -1"),
        ([[14, 16], [14]], {}, "same length"),
        ([], {}, "empty"),
        (np.zeros((2, 0), dtype=np.int64), {}, "empty"),
        ([[14, 16, 18]], {"length": 2}, "longer"),
        ([[14.5, 16]], {}, "integers"),
        (np.zeros((1, 2, 3), dtype=np.int64), {}, "2-D"),
    ],
)
def test_bad_input(melodies: object, kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        music_theory_rewards(melodies, **kwargs)  # type: ignore[arg-type]


def test_bad_actions() -> None:
    reward = MusicTheoryReward()
    state = reward.reset(2)
    with pytest.raises(InvalidMelodyError, match="expected 2 actions"):
        reward.step(state, np.array([1, 2, 3]))
    with pytest.raises(InvalidMelodyError, match=r"0\.\.37"):
        reward.step(state, np.array([1, 40]))
    with pytest.raises(InvalidMelodyError):
        reward.reset(0)


def test_benchmark_quick() -> None:
    from rltuner.benchmarks.rewards import measure

    results = measure(quick=True)
    assert [r["unit"] for r in results] == ["melody-steps/s", "s", "ms"]
    assert all(r["value"] > 0 and r["met"] is None for r in results)


# ---------------------------------------------------------------------------------- one-melody fast path
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches(), st.sampled_from(["C major", "A minor", "F# major"]), st.integers(3, 10))
def test_one_melody_path_equals_batched_path(
    batch: tuple[list[list[int]], int], key_mode: str, motif_length: int
) -> None:
    """B = 1 takes the scalar path (_advance_one): same values to the bit and the same state as B > 1."""
    melodies, length = batch
    key, mode = key_mode.split()
    cfg = RewardConfig(length=length, key=key, mode=mode, motif_length=motif_length)  # type: ignore[arg-type]
    weights = {"autocorrelation": 0.5, "leaps": 0.0, "motif": 2.0}
    arr = np.array([*melodies, [1] * len(melodies[0])], dtype=np.int64)  # B >= 2: the batched path
    batched = MusicTheoryReward(cfg, weights=weights)
    state = batched.reset(len(arr))
    expected = [batched.step_by_rule(state, arr[:, t]) for t in range(arr.shape[1])]
    for i, melody in enumerate(arr):
        one = MusicTheoryReward(cfg, weights=weights)
        by_rule, total = one.reset(1), one.reset(1)
        for t, a in enumerate(melody):
            got = one.step_by_rule(by_rule, np.array([a]))
            assert {k: v.tolist() for k, v in got.items()} == {k: [v[i]] for k, v in expected[t].items()}
            assert one.step(total, np.array([a])).tolist() == [sum(expected[t][k][i] for k in RULE_NAMES)]
        for name in ("history", "direction", "leapt_from", "since", "prev_note", "rep_count", "rep_gap",
                     "tail_holds", "tail_rests", "sum_x", "sum_x2", "lag_products", "window_codes"):  # fmt: skip
            assert getattr(total, name).tolist() == [getattr(state, name)[i].tolist()], name


def test_one_melody_path_on_the_reference() -> None:
    """The scalar path against the independent reference implementation, on many random melodies."""
    rng = np.random.default_rng(11)
    pool = np.array([0, 1, 1, 14, 16, 21, 26, 2, 33])
    melodies = np.concatenate([rng.integers(0, 38, size=(30, 32)), rng.choice(pool, size=(30, 32))])
    reward = MusicTheoryReward()
    for melody in melodies:
        state = reward.reset(1)
        got = [float(reward.step(state, np.array([a]))[0]) for a in melody]
        assert got == [s["total"] for s in reference_rewards(melody.tolist())]


def test_one_melody_path_rejects_bad_actions() -> None:
    reward = MusicTheoryReward(RewardConfig(length=2))
    state = reward.reset(1)
    with pytest.raises(InvalidMelodyError, match=r"classes 0\.\.37"):
        reward.step(state, np.array([38]))
    reward.step(state, np.array([14]))
    reward.step(state, np.array([14]))
    with pytest.raises(InvalidMelodyError, match="already have all 2 steps"):
        reward.step(state, np.array([1]))


# ------------------------------------------------------------------ hear_primer (TuneConfig.reward_primer)
def _primed_melodies(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(N,) note primers and (N, 32) melodies: uniform, leapy, few-class and repeated-motif rows, so every
    rule fires."""
    rng = np.random.default_rng(seed)
    leapy = rng.choice(np.array([2, 9, 14, 21, 26, 33, 37, 1, 0, 12, 16]), size=(n, 32))
    pool = rng.choice(np.array([14, 21, 26, 1, 1, 0]), size=(n, 32))
    uniform = rng.integers(0, 38, size=(n, 32))
    motifs = np.tile(rng.choice(np.array([14, 16, 18, 19, 21, 1, 0]), size=(n, 8)), 4)
    style = rng.integers(0, 4, size=n)[:, None]
    melodies = np.where(style == 0, leapy, np.where(style == 1, pool, np.where(style == 2, uniform, motifs)))
    return rng.integers(2, 38, size=n), melodies


def _spec_on_primer_plus_steps(primers: np.ndarray, melodies: np.ndarray) -> dict[str, np.ndarray]:
    """What the spec's rules give the 33-step melody primer + steps at steps 1..32 (L = 33), except the tonic
    rule, which judges the generated steps (L = 32), as Table 1's "starting with tonic" row does."""
    heard = music_theory_rewards(np.concatenate([primers[:, None], melodies], axis=1), by_rule=True)
    generated = music_theory_rewards(melodies, by_rule=True)
    assert isinstance(heard, dict) and isinstance(generated, dict)
    return {k: generated[k] if k == "tonic" else v[:, 1:] for k, v in heard.items()}


def test_hear_primer_is_the_spec_on_the_melody_as_heard() -> None:
    primers, melodies = _primed_melodies(400, seed=5)
    expected = _spec_on_primer_plus_steps(primers, melodies)
    reward = MusicTheoryReward(hear_primer=True)
    got = reward.score(melodies, by_rule=True, primers=primers)
    assert isinstance(got, dict)
    for name in RULE_NAMES:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    # every rule fired somewhere, and the primer changed what the reward pays (else the test proves little)
    assert all(np.any(expected[name] != 0) for name in RULE_NAMES)
    spec = music_theory_rewards(melodies)
    assert isinstance(spec, np.ndarray)
    assert np.any(reward.score(melodies, primers=primers) != spec)
    # the incremental path, batched and one melody at a time (the scalar path), step by step
    state = reward.reset(len(primers), primers)
    assert state.offset == 1 and state.t == 1 and state.length == 33
    total = np.stack([reward.step(state, melodies[:, t]) for t in range(32)], axis=1)
    np.testing.assert_array_equal(total, reward.score(melodies, primers=primers))
    for i in range(0, 400, 37):
        one = reward.reset(1, primers[i : i + 1])
        values = [reward.step_by_rule(one, melodies[i, t : t + 1]) for t in range(32)]
        for name in RULE_NAMES:
            np.testing.assert_array_equal([v[name][0] for v in values], expected[name][i], err_msg=name)


def test_a_leap_from_the_primer_is_punished_or_resolved() -> None:
    reward = MusicTheoryReward(hear_primer=True)
    # C3 primer, then C4 and C5: two leaps up in a row; the spec's reward sees only the second, as a first leap
    doubled = [14, 26] + [1] * 30
    primed = reward.score(doubled, by_rule=True, primers=2)
    assert isinstance(primed, dict)
    assert primed["leaps"][:2].tolist() == [0.0, -5.0]
    assert rule(doubled, "leaps")[:2] == [0.0, 0.0]
    # C4 primer, C5 held 7 steps, then back down to C4: the leap from the primer is resolved
    resolved = [26] + [1] * 7 + [14] + [1] * 23
    primed = reward.score(resolved, by_rule=True, primers=14)
    assert isinstance(primed, dict)
    assert np.flatnonzero(primed["leaps"]).tolist() == [8] and primed["leaps"][8] == 5.0
    assert rule(resolved, "leaps")[8] == 0.0  # for the spec that is a new leap
    # the primer is heard by the interval rule too: C4 -> G4 is an in-key fifth (0.5) only after a primer
    assert float(reward.score([21] + [1] * 31, by_rule=True, primers=14)["intervals"][0]) == 0.5  # type: ignore[index]


def test_without_hear_primer_the_primers_are_ignored() -> None:
    primers, melodies = _primed_melodies(50, seed=1)
    reward = MusicTheoryReward()
    spec = music_theory_rewards(melodies)
    assert isinstance(spec, np.ndarray)
    np.testing.assert_array_equal(reward.score(melodies, primers=primers), spec)
    state = reward.reset(50, primers)
    assert state.t == 0 and state.offset == 0 and state.length == 32


def test_hear_primer_needs_the_primers() -> None:
    reward = MusicTheoryReward(hear_primer=True)
    with pytest.raises(InvalidMelodyError, match="needs the primers"):
        reward.reset(3)
    with pytest.raises(InvalidMelodyError, match="primers of shape"):
        reward.reset(3, np.array([14, 14]))
    with pytest.raises(InvalidMelodyError):
        reward.reset(1, np.array([40]))
