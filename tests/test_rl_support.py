"""Helpers shared by the RL tests (a toy reward and small priors), and checks of the helpers themselves."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rltuner.domains.base import Domain
from rltuner.domains.music import random_note_primers
from rltuner.models.prior import build_prior

VOCAB = 38
LENGTH = 8


class ToyReward:
    """+1 for playing class ``target``, -1 for repeating the previous action: a stateful SequenceReward."""

    def __init__(self, target: int = 14) -> None:
        self.target = target

    def reset(self, batch_size: int) -> dict[str, np.ndarray]:
        return {"prev": np.full(batch_size, -1, dtype=np.int64)}

    def step(self, state: dict[str, np.ndarray], actions: np.ndarray) -> np.ndarray:
        r = (actions == self.target).astype(np.float64) - (actions == state["prev"]).astype(np.float64)
        state["prev"] = actions.copy()
        return r


def tiny_prior(seed: int = 0, hidden: int = 16) -> torch.nn.Module:
    """An untrained small LSTM prior with a fixed seed."""
    torch.manual_seed(seed)
    return build_prior({"arch": "lstm", "vocab_size": VOCAB, "hidden_size": hidden}).eval()


FAVOURED = (20, 21, 22, 23)


def peaked_prior(seed: int = 0, hidden: int = 16) -> torch.nn.Module:
    """A small LSTM prior that prefers classes 20..23 (logit +3): it repeats notes and rarely plays 14."""
    model = tiny_prior(seed, hidden)
    with torch.no_grad():
        model.out.weight.mul_(0.1)
        model.out.bias.zero_()
        model.out.bias[list(FAVOURED)] = 3.0
    return model


def toy_domain(prior: torch.nn.Module | None = None, length: int = LENGTH) -> Domain:
    return Domain(
        name="toy", vocab_size=VOCAB, prior=prior if prior is not None else tiny_prior(), make_reward=ToyReward,
        sample_primers=random_note_primers, episode_length=length,
    )  # fmt: skip


def test_toy_reward_exact_values() -> None:
    reward = ToyReward(target=3)
    state = reward.reset(2)
    assert reward.step(state, np.array([3, 5])).tolist() == [1.0, 0.0]
    assert reward.step(state, np.array([3, 6])).tolist() == [0.0, 0.0]
    assert reward.step(state, np.array([4, 6])).tolist() == [0.0, -1.0]


def test_toy_domain_is_valid() -> None:
    toy_domain().validate()


@pytest.mark.parametrize("n", [1, 5])
def test_random_primers_are_note_ons(n: int) -> None:
    primers = random_note_primers(n, np.random.default_rng(0))
    assert primers.shape == (n,) and primers.dtype == np.int64
    assert ((primers >= 2) & (primers <= 37)).all()
