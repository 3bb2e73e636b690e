"""On-policy KL control: each loss on hand-computed tiny cases, the KL estimators against the exact KL, the
settings that cannot go together, and short runs of reinforce-kl, rloo and dap that raise the task reward."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rltuner.domains.base import Domain
from rltuner.errors import ConfigError
from rltuner.models.sampling import kl_divergence
from rltuner.rl.config import TuneConfig, preset
from rltuner.rl.onpolicy import grouped_primers, policy_settings
from rltuner.rl.policy import load_policy
from rltuner.rl.policy_gradient import (
    PolicyBatch,
    PolicySettings,
    augmented_likelihood_loss,
    group_normalised_advantage,
    kl_estimate,
    kl_loss_term,
    leave_one_out_baseline,
    reinforce_kl_loss,
    rloo_loss,
)
from rltuner.rl.targets import ALGORITHMS, get_algorithm
from rltuner.rl.tuner import evaluate_policy, tune
from test_rl_support import LENGTH, peaked_prior, toy_domain

POLICY_ALGORITHMS = [name for name, a in ALGORITHMS.items() if a.family == "policy"]


def _batch(log_pi: list[list[float]], log_p: list[list[float]], mask: list[list[float]], ret: list[float],
           score: list[float] | None = None, group: list[int] | None = None) -> PolicyBatch:  # fmt: skip
    lp = torch.tensor(log_pi, dtype=torch.float64, requires_grad=True)
    n = len(ret)
    return PolicyBatch(
        lp, torch.tensor(log_p, dtype=torch.float64), torch.tensor(mask, dtype=torch.float64),
        torch.tensor(ret, dtype=torch.float64), torch.tensor(score or [0.0] * n, dtype=torch.float64),
        torch.tensor(group or list(range(n))), torch.zeros_like(lp),
    )  # fmt: skip


def test_the_table_lists_the_policy_family() -> None:
    assert POLICY_ALGORITHMS == ["reinforce-kl", "rloo", "dap"]
    assert {ALGORITHMS[n].kl_weight for n in POLICY_ALGORITHMS} == {"reward_scale", "sigma"}
    assert all(ALGORITHMS[n].loss is not None and ALGORITHMS[n].reward is None for n in POLICY_ALGORITHMS)


def test_kl_estimators_exact_values() -> None:
    log_pi, log_p = torch.log(torch.tensor([0.5, 0.2])), torch.log(torch.tensor([0.25, 0.4]))
    k1 = kl_estimate(log_pi, log_p, "k1")
    k3 = kl_estimate(log_pi, log_p, "k3")
    assert k1.tolist() == pytest.approx([math.log(2), math.log(0.5)])
    # k3 = (r - 1) - log r with r = p / pi: r = 0.5 and r = 2.
    assert k3.tolist() == pytest.approx([-0.5 + math.log(2), 1 - math.log(2)])
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_estimate(log_pi, log_p, "k2")


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_kl_estimators_average_to_the_exact_kl(estimator: str) -> None:
    g = torch.Generator().manual_seed(0)
    log_pi = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), -1)
    log_p = torch.log_softmax(torch.randn(6, generator=g, dtype=torch.float64), -1)
    exact = float(kl_divergence(log_pi, log_p))
    per_action = kl_estimate(log_pi, log_p, estimator)  # the estimate for each action of the vocabulary
    # The expectation under a ~ pi, summed over the whole vocabulary, is the exact KL...
    assert float((log_pi.exp() * per_action).sum()) == pytest.approx(exact, rel=1e-12)
    # ... and the mean of sampled estimates approaches it.
    actions = torch.multinomial(log_pi.exp(), 200_000, replacement=True, generator=g)
    assert float(per_action[actions].mean()) == pytest.approx(exact, rel=0.03)
    if estimator == "k3":
        assert (per_action >= 0).all()


def test_leave_one_out_baseline_and_group_normalisation() -> None:
    returns = torch.tensor([1.0, 2.0, 3.0, 10.0, 4.0, 6.0, 7.0])
    group = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    assert leave_one_out_baseline(returns, group).tolist() == pytest.approx(
        [15 / 3, 14 / 3, 13 / 3, 2.0, 6.0, 4.0, 0.0]
    )
    adv = group_normalised_advantage(torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0]), torch.tensor([0, 0, 0, 1, 1]))
    assert adv.tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0, 0.0], abs=1e-5)


def test_reinforce_kl_loss_by_hand() -> None:
    # Two episodes; the second ended after one step. c = 0.5, beta = 1, k1 in the reward.
    b = _batch([[-1.0, -2.0], [-0.5, -9.0]], [[-1.5, -1.0], [-0.5, -3.0]], [[1, 1], [1, 0]], [2.0, -1.0])
    out = reinforce_kl_loss(b, PolicySettings(reward_scale=0.5, kl_coef=1.0), baseline=1.0)
    # KL_1 = 0.5 - 1.0 = -0.5, KL_2 = 0 (masked step ignored); R = (4 + 0.5, -2 - 0) = (4.5, -2).
    assert out.mean_kl == pytest.approx(-0.25) and out.mean_return == pytest.approx(1.25)
    # A = R - b = (3.5, -3); loss = -mean(A * log pi(tau)) = -(3.5 * -3 + -3 * -0.5) / 2.
    assert float(out.loss.detach()) == pytest.approx(4.5)
    out.loss.backward()
    assert b.log_pi.grad is not None
    assert b.log_pi.grad.flatten().tolist() == pytest.approx([-1.75, -1.75, 1.5, 0.0])
    # No average yet: the batch's own mean return (1.25) is the baseline.
    first = reinforce_kl_loss(b, PolicySettings(reward_scale=0.5), baseline=None)
    assert float(first.loss.detach()) == pytest.approx(-(3.25 * -3 + -3.25 * -0.5) / 2)


def test_kl_as_a_separate_loss_term() -> None:
    b = _batch([[math.log(0.5)]], [[math.log(0.25)]], [[1]], [0.0])
    settings = PolicySettings(kl_estimator="k3", kl_in_reward=False, kl_coef=2.0)
    assert float(kl_loss_term(b, settings).detach()) == pytest.approx(2 * (-0.5 + math.log(2)))
    out = reinforce_kl_loss(b, settings, baseline=0.0)  # return 0, advantage 0: only the KL term is left
    assert float(out.loss.detach()) == pytest.approx(2 * (-0.5 + math.log(2)))
    out.loss.backward()
    # d/d log pi of 2 * ((p/pi - 1) - log(p/pi)) = 2 * (1 - p/pi) = 2 * 0.5.
    assert b.log_pi.grad is not None and b.log_pi.grad.item() == pytest.approx(1.0)
    assert float(kl_loss_term(b, PolicySettings())) == 0.0


def test_rloo_loss_by_hand() -> None:
    # One group of three one-step episodes, log pi = log p (KL 0), c = 1.
    b = _batch([[-1.0], [-2.0], [-3.0]], [[-1.0], [-2.0], [-3.0]], [[1], [1], [1]], [1.0, 2.0, 6.0],
               group=[0, 0, 0])  # fmt: skip
    out = rloo_loss(b, PolicySettings(reward_scale=1.0), baseline=123.0)  # the baseline is not used
    # A = R - mean(others) = (1 - 4, 2 - 3.5, 6 - 1.5) = (-3, -1.5, 4.5).
    assert float(out.loss.detach()) == pytest.approx(-(-3 * -1 + -1.5 * -2 + 4.5 * -3) / 3)
    out.loss.backward()
    assert b.log_pi.grad is not None and b.log_pi.grad[:, 0].tolist() == pytest.approx([1.0, 0.5, -1.5])
    norm = rloo_loss(b, PolicySettings(reward_scale=1.0, group_norm=True), baseline=None)
    mean, std = 3.0, math.sqrt(7.0)  # returns 1, 2, 6: unbiased variance 7
    adv = [(r - mean) / std for r in (1.0, 2.0, 6.0)]
    assert float(norm.loss.detach()) == pytest.approx(
        -(adv[0] * -1 + adv[1] * -2 + adv[2] * -3) / 3, rel=1e-5
    )


def test_entropy_bonus_lowers_the_loss_by_its_weight() -> None:
    b = _batch([[-1.0], [-2.0]], [[-1.0], [-2.0]], [[1], [1]], [1.0, 2.0], group=[0, 0])
    b = b._replace(entropy=torch.tensor([[0.5], [1.5]], dtype=torch.float64))
    plain = float(rloo_loss(b, PolicySettings(), None).loss.detach())
    bonus = float(rloo_loss(b, PolicySettings(entropy_coef=0.1), None).loss.detach())
    assert bonus == pytest.approx(plain - 0.1 * 1.0)


def test_augmented_likelihood_loss_by_hand() -> None:
    # log pi(tau) = -3, -2 (masked step excluded); log p(tau) = -4, -2.5; S = 0.5, 1; sigma = 2.
    b = _batch([[-1.0, -2.0], [-2.0, -7.0]], [[-3.0, -1.0], [-2.5, -1.0]], [[1, 1], [1, 0]], [0.0, 0.0],
               score=[0.5, 1.0])  # fmt: skip
    out = augmented_likelihood_loss(b, PolicySettings(sigma=2.0), baseline=None)
    # (-3 - (-4 + 1))^2 = 0, (-2 - (-2.5 + 2))^2 = 2.25.
    assert float(out.loss.detach()) == pytest.approx(2.25 / 2)
    assert out.mean_kl == pytest.approx((1.0 + 0.5) / 2) and out.mean_return == pytest.approx(1.5)
    out.loss.backward()
    assert b.log_pi.grad is not None and b.log_pi.grad.flatten().tolist() == pytest.approx(
        [0.0, 0.0, -1.5, 0.0]
    )


def test_domain_score_maps_returns_onto_0_1() -> None:
    domain = dataclasses.replace(toy_domain(), score_range=(-2.0, 6.0))
    assert domain.score(torch.tensor([-5.0, -2.0, 2.0, 6.0, 9.0])).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ConfigError, match="defines no score range"):
        toy_domain().score(torch.zeros(1))
    with pytest.raises(ConfigError, match="low < high"):
        dataclasses.replace(toy_domain(), score_range=(1.0, 1.0)).validate()


def test_grouped_primers_share_a_primer_per_group() -> None:
    draw = grouped_primers(lambda n, rng: rng.integers(2, 38, n), 4)
    primers = draw(12, np.random.default_rng(0))
    assert primers.shape == (12,)
    assert all(len(set(primers[i : i + 4].tolist())) == 1 for i in range(0, 12, 4))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algorithm": "reinforce-kl", "kl_in_reward": False}, "zero gradient in expectation"),
        ({"algorithm": "reinforce-kl", "group_norm": True}, "group_norm applies to rloo"),
        ({"algorithm": "rloo", "n_envs": 30, "group_size": 4}, "must be a multiple of group_size"),
        ({"algorithm": "rloo", "group_size": 1}, "rloo needs group_size >= 2"),
        ({"algorithm": "q", "entropy_coef": 0.1}, "entropy_coef applies to the on-policy"),
        ({"algorithm": "dap", "kl_estimator": "k3"}, "apply to reinforce-kl and rloo"),
        ({"algorithm": "g", "kl_in_reward": False, "kl_estimator": "k3"}, "apply to reinforce-kl and rloo"),
        ({"algorithm": "dap", "sigma": 0}, "sigma must be positive"),
        ({"algorithm": "rloo", "kl_estimator": "k2"}, "kl_estimator must be one of"),
        ({"algorithm": "reinforce-kl", "baseline_momentum": 1.0}, "baseline_momentum must be in"),
        ({"algorithm": "rloo", "double_q": True}, "double_q applies to q and rl-only"),
    ],
)
def test_bad_combinations_are_rejected_at_construction(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TuneConfig(**overrides).validate()  # type: ignore[arg-type]


def test_policy_settings_copy_the_config() -> None:
    cfg = TuneConfig(algorithm="rloo", kl_coef=0.3, sigma=7.0, group_norm=True, reward_scale=2.0)
    s = policy_settings(cfg)
    assert (s.kl_coef, s.sigma, s.group_norm, s.reward_scale) == (0.3, 7.0, True, 2.0)


def test_preset_gives_the_policy_family_its_defaults() -> None:
    assert (preset("fast", algorithm="rloo").n_envs, preset("fast", algorithm="rloo").learning_rate) == (
        64,
        1e-3,
    )
    assert preset("fast", algorithm="q").n_envs == 256
    assert preset("fast", algorithm="dap", n_envs=32).n_envs == 32


SHORT = {"total_steps": 16384, "n_envs": 8, "eval_every": 0, "eval_episodes": 400, "progress": False,
         "tensorboard": False, "learning_rate": 1e-2, "reward_scale": 0.5, "sigma": 16.0}  # fmt: skip


@pytest.fixture(scope="module")
def domain() -> Domain:
    # The toy reward pays +1 for class 14 and -1 for a repeat; the peaked prior's episodes return about -0.8.
    return dataclasses.replace(toy_domain(peaked_prior()), score_range=(-3.0, 3.0))


@pytest.mark.parametrize("name", POLICY_ALGORITHMS)
def test_each_policy_algorithm_raises_the_task_reward(domain: Domain, name: str) -> None:
    torch.set_num_threads(1)
    before = evaluate_policy(domain.prior, domain, "q", 400, seed=1)
    result = tune(preset("fast", algorithm=name, **SHORT), domain)
    assert result.env_steps == 16384 and result.gradient_steps == 16384 // (8 * LENGTH)
    assert result.sample_updates == 16384
    after = result.metrics[-1]
    assert after["mean_task_reward"] > before["mean_task_reward"] + 0.05
    assert 0 < after["mean_kl"] < 3.0 and before["mean_kl"] == pytest.approx(0.0, abs=1e-6)
    assert after["epsilon"] is None


def test_policy_run_resumes_exactly_and_reloads(tmp_path: Path, domain: Domain) -> None:
    cfg = preset("fast", algorithm="reinforce-kl", **{**SHORT, "total_steps": 1024, "eval_every": 512})
    whole = tune(cfg, domain)
    tune(cfg.with_overrides(total_steps=512), domain, tmp_path / "run")
    resumed = tune(cfg, domain, tmp_path / "run", resume=True)
    for a, b in zip(whole.policy.state_dict().values(), resumed.policy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [r["mean_kl"] for r in whole.metrics] == [r["mean_kl"] for r in resumed.metrics]
    loaded = load_policy(tmp_path / "run" / "model.safetensors")
    tokens = torch.tensor([[3, 20, 21, 14]])
    assert torch.allclose(loaded(tokens)[0], resumed.policy(tokens)[0], atol=1e-6)
    assert torch.allclose(loaded(tokens)[0], loaded.q_net(tokens)[0])  # the policy is softmax(network)


def test_dap_needs_a_score_range() -> None:
    with pytest.raises(ConfigError, match="has no score_range"):
        tune(preset("fast", algorithm="dap", **SHORT), toy_domain(peaked_prior()))


def test_policy_algorithms_have_their_own_rows() -> None:
    assert get_algorithm("rloo").family == "policy" and get_algorithm("q").family == "value"


@pytest.mark.parametrize("name", POLICY_ALGORITHMS)
def test_cli_tunes_molecules_with_each_policy_algorithm(tmp_path: Path, name: str) -> None:
    pytest.importorskip("rdkit")
    from click.testing import CliRunner

    from rltuner.cli.main import cli
    from rltuner.domains.molecules.domain import molecule_domain
    from rltuner.domains.molecules.smiles import EOS_ID, Vocabulary
    from rltuner.models.checkpoint import save_prior
    from rltuner.models.prior import build_prior

    vocab = Vocabulary(("<pad>", "<bos>", "<eos>", "C", "O", "N", "c", "1", "(", ")", "="))
    torch.manual_seed(0)
    model = build_prior({"arch": "lstm", "vocab_size": len(vocab), "hidden_size": 16})
    with torch.no_grad():  # short episodes
        model.out.bias[EOS_ID] = 2.0
    prior = save_prior(
        tmp_path / "tiny.safetensors", model, domain="molecules", vocabulary=list(vocab.tokens)
    )
    assert molecule_domain(prior).score_range == (-1.0, 4.5)
    res = CliRunner().invoke(cli, ["tune", "--domain", "molecules", "--prior", str(prior), "-a", name, "--steps", "300",
                                   "--n-envs", "8", "--quiet", "--set", "tensorboard=false", "--set", "eval_episodes=16",
                                   "--out", str(tmp_path / "run")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert f"{name}: " in res.output and "per molecule" in res.output
    assert load_policy(tmp_path / "run" / "model.safetensors").algorithm == name
