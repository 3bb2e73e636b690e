"""The paper's figures and a few more, as PNG files (matplotlib, headless).

- Figure 2: mean log p(a|s) and mean r_MT against environment steps, one line per algorithm (from each run
  folder's ``metrics.jsonl``);
- Figure 4: each model's distribution over the 38 classes at each step of one primed melody (heat maps);
- piano rolls of sample melodies per model; histograms of the intervals between successive notes per model.

Every function writes its file atomically and returns the path.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rltuner.encoding import FIRST_NOTE_CLASS, NUM_CLASSES, class_name, validate_classes
from rltuner.errors import ConfigError, RLTunerError
from rltuner.fileio import atomic_path

PathLike = str | os.PathLike[str]
MAX_INTERVAL = 12  # histogram bins: -12..+12 semitones, larger leaps pooled at the ends

# fixed colours so a model keeps its colour across every figure of a report
_COLOURS = {"note_rnn": "#444444", "prior": "#444444", "q": "#1f77b4", "psi": "#2ca02c", "g": "#d62728",
            "rl_only": "#ff7f0e", "featured": "#8c564b", "MOSES test": "#9467bd", "corpus": "#9467bd"}  # fmt: skip
_LABELS = {
    "note_rnn": "Note RNN",
    "q": "Q",
    "psi": "Psi",
    "g": "G",
    "rl_only": "RL only",
    "rl-only": "RL only",
    "featured": "Featured",
    "corpus": "Corpus (training data)",
    "prior": "SMILES prior",
}


def model_label(name: str) -> str:
    """Display name of a model key (``psi`` -> ``Psi``, ``rl_only`` -> ``RL only``)."""
    return _LABELS.get(name, name)


def _colour(name: str, i: int) -> str:
    return _COLOURS.get(name.replace("-", "_"), f"C{i % 10}")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: never open a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: PathLike, dpi: int = 110) -> Path:
    plt = _pyplot()
    target = Path(path)
    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return target


def read_metrics(run_dir: PathLike) -> list[dict[str, float]]:
    """The rows of a tuning run's ``metrics.jsonl`` (one JSON object per line).

    Raises:
        RLTunerError: the file is missing or a line is not JSON.
    """
    path = Path(run_dir)
    if path.is_dir():
        path = path / "metrics.jsonl"
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise RLTunerError(f"cannot read the training log {path}: {exc.strerror or exc}") from None
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise RLTunerError(f"{path}, line {i}: not a JSON object") from None
    return rows


def figure2(
    runs: Mapping[str, PathLike | Sequence[Mapping[str, float]]],
    path: PathLike,
    *,
    reward_key: str = "mean_task_reward",
    ylabels: tuple[str, str] = ("mean log p(a|s) under the Note RNN", "mean r_MT per step"),
    titles: tuple[str, str] = ("(a) data probability", "(b) music-theory reward"),
    xlabel: str = "environment steps (notes played)",
    uniform_log_p: float | None = -math.log(NUM_CLASSES),
) -> Path:
    """The paper's Figure 2: (a) mean log p(a|s) and (b) mean r_MT against environment steps.

    Args:
        runs: algorithm name -> its run folder (or ``metrics.jsonl``) or already-read metric rows, each with
            ``env_step``, ``mean_log_p`` and ``reward_key``.
        path: PNG to write.
        reward_key, ylabels, titles, xlabel: what panel (b) shows and the labels (the defaults: melodies;
            another domain passes its own, e.g. ``mean_return`` per molecule).
        uniform_log_p: a dotted line at the uniform policy's log p in panel (a) (None: no line).

    Raises:
        ConfigError: no runs, or a run without those columns.
    """
    if not runs:
        raise ConfigError("figure 2 needs at least one training run")
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for i, (name, run) in enumerate(runs.items()):
        rows = read_metrics(run) if isinstance(run, (str, os.PathLike)) else list(run)
        rows = [r for r in rows if r.get("mean_log_p") is not None and r.get("env_step") is not None]
        if not rows:
            plt.close(fig)
            raise ConfigError(f"the training log of {name!r} has no rows with env_step and mean_log_p")
        steps = [float(r["env_step"]) for r in rows]
        for ax, key in zip(axes, ("mean_log_p", reward_key), strict=True):
            values = [float(r.get(key, math.nan)) for r in rows]
            ax.plot(steps, values, marker="o", ms=3, color=_colour(name, i), label=model_label(name))
    if uniform_log_p is not None:
        axes[0].axhline(uniform_log_p, color="grey", ls=":", lw=1, label="uniform policy")
    for ax, ylabel in zip(axes, ylabels, strict=True):
        ax.set_ylabel(ylabel)
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xlabel(xlabel)
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def class_labels() -> list[str]:
    """The 38 class names: ``OFF``, ``HOLD``, ``C3`` .. ``B5``."""
    return [class_name(c) for c in range(NUM_CLASSES)]


def figure4(
    probabilities: Mapping[str, npt.NDArray[np.floating]],
    melody: npt.ArrayLike,
    path: PathLike,
    *,
    primer: int | None = None,
) -> Path:
    """The paper's Figure 4: for one melody, each model's distribution over the classes at each step.

    Args:
        probabilities: model name -> (T, 38) array; row t is the model's distribution before step t.
        melody: (T,) the melody the models were fed (shown as the x tick labels).
        path: PNG to write.
        primer: the primer class, for the title.

    Raises:
        ConfigError: no models or shapes that do not match the melody.
    """
    mel = validate_classes(melody)
    if not probabilities:
        raise ConfigError("figure 4 needs at least one model")
    for name, p in probabilities.items():
        if np.shape(p) != (len(mel), NUM_CLASSES):
            raise ConfigError(
                f"{name}: probabilities of shape {np.shape(p)}, expected ({len(mel)}, {NUM_CLASSES})"
            )
    plt = _pyplot()
    n = len(probabilities)
    # constrained layout keeps the title, every panel's 38 class labels and the colour bar from overlapping
    fig, axes = plt.subplots(
        n, 1, figsize=(max(7.0, 0.28 * len(mel) + 2.5), 4.4 * n + 0.6), squeeze=False, layout="constrained"
    )
    labels = class_labels()
    im = None
    for ax, (name, p) in zip(axes[:, 0], probabilities.items(), strict=True):
        # classes on the vertical axis (as the paper), steps across; viridis: perceptually even, bright = likely
        im = ax.imshow(np.asarray(p).T, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(model_label(name), fontsize=10)
        ax.set_yticks(range(NUM_CLASSES))
        ax.set_yticklabels(labels, fontsize=5.5)
        ax.set_ylabel("class", fontsize=8)
        ax.set_xticks(range(len(mel)))
        ax.set_xticklabels([labels[int(c)] for c in mel], rotation=90, fontsize=6)
        # the class actually played: red rings stay visible on dark and bright cells alike
        ax.scatter(range(len(mel)), mel, s=14, facecolors="none", edgecolors="#ff4040", linewidths=0.8)
    axes[-1, 0].set_xlabel("step (tick label and red ring: the class played there)")
    head = "Figure 4: next-class probability at each step"
    fig.suptitle(head + (f" (primer {labels[primer]})" if primer is not None else ""), fontsize=11)
    if im is not None:
        bar = fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.6, aspect=40, pad=0.01)
        bar.set_label("probability of the class at that step", fontsize=9)
        bar.ax.tick_params(labelsize=8)
    return _save(fig, path)


def piano_rolls(
    samples: Mapping[str, npt.NDArray[np.int64]], folder: PathLike, *, per_model: int = 4
) -> dict[str, Path]:
    """One piano-roll PNG per model (``folder/pianoroll_<name>.png``) of its first ``per_model`` melodies."""
    from rltuner.data.pianoroll import plot_piano_roll

    out: dict[str, Path] = {}
    for name, mel in samples.items():
        batch = np.asarray(mel)[:per_model]
        out[name] = plot_piano_roll(
            batch,
            Path(folder) / f"pianoroll_{name}.png",
            titles=[f"{model_label(name)} #{i + 1}" for i in range(len(batch))],
            columns=min(per_model, 4),
        )
    return out


def note_intervals(melodies: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Signed semitone steps between successive note-ons of each melody (holds and rests skipped), pooled.

    Returns:
        1-D int array (one entry per pair of successive notes over all melodies).
    """
    arr = validate_classes(melodies)
    arr = arr.reshape(1, -1) if arr.ndim == 1 else arr
    is_note = arr >= FIRST_NOTE_CLASS
    # pitch of the previous note-on at each step, carried forward over holds and rests (-1: none yet)
    idx = np.where(is_note, np.arange(arr.shape[1])[None, :], -1)
    last = np.maximum.accumulate(idx, axis=1)
    prev_idx = np.concatenate([np.full((arr.shape[0], 1), -1), last[:, :-1]], axis=1)
    valid = is_note & (prev_idx >= 0)
    prev = np.take_along_axis(arr, np.maximum(prev_idx, 0), axis=1)
    return np.asarray((arr - prev)[valid], dtype=np.int64)


def interval_histograms(samples: Mapping[str, npt.NDArray[np.int64]], path: PathLike) -> Path:
    """Histograms of successive-note intervals (-12..+12; larger leaps pooled at the ends), one per model.

    Raises:
        ConfigError: no models.
    """
    if not samples:
        raise ConfigError("interval histograms need at least one model")
    plt = _pyplot()
    n = len(samples)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.8 * rows), squeeze=False, sharey=True)
    bins = np.arange(-MAX_INTERVAL, MAX_INTERVAL + 1)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        name = list(samples)[i]
        d = np.clip(note_intervals(samples[name]), -MAX_INTERVAL, MAX_INTERVAL)
        counts = np.bincount(d + MAX_INTERVAL, minlength=len(bins)).astype(float)
        share = counts / counts.sum() if counts.sum() else counts
        ax.bar(bins, share, width=0.85, color=_colour(name, i))
        ax.set_title(f"{model_label(name)} ({len(d)} intervals)", fontsize=9)
        ax.set_xticks(range(-12, 13, 3))
        ax.set_xlabel("semitones to the next note (ends: >= an octave)", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].set_ylabel("share of intervals")
    fig.tight_layout()
    return _save(fig, path)
