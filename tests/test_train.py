"""Pretraining: window batches, metrics and baselines on hand-built cases, learning, resume, reproducibility."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from rltuner.errors import CheckpointError, ConfigError, DatasetError
from rltuner.models import train as train_mod
from rltuner.models.checkpoint import load_prior, read_checkpoint
from rltuner.models.prior import ModelConfig, build_prior
from rltuner.models.train import (
    PretrainConfig,
    WindowSampler,
    baseline_metrics,
    evaluate,
    l2_penalty,
    pretrain,
    run_dir_for,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _toy_melodies(n: int, seed: int) -> list[np.ndarray]:
    """Scales with a fixed rhythm: easy to learn, so a few steps of training must lower the loss."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        start = int(rng.integers(2, 20))
        notes = [start + k for k in range(int(rng.integers(6, 12)))]
        out.append(np.array([c for p in notes for c in (p, 1, 1, 0)], dtype=np.int64))
    return out


TINY = PretrainConfig(
    model=ModelConfig(hidden_size=16), steps=30, batch_size=16, window=24, skip_first=2, eval_every=10,
    patience=0, lr=1e-2,
)  # fmt: skip


def test_window_of_a_melody_that_fits_exactly() -> None:
    s = WindowSampler([np.array([2, 1, 1, 0])], window=3, min_predictions=0, rng=np.random.default_rng(0))
    x, y, m = s.batch(2)
    assert x.tolist() == [[2, 1, 1]] * 2 and y.tolist() == [[1, 1, 0]] * 2 and m.all()


def test_short_melody_is_padded_and_masked() -> None:
    s = WindowSampler([np.array([3, 4])], window=3, min_predictions=0, rng=np.random.default_rng(0))
    x, y, m = s.batch(1)
    assert x.tolist() == [[3, 4, 1]] and y.tolist() == [[4, 1, 1]] and m.tolist() == [[True, False, False]]


def test_windows_are_contiguous_slices_and_short_melodies_skipped() -> None:
    long = np.arange(2, 38)  # 35 predictions
    s = WindowSampler([long, np.array([5, 6, 7])], window=5, min_predictions=3, rng=np.random.default_rng(1))
    assert len(s.lengths) == 1  # the 2-prediction melody cannot contribute past the first 3 steps
    x, y, m = s.batch(50)
    assert m.all()
    assert (np.diff(x, axis=1) == 1).all() and (y == x + 1).all()
    assert len(set(x[:, 0].tolist())) > 10  # random offsets cover the melody


def test_no_usable_melody_is_a_dataset_error() -> None:
    with pytest.raises(DatasetError, match="long enough"):
        WindowSampler([np.array([2, 3])], window=4, min_predictions=8, rng=np.random.default_rng(0))


def test_baselines_exact_values() -> None:
    train = [np.array([2, 1, 2, 1])]
    valid = [np.array([2, 1, 1])]
    b = baseline_metrics(train, valid, skip_first=0, vocab_size=3)
    # add-one counts: column sums 3, 5, 4 -> unigram (1/4, 5/12, 1/3); both targets are class 1.
    assert b["unigram"].nll == pytest.approx(-math.log(5 / 12)) and b["unigram"].accuracy == 1.0
    assert b["hold"].nll == pytest.approx(-math.log(5 / 12)) and b["hold"].count == 2
    # bigram: P(1 | 2) = 3/5, P(1 | 1) = 1/4; the guess after 1 is 2 (wrong).
    assert b["bigram"].nll == pytest.approx(-(math.log(0.6) + math.log(0.25)) / 2)
    assert b["bigram"].accuracy == 0.5


def test_evaluate_matches_a_manual_computation() -> None:
    torch.manual_seed(0)
    model = build_prior({"arch": "gru", "hidden_size": 8})
    melodies = [np.array([2, 1, 1, 0, 5, 1]), np.array([7, 7, 1]), np.array([3])]
    got = evaluate(model, melodies, skip_first=1)
    nlls, hits = [], []
    for mel in melodies[:2]:
        t = torch.from_numpy(mel)[None]
        with torch.no_grad():
            logp = torch.log_softmax(model(t[:, :-1])[0][0], -1)  # (T - 1, V)
        for i in range(1, len(mel) - 1):
            nlls.append(-float(logp[i, mel[i + 1]]))
            hits.append(int(logp[i].argmax()) == mel[i + 1])
    assert got.count == 5
    assert got.nll == pytest.approx(float(np.mean(nlls)), rel=1e-5)
    assert got.accuracy == pytest.approx(float(np.mean(hits)))


def test_l2_penalty_counts_weight_matrices_only() -> None:
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        lin.bias.fill_(100.0)
    assert float(l2_penalty(lin).detach()) == 30.0


def test_training_lowers_validation_loss(tmp_path: Path) -> None:
    train, valid = _toy_melodies(40, 0), _toy_melodies(8, 1)
    torch.manual_seed(TINY.seed)
    before = evaluate(build_prior(TINY.model), valid, TINY.skip_first)
    result = pretrain(train, valid, tmp_path / "p.safetensors", TINY, progress=False)
    assert result.best.nll < before.nll - 0.5
    assert result.best.nll < result.baselines["unigram"].nll
    model, meta = load_prior(result.best_path)
    assert meta["step"] == result.best_step and meta["train_config"]["steps"] == 30
    assert meta["metrics"]["valid"]["nll"] == pytest.approx(result.best.nll)
    assert evaluate(model, valid, TINY.skip_first).nll == pytest.approx(result.best.nll, rel=1e-5)
    run = run_dir_for(tmp_path / "p.safetensors")
    assert (
        (run / "metrics.json").is_file()
        and (run / "resume.pt").is_file()
        and (run / "last.safetensors").is_file()
    )
    assert any((run / "tensorboard").iterdir())


def test_resume_after_interrupt_reproduces_the_uninterrupted_run(tmp_path: Path, monkeypatch) -> None:
    train, valid = _toy_melodies(30, 2), _toy_melodies(6, 3)
    cfg = PretrainConfig(
        model=ModelConfig(arch="lstm", hidden_size=12), steps=16, batch_size=8, window=16, skip_first=2,
        eval_every=5, patience=0,
    )  # fmt: skip
    full = pretrain(train, valid, tmp_path / "a" / "p.safetensors", cfg, progress=False)

    calls = {"n": 0}
    original = WindowSampler.batch

    def flaky(self: WindowSampler, batch_size: int):  # Ctrl-C before the 12th batch is drawn
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt
        return original(self, batch_size)

    monkeypatch.setattr(WindowSampler, "batch", flaky)
    out_b = tmp_path / "b" / "p.safetensors"
    with pytest.raises(KeyboardInterrupt):
        pretrain(train, valid, out_b, cfg, progress=False)
    monkeypatch.setattr(WindowSampler, "batch", original)
    resumed = pretrain(train, valid, out_b, cfg, resume=True, progress=False)

    assert resumed.steps_done == full.steps_done == 16 and resumed.best_step == full.best_step
    a = read_checkpoint(run_dir_for(tmp_path / "a" / "p.safetensors") / "last.safetensors")[0]
    b = read_checkpoint(run_dir_for(out_b) / "last.safetensors")[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_errors(tmp_path: Path) -> None:
    train, valid = _toy_melodies(10, 0), _toy_melodies(3, 1)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        pretrain(train, valid, tmp_path / "p.safetensors", TINY, resume=True, progress=False)
    pretrain(train, valid, tmp_path / "p.safetensors", replace(TINY, steps=2), progress=False)
    with pytest.raises(CheckpointError, match="other settings"):
        pretrain(train, valid, tmp_path / "p.safetensors", replace(TINY, lr=0.5), resume=True, progress=False)
    with pytest.raises(CheckpointError, match="other data"):
        pretrain(_toy_melodies(10, 9), valid, tmp_path / "p.safetensors", TINY, resume=True, progress=False)
    (run_dir_for(tmp_path / "p.safetensors") / "resume.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable resume state"):
        pretrain(train, valid, tmp_path / "p.safetensors", TINY, resume=True, progress=False)


def test_a_finished_run_can_be_extended(tmp_path: Path) -> None:
    train, valid = _toy_melodies(12, 4), _toy_melodies(3, 5)
    cfg = replace(TINY, steps=20, eval_every=5)
    full = pretrain(train, valid, tmp_path / "a.safetensors", cfg, progress=False)
    pretrain(train, valid, tmp_path / "b.safetensors", replace(cfg, steps=10), progress=False)
    longer = pretrain(train, valid, tmp_path / "b.safetensors", cfg, resume=True, progress=False)
    assert longer.steps_done == 20 and longer.best.nll == full.best.nll


def test_same_seed_same_weights(tmp_path: Path) -> None:
    train, valid = _toy_melodies(10, 0), _toy_melodies(3, 1)
    cfg = replace(TINY, steps=5, eval_every=5)
    r1 = pretrain(train, valid, tmp_path / "1.safetensors", cfg, progress=False)
    r2 = pretrain(train, valid, tmp_path / "2.safetensors", cfg, progress=False)
    a, b = read_checkpoint(r1.best_path)[0], read_checkpoint(r2.best_path)[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"steps": 0}, "steps"),
        ({"lr": -1.0}, "lr"),
        ({"skip_first": 200}, "skip_first"),
        ({"l2": -1.0}, "l2"),
    ],
)
def test_bad_pretrain_configs(changes: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        PretrainConfig(**changes).validate()


def test_empty_validation_split(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="validation"):
        pretrain(_toy_melodies(3, 0), [], tmp_path / "p.safetensors", TINY, progress=False)


def test_module_exposes_the_recipe_defaults() -> None:
    cfg = train_mod.PretrainConfig()
    assert (cfg.batch_size, cfg.grad_clip, cfg.l2, cfg.skip_first) == (128, 5.0, 2.5e-5, 8)
