"""Evaluation: diversity, copying, log p / KL on tiny priors, the result table and files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from rltuner.encoding import NUM_CLASSES
from rltuner.errors import ConfigError
from rltuner.evaluation.evaluate import (
    EvaluationResult,
    ModelEvaluation,
    copying_flags,
    copying_share,
    corpus_window_index,
    distinct_ngrams,
    diversity,
    load_result,
    measure_samples,
    policy_inputs,
    score_policy,
    sorted_unique,
    step_probabilities,
    steps_to_names,
    top_opening,
    window_hashes,
)
from spec_examples import ALL_HOLDS, WORKED


class ConstPrior(torch.nn.Module):
    """A stand-in Prior whose logits are the same fixed vector at every step, whatever the input."""

    vocab_size = NUM_CLASSES

    def __init__(self, logits: list[float] | torch.Tensor) -> None:
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, tokens: torch.Tensor, state: object = None) -> tuple[torch.Tensor, tuple[()]]:
        b, t = tokens.shape
        return self.logits.expand(b, t, NUM_CLASSES).clone(), ()


class EchoPrior(torch.nn.Module):
    """Puts all mass on repeating its input token: log p of the input class is 0, others -inf."""

    vocab_size = NUM_CLASSES

    def forward(self, tokens: torch.Tensor, state: object = None) -> tuple[torch.Tensor, tuple[()]]:
        out = torch.full((*tokens.shape, NUM_CLASSES), -1e9)
        out.scatter_(-1, tokens.unsqueeze(-1), 0.0)
        return out, ()


def uniform() -> ConstPrior:
    return ConstPrior(torch.zeros(NUM_CLASSES))


# --- window hashes, diversity, copying -------------------------------------------------------------------


def test_window_hashes_equal_runs_equal_hashes() -> None:
    a = np.array([[2, 3, 4, 5, 2, 3, 4]])
    h = window_hashes(a, window=3)
    assert h.shape == (1, 5)
    assert h[0, 0] == h[0, 4]  # [2,3,4] at offsets 0 and 4
    assert len(set(h[0, :4].tolist())) == 4


def test_window_hashes_short_melodies_have_none() -> None:
    assert window_hashes(np.zeros((3, 5), dtype=np.int64), window=16).shape == (3, 0)


@pytest.mark.parametrize(
    ("melodies", "window", "windows_share", "melody_share"),
    [
        ([[2, 3, 4, 5], [2, 3, 4, 5]], 2, 3 / 6, 1 / 2),  # identical melodies: 3 distinct of 6 windows
        ([[2, 3, 4, 5], [5, 4, 3, 2]], 2, 6 / 6, 2 / 2),
        ([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]], 4, 1 / 3, 1 / 3),
        ([[7, 7, 7, 8]], 2, 2 / 3, 1.0),  # [7,7] twice, [7,8] once
    ],
)
def test_diversity_hand_built(melodies, window, windows_share, melody_share) -> None:
    d = diversity(np.array(melodies), window=window)
    assert d["distinct_windows"] == pytest.approx(windows_share)
    assert d["distinct_melodies"] == pytest.approx(melody_share)


def test_copying_finds_runs_of_the_window_length_only() -> None:
    corpus = [np.arange(2, 22), np.array([30, 31, 32, 33, 34])]  # ragged songs
    index = corpus_window_index(corpus, window=4)
    melodies = np.array(
        [
            [1, 1, 5, 6, 7, 8, 1, 1],  # holds 5..8, a run of the first song
            [1, 1, 5, 6, 7, 9, 1, 1],  # 5,6,7 only: three steps in common, not four
            [33, 34, 2, 3, 1, 1, 1, 1],  # spans the end of song 2 and the start of song 1: not in the corpus
            [30, 31, 32, 33, 0, 0, 0, 0],
        ]
    )
    assert copying_flags(melodies, index, window=4).tolist() == [True, False, False, True]
    assert copying_share(melodies, index, window=4) == pytest.approx(0.5)


def test_copying_of_the_corpus_itself_is_total_and_empty_corpus_is_none() -> None:
    rng = np.random.default_rng(1)
    corpus = rng.integers(0, NUM_CLASSES, size=(50, 32))
    assert copying_share(corpus, corpus_window_index(corpus)) == 1.0
    assert copying_share(corpus, corpus_window_index([])) == 0.0


def test_copying_needs_four_note_ons_in_the_matched_run() -> None:
    corpus = [np.array([14, 1, 1, 1, 1, 1, 1, 1, 16, 1, 18, 19, 21, 1, 0, 1])]
    index = corpus_window_index(corpus, window=4)
    melodies = np.array(
        [
            [1, 1, 1, 1, 0, 0, 0, 0],  # four holds: in the corpus, but no tune
            [14, 1, 1, 1, 0, 0, 0, 0],  # one note-on and three holds: in the corpus, one note only
            [16, 1, 18, 19, 0, 0, 0, 0],  # three note-ons
            [18, 19, 21, 1, 0, 0, 0, 0],  # three note-ons
        ]
    )
    assert copying_flags(melodies, index, window=4, min_notes=1).tolist() == [False, True, True, True]
    assert copying_flags(melodies, index, window=4, min_notes=3).tolist() == [False, False, True, True]
    assert copying_flags(melodies, index, window=4).tolist() == [False, False, False, False]  # default 4
    assert copying_share(melodies, index, window=4, min_notes=0) == 1.0


@pytest.mark.parametrize("size", [1, 2, 7, 1000, 5000])
def test_sorted_contains_is_membership(size: int) -> None:
    """The bucketed look-up answers exactly what np.isin does: hits, misses, crowded buckets, the extremes."""
    from rltuner.evaluation.evaluate import sorted_contains

    rng = np.random.default_rng(size)
    index = sorted_unique(rng.integers(0, 2**64 - 1, size=size, dtype=np.uint64, endpoint=True))
    crowded = np.uint64(0xFFFF_0000_0000_0000) + np.arange(5, dtype=np.uint64)  # one bucket, five entries
    index = sorted_unique(np.concatenate([index, crowded, np.array([0, 2**64 - 1], dtype=np.uint64)]))
    others = rng.integers(0, 2**64 - 1, size=300, dtype=np.uint64, endpoint=True)
    values = np.concatenate([index[rng.integers(0, index.size, size=300)], index + np.uint64(1), others])
    got = sorted_contains(index, values)
    assert np.array_equal(got, np.isin(values, index))
    assert got[:300].all() and got.dtype == bool
    assert not sorted_contains(np.zeros(0, np.uint64), values).any()


def test_sorted_unique_is_np_unique() -> None:
    h = np.random.default_rng(3).integers(0, 50, size=1000).astype(np.uint64)
    assert sorted_unique(h).tolist() == np.unique(h).tolist()
    assert sorted_unique(np.zeros(0, np.uint64)).size == 0


def test_distinct_ngrams_hand_built() -> None:
    mel = np.array([[2, 3, 2, 3, 2], [2, 3, 2, 3, 4]])
    # 2-grams: (2,3) (3,2) (2,3) (3,2) | (2,3) (3,2) (2,3) (3,4): 3 distinct of 8
    assert distinct_ngrams(mel, 2) == pytest.approx(3 / 8)
    assert distinct_ngrams(mel, 5) == 1.0  # the two whole melodies differ
    assert math.isnan(distinct_ngrams(mel, 6))  # no 6-step run in a 5-step melody


def test_short_runs_each_have_their_own_hash_so_counting_them_in_a_table_is_exact() -> None:
    """distinct_ngrams counts runs of n <= 4 classes in a table of all 38**n runs instead of sorting their
    hashes: the same count because no two of those runs share a hash (all 2.1M 4-step runs checked)."""
    for n in (1, 2, 3, 4):
        every = np.stack(
            np.unravel_index(np.arange(NUM_CLASSES**n), (NUM_CLASSES,) * n), axis=1
        )  # (38**n, n)
        assert sorted_unique(window_hashes(every, n)).size == NUM_CLASSES**n
    rng = np.random.default_rng(5)
    for mel in (rng.integers(0, NUM_CLASSES, size=(300, 20)), rng.integers(0, 3, size=(50, 12))):
        for n in (1, 2, 4):
            h = window_hashes(mel, n)
            assert distinct_ngrams(mel, n) == sorted_unique(h).size / h.size
    assert distinct_ngrams(np.array([[1, 1, 1, 1, 1]]), 4) == 0.5  # two runs, one distinct
    assert distinct_ngrams(np.array([[40, 41, 40, 41, 40]]), 2) == 0.5  # beyond the classes: hashed


def test_top_opening_share_and_names() -> None:
    rng = np.random.default_rng(0)
    mel = rng.integers(2, NUM_CLASSES, size=(40, 32))
    collapsed = np.array([14, 1, 1, 1, 1, 1, 21, 18])  # C4 - - - - - G4 E4
    mel[:18, :8] = collapsed  # 18 of 40 melodies open alike; the rest are random (distinct at 8 steps)
    share, opening = top_opening(mel)
    assert share == pytest.approx(18 / 40)
    assert opening.tolist() == collapsed.tolist()
    assert steps_to_names(opening) == "C4 - - - - - G4 E4"
    assert steps_to_names([0, 2, 37]) == "OFF C3 B5"
    d = diversity(mel)
    assert d["top_opening_8"] == pytest.approx(18 / 40)
    assert 0 < d["distinct_4grams"] < 1 and 0 < d["distinct_8grams"] < 1
    assert math.isnan(top_opening(mel[:, :7])[0])


# --- log p and KL -----------------------------------------------------------------------------------------


def test_policy_inputs_prepend_primer() -> None:
    mel = np.array([[5, 6, 7], [8, 9, 10]])
    assert policy_inputs(mel, np.array([2, 3])).tolist() == [[2, 5, 6], [3, 8, 9]]


def test_log_p_under_uniform_prior_and_kl_of_model_with_itself() -> None:
    mel = np.random.default_rng(0).integers(0, NUM_CLASSES, size=(7, 5))
    primers = np.full(7, 14)
    prior = uniform()
    scores = score_policy(None, prior, mel, primers)
    assert scores["mean_log_p"] == pytest.approx(-math.log(NUM_CLASSES), abs=1e-6)
    assert scores["mean_kl"] == 0.0
    same = score_policy(prior, prior, mel, primers)
    assert same["mean_kl"] == 0.0
    copy = score_policy(uniform(), prior, mel, primers)
    assert copy["mean_kl"] == pytest.approx(0.0, abs=1e-9)


def test_kl_hand_computed() -> None:
    # pi puts 1/2 on OFF and 1/2 on HOLD; p is uniform: KL = sum pi log(pi / p) = log(38 / 2)
    logits = torch.full((NUM_CLASSES,), -float("inf"))
    logits[:2] = 0.0
    scores = score_policy(ConstPrior(logits), uniform(), np.ones((3, 4), dtype=np.int64), np.full(3, 2))
    assert scores["mean_kl"] == pytest.approx(math.log(19), rel=1e-6)
    assert scores["mean_log_p"] == pytest.approx(-math.log(NUM_CLASSES), rel=1e-6)


def test_log_p_depends_on_the_state_the_prior_saw() -> None:
    # an echo prior gives log p = 0 exactly where the melody repeats its previous class (the primer first)
    mel = np.array([[4, 4, 5, 5]])
    scores = score_policy(None, EchoPrior(), mel, np.array([4]))
    # steps 0, 1, 3 repeat (log p 0), step 2 does not (log p = -1e9 after log_softmax)
    assert scores["mean_log_p"] == pytest.approx(-1e9 / 4, rel=1e-3)


def test_score_policy_batches_agree() -> None:
    from rltuner.models.prior import build_prior

    torch.manual_seed(0)
    prior = build_prior({"arch": "lstm", "hidden_size": 8})
    model = build_prior({"arch": "lstm", "hidden_size": 8})
    mel = np.random.default_rng(2).integers(0, NUM_CLASSES, size=(10, 6))
    primers = np.random.default_rng(3).integers(2, NUM_CLASSES, size=10)
    whole = score_policy(model, prior, mel, primers, batch_size=10)
    parts = score_policy(model, prior, mel, primers, batch_size=3)
    assert whole["mean_log_p"] == pytest.approx(parts["mean_log_p"], rel=1e-5)
    assert whole["mean_kl"] == pytest.approx(parts["mean_kl"], rel=1e-5)
    assert whole["mean_kl"] > 0.0


def test_step_probabilities_rows_are_distributions() -> None:
    probs = step_probabilities(EchoPrior(), [5, 6, 1], primer=9)
    assert probs.shape == (3, NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)
    assert probs.argmax(axis=1).tolist() == [9, 5, 6]


# --- result table and files -------------------------------------------------------------------------------


def fake_result() -> EvaluationResult:
    def model(name: str, shift: float) -> ModelEvaluation:
        return ModelEvaluation(
            name=name,
            table1={"notes_excessively_repeated": 0.5 - shift, "mean_autocorrelation_lag_1": -0.16 + shift},
            counts={"n_melodies": 10.0},
            mean_log_p=-1.0 - shift,
            mean_task_reward=0.5 + shift,
            mean_kl=shift,
            diversity={"distinct_windows": 0.9, "distinct_melodies": 1.0},
            copying=math.nan,
            muspy={"pitch_range": 12.0},
        )

    return EvaluationResult(
        models={"note_rnn": model("note_rnn", 0.0), "q": model("q", 0.25)},
        settings={"n": 10, "length": 32, "seed": 0, "muspy_samples": 10},
    )


def test_table_csv_json_round_trip(tmp_path) -> None:
    result = fake_result()
    text = result.format_table()
    assert "Mean log p(a|s) under Note RNN" in text and "-1.250" in text
    assert "Notes excessively repeated" in text and "Mean autocorrelation lag 1" in text
    assert " 50%" in text and " 25%" in text  # fractions print as percentages
    assert "-0.16" in text and "+0.09" in text  # autocorrelation is a signed coefficient
    assert "63.3%" in text and "28.7%" not in text  # the paper's column of the rows we have
    assert "paper Note RNN" in result.header()
    paths = result.write(tmp_path)
    rows = paths["csv"].read_text().splitlines()
    assert rows[0] == "metric,note_rnn,q"
    assert "mean_kl,0.0,0.25" in rows
    assert "copying.share_16_step_run,," in rows  # NaN is an empty cell
    data = json.loads(paths["json"].read_text())
    assert data["models"]["q"]["copying"] is None  # NaN is null in JSON
    back = load_result(paths["json"])
    assert back.models["q"].mean_log_p == -1.25
    assert math.isnan(back.models["q"].copying)


# --- Table 1 and r_MT through our code path (the spec's worked checks) ------------------------------------


def test_measure_samples_on_the_spec_worked_checks() -> None:
    # primers: C#4 (out of key) before ALL_HOLDS, C4 before WORKED; Table 1 counts them as heard
    mel = np.array([ALL_HOLDS, WORKED])
    ev = measure_samples("x", mel, np.array([15, 14]), None, uniform(), muspy_index=np.array([1]))
    t = ev.table1
    assert ev.counts["n_melodies"] == 2 and ev.counts["n_steps"] == 66 and ev.counts["primer_steps"] == 1
    assert t["notes_excessively_repeated"] == pytest.approx(27 / 66)  # the 27 held steps of ALL_HOLDS
    assert t["melodies_starting_with_tonic"] == 0.5  # the first generated step: WORKED's C4, not the primer
    assert t["melodies_with_unique_max_note"] == 1.0  # C#4 once before ALL_HOLDS; 26 once in WORKED
    assert t["melodies_with_unique_min_note"] == 0.5  # C#4 again; C4 five times in C4 + WORKED
    assert t["notes_not_in_key"] == 0.0  # the out-of-key primer is an input, not counted by this row
    assert math.isnan(t["leaps_resolved"])  # no leap at all (C#4 -> nothing; WORKED moves by steps)
    assert ev.mean_task_reward == pytest.approx((-2691 - 0.7934) / 64, abs=1e-5)
    assert ev.mean_log_p == pytest.approx(-math.log(NUM_CLASSES), abs=1e-6)
    assert ev.mean_kl == 0.0
    assert ev.diversity["distinct_melodies"] == 1.0
    assert ev.diversity["top_opening_8"] == 0.5  # two melodies, two openings
    assert ev.top_opening in ("- - - - - - - -", steps_to_names(WORKED[:8]))
    assert math.isnan(ev.copying)  # no corpus given
    assert ev.muspy["pitch_range"] == 12.0  # C4..C5 in C4 + WORKED
    assert ev.muspy["n_pitch_classes_used"] == 5.0  # C, D, E, F, G
    assert ev.muspy["scale_consistency"] == 1.0  # all in C major


def test_table_percentages_never_use_scientific_notation() -> None:
    from rltuner.evaluation.evaluate import _pct

    assert _pct(6.25e-7, "notes_excessively_repeated") == "<0.001%"
    assert _pct(0.000537, "notes_not_in_key") == "0.0537%"
    assert _pct(0.0, "notes_excessively_repeated") == "0%"
    assert _pct(-0.1234, "mean_autocorrelation_lag_1") == "-0.12"


def _muspy_reference(melodies: np.ndarray) -> dict[str, float]:
    """muspy's own functions on one muspy.Music per melody (what muspy_metrics computes at once)."""
    import math
    import warnings

    import muspy

    from rltuner.evaluation.evaluate import melody_to_muspy

    funcs = {
        "pitch_class_entropy": muspy.pitch_class_entropy,
        "pitch_entropy": muspy.pitch_entropy,
        "scale_consistency": muspy.scale_consistency,
        "pitch_in_scale_rate_c_major": lambda m: muspy.pitch_in_scale_rate(m, 0, "major"),
        "pitch_range": muspy.pitch_range,
        "n_pitches_used": muspy.n_pitches_used,
        "n_pitch_classes_used": muspy.n_pitch_classes_used,
        "empty_beat_rate": muspy.empty_beat_rate,
    }
    values: dict[str, list[float]] = {k: [] for k in funcs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mel in melodies:
            music = melody_to_muspy(mel)
            for k, fn in funcs.items():
                values[k].append(float(fn(music)))
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else math.nan for k, v in values.items()}


@pytest.mark.parametrize("style", ["uniform", "holds", "rests", "silent", "one"])
def test_muspy_metrics_equal_muspys_own(style: str) -> None:
    from rltuner.evaluation.evaluate import muspy_metrics

    rng = np.random.default_rng(len(style))
    if style == "uniform":
        mel = rng.integers(0, 38, size=(60, 32))
    elif style == "holds":  # long notes: beats covered by holds, notes ending on beat boundaries
        mel = rng.choice(np.array([1, 1, 1, 1, 1, 14, 21, 0]), size=(60, 32))
    elif style == "rests":  # mostly silence: empty beats, melodies without notes (NaN, skipped)
        mel = rng.choice(np.array([0, 0, 0, 1, 1, 30]), size=(60, 17))
    elif style == "silent":
        mel = np.zeros((3, 8), dtype=np.int64)
    else:
        mel = np.array([[1, 1, 14, 1, 1, 1, 0, 1]])
    got, want = muspy_metrics(mel), _muspy_reference(mel)
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12, nan_ok=True), k


def test_evaluating_models_one_by_one_and_merging_equals_one_evaluation(tmp_path) -> None:
    """``rltuner run --jobs`` measures each model in its own process (``only``) and merges the parts."""
    from rltuner.errors import ConfigError
    from rltuner.evaluation.evaluate import evaluate_models, merge_evaluations
    from rltuner.models.checkpoint import save_prior
    from rltuner.models.prior import build_prior

    torch.manual_seed(0)
    prior = build_prior({"arch": "lstm", "hidden_size": 8})
    paths = {}
    for name in ("a", "b"):
        paths[name] = tmp_path / f"{name}.safetensors"
        save_prior(paths[name], build_prior({"arch": "lstm", "hidden_size": 8}))
    kwargs = {"n": 24, "seed": 3, "prior": prior, "muspy_samples": 4, "show_progress": False}
    whole = evaluate_models(paths, **kwargs)
    # a part loads only its own model: the others' checkpoints need not exist yet
    missing = {**paths, "b": tmp_path / "not-yet.safetensors"}
    parts = [evaluate_models(missing, only=["note_rnn"], **kwargs), evaluate_models(missing, only=["a"], **kwargs),
             evaluate_models(paths, only=["b"], **kwargs)]  # fmt: skip
    merged = merge_evaluations(parts[::-1], ["note_rnn", "a", "b"])
    assert list(merged.models) == ["note_rnn", "a", "b"]
    for name in merged.models:
        got, want = merged.models[name].flat(), whole.models[name].flat()
        assert {k: v for k, v in got.items() if not k.startswith("seconds.")} == pytest.approx(
            {k: v for k, v in want.items() if not k.startswith("seconds.")}, nan_ok=True, rel=0, abs=0
        )
        assert np.array_equal(merged.samples[name], whole.samples[name])
    assert merged.settings == whole.settings
    with pytest.raises(ConfigError, match="no model c"):
        evaluate_models(paths, only=["c"], **kwargs)
    with pytest.raises(ConfigError, match="no part measured b"):
        merge_evaluations(parts[:2], ["note_rnn", "a", "b"])


def test_evaluation_with_workers_equals_one_worker_bit_for_bit() -> None:
    """Batches sampled and scored in threads and the measures computed side by side: the same samples and
    every figure (Table 1, counts, log p, KL, r_MT, diversity, copying, muspy) to the bit, as one worker."""
    from rltuner.evaluation.evaluate import evaluate_models
    from rltuner.models.prior import build_prior

    torch.manual_seed(0)
    prior = build_prior({"arch": "lstm", "hidden_size": 8}).eval()
    model = build_prior({"arch": "lstm", "hidden_size": 8}).eval()
    corpus = list(np.random.default_rng(1).integers(0, NUM_CLASSES, size=(40, 48)))
    kwargs = {
        "n": 2_500,
        "seed": 4,
        "prior": prior,
        "muspy_samples": 30,
        "show_progress": False,
        "corpus": corpus,
    }
    one = evaluate_models({"m": model}, workers=1, **kwargs)  # 2,500 melodies: three batches of the sampler
    two = evaluate_models({"m": model}, workers=2, **kwargs)
    for name in ("note_rnn", "m"):
        a = {k: v for k, v in one.models[name].flat().items() if not k.startswith("seconds.")}
        b = {k: v for k, v in two.models[name].flat().items() if not k.startswith("seconds.")}
        assert a.keys() == b.keys()
        assert [repr(a[k]) for k in a] == [repr(b[k]) for k in a], name  # repr: NaN equals NaN, -0.0 is seen
        assert one.models[name].top_opening == two.models[name].top_opening
        assert one.samples[name].tobytes() == two.samples[name].tobytes()
    assert one.models["m"].mean_kl > 0 and one.models["m"].copying >= 0  # figures the check can see
    with pytest.raises(ConfigError, match="workers"):
        evaluate_models({"m": model}, workers=0, **kwargs)
    with pytest.raises(ConfigError, match="workers"):
        measure_samples("m", one.samples["m"], one.primers["m"], model, prior, workers=True)  # type: ignore[arg-type]


def test_measure_parts_side_by_side_keep_results_and_raise_a_parts_error() -> None:
    """The measures' runner: each part's own result whatever the worker count, and an error in one part,
    computed in a worker thread, reaches the caller as itself."""
    from rltuner.errors import InvalidMelodyError
    from rltuner.evaluation.evaluate import _run_parts

    parts = {"a": lambda: 1, "b": lambda: "two", "c": lambda: [3]}
    for workers in (1, 2, 3):
        done, took = _run_parts(parts, workers)
        assert done == {"a": 1, "b": "two", "c": [3]} and took.keys() == parts.keys()

    def broken() -> None:
        raise InvalidMelodyError("part b is broken")

    with pytest.raises(InvalidMelodyError, match="part b"):
        _run_parts({"a": lambda: 1, "b": broken}, 2)
