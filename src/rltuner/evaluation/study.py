"""The listening study (the paper's Section 6 user study), offline part: blind A/B pairs and their analysis.

:func:`make_study` draws balanced, randomised A/B pairs of melodies from several models' samples, renders
each melody to WAV and MIDI under names that do not reveal the model, and writes a public ``pairs.csv`` and a
separate ``key.json`` (pair id -> models) for the analyst. :func:`analyze_ratings` reads listeners' choices
back and computes win counts with binomial error bars (the paper's Figure 3), a Kruskal-Wallis test across
models and Mann-Whitney U post-hoc tests between every two models with a Holm correction.

Balance: the pairs cycle through every *ordered* pair of distinct models (K models: K(K-1) of them) equally
often, so every unordered pair is compared equally often and each model is on side A as often as on side B.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rltuner.errors import ConfigError, DatasetError
from rltuner.fileio import write_json_atomic, write_text_atomic

PathLike = str | os.PathLike[str]
KEY_FORMAT = "rltuner-study-key/1"
CHOICES = ("A", "B")


@dataclass(frozen=True)
class StudyPair:
    """One A/B comparison: the models on each side and which of their melodies (row of the samples)."""

    pair_id: str
    model_a: str
    model_b: str
    index_a: int
    index_b: int


@dataclass(frozen=True)
class Rating:
    """One listener's answer: which side of ``pair_id`` they preferred, and how strongly (1 if not asked)."""

    pair_id: str
    choice: str  # "A" | "B"
    rater_id: str = ""
    strength: float = 1.0


def balanced_pair_count(n_models: int, n_pairs: int) -> int:
    """``n_pairs`` rounded up to a multiple of n_models * (n_models - 1), the size of one balanced cycle."""
    cycle = n_models * (n_models - 1)
    return max(1, math.ceil(n_pairs / cycle)) * cycle


def plan_pairs(sample_counts: Mapping[str, int], n_pairs: int, seed: int | None = 0) -> list[StudyPair]:
    """Draw balanced, randomised A/B pairs.

    Args:
        sample_counts: model name -> number of melodies it has (at least one each; at least two models).
        n_pairs: wanted number of pairs; rounded up to a whole number of balanced cycles
            (:func:`balanced_pair_count`).
        seed: random seed (same seed and inputs, same pairs).

    Returns:
        The pairs in presentation order (shuffled), ids ``p001``, ``p002``, ... Each model's melodies are used
        in a random order without repetition until all have been used once.

    Raises:
        ConfigError: fewer than two models, a model without melodies, ``n_pairs`` < 1.
    """
    models = list(sample_counts)
    if len(models) < 2:
        raise ConfigError(f"a listening study needs at least two models, got {len(models)}")
    if n_pairs < 1:
        raise ConfigError(f"--pairs must be at least 1, got {n_pairs}")
    empty = [m for m in models if sample_counts[m] < 1]
    if empty:
        raise ConfigError(f"model {empty[0]!r} has no melodies")
    total = balanced_pair_count(len(models), n_pairs)
    rng = np.random.default_rng(seed)
    ordered = list(itertools.permutations(models, 2))
    sides = ordered * (total // len(ordered))
    order = rng.permutation(len(sides))

    draws: dict[str, list[int]] = {m: [] for m in models}

    def next_melody(model: str) -> int:
        if not draws[model]:  # a fresh random order of this model's melodies
            draws[model] = rng.permutation(sample_counts[model]).tolist()
        return int(draws[model].pop())

    width = max(3, len(str(total)))
    pairs = []
    for number, k in enumerate(order, start=1):
        a, b = sides[k]
        pairs.append(StudyPair(f"p{number:0{width}d}", a, b, next_melody(a), next_melody(b)))
    return pairs


def _audio_names(pair: StudyPair) -> tuple[str, str]:
    # Only the pair id and the side: nothing in a file name tells the models apart.
    return f"{pair.pair_id}_a", f"{pair.pair_id}_b"


@dataclass(frozen=True)
class StudyFiles:
    """What :func:`make_study` wrote."""

    folder: Path
    pairs_csv: Path
    key_json: Path
    template_csv: Path
    pairs: list[StudyPair] = field(default_factory=list)


def make_study(
    samples: Mapping[str, npt.NDArray[np.integer]],
    folder: PathLike,
    *,
    n_pairs: int,
    seed: int | None = 0,
    tempo: float = 120.0,
    program: int = 0,
    sample_rate: int = 44100,
    midi: bool = True,
    audio: bool = True,
    sources: Mapping[str, str] | None = None,
    progress: bool = True,
) -> StudyFiles:
    """Draw pairs and write the study folder.

    Writes ``audio/<pair>_a.wav`` / ``_b.wav`` (and ``midi/*.mid``), ``pairs.csv``
    (``pair_id,audio_a,audio_b[,midi_a,midi_b]``, the listeners' page reads it), ``ratings_template.csv``
    (``pair_id,choice,rater_id,strength`` with empty answers) and ``key.json`` (the models behind each pair:
    keep it from the listeners).

    Args:
        samples: model name -> melodies (N, T) int classes.
        folder: output folder (created).
        n_pairs, seed: as in :func:`plan_pairs`.
        tempo, program, sample_rate: rendering options (see :func:`rltuner.data.audio.render_wav`).
        midi: also write MIDI files.
        audio: render the WAV files (off: a study for simulated raters only, ``rltuner study simulate``;
            ``pairs.csv`` then has no audio columns and the study cannot be served).
        sources: model name -> where its samples came from, recorded in the key.
        progress: show a progress bar on stderr.

    Returns:
        The paths written and the pairs.

    Raises:
        ConfigError, InvalidMelodyError: bad options or melodies.
    """
    from tqdm import tqdm

    from rltuner.data.audio import render_wav
    from rltuner.data.midi_io import as_melody_list, write_midi
    from rltuner.fileio import ensure_writable_dir

    lists = {name: as_melody_list(arr) for name, arr in samples.items()}
    pairs = plan_pairs({name: len(m) for name, m in lists.items()}, n_pairs, seed)
    root = ensure_writable_dir(folder)
    rows = []
    for pair in tqdm(pairs, desc="study", unit="pair", disable=None if progress else True, leave=False):
        name_a, name_b = _audio_names(pair)
        row = {"pair_id": pair.pair_id}
        if audio:
            row |= {"audio_a": f"audio/{name_a}.wav", "audio_b": f"audio/{name_b}.wav"}
        for side, model, index, name in (
            ("a", pair.model_a, pair.index_a, name_a),
            ("b", pair.model_b, pair.index_b, name_b),
        ):
            melody = lists[model][index]
            if audio:
                render_wav(
                    melody,
                    root / "audio" / f"{name}.wav",
                    tempo=tempo,
                    program=program,
                    sample_rate=sample_rate,
                )
            if midi:
                write_midi(melody, root / "midi" / f"{name}.mid", tempo=tempo, program=program)
                row[f"midi_{side}"] = f"midi/{name}.mid"
        rows.append(row)

    pairs_csv = write_text_atomic(root / "pairs.csv", _csv(list(rows[0]), rows))
    template = write_text_atomic(
        root / "ratings_template.csv",
        _csv(["pair_id", "choice", "rater_id", "strength"], [{"pair_id": p.pair_id} for p in pairs]),
    )
    key = {
        "format": KEY_FORMAT,
        "seed": seed,
        "models": {
            name: {"melodies": len(m), "source": (sources or {}).get(name, "")} for name, m in lists.items()
        },
        "render": {"tempo": tempo, "program": program, "sample_rate": sample_rate},
        "pairs": {
            p.pair_id: {
                "A": p.model_a,
                "B": p.model_b,
                "index_a": p.index_a,
                "index_b": p.index_b,
                # the melodies themselves, so the ratings can train a preference model (study reward)
                "melody_a": [int(c) for c in lists[p.model_a][p.index_a]],
                "melody_b": [int(c) for c in lists[p.model_b][p.index_b]],
            }
            for p in pairs
        },
    }
    key_json = write_json_atomic(root / "key.json", key)
    return StudyFiles(root, pairs_csv, key_json, template, pairs)


def _csv(columns: list[str], rows: Sequence[Mapping[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def load_key(path: PathLike) -> dict[str, tuple[str, str]]:
    """Read ``key.json``: pair id -> (model on side A, model on side B).

    Raises:
        DatasetError: missing file, not JSON, not a study key.
    """
    source = Path(path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"study key {source} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read study key {source}: {exc}") from None
    if (
        not isinstance(data, dict)
        or data.get("format") != KEY_FORMAT
        or not isinstance(data.get("pairs"), dict)
    ):
        raise DatasetError(
            f"{source} is not a study key written by 'rltuner study make' (format {KEY_FORMAT})"
        )
    try:
        return {str(pid): (str(v["A"]), str(v["B"])) for pid, v in data["pairs"].items()}
    except (KeyError, TypeError):
        raise DatasetError(f"{source}: every pair needs its A and B model") from None


def load_key_melodies(path: PathLike) -> dict[str, tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]:
    """Read the melodies behind each pair of ``key.json``: pair id -> (melody on side A, melody on side B).

    Keys written before the melodies were stored in them are read through their recorded sources (the
    ``.npy`` files and row indices), when those files still exist.

    Raises:
        DatasetError: not a study key, or a pair whose melodies can be found neither way.
    """
    load_key(path)  # the format checks
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    sources: dict[str, npt.NDArray[np.int64]] = {}
    melodies = {}
    for pair_id, entry in data["pairs"].items():
        try:
            if "melody_a" in entry:
                pair = (
                    np.asarray(entry["melody_a"], dtype=np.int64),
                    np.asarray(entry["melody_b"], dtype=np.int64),
                )
            else:
                sides = []
                for side, index in ((entry["A"], entry["index_a"]), (entry["B"], entry["index_b"])):
                    if side not in sources:
                        sources[side] = np.load(data["models"][side]["source"])
                    sides.append(np.asarray(sources[side][int(index)], dtype=np.int64))
                pair = (sides[0], sides[1])
        except (KeyError, TypeError, ValueError, OSError, IndexError) as exc:
            raise DatasetError(f"{path}: the melodies of pair {pair_id!r} are not recorded ({exc})") from None
        melodies[str(pair_id)] = pair
    return melodies


def read_ratings(path: PathLike) -> list[Rating]:
    """Read a ratings CSV: header with ``pair_id`` and ``choice`` (A or B), optional ``rater_id`` and ``strength``.

    Rows with an empty choice (an unanswered template row) are skipped.

    Raises:
        DatasetError: missing file, missing columns, a choice other than A/B, a strength that is not a
            positive number, or no answer at all.
    """
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"ratings file {source} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read ratings file {source}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in ("pair_id", "choice") if c not in columns]
    if missing:
        raise DatasetError(
            f"{source}: missing column(s) {', '.join(missing)} (header: pair_id,choice[,rater_id,strength])"
        )
    ratings = []
    for line, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        choice = row["choice"].upper()
        if not choice:
            continue
        if choice not in CHOICES:
            raise DatasetError(f"{source} line {line}: choice must be A or B, got {row['choice']!r}")
        strength = 1.0
        if row.get("strength"):
            try:
                strength = float(row["strength"])
            except ValueError:
                strength = float("nan")
            if not (math.isfinite(strength) and strength > 0):
                raise DatasetError(
                    f"{source} line {line}: strength must be a positive number, got {row['strength']!r}"
                )
        ratings.append(Rating(row["pair_id"], choice, row.get("rater_id", ""), strength))
    if not ratings:
        raise DatasetError(f"{source} holds no answered ratings")
    return ratings


def ratings_csv(ratings: Sequence[Rating]) -> str:
    """Ratings as the CSV text that :func:`read_ratings` reads (``pair_id,choice,rater_id,strength``)."""
    rows = [
        {"pair_id": r.pair_id, "choice": r.choice, "rater_id": r.rater_id, "strength": f"{r.strength:g}"}
        for r in ratings
    ]
    return _csv(["pair_id", "choice", "rater_id", "strength"], rows)


@dataclass(frozen=True)
class PairwiseTest:
    """Mann-Whitney U between two models' per-comparison scores, with the Holm-corrected p-value."""

    model_a: str
    model_b: str
    u: float
    p: float
    p_holm: float


@dataclass(frozen=True)
class StudyAnalysis:
    """Everything ``rltuner study analyze`` reports."""

    n_ratings: int
    models: list[str]
    comparisons: dict[str, int]  # model -> comparisons it took part in
    wins: dict[str, int]  # model -> times it was preferred
    win_std: dict[str, float]  # model -> std of a binomial fit, sqrt(n p (1 - p)), in wins
    head_to_head: dict[str, dict[str, int]]  # winner -> loser -> count
    kruskal_h: float
    kruskal_p: float
    pairwise: list[PairwiseTest]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (NaN becomes None)."""

        def clean(value: Any) -> Any:
            if isinstance(value, float) and math.isnan(value):
                return None
            if isinstance(value, dict):
                return {k: clean(v) for k, v in value.items()}
            if isinstance(value, list):
                return [clean(v) for v in value]
            return value

        return dict(clean(asdict(self)))


def comparison_scores(
    ratings: Sequence[Rating], key: Mapping[str, tuple[str, str]]
) -> dict[str, list[float]]:
    """Per model, one score per comparison it took part in: +strength when preferred, -strength when not.

    Raises:
        DatasetError: a rating names a pair id the key does not know.
    """
    unknown = sorted({r.pair_id for r in ratings} - set(key))
    if unknown:
        raise DatasetError(
            f"rating for pair {unknown[0]!r} which is not in the study key ({len(unknown)} unknown)"
        )
    models = sorted({m for pair in key.values() for m in pair})
    scores: dict[str, list[float]] = {m: [] for m in models}
    for r in ratings:
        a, b = key[r.pair_id]
        winner, loser = (a, b) if r.choice == "A" else (b, a)
        scores[winner].append(r.strength)
        scores[loser].append(-r.strength)
    return scores


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down correction of ``p_values`` (same order), capped at 1 and kept monotone."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def analyze_ratings(ratings: Sequence[Rating], key: Mapping[str, tuple[str, str]]) -> StudyAnalysis:
    """Win counts with binomial error bars, Kruskal-Wallis across models, Mann-Whitney U post-hoc (Holm).

    Tests that cannot be computed (fewer than two models with ratings, all scores equal) give NaN.
    """
    from scipy import stats

    scores = comparison_scores(ratings, key)
    models = list(scores)
    comparisons = {m: len(s) for m, s in scores.items()}
    wins = {m: sum(1 for v in s if v > 0) for m, s in scores.items()}
    win_std = {}
    for m in models:
        n = comparisons[m]
        p = wins[m] / n if n else 0.0
        win_std[m] = math.sqrt(n * p * (1.0 - p))
    head: dict[str, dict[str, int]] = {m: {o: 0 for o in models if o != m} for m in models}
    for r in ratings:
        a, b = key[r.pair_id]
        winner, loser = (a, b) if r.choice == "A" else (b, a)
        head[winner][loser] += 1

    groups = [np.asarray(scores[m]) for m in models if scores[m]]
    h, p_kw = float("nan"), float("nan")
    if len(groups) >= 2 and len({v for g in groups for v in g.tolist()}) > 1:
        result = stats.kruskal(*groups)
        h, p_kw = float(result.statistic), float(result.pvalue)
    raw: list[tuple[str, str, float, float]] = []
    for a, b in itertools.combinations(models, 2):
        if scores[a] and scores[b] and len(set(scores[a]) | set(scores[b])) > 1:
            mw = stats.mannwhitneyu(scores[a], scores[b], alternative="two-sided")
            raw.append((a, b, float(mw.statistic), float(mw.pvalue)))
        else:
            raw.append((a, b, float("nan"), float("nan")))
    finite = [i for i, t in enumerate(raw) if not math.isnan(t[3])]
    corrected = holm([raw[i][3] for i in finite])
    p_holm = {i: c for i, c in zip(finite, corrected, strict=True)}
    pairwise = [PairwiseTest(a, b, u, p, p_holm.get(i, float("nan"))) for i, (a, b, u, p) in enumerate(raw)]
    return StudyAnalysis(len(ratings), models, comparisons, wins, win_std, head, h, p_kw, pairwise)


def format_analysis(result: StudyAnalysis, alpha: float = 0.05) -> str:
    """A plain-text report of :func:`analyze_ratings`'s result."""
    width = max(len(m) for m in result.models)
    lines = [f"{result.n_ratings} ratings, {len(result.models)} models", ""]
    lines.append(f"{'model':<{width}}  wins  of  share  ± std (binomial)")
    for m in sorted(result.models, key=lambda m: -result.wins[m]):
        n = result.comparisons[m]
        share = result.wins[m] / n if n else float("nan")
        lines.append(f"{m:<{width}}  {result.wins[m]:>4}  {n:>3}  {share:5.2f}  ± {result.win_std[m]:.1f}")
    verdict = "significant" if result.kruskal_p < alpha else "not significant"
    lines += [
        "",
        f"Kruskal-Wallis: H = {result.kruskal_h:.3f}, p = {result.kruskal_p:.3g} ({verdict} at {alpha})",
    ]
    lines.append("Mann-Whitney U post-hoc (two-sided, Holm-corrected):")
    for t in result.pairwise:
        mark = " *" if t.p_holm < alpha else ""
        lines.append(
            f"  {t.model_a} vs {t.model_b}: U = {t.u:.1f}, p = {t.p:.3g}, p_holm = {t.p_holm:.3g}{mark}"
        )
    return "\n".join(lines)


def plot_wins(result: StudyAnalysis, path: PathLike, *, title: str | None = None) -> Path:
    """Bar chart of wins per model with binomial error bars (the paper's Figure 3), as a PNG, atomically."""
    from matplotlib.figure import Figure

    from rltuner.fileio import atomic_path

    models = sorted(result.models, key=lambda m: -result.wins[m])
    fig = Figure(figsize=(1.2 + 1.1 * len(models), 3.6))
    ax = fig.subplots()
    ax.bar(
        models,
        [result.wins[m] for m in models],
        yerr=[result.win_std[m] for m in models],
        capsize=6,
        color="#3b6fb6",
    )
    ax.set_ylabel("times preferred (wins)")
    ax.set_title(title or f"Listening study: {result.n_ratings} ratings")
    fig.tight_layout()
    target = Path(path)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return target
