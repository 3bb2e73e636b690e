"""Dataset build, save/load, split, default dataset in the cache, statistics, bad files, atomic writes."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from rltuner.data import abc_corpus, dataset
from rltuner.data.dataset import (
    FORMAT_VERSION,
    BuildConfig,
    MelodyDataset,
    build_dataset,
    dataset_stats,
    default_dataset_path,
    load_dataset,
    load_default_dataset,
    manifest_path,
    save_dataset,
    split_by_group,
)
from rltuner.errors import ConfigError, DatasetError, MidiReadError, RLTunerError

# A handful of tunes: G major, D minor, one needing an octave shift, one too wide, triplets, grace notes.
FOLK_A = """% tiny test collection
X:1
T:G major
M:4/4
L:1/8
K:G
GABc d2B2|c2A2 B2G2|GABc d2B2|A2F2 G4|]

X:2
T:D minor
M:3/4
L:1/8
K:Dm
D2F2A2|d4A2|B2A2G2|F2E2D2|D2F2A2|d6|]

X:3
T:high
M:4/4
L:1/8
K:C
c''d''e''f'' g''2e''2|f''2d''2 c''4|c''d''e''f'' g''2e''2|f''2d''2 c''4|]
"""
FOLK_B = """X:1
T:too wide
M:4/4
L:1/4
K:C
C,, E,, G,, C,|c' e' g' c''|C,, E,, G,, C,|c' e' g' c''|]

X:2
T:triplets
M:4/4
L:1/8
K:C
(3cBA G2 E2 C2|(3DEF G2 A4|(3cBA G2 E2 C2|D2 E2 C4|]

X:3
T:grace
M:4/4
L:1/8
K:A
{g}A2 ~B2 {ag}c2 e2|!trill!f2 e2 c4|{g}A2 B2 c2 e2|f2 e2 A4|]
"""


@pytest.fixture
def fake_corpus(tmp_path, monkeypatch):
    """A music21-like corpus folder with two tiny collections, used instead of the real one."""
    root = tmp_path / "corpus"
    (root / "essenFolksong").mkdir(parents=True)
    (root / "oneills1850").mkdir()
    (root / "essenFolksong" / "a.abc").write_text(FOLK_A)
    (root / "oneills1850" / "b.abc").write_text(FOLK_B)
    monkeypatch.setattr(abc_corpus, "music21_corpus_dir", lambda: root)
    return root


TINY = BuildConfig(collections=("essen", "oneills"), jobs=1, valid_fraction=0.34)


def test_tiny_folk_build(fake_corpus, tmp_path):
    out = tmp_path / "out" / "melodies.npz"
    report = build_dataset(TINY, out, progress=False)
    assert report.counts["files"] == 2 and report.counts["tunes"] == 6
    assert report.drops == {
        "unparseable": 0,
        "no_notes": 0,
        "chords": 0,
        "off_grid": 0,
        "range": 1,
        "too_short": 0,
        "too_long": 0,
        "limit": 0,
        "timeout": 0,
    }
    assert report.counts["kept"] == 5 and report.counts["rounded_off_grid"] == 1
    assert report.train_melodies + report.valid_melodies == 5 and report.valid_melodies == 2
    assert "range" in report.format() and "melodies kept" in report.format()
    ds = load_dataset(out)
    every = ds.train + ds.valid
    first = sorted(tuple(m[:4].tolist()) for m in every)
    assert first == [
        (11, 1, 1, 1),  # D minor: D4 (a quarter) -> A3
        (26, 1, 1, 1),  # A major with grace notes: A4 -> C5, a quarter (the grace note is gone)
        (26, 1, 28, 1),  # G major: G4 A4 (eighths) -> C5 D5
        (26, 1, 28, 1),  # the high tune: c'' d'' (C6 D6) -> an octave down
        (26, 25, 1, 23),  # triplet c B A rounded onto steps 0, 1, 3
    ]
    assert all(m.dtype == np.int8 and m.min() >= 0 and m.max() < 38 for m in every)
    assert ds.num_steps == report.steps


def test_manifest_contents(fake_corpus, tmp_path):
    out = tmp_path / "m.npz"
    report = build_dataset(TINY, out, progress=False)
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest == load_dataset(out).manifest == report.manifest
    assert manifest["format_version"] == FORMAT_VERSION
    assert [s["name"] for s in manifest["sources"]] == ["essen", "oneills"]
    assert "non-commercial" in manifest["sources"][0]["licence"]
    assert manifest["sources"][1]["licence"] == "no licence file shipped"
    assert manifest["counts"]["drops"]["range"] == 1 and manifest["counts"]["kept"] == 5
    assert manifest["split"] == {"by": "tune", "seed": 0, "valid_fraction": 0.34}
    assert manifest["settings"]["triplets"] == "round" and "jobs" not in manifest["settings"]
    assert manifest["encoding"]["num_classes"] == 38
    assert manifest["content_hash"] == load_dataset(out).content_hash()
    assert manifest["built_at"] and manifest["build_seconds"] >= 0


def test_build_is_deterministic_and_jobs_do_not_matter(fake_corpus, tmp_path):
    a = build_dataset(TINY, tmp_path / "a.npz", progress=False)
    b = build_dataset(
        BuildConfig(collections=("essen", "oneills"), jobs=2, valid_fraction=0.34), tmp_path / "b.npz"
    )
    assert a.manifest["content_hash"] == b.manifest["content_hash"]


def test_triplet_drop_policy_and_exclude(fake_corpus, tmp_path):
    cfg = BuildConfig(collections=("essen", "oneills"), triplets="drop", jobs=1)
    assert build_dataset(cfg, tmp_path / "d.npz", progress=False).drops["off_grid"] == 1
    only_essen = BuildConfig(exclude=("oneills", "ryans", "airds", "misc"), jobs=1)
    report = build_dataset(only_essen, tmp_path / "e.npz", progress=False)
    assert report.counts["tunes"] == 3 and [s["name"] for s in report.manifest["sources"]] == ["essen"]


def _melodies(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 38, size=int(rng.integers(32, 64))).astype(np.int8) for _ in range(n)]


def test_split_is_deterministic_keeps_groups_and_follows_the_seed():
    melodies = _melodies(60)
    groups = [2] * 30
    train, valid = split_by_group(melodies, groups, 0.1, seed=0)
    assert len(valid) == 6 and len(train) == 54  # 3 of 30 tunes, two melodies each
    again = split_by_group(melodies, groups, 0.1, seed=0)
    assert [m.tobytes() for m in again[1]] == [m.tobytes() for m in valid]
    other = split_by_group(melodies, groups, 0.1, seed=1)
    assert [m.tobytes() for m in other[1]] != [m.tobytes() for m in valid]
    index = {m.tobytes(): i for i, m in enumerate(melodies)}
    picked = sorted(index[m.tobytes()] for m in valid)
    assert all(i % 2 == 0 and i + 1 in picked for i in picked[::2])  # both melodies of a tune together
    assert split_by_group(melodies, groups, 0.0, seed=0)[1] == []
    assert len(split_by_group(melodies[:2], [1, 1], 0.01, seed=0)[1]) == 1  # at least one when asked


def test_save_load_round_trip_exact(tmp_path):
    train = [np.array([14, 1, 16, 0], np.int8), np.array([2, 37], np.int8)]
    valid = [np.array([1, 1, 21], np.int8)]
    manifest = {"format": dataset.FORMAT_NAME, "format_version": FORMAT_VERSION, "note": "x"}
    path = save_dataset(MelodyDataset(train, valid, manifest), tmp_path / "r.npz")
    ds = load_dataset(path)
    assert [m.tolist() for m in ds.train] == [[14, 1, 16, 0], [2, 37]]
    assert [m.tolist() for m in ds.valid] == [[1, 1, 21]]
    assert ds.manifest == manifest
    with np.load(path, allow_pickle=False) as npz:
        assert npz["train_offsets"].tolist() == [0, 4, 6] and npz["train_tokens"].dtype == np.int8
    assert (path.stat().st_mode & 0o044) == 0o044  # readable by others, like any output


def _save_tiny(path, **manifest_changes):
    manifest = {"format": dataset.FORMAT_NAME, "format_version": FORMAT_VERSION, **manifest_changes}
    return save_dataset(MelodyDataset([np.array([14, 1], np.int8)], [], manifest), path)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"not a zip file at all"), "is not a dataset file"),
        (
            lambda p: p.write_bytes(_save_tiny(p.with_name("ok.npz")).read_bytes()[:100]),
            "not a readable dataset",
        ),
        (lambda p: np.savez(p.open("wb"), weights=np.zeros(3)), "missing"),
        (lambda p: _save_tiny(p, format_version=FORMAT_VERSION + 1), "format version"),
        (lambda p: _save_tiny(p, format="something-else"), "not an rltuner melody dataset"),
    ],
    ids=["missing", "garbage", "truncated", "other-npz", "other-version", "other-format"],
)
def test_bad_dataset_files(tmp_path, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(DatasetError, match=message):
        load_dataset(path)


def test_corrupt_offsets(tmp_path):
    path = _save_tiny(tmp_path / "c.npz")
    with np.load(path) as npz:
        arrays = dict(npz)
    arrays["train_offsets"] = np.array([0, 5], np.int64)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    with pytest.raises(DatasetError, match="inconsistent"):
        load_dataset(path)


def test_failed_build_leaves_the_old_file(fake_corpus, tmp_path, monkeypatch):
    out = tmp_path / "keep.npz"
    build_dataset(TINY, out, progress=False)
    before = out.read_bytes()
    with pytest.raises(DatasetError, match="no usable melody"):
        build_dataset(BuildConfig(collections=("essen",), min_length=10_000, jobs=1), out, progress=False)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dataset.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(BuildConfig(collections=("essen",), jobs=1), out, progress=False)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".keep")) == []  # no temp files


def test_bad_build_inputs(fake_corpus, tmp_path):
    with pytest.raises(MidiReadError, match="does not exist"):
        build_dataset(BuildConfig(sources=(str(tmp_path / "nope"),)), tmp_path / "x.npz", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MidiReadError, match=r"no \.mid"):
        build_dataset(BuildConfig(sources=(str(tmp_path / "empty"),)), tmp_path / "x.npz", progress=False)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    with pytest.raises(RLTunerError, match="not writable"):
        build_dataset(TINY, blocker / "x.npz", progress=False)
    for bad in [{"valid_fraction": 1.0}, {"sources": ()}, {"jobs": -1}, {"collections": ("bach",)}]:
        with pytest.raises(ConfigError):
            BuildConfig(**bad).validate()  # type: ignore[arg-type]


def test_default_dataset_is_built_once_then_reused(fake_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("RLTUNER_CACHE", str(tmp_path / "cache"))
    cfg = BuildConfig(collections=("essen",), jobs=1)
    path = default_dataset_path(cfg)
    assert path.parent == tmp_path / "cache" / "datasets" and path.name.startswith("folk-")
    assert default_dataset_path(BuildConfig(collections=("essen",), jobs=2)) == path  # jobs: same content
    assert default_dataset_path(BuildConfig(seed=1)) != default_dataset_path(BuildConfig())
    calls = []
    real_build = dataset.build_dataset
    monkeypatch.setattr(dataset, "build_dataset", lambda *a, **k: calls.append(1) or real_build(*a, **k))
    first = load_default_dataset(cfg, progress=False)
    second = load_default_dataset(cfg, progress=False)
    assert len(calls) == 1 and first.content_hash() == second.content_hash()
    path.write_bytes(b"corrupt")  # a broken cache file is rebuilt
    assert load_default_dataset(cfg, progress=False).content_hash() == first.content_hash()
    assert len(calls) == 2


def test_dataset_stats_exact():
    ds = MelodyDataset([np.array([14, 1, 16, 0, 1], np.int8)], [np.array([21, 14, 1], np.int8)], {})
    s = dataset_stats(ds)
    assert (s["melodies"], s["train"], s["valid"], s["steps"], s["notes"]) == (2, 1, 1, 8, 4)
    counts = [0] * 38
    counts[0], counts[1], counts[14], counts[16], counts[21] = 1, 3, 2, 1, 1
    assert s["class_counts"] == counts
    assert s["length"] == {"min": 3, "mean": 4.0, "median": 4.0, "max": 5}
    assert s["interval_counts"] == {"-7": 1, "2": 1}
    assert s["pitch_range"] == [14, 21]


def test_npz_is_a_plain_zip_without_pickles(fake_corpus, tmp_path):
    out = tmp_path / "z.npz"
    build_dataset(TINY, out, progress=False)
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == sorted(
            f"{k}.npy" for k in ("train_tokens", "train_offsets", "valid_tokens", "valid_offsets", "manifest")
        )


def test_corpus_benchmark_quick():
    from rltuner.benchmarks.corpus import measure

    results = measure(quick=True)
    by_name = {r["name"]: r for r in results}
    assert by_name["corpus size: tunes read"]["value"] > 100  # music21's miscFolk collection
    assert (
        by_name["corpus size: sixteenth steps"]["value"] > by_name["corpus size: melodies kept"]["value"] * 32
    )
    assert all(r["unit"] for r in results) and results[0]["value"] > 0
