"""Melody / batch -> piano-roll PNG (matplotlib without pyplot: no display needed, no global state).

Pitch on the y axis (labelled with note names), steps on the x axis with a line at every bar (16 steps) and a
fainter one at every beat. A batch is drawn as a grid of small rolls sharing one pitch range.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rltuner.data.midi_io import MelodiesLike, as_melody_list
from rltuner.encoding import PITCH_CLASS_NAMES, STEPS_PER_BAR, STEPS_PER_QUARTER, classes_to_notes
from rltuner.errors import ConfigError, InvalidMelodyError
from rltuner.fileio import atomic_path

PathLike = str | os.PathLike[str]
MAX_PANELS = 64  # beyond this a grid is unreadable; the caller should pick melodies


def pitch_name(pitch: int) -> str:
    """Note name with octave of a MIDI pitch, e.g. 60 -> ``C4``."""
    return f"{PITCH_CLASS_NAMES[pitch % 12]}{pitch // 12 - 1}"


def _draw_roll(ax: Any, classes: npt.NDArray[np.int64], lo: int, hi: int, title: str | None) -> None:
    notes = classes_to_notes(classes)
    length = max(len(classes), 1)
    for note in notes:
        ax.add_patch(
            _rect(
                (note.start, note.pitch - 0.4),
                note.duration - 0.1,
                0.8,
                facecolor="#3b6fb6",
                edgecolor="#1d3a66",
                gid="note",  # tells notes from the black-key shading (both are patches)
            )
        )
    for step in range(0, length + 1, STEPS_PER_QUARTER):
        bar = step % STEPS_PER_BAR == 0
        ax.axvline(step, color="#444444" if bar else "#cccccc", linewidth=1.0 if bar else 0.5, zorder=0)
    ax.set_xlim(0, length)
    ax.set_ylim(lo - 0.5, hi + 0.5)
    # Label every pitch when the range is small, else only the Cs (octave landmarks).
    span = hi - lo
    ticks = [p for p in range(lo, hi + 1) if span <= 14 or p % 12 == 0]
    ax.set_yticks(ticks)
    ax.set_yticklabels([pitch_name(p) for p in ticks], fontsize=7)
    for p in range(lo, hi + 1):
        if PITCH_CLASS_NAMES[p % 12].endswith("#"):  # shade black-key rows, as a keyboard does
            ax.axhspan(p - 0.5, p + 0.5, color="#f0f0f0", zorder=-1)
    ax.set_xticks(range(0, length + 1, STEPS_PER_BAR))
    ax.tick_params(axis="x", labelsize=7)
    if title:
        ax.set_title(title, fontsize=9)


def _rect(xy: tuple[float, float], width: float, height: float, **kwargs: Any) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, **kwargs)


def piano_roll_figure(
    melodies: MelodiesLike,
    *,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    columns: int | None = None,
) -> Any:
    """Draw one melody or a grid of several as a piano roll; returns the matplotlib ``Figure``.

    The figure is built without pyplot (no global state, no window, the user's backend untouched); all panels
    share one pitch range of at least an octave. Arguments as in :func:`plot_piano_roll`.
    """
    from matplotlib.figure import Figure

    items = as_melody_list(melodies)
    if not items:
        raise InvalidMelodyError("no melody to plot")
    if len(items) > MAX_PANELS:
        raise ConfigError(f"{len(items)} melodies are too many for one piano roll (at most {MAX_PANELS})")
    if titles is not None and len(titles) != len(items):
        raise ConfigError(f"{len(titles)} titles for {len(items)} melodies")
    if columns is not None and columns < 1:
        raise ConfigError(f"columns must be at least 1, got {columns}")
    pitches = [n.pitch for m in items for n in classes_to_notes(m)]
    lo, hi = (min(pitches) - 1, max(pitches) + 1) if pitches else (59, 73)
    if hi - lo < 12:  # show at least an octave so short or static melodies keep their context
        pad = 12 - (hi - lo)
        lo, hi = lo - pad // 2, hi + (pad - pad // 2)

    ncols = min(columns or 4, len(items))
    nrows = math.ceil(len(items) / ncols)
    longest = max(max(len(m) for m in items), 1)
    width = min(3.0 + 0.12 * longest, 12.0) if ncols == 1 else min(4.2 * ncols, 18.0)
    height = 0.8 + (hi - lo) * 0.09 + 0.6
    fig = Figure(figsize=(width, max(height * nrows, 2.0)))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(items):
            ax.axis("off")
            continue
        _draw_roll(ax, items[i], lo, hi, titles[i] if titles is not None else None)
        if i + ncols >= len(items):  # the lowest panel of its column
            ax.set_xlabel("step (16ths)", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_piano_roll(
    melodies: MelodiesLike,
    path: PathLike,
    *,
    titles: Sequence[str] | None = None,
    title: str | None = None,
    columns: int | None = None,
    dpi: int = 110,
) -> Path:
    """Draw one melody or a grid of several as a piano-roll PNG, atomically.

    Args:
        melodies: one melody (T,), a batch (N, T), or a list of 1-D melodies; at most 64.
        path: the PNG file to write.
        titles: one title per melody (panel), optional.
        title: a title over the whole figure, optional.
        columns: panels per row (default: up to 4).
        dpi: resolution.

    Returns:
        The path written.

    Raises:
        InvalidMelodyError: bad melodies or none at all.
        ConfigError: wrong number of titles, too many panels, columns < 1.
    """
    fig = piano_roll_figure(melodies, titles=titles, title=title, columns=columns)
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return target
