"""The learner's speed settings: fused Adam, bf16 autocast (auto / on / off), the overlapped target forward,
the foreach soft update."""

from __future__ import annotations

import pytest
import torch

from rltuner.domains import tune_preset
from rltuner.errors import ConfigError
from rltuner.rl import learner
from rltuner.rl.config import preset
from rltuner.rl.learner import bf16_enabled, learner_autocast, make_adam, overlap_enabled
from rltuner.rl.tuner import soft_update, tune
from rltuner.threads import OverlapChooser
from test_rl_support import tiny_prior, toy_domain

SMALL = {
    "total_steps": 512, "n_envs": 16, "batch_size": 64, "train_every": 32, "epsilon_steps": 256,
    "eval_every": 0, "eval_episodes": 32, "progress": False, "tensorboard": False, "learning_rate": 1e-2,
}  # fmt: skip


def _grads_and_step(fused: bool, direct: bool = False, reload_at: int = -1) -> list[torch.Tensor]:
    """The weights after five Adam steps on a tiny prior, by ``optimizer.step()`` or (``direct``)
    :func:`learner.adam_step`; at step ``reload_at`` the optimiser is rebuilt from its state dict (a resume)."""
    net = tiny_prior(1)
    params = list(net.parameters())
    opt = make_adam(net, 1e-2, fused)
    assert bool(opt.defaults["fused"]) is fused
    for i in range(5):
        if i == reload_at:
            saved = opt.state_dict()
            opt = make_adam(net, 1e-2, fused)
            opt.load_state_dict(saved)
        tokens = torch.randint(0, 38, (4, 9), generator=torch.Generator().manual_seed(i))
        for p in params:
            p.grad = None
        net(tokens)[0].square().mean().backward()
        if direct:
            learner.adam_step(opt, params)
        else:
            opt.step()
    return [p.detach().clone() for p in params]


def test_fused_adam_is_the_same_update_up_to_rounding() -> None:
    fused, loop = _grads_and_step(True), _grads_and_step(False)
    for a, b in zip(fused, loop, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(fused, tiny_prior(1).parameters(), strict=True))


def test_fused_adam_falls_back_to_the_loop_where_the_kernel_does_not_take_a_tensor() -> None:
    class ComplexNet(torch.nn.Module):  # torch's fused kernel refuses complex tensors (at step())
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))

    net = ComplexNet()
    opt = make_adam(net, 0.1, fused=True)
    assert not opt.defaults["fused"]
    net.w.abs().sum().backward()
    opt.step()  # the loop takes it; fused=True would raise here
    assert not torch.equal(net.w.detach(), torch.ones(3, dtype=torch.complex64))


@pytest.mark.parametrize("fused", [True, False])
def test_adam_step_is_optimizer_step_to_the_bit(fused: bool) -> None:
    for reload_at in (-1, 2):
        direct, stepped = _grads_and_step(fused, True, reload_at), _grads_and_step(fused, False, reload_at)
        assert all(torch.equal(a, b) for a, b in zip(direct, stepped, strict=True))
    assert any(not torch.equal(a, b) for a, b in zip(direct, tiny_prior(1).parameters(), strict=True))


@pytest.mark.parametrize("max_norm", [1e-3, 1e6])  # clipped, and left alone (coefficient 1)
def test_clip_grad_norm_is_torchs_to_the_bit(max_norm: float) -> None:
    def grads(clip: object) -> list[torch.Tensor]:
        net = tiny_prior(1)
        params = list(net.parameters())
        net(torch.randint(0, 38, (4, 9), generator=torch.Generator().manual_seed(3)))[
            0
        ].square().sum().backward()
        clip(params, max_norm)
        return [p.grad.clone() for p in params if p.grad is not None]

    ours, theirs = grads(learner.clip_grad_norm), grads(torch.nn.utils.clip_grad_norm_)
    assert len(ours) == len(theirs) == len(list(tiny_prior(1).parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in ours]))
    assert (norm <= 1.01e-3) if max_norm < 1 else (norm > 1e-3)
    net = tiny_prior(1)  # a parameter without a gradient: torch's function takes it
    net.out.weight.square().sum().backward()
    learner.clip_grad_norm(list(net.parameters()), 1e-3)
    assert float(net.out.weight.grad.norm()) <= 1.01e-3


def test_adam_step_calls_the_fused_kernel_once_the_state_exists(monkeypatch: pytest.MonkeyPatch) -> None:
    net = tiny_prior(1)
    params = list(net.parameters())
    opt = make_adam(net, 1e-2, fused=True)
    calls: list[str] = []
    kernel = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: (calls.append("kernel"), kernel(*a, **k)))
    monkeypatch.setattr(opt, "step", lambda: (calls.append("step"), torch.optim.Adam.step(opt)))
    for _ in range(3):
        net(torch.zeros(2, 3, dtype=torch.long))[0].sum().backward()
        learner.adam_step(opt, params)
    # The first step makes the state through optimizer.step (which itself runs the kernel); then direct.
    assert calls == ["step", "kernel", "kernel", "kernel"]
    frozen = params[:-1]  # a parameter list that is not the optimiser's group: optimizer.step
    calls.clear()
    learner.adam_step(opt, frozen)
    assert calls[0] == "step"


def test_defaults_are_fused_adam_and_bf16_where_it_helps() -> None:
    fast, paper = preset("fast"), preset("paper")
    assert fast.fused_adam and paper.fused_adam
    assert fast.learner_bf16 == paper.learner_bf16 == "auto"
    cpu = torch.device("cpu")
    assert not bf16_enabled(paper.learner_bf16, cpu, paper.batch_size)  # one-episode steps: fp32 is faster
    assert bf16_enabled(fast.learner_bf16, cpu, fast.batch_size) == learner.cpu_has_bf16()
    molecules = tune_preset("molecules")  # bf16's quality check covers music only
    assert molecules.fused_adam and molecules.learner_bf16 == "off"


def test_bf16_auto_counts_amx_anywhere_and_avx512_bf16_on_amd_only() -> None:
    def cpuinfo(vendor: str, flags: str) -> str:
        return f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu sse2 avx2 avx512f {flags}\n"

    assert learner.bf16_is_fast(cpuinfo("GenuineIntel", "avx512_bf16 amx_bf16 amx_tile"))  # Sapphire Rapids
    assert learner.bf16_is_fast(cpuinfo("AuthenticAMD", "avx512_bf16"))  # Zen 4
    # Intel without AMX (Cooper Lake, a VM hiding AMX): bf16 measured slower than fp32 there
    assert not learner.bf16_is_fast(cpuinfo("GenuineIntel", "avx512_bf16 avx512_fp16"))
    assert not learner.bf16_is_fast(cpuinfo("AuthenticAMD", "avx512_vnni"))  # Zen 3 and older
    assert not learner.bf16_is_fast("")


def test_bf16_setting_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert bf16_enabled("on", cpu, 32) and not bf16_enabled("off", cpu, 1024)
    monkeypatch.setattr(learner, "cpu_has_bf16", lambda: True)
    assert bf16_enabled("auto", cpu, 1024)
    assert not bf16_enabled("auto", gpu, 1024)  # auto: CPUs with bf16 hardware only
    assert not bf16_enabled("auto", cpu, 32)  # and not the paper's one-episode steps
    monkeypatch.setattr(learner, "cpu_has_bf16", lambda: False)  # AMD before Zen 4, Intel without AMX
    assert not bf16_enabled("auto", cpu, 1024)
    with learner_autocast(True, cpu):
        assert torch.is_autocast_enabled("cpu")
    with learner_autocast(False, cpu):
        assert not torch.is_autocast_enabled("cpu")


def test_bad_bf16_setting_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="learner_bf16 must be one of auto, on, off"):
        preset("fast", learner_bf16="yes")


def test_bf16_learner_trains_reproducibly_and_differs_from_fp32() -> None:
    domain = toy_domain(tiny_prior(2))
    runs = [tune(preset("fast", **SMALL, learner_bf16=b), domain) for b in ("on", "on", "off")]
    on, again = (r.metrics[-1] for r in runs[:2])
    assert on == {**again, "wall_s": on["wall_s"]}  # same seed, same result
    assert on["loss"] is not None and torch.isfinite(torch.tensor(on["loss"]))
    weights = [list(r.policy.q_net.parameters()) for r in runs]
    assert all(p.dtype == torch.float32 for p in weights[0])  # autocast: fp32 weights, bf16 maths
    assert any(not torch.equal(a, b) for a, b in zip(weights[0], weights[2], strict=True))


def test_soft_update_is_the_lerp_of_every_tensor() -> None:
    online, target = tiny_prior(3), tiny_prior(4)
    expected = [t.detach().clone().lerp_(o.detach(), 0.25) for t, o in zip(target.parameters(), online.parameters(), strict=True)]  # fmt: skip
    soft_update(list(target.parameters()), list(online.parameters()), 0.25)
    for got, want, o in zip(target.parameters(), expected, online.parameters(), strict=True):
        assert torch.equal(got, want)  # the same values as the per-tensor loop it replaced
        assert not torch.equal(got, o)


def test_overlap_setting_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    from rltuner import threads

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert preset("fast").overlap == preset("paper").overlap == "auto"
    assert overlap_enabled("on", cpu, 1, 1, 256) and not overlap_enabled("off", cpu, 1, 4096, 256)
    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    assert overlap_enabled("auto", cpu, 1, 1024, 256) and not overlap_enabled("auto", gpu, 1, 1024, 256)
    assert not overlap_enabled("auto", cpu, 1, 32, 256)  # the paper's one-episode steps: not worth a handoff
    assert not overlap_enabled("auto", cpu, 2, 1024, 256)  # two torch threads per op fill both cores
    threads.share_cores(2)  # a run --jobs 2 worker: the other worker has the other core
    try:
        assert not overlap_enabled("auto", cpu, 1, 1024, 256)
    finally:
        threads.share_cores(1)
    monkeypatch.setattr(threads, "available_cores", lambda: 1)  # one core (or taskset to one)
    assert not overlap_enabled("auto", cpu, 1, 1024, 256)
    with pytest.raises(ConfigError, match="overlap must be one of auto, on, off"):
        preset("fast", overlap="2")


def test_overlap_chooser_times_both_modes_and_keeps_the_faster() -> None:
    assert [OverlapChooser(True).use() for _ in range(3)] == [True] * 3
    chooser = OverlapChooser(None, every=10, trial=2)

    def run(steps: int, on_s: float, off_s: float) -> list[bool]:
        used = []
        for _ in range(steps):
            mode = chooser.use()
            used.append(mode)
            chooser.record(mode, on_s if mode else off_s)
        return used

    # A trial of 2 steps each way, alternating; then the faster mode until the next trial (every 10 steps).
    assert run(10, on_s=0.5, off_s=1.0) == [True, False, True, False] + [True] * 6
    assert run(10, on_s=2.0, off_s=1.0) == [True, False, True, False] + [False] * 6  # the cores changed
    fixed = OverlapChooser(False, every=10, trial=2)
    for _ in range(12):
        assert not fixed.use()
        fixed.record(False, 1.0)


@pytest.mark.parametrize("algorithm", ["q", "g"])
def test_overlapped_network_passes_give_the_same_run_to_the_bit(
    algorithm: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rltuner import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 2)  # so that auto may overlap (and is timed)
    domain = toy_domain(tiny_prior(2))
    on, off, auto = (
        tune(preset("fast", **SMALL, algorithm=algorithm, learner_bf16="on", overlap=o), domain)
        for o in ("on", "off", "auto")
    )
    for run in (off, auto):
        for a, b in zip(on.policy.q_net.parameters(), run.policy.q_net.parameters(), strict=True):
            assert torch.equal(a, b)
        assert [{**r, "wall_s": 0} for r in on.metrics] == [{**r, "wall_s": 0} for r in run.metrics]
    assert on.gradient_steps == off.gradient_steps == auto.gradient_steps > 0


@pytest.mark.parametrize(
    ("algorithm", "extra"),
    [("q", {}), ("g", {}), ("psi", {"offset_by_prior": True}), ("q", {"double_q": True})],
)
def test_skipping_the_unbootstrapped_last_state_gives_the_same_run_to_the_bit(
    algorithm: str, extra: dict[str, object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rltuner.rl.tuner import ValueLearner

    domain = toy_domain(tiny_prior(2))
    cfg = preset("fast", **SMALL, algorithm=algorithm, learner_bf16="on", **extra)
    skipped = tune(cfg, domain)
    monkeypatch.setattr(ValueLearner, "skip_last_state", False)
    full = tune(cfg, domain)
    for a, b in zip(skipped.policy.q_net.parameters(), full.policy.q_net.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [{**r, "wall_s": 0} for r in skipped.metrics] == [{**r, "wall_s": 0} for r in full.metrics]
    assert any(
        not torch.equal(a, b)
        for a, b in zip(full.policy.q_net.parameters(), tiny_prior(2).parameters(), strict=True)
    )
