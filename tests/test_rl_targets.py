"""The algorithm table on tiny hand-computed tensors (Eq. 4, 11, 13 of the paper)."""

from __future__ import annotations

import math

import pytest
import torch

from rltuner.errors import ConfigError
from rltuner.rl.targets import ALGORITHMS, get_algorithm, td_target

# One episode, two steps, three actions.
LOG_P = torch.tensor([[-1.0, -2.0]])
R_MT = torch.tensor([[1.0, 0.5]])
TARGET_NEXT = torch.tensor([[[0.0, 1.0, 2.0], [3.0, -1.0, 0.0]]])
ONLINE_NEXT = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 9.0, 0.0]]])
PRIOR_NEXT = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]]))
C, GAMMA = 0.5, 0.5


def lse(values: list[float]) -> float:
    return math.log(sum(math.exp(v) for v in values))


@pytest.mark.parametrize(
    ("name", "double_q", "expected"),
    [
        # Eq. 4: r = log p + r_MT / c; y = r + gamma max Q'
        ("q", False, [-1.0 + 2.0 + 0.5 * 2.0, -2.0 + 1.0 + 0.5 * 3.0]),
        # double Q: the online net picks a' (0 then 1), the target values it (0.0 then -1.0)
        ("q", True, [-1.0 + 2.0 + 0.5 * 0.0, -2.0 + 1.0 + 0.5 * -1.0]),
        # Eq. 11: y = r + gamma logsumexp Psi'
        ("psi", False, [1.0 + 0.5 * lse([0, 1, 2]), -1.0 + 0.5 * lse([3, -1, 0])]),
        # Eq. 13: r = r_MT / c; y = r + gamma log sum p(a'|s') exp G'
        (
            "g",
            False,
            [
                2.0 + 0.5 * math.log(0.5 * math.exp(0) + 0.25 * math.exp(1) + 0.25 * math.exp(2)),
                1.0 + 0.5 * math.log(0.2 * math.exp(3) + 0.3 * math.exp(-1) + 0.5 * math.exp(0)),
            ],
        ),
        ("rl-only", False, [2.0 + 0.5 * 2.0, 1.0 + 0.5 * 3.0]),
        ("rl-only", True, [2.0 + 0.5 * 0.0, 1.0 + 0.5 * -1.0]),
    ],
)
def test_targets_by_hand(name: str, double_q: bool, expected: list[float]) -> None:
    algo = get_algorithm(name)
    reward = algo.reward(LOG_P, R_MT, C)
    value = algo.next_value(TARGET_NEXT, ONLINE_NEXT, PRIOR_NEXT, double_q)
    y = td_target(reward, value, GAMMA, torch.ones_like(reward))
    assert y.shape == (1, 2)
    assert y[0].tolist() == pytest.approx(expected, abs=1e-5)


def test_terminal_step_does_not_bootstrap() -> None:
    reward = torch.tensor([[1.0, 2.0, 3.0]])
    value = torch.tensor([[10.0, 20.0, 30.0]])
    not_done = torch.tensor([[1.0, 1.0, 0.0]])
    assert td_target(reward, value, 0.5, not_done)[0].tolist() == [6.0, 12.0, 3.0]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("q", [1.0, 2.0, 3.0]), ("psi", [1.0, 2.0, 3.0]), ("rl-only", [1.0, 2.0, 3.0]), ("g", [0.0, 1.0, 5.0])],
)
def test_policy_logits(name: str, expected: list[float]) -> None:
    outputs = torch.tensor([[1.0, 2.0, 3.0]])
    prior_log_p = torch.tensor([[-1.0, -1.0, 2.0]])
    assert ALGORITHMS[name].policy_logits(outputs, prior_log_p)[0].tolist() == expected


def test_g_needs_the_prior() -> None:
    with pytest.raises(ValueError):
        ALGORITHMS["g"].policy_logits(torch.zeros(1, 3), None)


def test_unknown_algorithm_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="choose one of q, psi, g, rl-only"):
        get_algorithm("sarsa")
