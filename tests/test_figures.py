"""Figures: written from tiny fake logs and samples; the interval extraction on exact cases."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rltuner.encoding import NUM_CLASSES
from rltuner.errors import ConfigError, RLTunerError
from rltuner.evaluation import figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_log(folder, rows) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def fake_rows(slope: float) -> list[dict[str, float]]:
    return [
        {
            "env_step": s,
            "mean_log_p": -0.5 - slope * s / 1000,
            "mean_task_reward": -10 + slope * s / 100,
            "loss": 0.1,
        }
        for s in (0, 1000, 2000, 3000)
    ]


def test_figure2_from_run_folders(tmp_path) -> None:
    write_log(tmp_path / "q", fake_rows(1.0))
    write_log(tmp_path / "g", fake_rows(0.5))
    out = figures.figure2(
        {"q": tmp_path / "q", "g": tmp_path / "g", "psi": fake_rows(0.7)}, tmp_path / "f2.png"
    )
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_figure2_errors(tmp_path) -> None:
    with pytest.raises(ConfigError):
        figures.figure2({}, tmp_path / "f.png")
    with pytest.raises(RLTunerError, match="cannot read"):
        figures.figure2({"q": tmp_path / "missing"}, tmp_path / "f.png")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text("{not json\n")
    with pytest.raises(RLTunerError, match="line 1"):
        figures.read_metrics(tmp_path / "bad")
    with pytest.raises(ConfigError, match="no rows"):
        figures.figure2({"q": [{"loss": 1.0}]}, tmp_path / "f.png")
    assert not (tmp_path / "f.png").exists()


def test_figure4_heat_maps(tmp_path) -> None:
    rng = np.random.default_rng(0)
    mel = np.array([14, 1, 18, 0, 21, 1, 1, 14])
    probs = {}
    for name in ("note_rnn", "q"):
        p = rng.random((len(mel), NUM_CLASSES))
        probs[name] = p / p.sum(axis=1, keepdims=True)
    out = figures.figure4(probs, mel, tmp_path / "f4.png", primer=14)
    assert out.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ConfigError, match="shape"):
        figures.figure4({"q": probs["q"][:3]}, mel, tmp_path / "bad.png")


def test_figure4_layout_labels_every_class(tmp_path, monkeypatch) -> None:
    """Every class has its label, the colour bar is labelled, the map is viridis, nothing overlaps the title."""
    mel = np.array([14, 1, 18, 0, 21, 1, 1, 14])
    probs = {name: np.full((len(mel), NUM_CLASSES), 1 / NUM_CLASSES) for name in ("note_rnn", "q")}
    seen = {}
    real_save = figures._save

    def keep(fig, path, dpi=110):
        fig.canvas.draw()  # constrained layout is applied at draw time
        seen["fig"] = fig
        seen["title"] = fig._suptitle.get_window_extent()
        seen["panels"] = [ax.get_tightbbox() for ax in fig.axes[:2]]  # panel title included
        return real_save(fig, path, dpi)

    monkeypatch.setattr(figures, "_save", keep)
    figures.figure4(probs, mel, tmp_path / "f4.png", primer=14)
    fig = seen["fig"]
    panels, bar = fig.axes[:2], fig.axes[2]
    for ax in panels:
        assert [t.get_text() for t in ax.get_yticklabels()] == figures.class_labels()
        assert ax.images[0].get_cmap().name == "viridis"
    assert "probability" in bar.get_ylabel()
    assert seen["title"].y0 >= seen["panels"][0].y1  # the title sits above the first panel
    assert fig.get_layout_engine() is not None


def test_class_labels() -> None:
    labels = figures.class_labels()
    assert len(labels) == NUM_CLASSES
    assert labels[:3] == ["OFF", "HOLD", "C3"] and labels[14] == "C4" and labels[-1] == "B5"


@pytest.mark.parametrize(
    ("melody", "intervals"),
    [
        ([14, 1, 18, 0, 21, 1, 1, 14], [4, 3, -7]),  # holds and rests between notes are skipped
        ([1, 1, 0, 14, 14], [0]),  # a repeated note is interval 0; leading silence has none
        ([1, 1, 1, 1], []),
        ([2, 37], [35]),
    ],
)
def test_note_intervals(melody, intervals) -> None:
    assert figures.note_intervals(np.array([melody])).tolist() == intervals


def test_note_intervals_pool_melodies() -> None:
    assert figures.note_intervals(np.array([[14, 16], [20, 19]])).tolist() == [2, -1]


def test_interval_histograms_and_piano_rolls(tmp_path) -> None:
    rng = np.random.default_rng(1)
    samples = {k: rng.integers(0, NUM_CLASSES, size=(5, 16)) for k in ("note_rnn", "q", "psi", "g")}
    out = figures.interval_histograms(samples, tmp_path / "iv.png")
    assert out.read_bytes()[:8] == PNG_MAGIC
    rolls = figures.piano_rolls({"q": samples["q"]}, tmp_path / "rolls", per_model=2)
    assert rolls["q"].name == "pianoroll_q.png" and rolls["q"].read_bytes()[:8] == PNG_MAGIC


def test_model_label() -> None:
    assert [figures.model_label(k) for k in ("note_rnn", "psi", "rl_only", "mine")] == [
        "Note RNN", "Psi", "RL only", "mine",
    ]  # fmt: skip
