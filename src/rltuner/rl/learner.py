"""What the training loop (:func:`rltuner.rl.tuner.tune`) needs of an algorithm family: the :class:`Learner`.

The loop plays a round of episodes with the learner's behaviour policy, hands the batch to
:meth:`Learner.learn`, and evaluates, checkpoints and resumes the same way for every family. The value family
(Q, Psi, G, RL-only: replay + TD targets) is :class:`rltuner.rl.tuner.ValueLearner`; the policy family
(REINFORCE-KL, RLOO, DAP: on-policy) is :class:`rltuner.rl.onpolicy.PolicyLearner`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import operator
from pathlib import Path
from typing import Any, Protocol, cast

import torch

from rltuner.domains.base import Domain
from rltuner.rl.env import ActFn, BatchedEnv
from rltuner.rl.replay import EpisodeBatch
from rltuner.threads import OverlapChooser


class Learner(Protocol):
    """The networks, the optimiser and the update of one algorithm family.

    Attributes:
        q_net: the trained network (Prior interface), initialised from the prior; the env steps it.
        reward_rnn: the frozen prior, supplying ``log p(a|s)``.
    """

    q_net: torch.nn.Module
    reward_rnn: torch.nn.Module

    def make_env(self, domain: Domain, n_envs: int) -> BatchedEnv:
        """The environment the loop plays rounds in (the learner's network and the frozen prior)."""
        ...

    def actor(self, generator: torch.Generator, env_step: int) -> ActFn:
        """The behaviour policy of the next round, which starts at ``env_step``."""
        ...

    def learn(self, batch: EpisodeBatch, counters: dict[str, Any], generator: torch.Generator) -> float:
        """Learn from one round; add to ``counters['gradient_steps']`` and ``['sample_updates']``.

        Returns the last gradient step's loss, NaN when the round made none.
        """
        ...

    def exploration(self, env_step: int) -> float | None:
        """The exploration rate logged with the metrics (epsilon), None when the family has none."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything to resume: tensors and plain values only (``torch.load(weights_only=True)``)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def prior_copies(prior: torch.nn.Module, device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """``(trainable, frozen)`` copies of the prior on ``device``; the caller's prior stays untouched."""
    frozen = copy.deepcopy(prior).to(device).eval()
    for p in frozen.parameters():
        p.requires_grad_(False)
    trainable = copy.deepcopy(frozen).train()
    for p in trainable.parameters():
        p.requires_grad_(True)
    return trainable, frozen


def gradient_step(
    loss: torch.Tensor, params: list[torch.nn.Parameter], optimizer: torch.optim.Optimizer, grad_clip: float
) -> None:
    """Back-propagate ``loss``, clip the gradient's L2 norm to ``grad_clip`` (0: no clipping), step.

    ``params``: the trained network's parameters, the optimiser's, as a list made once. Walking a module's
    parameters and ``optimizer.zero_grad`` (its profiler hook and group loop) at every step cost ~10% of a
    gradient step at the paper preset's shape (3.69 -> 3.33 ms median, 2-core Xeon); the same update.
    """
    for p in params:  # optimizer.zero_grad(set_to_none=True), without its overhead
        p.grad = None
    loss.backward()
    if grad_clip > 0:
        clip_grad_norm(params, grad_clip)
    adam_step(optimizer, params)


@torch.no_grad()
def clip_grad_norm(params: list[torch.nn.Parameter], max_norm: float) -> None:
    """``torch.nn.utils.clip_grad_norm_(params, max_norm)``: the same kernels (foreach norms, their norm,
    the clamped coefficient, one foreach multiply), so the same gradients to the bit (tested), without its
    per-call regrouping of the tensors by device and dtype when they all share one (167 -> 114 us a call
    on the Note RNN's gradients, 2-core Xeon). Anything else takes torch's function.
    """
    grads = [p.grad for p in params]
    first = grads[0] if grads else None
    if first is None or any(g is None or g.device != first.device or g.dtype != first.dtype for g in grads):
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    tensors = cast(list[torch.Tensor], grads)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors, 2.0)), 2.0)
    torch._foreach_mul_(tensors, torch.clamp(float(max_norm) / (total + 1e-6), max=1.0))


# The settings the direct call below implements: torch's defaults, with the fused kernel.
_PLAIN_ADAM = {
    "amsgrad": False,
    "maximize": False,
    "differentiable": False,
    "capturable": False,
    "fused": True,
}


def adam_step(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> None:
    """``optimizer.step()``; for torch's fused Adam, its kernel called directly once the state exists.

    The same kernel on the same tensors, so the same update to the bit (tested), without ``Optimizer.step``'s
    Python bookkeeping (hooks, profiler label, regrouping the tensors by device and dtype at every step):
    ~200 -> ~100 us a step for the Note RNN (2-core Xeon), 4% of a ``--preset paper`` gradient step. Anything
    else (another optimizer, per-tensor Adam, a first step, a parameter without a gradient, several groups,
    a torch without the kernel) takes ``optimizer.step()``.
    """
    fused = getattr(torch, "_fused_adam_", None)
    groups = optimizer.param_groups
    if fused is None or type(optimizer) is not torch.optim.Adam or len(groups) != 1:
        optimizer.step()
        return
    group = groups[0]
    states = [optimizer.state.get(p) or {} for p in params]
    grads = [p.grad for p in params]
    plain = all(group.get(k) == v for k, v in _PLAIN_ADAM.items()) and not group.get("decoupled_weight_decay")
    same = len(group["params"]) == len(params) and all(map(operator.is_, group["params"], params))
    if not (plain and same and all("step" in st for st in states)) or any(g is None for g in grads):
        optimizer.step()
        return
    steps = [st["step"] for st in states]
    torch._foreach_add_(steps, 1)
    beta1, beta2 = group["betas"]
    fused(
        params, grads, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states], [], steps,
        amsgrad=False, lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
        eps=group["eps"], maximize=False, grad_scale=None, found_inf=None,
    )  # fmt: skip


def make_adam(net: torch.nn.Module, learning_rate: float, fused: bool) -> torch.optim.Adam:
    """Adam over ``net``'s parameters; ``fused``: torch's fused kernel where it takes every parameter.

    The fused kernel updates every tensor in one pass (on a 1-thread CPU ~3x faster than the per-tensor loop
    at the Note RNN's size, the learner's largest fixed cost at small batches); the update is the same, its
    float rounding differs slightly, so runs are reproducible per setting, not across settings. Where the
    kernel does not take a parameter (a device without it, a complex tensor) the per-tensor loop is used.
    """
    params = list(net.parameters())
    if fused and fused_adam_supported(params):
        return torch.optim.Adam(params, lr=learning_rate, fused=True)
    return torch.optim.Adam(params, lr=learning_rate)


def fused_adam_supported(params: list[torch.nn.Parameter]) -> bool:
    """Whether torch's fused Adam kernel takes every tensor of ``params`` (its device and dtype).

    torch accepts ``fused=True`` at construction and only checks the tensors at the first ``step()``, where
    an unsupported one raises; this runs the same check (torch's own) before any work.
    """
    try:
        from torch.optim.optimizer import _device_dtype_check_for_fused
    except ImportError:  # a torch that moved its check: trust construction, as torch itself does
        return True
    try:
        for p in params:
            _device_dtype_check_for_fused(p)
    except RuntimeError:
        return False
    return True


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU does bf16 matrix maths faster than fp32 (Linux's /proc/cpuinfo): AMX-BF16 on any CPU,
    AVX512-BF16 on AMD (Zen 4 and later).

    An Intel CPU with AVX512-BF16 but no AMX (Cooper Lake, or a virtual machine that hides AMX from a
    Sapphire Rapids host) is excluded: there oneDNN's bf16 LSTM was slower than fp32 (a fast-preset
    gradient step 15.4 vs 10.3 ms, 2-core Xeon without AMX, 2026-12-02), while AVX512-BF16 on the 2-core
    AMD EPYC (Zen 4) gave 1.5x and AMX on the Xeon 1.4x.
    """
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    return bf16_is_fast(text)


def bf16_is_fast(cpuinfo: str) -> bool:
    """:func:`cpu_has_bf16`'s rule applied to the text of a ``/proc/cpuinfo``."""
    words = set(cpuinfo.split())
    return "amx_bf16" in words or ("avx512_bf16" in words and "AuthenticAMD" in words)


BF16_MIN_BATCH = 256  # transitions per gradient step below which ``auto`` keeps fp32


def bf16_enabled(setting: str, device: torch.device, batch_size: int) -> bool:
    """Resolve ``learner_bf16``: ``on``, ``off``, or ``auto`` = on for a CPU with bf16 hardware only.

    ``auto`` stays off on GPUs and on CPUs where bf16 is not faster (:func:`cpu_has_bf16`: AMD before Zen 4,
    Intel without AMX), and for gradient steps under :data:`BF16_MIN_BATCH` transitions (the
    paper's one-episode steps), where the casts cost more than the bf16 kernels save.
    """
    if setting == "auto":
        return device.type == "cpu" and batch_size >= BF16_MIN_BATCH and cpu_has_bf16()
    return setting == "on"


OVERLAP_MIN_BATCH = 256  # transitions per gradient step below which ``auto`` learns on one thread
OVERLAP_MIN_ENVS = 64  # environments below which ``auto`` acts on one thread


def overlap_enabled(setting: str, device: torch.device, threads: int, size: int, min_size: int) -> bool:
    """Resolve ``overlap`` for work of ``size`` (transitions per gradient step, or environments): ``on``,
    ``off``, or for ``auto`` whether overlapping may pay, to be timed (:class:`rltuner.threads.OverlapChooser`):
    on the CPU, when a core is left beside each op's ``threads`` torch threads
    (:func:`rltuner.threads.batch_workers` >= 2: the process's affinity mask, ``taskset`` and the other
    ``run --jobs`` workers count), and ``size >= min_size``.

    Below the sizes (the paper preset's one episode, one environment) a pass takes tens of microseconds,
    about what handing it to the worker thread costs.
    """
    if setting == "auto":
        from rltuner.threads import batch_workers

        return device.type == "cpu" and size >= min_size and batch_workers(threads) >= 2
    return setting == "on"


def overlap_chooser(
    setting: str,
    device: torch.device,
    threads: int,
    size: int,
    min_size: int,
    every: int = 1024,
    trial: int = 16,
) -> OverlapChooser:
    """``overlap`` for work of ``size`` as an :class:`~rltuner.threads.OverlapChooser`: timed (trials of
    ``trial`` + ``trial`` pieces every ``every``) for ``auto`` where :func:`overlap_enabled` says it may pay,
    else fixed."""
    possible = overlap_enabled(setting, device, threads, size, min_size)
    return OverlapChooser(None if possible and setting == "auto" else possible, every=every, trial=trial)


def learner_autocast(enabled: bool, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on ``device`` when ``enabled`` (LSTM and matmuls in bf16, weights and Adam in fp32)."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
