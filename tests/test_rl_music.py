"""Short tuning runs on the real music domain: the shipped Note RNN and the music-theory reward."""

from __future__ import annotations

import numpy as np
import pytest

from rltuner.domains.music import music_domain
from rltuner.encoding import random_note_primers
from rltuner.evaluation.evaluate import mean_music_theory_reward, sample_policy
from rltuner.models.checkpoint import load_default_prior
from rltuner.rl.config import preset
from rltuner.rl.tuner import tune

N_SAMPLES = 500


@pytest.fixture(scope="module")
def measured() -> dict[str, tuple[float, float]]:
    """name -> (mean log p(a|s) under the Note RNN, mean r_MT per step) of 500 sampled melodies."""
    prior = load_default_prior()
    primers = random_note_primers(N_SAMPLES, np.random.default_rng(1))

    def measure(model: object) -> tuple[float, float]:
        melodies, scores = sample_policy(model, N_SAMPLES, 32, primers, seed=1, reference=prior)  # type: ignore[arg-type]
        assert scores is not None
        return scores["mean_log_p"], mean_music_theory_reward(melodies)

    out = {"note_rnn": measure(prior)}
    for algorithm in ("q", "psi", "g", "rl-only"):
        # 60,000 env steps (~3 s): a fast-preset run with a short exploration period
        cfg = preset(
            "fast", algorithm=algorithm, total_steps=60_000, epsilon_steps=30_000, eval_every=0,
            progress=False, tensorboard=False,
        )  # fmt: skip
        out[algorithm] = measure(tune(cfg, music_domain(prior)).policy)
    return out


@pytest.mark.parametrize("algorithm", ["q", "psi", "g", "rl-only"])
def test_tuning_raises_the_music_theory_reward(
    measured: dict[str, tuple[float, float]], algorithm: str
) -> None:
    assert measured[algorithm][1] > measured["note_rnn"][1] + 3.0


@pytest.mark.parametrize("algorithm", ["q", "psi", "g"])
def test_the_prior_term_keeps_melodies_closer_to_the_data_than_rl_only(
    measured: dict[str, tuple[float, float]], algorithm: str
) -> None:
    assert measured[algorithm][0] > measured["rl-only"][0] + 0.3
