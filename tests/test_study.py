"""Listening study: balanced, blind pairs; ratings parsing; statistics on synthetic ratings; the CLI."""

from __future__ import annotations

import csv
import itertools
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli, main
from rltuner.errors import ConfigError, DatasetError
from rltuner.evaluation.study import (
    Rating,
    analyze_ratings,
    balanced_pair_count,
    holm,
    load_key,
    make_study,
    plan_pairs,
    read_ratings,
)

MODELS = {"note_rnn": 7, "q": 5, "psi": 9, "g": 6}


@pytest.mark.parametrize(
    ("n_models", "wanted", "total"), [(2, 1, 2), (2, 10, 10), (3, 7, 12), (4, 24, 24), (4, 25, 36)]
)
def test_balanced_pair_count(n_models: int, wanted: int, total: int) -> None:
    assert balanced_pair_count(n_models, wanted) == total


@pytest.mark.parametrize("n_pairs", [12, 36])
def test_pairs_are_balanced(n_pairs: int) -> None:
    pairs = plan_pairs(MODELS, n_pairs, seed=3)
    assert len(pairs) == n_pairs and len({p.pair_id for p in pairs}) == n_pairs
    unordered = Counter(frozenset((p.model_a, p.model_b)) for p in pairs)
    assert set(unordered) == {frozenset(c) for c in itertools.combinations(MODELS, 2)}
    assert set(unordered.values()) == {n_pairs // 6}
    side_a, side_b = Counter(p.model_a for p in pairs), Counter(p.model_b for p in pairs)
    assert side_a == side_b and set(side_a.values()) == {n_pairs // 4}
    assert all(p.model_a != p.model_b and 0 <= p.index_a < MODELS[p.model_a] for p in pairs)
    # each model's melodies are used without repetition until all were used
    uses = Counter((p.model_a, p.index_a) for p in pairs) + Counter((p.model_b, p.index_b) for p in pairs)
    for model, count in MODELS.items():
        per = [uses[(model, i)] for i in range(count)]
        assert max(per) - min(per) <= 1


def test_pairs_randomised_and_seeded() -> None:
    first = plan_pairs(MODELS, 24, seed=1)
    assert first == plan_pairs(MODELS, 24, seed=1)
    assert first != plan_pairs(MODELS, 24, seed=2)
    order = [(p.model_a, p.model_b) for p in first]
    assert order != sorted(order)


@pytest.mark.parametrize(
    ("counts", "n", "message"),
    [
        ({"a": 3}, 2, "at least two models"),
        ({"a": 3, "b": 0}, 2, "no melodies"),
        ({"a": 1, "b": 1}, 0, "--pairs"),
    ],
)
def test_plan_errors(counts: dict[str, int], n: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plan_pairs(counts, n)


def test_make_study_is_blind(tmp_path: Path) -> None:
    samples = {
        "note_rnn": np.array([[14, 1, 16, 0], [18, 1, 1, 0]]),
        "q_learning": np.array([[21, 1, 1, 1]]),
        "psi": np.array([[23, 0, 23, 0], [26, 1, 0, 1], [30, 1, 1, 1]]),
    }
    files = make_study(samples, tmp_path / "s", n_pairs=6, seed=0, sample_rate=8000, progress=False)
    root = tmp_path / "s"
    rows = list(csv.DictReader(files.pairs_csv.open()))
    assert [r["pair_id"] for r in rows] == [f"p{i:03d}" for i in range(1, 7)]
    assert list(rows[0]) == ["pair_id", "audio_a", "audio_b", "midi_a", "midi_b"]
    public = files.pairs_csv.read_text() + files.template_csv.read_text()
    public += " ".join(p.name for p in root.rglob("*") if p.name != "key.json")
    for model in samples:
        assert model not in public
    for row in rows:
        for col in ("audio_a", "audio_b", "midi_a", "midi_b"):
            assert (root / row[col]).is_file()
    key = load_key(files.key_json)
    assert {pid: (p.model_a, p.model_b) for pid, p in [(p.pair_id, p) for p in files.pairs]} == key
    # the audio of side A is the melody the key names
    from rltuner.data.midi_io import midi_to_melody

    raw = json.loads(files.key_json.read_text())["pairs"]
    for row in rows:
        entry = raw[row["pair_id"]]
        assert midi_to_melody(root / row["midi_a"]).tolist() == samples[entry["A"]][entry["index_a"]].tolist()
    template = list(csv.DictReader(files.template_csv.open()))
    assert [t["pair_id"] for t in template] == [r["pair_id"] for r in rows] and not template[0]["choice"]


def _synthetic_key(seed: int = 0, n: int = 120) -> dict[str, tuple[str, str]]:
    return {
        p.pair_id: (p.model_a, p.model_b) for p in plan_pairs({"good": 50, "mid": 50, "bad": 50}, n, seed)
    }


def _ratings(key: dict[str, tuple[str, str]], strength: dict[str, float], seed: int) -> list[Rating]:
    """Bradley-Terry style answers: side A wins with probability s_A / (s_A + s_B)."""
    rng = np.random.default_rng(seed)
    out = []
    for pid, (a, b) in key.items():
        win_a = rng.random() < strength[a] / (strength[a] + strength[b])
        out.append(Rating(pid, "A" if win_a else "B"))
    return out


def test_analysis_finds_a_strong_effect() -> None:
    key = _synthetic_key()
    result = analyze_ratings(_ratings(key, {"good": 9.0, "mid": 1.0, "bad": 1.0}, seed=0), key)
    assert result.n_ratings == 120 and sum(result.comparisons.values()) == 240
    assert sum(result.wins.values()) == 120
    assert result.wins["good"] > 65 and result.kruskal_p < 1e-6
    tests = {(t.model_a, t.model_b): t for t in result.pairwise}
    assert tests[("bad", "good")].p_holm < 1e-4 and tests[("good", "mid")].p_holm < 1e-4
    assert tests[("bad", "mid")].p_holm > 0.05  # equal strengths: no difference
    assert result.head_to_head["good"]["bad"] + result.head_to_head["bad"]["good"] == 40
    n, w = result.comparisons["good"], result.wins["good"]
    assert result.win_std["good"] == pytest.approx((n * (w / n) * (1 - w / n)) ** 0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_analysis_null_is_not_significant(seed: int) -> None:
    key = _synthetic_key(seed)
    result = analyze_ratings(_ratings(key, {"good": 1.0, "mid": 1.0, "bad": 1.0}, seed=seed), key)
    assert result.kruskal_p > 0.05
    assert all(t.p_holm > 0.05 for t in result.pairwise)


def test_exact_small_case() -> None:
    key = {"p1": ("x", "y"), "p2": ("y", "x"), "p3": ("x", "y"), "p4": ("y", "x")}
    ratings = [Rating("p1", "A"), Rating("p2", "B"), Rating("p3", "A"), Rating("p4", "A", strength=2.0)]
    result = analyze_ratings(ratings, key)
    assert result.wins == {"x": 3, "y": 1} and result.comparisons == {"x": 4, "y": 4}
    assert result.win_std["x"] == pytest.approx((4 * 0.75 * 0.25) ** 0.5)
    assert result.head_to_head == {"x": {"y": 3}, "y": {"x": 1}}
    (test,) = result.pairwise
    # x scores [1, 1, 1, -2], y scores [-1, -1, -1, 2]: each +1 of x beats the three -1 of y, -2 beats none
    assert test.u == 9.0


def test_holm() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_read_ratings(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "r.csv", "pair_id,choice,rater_id,strength\np001,a,r1,3\np002,,r1,\np003,B,r2,\n"
    )
    assert read_ratings(path) == [Rating("p001", "A", "r1", 3.0), Rating("p003", "B", "r2", 1.0)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("pair,choice\np1,A\n", "missing column"),
        ("pair_id,choice\np1,C\n", "line 2: choice must be A or B"),
        ("pair_id,choice,strength\np1,A,-1\n", "strength must be a positive"),
        ("pair_id,choice\np1,\n", "no answered ratings"),
    ],
)
def test_bad_ratings(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        read_ratings(_write(tmp_path / "r.csv", text))


def test_cli_make_and_analyze(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.array([[14, 1, 16, 0]] * 3))
    np.save(tmp_path / "b.npy", np.array([[21, 0, 1, 1]] * 2))
    out = tmp_path / "study"
    args = [
        "study",
        "make",
        "--samples",
        f"alpha={tmp_path / 'a.npy'}",
        "--samples",
        f"beta={tmp_path / 'b.npy'}",
    ]
    result = CliRunner().invoke(
        cli, [*args, "--pairs", "5", "--out", str(out), "--sample-rate", "8000", "--no-midi"]
    )
    assert result.exit_code == 0, result.output
    assert "rounded up to 6" in result.output and not (out / "midi").exists()
    key = load_key(out / "key.json")
    # every listener prefers beta
    lines = ["pair_id,choice,rater_id"] + [
        f"{pid},{'A' if ab[0] == 'beta' else 'B'},r1" for pid, ab in key.items()
    ]
    ratings = _write(tmp_path / "ratings.csv", "\n".join(lines) + "\n")
    result = CliRunner().invoke(
        cli,
        [
            "study",
            "analyze",
            str(ratings),
            "--key",
            str(out / "key.json"),
            "--json",
            "--plot",
            str(tmp_path / "w.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["wins"] == {"alpha": 0, "beta": 6} and data["win_std"] == {"alpha": 0.0, "beta": 0.0}
    assert (tmp_path / "w.png").read_bytes()[:4] == b"\x89PNG"
    table = CliRunner().invoke(cli, ["study", "analyze", str(ratings), "--key", str(out / "key.json")])
    assert table.exit_code == 0 and "Kruskal-Wallis" in table.output and "beta" in table.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["make", "--samples", "noequals"], "expected NAME=PATH"),
        (["make", "--samples", "a=missing.npy", "--samples", "b=missing.npy"], "does not exist"),
        (["analyze", "r.csv", "--key", "missing.json"], "does not exist"),
        (["analyze", "r.csv", "--key", "bad.json"], "not a study key"),
        (["analyze", "r.csv", "--key", "key.json"], "not in the study key"),
    ],
)
def test_cli_errors(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "r.csv", "pair_id,choice\nzzz,A\n")
    _write(tmp_path / "bad.json", "{}")
    _write(
        tmp_path / "key.json",
        json.dumps({"format": "rltuner-study-key/1", "pairs": {"p1": {"A": "x", "B": "y"}}}),
    )
    with pytest.raises(SystemExit) as exc:
        main(["study", *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_key_records_the_melodies_and_old_keys_read_their_sources(tmp_path: Path) -> None:
    from rltuner.evaluation.study import load_key_melodies

    samples = {"x": np.array([[14, 1, 16, 0], [18, 1, 1, 0]]), "y": np.array([[21, 1, 1, 1], [23, 0, 23, 0]])}
    for name, melodies in samples.items():
        np.save(tmp_path / f"{name}.npy", melodies)
    files = make_study(
        samples, tmp_path / "s", n_pairs=4, audio=False, midi=False, progress=False,
        sources={name: str(tmp_path / f"{name}.npy") for name in samples},
    )  # fmt: skip
    assert not (tmp_path / "s" / "audio").exists()
    assert (tmp_path / "s" / "pairs.csv").read_text().splitlines()[0] == "pair_id"
    melodies = load_key_melodies(files.key_json)
    for pair in files.pairs:
        a, b = melodies[pair.pair_id]
        assert a.tolist() == samples[pair.model_a][pair.index_a].tolist()
        assert b.tolist() == samples[pair.model_b][pair.index_b].tolist()
    key = json.loads(files.key_json.read_text())
    for entry in key["pairs"].values():  # a key written before the melodies were recorded
        del entry["melody_a"], entry["melody_b"]
    old = tmp_path / "old_key.json"
    old.write_text(json.dumps(key))
    assert {k: (a.tolist(), b.tolist()) for k, (a, b) in load_key_melodies(old).items()} == {
        k: (a.tolist(), b.tolist()) for k, (a, b) in melodies.items()
    }
    (tmp_path / "x.npy").unlink()
    with pytest.raises(DatasetError, match="not recorded"):
        load_key_melodies(old)


def test_ratings_csv_round_trip(tmp_path: Path) -> None:
    from rltuner.evaluation.study import ratings_csv

    ratings = [
        Rating("p001", "A", "sim01", 3.0),
        Rating("p002", "B", "sim01", 1.0),
        Rating("p001", "B", "", 1.5),
    ]
    path = tmp_path / "r.csv"
    path.write_text(ratings_csv(ratings))
    assert read_ratings(path) == ratings
