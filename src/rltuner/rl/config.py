"""TuneConfig: every setting of an RL-tuning run, with the presets ``fast`` (default) and ``paper``."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from rltuner.config import apply_overrides, check_types, field
from rltuner.devices import DEVICE_CHOICES as DEVICES
from rltuner.errors import ConfigError
from rltuner.threads import DEFAULT_THREADS, check_threads

EXPLORATIONS = ("epsilon", "boltzmann")
BF16_CHOICES = ("auto", "on", "off")
# Settings whose default changed after runs were recorded without them: the value such a run used, so that
# resuming it goes on with the numerics it started with.
VALUES_BEFORE_RECORDED = {"fused_adam": False, "learner_bf16": "off"}


@dataclass(frozen=True)
class TuneConfig:
    """Hyperparameters of one tuning run. Steps are environment steps (one token played in one episode)."""

    algorithm: str = field(
        "q", "q | psi | g | rl-only (docs/tuning.md) | reinforce-kl | rloo | dap (docs/onpolicy.md)"
    )
    total_steps: int = field(1_000_000, "environment steps to play (one token of one episode each)")
    n_envs: int = field(
        256, "episodes composed in lockstep (one batched forward per step); on-policy: episodes per update"
    )
    batch_size: int = field(
        1024, "transitions per gradient step; a multiple of the episode length (whole episodes) unless "
        "stored_states"
    )  # fmt: skip
    train_every: int = field(160, "environment steps per gradient step (fractions carry over)")
    learning_starts: int = field(0, "environment steps before the first gradient step")
    learning_rate: float = field(2e-3, "Adam learning rate")
    grad_clip: float = field(5.0, "clip the gradient's L2 norm to this (0 = no clipping)")
    gamma: float = field(0.5, "discount factor, in [0, 1)")
    target_update_rate: float = field(
        0.05, "eta of the soft target update theta- <- (1-eta) theta- + eta theta"
    )
    reward_scale: float = field(0.5, "c: the reward is log p(a|s) + r_MT / c (r_MT / c for g and rl-only)")
    reward_primer: bool = field(
        False, "music: the music-theory reward judges the melody as heard and as Table 1 counts it, primer "
        "first (docs/rewards.md); false: the spec's reward, primer unseen"
    )  # fmt: skip
    double_q: bool = field(False, "double Q-learning (q and rl-only only)")
    exploration: str = field("epsilon", "epsilon (epsilon-greedy on the policy) | boltzmann (sample it)")
    epsilon_start: float = field(1.0, "epsilon at step 0")
    epsilon_end: float = field(0.1, "epsilon after the exploration period")
    epsilon_steps: int = field(250_000, "environment steps over which epsilon falls linearly")
    replay_size: int = field(131_072, "replay memory in transitions (whole episodes are kept)")
    terminal_last_step: bool = field(True, "the last step of an episode is terminal (false: bootstrap on)")
    stored_states: bool = field(
        False, "value family, recurrent priors: the replay keeps the acting network's LSTM/GRU state with "
        "every transition (as the original RL Tuner did) and each gradient step learns from batch_size single "
        "transitions, one network step from their stored states (no backprop through time; the states are as "
        "old as the transition): faster at small batches, but it learned worse at the paper's budget, so no "
        "preset uses it; false: whole episodes, every network run over them again (docs/tuning.md)"
    )  # fmt: skip
    offset_by_prior: bool = field(
        False,
        "TD loss on outputs minus the prior's log-partition per state: Q starts as exactly log p(a|s) "
        "(the policy is unchanged); the molecule presets use it",
    )
    eval_every: int = field(100_000, "environment steps between evaluations (0 = only at the end)")
    eval_episodes: int = field(100, "episodes sampled from the stochastic policy per evaluation")
    seed: int = field(0, "random seed (a seeded CPU run is exactly reproducible, resumed or not)")
    device: str = field("cpu", "cpu | cuda | auto")
    threads: int = field(
        DEFAULT_THREADS,
        "CPU threads for torch while tuning (0 = torch's default); recorded, not part of the result's inputs",
        result=False,
    )
    fused_adam: bool = field(
        True, "Adam's fused kernel where torch has one for the device (one kernel for all tensors, ~3x faster "
        "on CPU; the same update, rounded differently; elsewhere the loop); false: the per-tensor loop"
    )  # fmt: skip
    learner_bf16: str = field(
        "auto", "bf16 autocast of the value learner's forwards and backward: auto (on where the CPU has AMX, or "
        "AVX512-BF16 on AMD, and batch_size >= 256) | on | off (docs/tuning.md, Performance)"
    )  # fmt: skip
    overlap: str = field(
        "auto", "value family: independent network passes run side by side on a second CPU core (the target "
        "network's forward beside the online one's when learning, the prior's step beside the Q-network's "
        "when acting): auto (on for the CPU where a core is left beside each pass's torch threads: the cores "
        "this process may use // (threads x run --jobs workers) >= 2; for batches of >= 256 transitions and "
        ">= 64 environments; there it times both ways during the run and keeps the faster) | on | off; value "
        "family only; the same numbers either way (docs/tuning.md, Performance)", result=False,
    )  # fmt: skip
    tensorboard: bool = field(True, "also write TensorBoard event files to RUN_DIR/tb")
    progress: bool = field(True, "show a progress bar on stderr")
    # On-policy KL control (reinforce-kl, rloo, dap; docs/onpolicy.md).
    kl_coef: float = field(1.0, "beta: the return is r_T / c - beta * KL(pi || p) (reinforce-kl, rloo)")
    kl_estimator: str = field("k1", "k1 (log pi - log p) | k3 ((r - 1) - log r, r = p / pi), per token")
    kl_in_reward: bool = field(True, "the KL is part of the return (false: a separate loss term, k3 only)")
    baseline_momentum: float = field(0.9, "reinforce-kl: b <- m b + (1 - m) mean return, in [0, 1)")
    group_size: int = field(4, "rloo: k episodes per primer (n_envs must be a multiple)")
    group_norm: bool = field(False, "rloo: GRPO's (R - group mean) / group std instead of leave-one-out")
    entropy_coef: float = field(0.0, "on-policy: weight of the entropy bonus (per-sequence sum)")
    sigma: float = field(60.0, "dap: weight of the score S in [0, 1] in log p(tau) + sigma * S(tau)")

    def validate(self) -> None:
        """Raise :class:`ConfigError` on nonsense settings, before any work starts."""
        from rltuner.limits import check_tune_config
        from rltuner.rl.targets import get_algorithm

        check_types(self)
        algo = get_algorithm(self.algorithm)
        positive = ("total_steps", "n_envs", "batch_size", "train_every", "replay_size", "eval_episodes")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("learning_starts", "epsilon_steps", "eval_every", "grad_clip"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {self.learning_rate}")
        if not 0 <= self.gamma < 1:
            raise ConfigError(f"gamma must be in [0, 1), got {self.gamma}")
        if not 0 < self.target_update_rate <= 1:
            raise ConfigError(f"target_update_rate (eta) must be in (0, 1], got {self.target_update_rate}")
        if not self.reward_scale > 0:
            raise ConfigError(f"reward_scale (c) must be positive, got {self.reward_scale}")
        for name in ("epsilon_start", "epsilon_end"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.exploration not in EXPLORATIONS:
            raise ConfigError(
                f"exploration must be one of {', '.join(EXPLORATIONS)}, not {self.exploration!r}"
            )
        if self.learner_bf16 not in BF16_CHOICES:
            raise ConfigError(
                f"learner_bf16 must be one of {', '.join(BF16_CHOICES)}, not {self.learner_bf16!r}"
            )
        if self.overlap not in BF16_CHOICES:
            raise ConfigError(f"overlap must be one of {', '.join(BF16_CHOICES)}, not {self.overlap!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        check_threads(self.threads)
        if self.stored_states and algo.family != "value":
            raise ConfigError(
                f"stored_states applies to the value family (q, psi, g, rl-only), not to {self.algorithm}"
            )
        if self.double_q and not algo.supports_double_q:
            raise ConfigError(f"double_q applies to q and rl-only, not to {self.algorithm}")
        check_tune_config(self)  # seed range, finite numbers, sizes that would not fit in memory
        self._validate_policy_settings(algo)

    def _validate_policy_settings(self, algo: Any) -> None:
        from rltuner.rl.policy_gradient import KL_ESTIMATORS
        from rltuner.rl.targets import ALGORITHMS

        if self.kl_estimator not in KL_ESTIMATORS:
            raise ConfigError(
                f"kl_estimator must be one of {', '.join(KL_ESTIMATORS)}, not {self.kl_estimator!r}"
            )
        for name in ("kl_coef", "entropy_coef"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.sigma > 0:
            raise ConfigError(f"sigma must be positive, got {self.sigma}")
        if not 0 <= self.baseline_momentum < 1:
            raise ConfigError(f"baseline_momentum must be in [0, 1), got {self.baseline_momentum}")
        if self.group_size < 1:
            raise ConfigError(f"group_size must be at least 1, got {self.group_size}")
        if not algo.kl_estimate and (self.kl_estimator != "k1" or not self.kl_in_reward):
            users = " and ".join(a.name for a in ALGORITHMS.values() if a.kl_estimate)
            raise ConfigError(f"kl_estimator and kl_in_reward apply to {users}, not {self.algorithm}")
        if not self.kl_in_reward and self.kl_estimator == "k1":
            raise ConfigError(
                "a k1 KL loss term has zero gradient in expectation on-policy: use kl_estimator=k3 with "
                "kl_in_reward=false"
            )
        if algo.groups:
            if self.group_size < 2:
                raise ConfigError(
                    f"{self.algorithm} needs group_size >= 2 (the others of a group are the baseline)"
                )
            if self.n_envs % self.group_size:
                raise ConfigError(
                    f"n_envs ({self.n_envs}) must be a multiple of group_size ({self.group_size}) for "
                    f"{self.algorithm}"
                )
        elif self.group_norm:
            users = ", ".join(a.name for a in ALGORITHMS.values() if a.groups)
            raise ConfigError(f"group_norm applies to {users}, not to {self.algorithm}")
        if algo.family == "value" and self.entropy_coef:
            raise ConfigError(f"entropy_coef applies to the on-policy algorithms, not to {self.algorithm}")

    def validate_for_episode_length(self, length: int) -> None:
        """Checks that need the domain's episode length (replay batches: value-family algorithms only)."""
        from rltuner.rl.targets import get_algorithm

        if get_algorithm(self.algorithm).family == "policy":
            return
        if self.batch_size % length and not self.stored_states:
            raise ConfigError(
                f"batch_size ({self.batch_size}) must be a multiple of the episode length ({length}): "
                f"whole episodes are replayed"
            )
        if self.replay_size < self.batch_size:
            raise ConfigError(
                f"replay_size ({self.replay_size}) must hold at least one batch ({self.batch_size})"
            )

    def with_overrides(self, **overrides: Any) -> TuneConfig:
        """A validated copy with some fields changed (``name=value``, values may be strings)."""
        return apply_overrides(self, overrides)


PRESETS: dict[str, TuneConfig] = {
    # The paper's schedule (Jaques et al. 2017, section 5 and the original code's defaults).
    "paper": TuneConfig(
        total_steps=1_000_000, n_envs=1, batch_size=32, train_every=5, learning_rate=5e-4, gamma=0.5,
        target_update_rate=0.01, reward_scale=0.5, epsilon_start=1.0, epsilon_end=0.1, epsilon_steps=500_000,
        replay_size=100_000, eval_every=100_000,
    ),
    # Many environments and big batches: the same 1,000,000 environment steps and >= 6,400,000 sample-updates
    # in far fewer, larger gradient steps (see docs/tuning.md for how eta and epsilon were rescaled).
    "fast": TuneConfig(),
}  # fmt: skip


# Settings of the on-policy family that differ from both presets (the paper has no schedule for them): one
# gradient step per round of 64 episodes (489 steps in 1,000,000 music env steps), Adam at 1e-3. Chosen with
# rloo on music (docs/onpolicy.md, "How the defaults were chosen").
FAMILY_DEFAULTS: dict[str, dict[str, Any]] = {
    "value": {},
    "policy": {"n_envs": 64, "learning_rate": 1e-3},
}


# Settings counted in environment steps that are points of a run's course: a preset's values are made for its
# budget (total_steps), so a run of another length gets them scaled by total_steps / budget. Otherwise a short
# run would end still exploring (epsilon 0.62 after 100,000 of the fast preset's 250,000 steps) with a policy
# worse than the prior. Applies to both families (the on-policy one reads eval_every only).
SCHEDULE_FIELDS = ("learning_starts", "epsilon_steps", "eval_every")


def scaled_to_budget(cfg: TuneConfig, budget: int, keep: Collection[str] = ()) -> TuneConfig:
    """``cfg`` with its step-count schedules (:data:`SCHEDULE_FIELDS`) scaled to its own ``total_steps``.

    Args:
        cfg: a config whose schedules were made for ``budget`` environment steps (a preset's) and whose
            ``total_steps`` may differ.
        budget: the environment steps the schedules were made for (the preset's ``total_steps``).
        keep: fields taken as they are (those a user set explicitly).

    Returns:
        A validated copy in which each schedule not in ``keep`` is ``round(value * total_steps / budget)``
        (at least 1; 0, which means "off", stays 0). At ``total_steps == budget`` it equals ``cfg``.

    Raises:
        ConfigError: ``budget`` is not positive, or the scaled config is invalid.
    """
    if budget < 1:
        raise ConfigError(f"the budget schedules are made for must be at least 1, got {budget}")
    if cfg.total_steps == budget:
        return cfg
    scale = cfg.total_steps / budget
    changes = {
        name: max(1, round(getattr(cfg, name) * scale))
        for name in SCHEDULE_FIELDS
        if name not in keep and getattr(cfg, name) > 0
    }
    scaled = dataclasses.replace(cfg, **changes)
    scaled.validate()
    return scaled


def preset(name: str, *, preset_overrides: Mapping[str, Any] | None = None, **overrides: Any) -> TuneConfig:
    """The preset ``name`` (``fast`` or ``paper``) with ``overrides`` applied and validated.

    When ``overrides`` names the algorithm, its family's :data:`FAMILY_DEFAULTS` come first, then
    ``preset_overrides`` (a domain's changes to the preset, :func:`rltuner.domains.tune_preset`), then
    ``overrides``. When ``total_steps`` differs from the preset's budget, the schedules the user did not set
    are scaled to it (:func:`scaled_to_budget`): the returned values are the ones the run uses.
    """
    from rltuner.rl.targets import get_algorithm

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    base: dict[str, Any] = {}
    if "algorithm" in overrides:
        base = dict(FAMILY_DEFAULTS[get_algorithm(str(overrides["algorithm"])).family])
    base.update(preset_overrides or {})
    # the preset as this domain and family define it: its schedules are made for its total_steps
    reference = dataclasses.replace(PRESETS[name], **base)
    if not overrides:
        reference.validate()
        return reference
    cfg = reference.with_overrides(**overrides)
    explicit = {key.replace("-", "_") for key in overrides}
    return scaled_to_budget(cfg, reference.total_steps, keep=explicit)
