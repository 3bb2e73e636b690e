"""Piano-roll pictures: notes drawn where they sound, pitch labels, bar lines, grids, titles, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rltuner.data.pianoroll import piano_roll_figure, pitch_name, plot_piano_roll
from rltuner.errors import ConfigError, InvalidMelodyError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MELODY = [14, 1, 16, 0, 1, 1, 18, 1, 1, 1, 1, 1, 1, 1, 1, 0, 21, 1, 1, 0]  # C4 (2), D4 (1), E4 (9), G4 (3)


@pytest.mark.parametrize(("pitch", "name"), [(60, "C4"), (48, "C3"), (83, "B5"), (69, "A4"), (61, "C#4")])
def test_pitch_name(pitch: int, name: str) -> None:
    assert pitch_name(pitch) == name


def _rects(ax: Any) -> list[tuple[float, float, float]]:
    """(x, y centre, width) of every note rectangle, rounded."""
    return [
        (round(p.get_x(), 2), round(p.get_y() + p.get_height() / 2, 2), round(p.get_width(), 2))
        for p in _notes(ax)
    ]


def _notes(ax: Any) -> list[Any]:
    return [p for p in ax.patches if p.get_gid() == "note"]


def test_one_melody_notes_labels_and_bars() -> None:
    fig = piano_roll_figure(MELODY, title="whole", titles=["first"])
    (ax,) = fig.axes
    # one rectangle per note, at its start step and MIDI pitch, as long as the note (minus a small gap)
    assert _rects(ax) == [(0, 60, 1.9), (2, 62, 0.9), (6, 64, 8.9), (16, 67, 2.9)]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "A#3" and labels[-1] == "A#4"  # notes 60..67, margin 59..68, padded to 58..70
    assert ax.get_ylim() == (57.5, 70.5)
    assert list(ax.get_xticks()) == [0, 16]  # x ticks at bars
    bar_lines = [line.get_xdata()[0] for line in ax.lines if line.get_linewidth() == 1.0]
    assert bar_lines == [0, 16]  # every bar; beats are thinner
    assert len(ax.lines) == 6  # steps 0, 4, ..., 20
    assert ax.get_title() == "first" and fig._suptitle.get_text() == "whole"
    assert ax.get_xlim() == (0, 20)


def test_grid_layout_and_shared_range() -> None:
    batch = np.array([[14, 1, 0, 1], [37, 0, 1, 1], [1, 1, 1, 1], [2, 1, 1, 0], [20, 0, 20, 0]])
    fig = piano_roll_figure(batch, titles=list("abcde"), columns=2)
    axes = fig.axes
    assert len(axes) == 6  # 3 rows x 2 columns, the last one blank
    assert not axes[5].axison
    assert [ax.get_title() for ax in axes[:5]] == list("abcde")
    assert {ax.get_ylim() for ax in axes[:5]} == {(46.5, 84.5)}  # one range: 48 and 83 with margins
    assert [len(_notes(ax)) for ax in axes[:5]] == [1, 1, 0, 1, 2]
    assert [ax.get_xlabel() for ax in axes[:5]] == ["", "", "", "step (16ths)", "step (16ths)"]


def test_png_written(tmp_path: Path) -> None:
    one = plot_piano_roll(MELODY, tmp_path / "one.png")
    grid = plot_piano_roll([MELODY, MELODY[:8], [1] * 4], tmp_path / "figs" / "grid.png", title="three")
    for path in (one, grid):
        assert path.read_bytes()[:8] == PNG_MAGIC
    import matplotlib.image

    image = matplotlib.image.imread(str(one))  # (H, W, 4) floats
    blue = np.all(np.abs(image[..., :3] - np.array([0x3B, 0x6F, 0xB6]) / 255) < 0.02, axis=-1)
    assert blue.sum() > 200  # the notes are drawn in this colour
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["figs", "grid.png", "one.png"]


@pytest.mark.parametrize(
    ("melodies", "kwargs", "error", "message"),
    [
        ([], {}, InvalidMelodyError, "no melody"),
        ([[14, 99]], {}, InvalidMelodyError, "invalid class 99"),
        (np.ones((65, 4), dtype=int), {}, ConfigError, "too many"),
        ([[14], [16]], {"titles": ["x"]}, ConfigError, "1 titles for 2"),
        ([[14]], {"columns": 0}, ConfigError, "columns"),
    ],
)
def test_errors(
    tmp_path: Path, melodies: object, kwargs: dict[str, object], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        plot_piano_roll(melodies, tmp_path / "x.png", **kwargs)  # type: ignore[arg-type]
    assert not list(tmp_path.iterdir())
