"""From listeners' preferences to a reward: ratings as training pairs, and a simulated rater to test with.

Real listeners are slow to come by, so :class:`SimulatedRater` stands in for them in tests and in the
documented demonstration (docs/study.md): a hidden rule over melodies, with noise, answering on the study
page's scale. The rule rewards stepwise motion (a note-on one or two semitones from the previous note-on)
and penalises leaps of more than a fourth, neither of which the prior aims for. The demonstration fits a
preference model on its ratings of prior melodies, tunes on that model alone, and checks that the tuned
model's melodies win more often under the same rater than the prior's, on fresh pairs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from rltuner.encoding import FIRST_NOTE_CLASS
from rltuner.errors import ConfigError, DatasetError
from rltuner.evaluation.study import Rating, load_key_melodies

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class RatedPairs:
    """Ratings as arrays: the two melodies of each, who won, how strongly, and which pair it was."""

    melodies_a: IntArray  # (N, T)
    melodies_b: IntArray  # (N, T)
    prefer_a: npt.NDArray[np.bool_]  # (N,)
    strength: npt.NDArray[np.float64]  # (N,)
    pair_ids: list[str]  # (N,)


def rated_pairs(ratings: Sequence[Rating], key_path: str | os.PathLike[str]) -> RatedPairs:
    """Join ratings with the melodies recorded in the study key.

    Raises:
        DatasetError: a rating of a pair the key does not know, or melodies of different lengths.
    """
    melodies = load_key_melodies(key_path)
    unknown = sorted({r.pair_id for r in ratings} - set(melodies))
    if unknown:
        raise DatasetError(
            f"rating for pair {unknown[0]!r} which is not in the study key ({len(unknown)} unknown)"
        )
    if not ratings:
        raise DatasetError("no ratings to learn from")
    lengths = {len(m) for r in ratings for m in melodies[r.pair_id]}
    if len(lengths) != 1:
        raise DatasetError(f"the rated melodies have different lengths ({sorted(lengths)}): cut them to one")
    return RatedPairs(
        melodies_a=np.stack([melodies[r.pair_id][0] for r in ratings]),
        melodies_b=np.stack([melodies[r.pair_id][1] for r in ratings]),
        prefer_a=np.array([r.choice == "A" for r in ratings]),
        strength=np.array([r.strength for r in ratings], dtype=np.float64),
        pair_ids=[r.pair_id for r in ratings],
    )


def stepwise_utility(melodies: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The simulated rater's hidden taste: +1 per note-on that moves by a step (1-2 semitones) from the
    previous note-on, -1 per note-on that leaps more than 5 semitones (beyond a fourth). (N, T) -> (N,)."""
    m = np.atleast_2d(np.asarray(melodies, dtype=np.int64))
    utility = np.zeros(m.shape[0])
    previous = np.full(m.shape[0], -1)
    for t in range(m.shape[1]):
        note = m[:, t] >= FIRST_NOTE_CLASS
        moved = note & (previous >= 0)
        interval = np.abs(m[:, t] - previous)
        utility += np.where(moved & (interval >= 1) & (interval <= 2), 1.0, 0.0)
        utility -= np.where(moved & (interval > 5), 1.0, 0.0)
        previous = np.where(note, m[:, t], previous)
    return utility


@dataclass(frozen=True)
class SimulatedRater:
    """A listener with a hidden rule (:func:`stepwise_utility`) and logistic noise.

    The rater prefers A when ``u(A) - u(B) + noise * e > 0`` with ``e`` standard logistic, so
    ``P(A) = sigmoid((u(A) - u(B)) / noise)``; the strength (1-3, the page's scale) grows with ``|d|``.
    """

    noise: float = 1.0

    def __post_init__(self) -> None:
        if not self.noise > 0:
            raise ConfigError(f"the simulated rater's noise must be positive, got {self.noise}")

    def rate(
        self, melodies_a: npt.ArrayLike, melodies_b: npt.ArrayLike, rng: np.random.Generator
    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
        """(N, T) and (N, T) -> (prefer_a (N,) bool, strength (N,) in 1..3)."""
        d = stepwise_utility(melodies_a) - stepwise_utility(melodies_b)
        d = d + self.noise * rng.logistic(size=d.shape)
        strength = 1 + (np.abs(d) >= 1.5).astype(np.int64) + (np.abs(d) >= 3.0).astype(np.int64)
        return d > 0, strength

    def rate_study(self, key_path: str | os.PathLike[str], *, raters: int = 1, seed: int = 0) -> list[Rating]:
        """Every pair of a study, rated by ``raters`` independent simulated listeners (``sim01``...)."""
        if raters < 1:
            raise ConfigError(f"--raters must be at least 1, got {raters}")
        melodies = load_key_melodies(key_path)
        ids = list(melodies)
        a = np.stack([melodies[p][0] for p in ids])
        b = np.stack([melodies[p][1] for p in ids])
        rng = np.random.default_rng(seed)
        ratings = []
        for rater in range(1, raters + 1):
            prefer_a, strength = self.rate(a, b, rng)
            ratings += [
                Rating(p, "A" if pa else "B", f"sim{rater:02d}", float(s))
                for p, pa, s in zip(ids, prefer_a, strength, strict=True)
            ]
        return ratings


def win_rate(
    rater: SimulatedRater, ours: npt.ArrayLike, theirs: npt.ArrayLike, *, seed: int = 0
) -> tuple[float, float]:
    """How often melodies ``ours[i]`` beat ``theirs[i]`` under the rater (each shown once on each side).

    Returns:
        (win rate, its binomial standard error).
    """
    a, b = np.asarray(ours), np.asarray(theirs)
    n = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    first, _ = rater.rate(a[:n], b[:n], rng)
    second, _ = rater.rate(b[:n], a[:n], rng)
    wins = np.concatenate([first, ~second])
    p = float(wins.mean())
    return p, float(np.sqrt(p * (1 - p) / len(wins)))
