"""The domain table: every sequence domain rltuner can tune, one entry each.

The CLI's ``--domain`` choices, ``rltuner run`` and the docs read :data:`DOMAINS`; adding a domain is one
entry here plus its package. Factories are imported lazily, so music users never import RDKit.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rltuner.errors import ConfigError, RLTunerError


@dataclass(frozen=True)
class DomainEntry:
    """One row of the domain table.

    Attributes:
        name: what ``--domain`` takes.
        title: one line for ``--help`` and the docs.
        factory: ``"module:function"`` building the :class:`~rltuner.domains.base.Domain`;
            called as ``factory(prior, device=...)`` with a checkpoint path or None (the shipped prior).
        item: what one sequence is called (melody, molecule), for messages.
        requires: a module the domain needs beyond the core, and how to install it.
        preset_overrides: preset name -> TuneConfig settings that differ from the (music-tuned) presets.
        pretrain_defaults: PretrainConfig settings (``model.*`` for the architecture) that differ from the
            paper's Note RNN recipe.
    """

    name: str
    title: str
    factory: str
    item: str
    requires: tuple[str, str] | None = None
    preset_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    pretrain_defaults: dict[str, Any] = field(default_factory=dict)

    def check_installed(self) -> None:
        """Raise one clear :class:`RLTunerError` when the domain's extra is missing."""
        if self.requires is None:
            return
        module, hint = self.requires
        try:
            importlib.import_module(module)
        except ImportError:
            raise RLTunerError(f"--domain {self.name} needs {module}: {hint}") from None

    def build(self, prior: Any = None, **kwargs: Any) -> Any:
        """The domain with ``prior`` (a path, a module, or None for the shipped one)."""
        self.check_installed()
        module_name, attr = self.factory.split(":")
        fn: Callable[..., Any] = getattr(importlib.import_module(module_name), attr)
        return fn(prior, **kwargs)


MOLECULES_EXTRA = "pip install 'rltuner[molecules]' (rdkit; molsets with --no-deps)"

DOMAINS: dict[str, DomainEntry] = {
    "music": DomainEntry(
        "music", "monophonic melodies of 32 sixteenths, music-theory reward (RL Tuner)",
        "rltuner.domains.music:music_domain", "melody",
    ),
    "molecules": DomainEntry(
        "molecules", "SMILES strings ending at <eos>, chemistry reward (Sequence Tutor)",
        "rltuner.domains.molecules.domain:molecule_domain", "molecule", requires=("rdkit", MOLECULES_EXTRA),
        # Episodes hold up to 100 tokens (about 38 played): batches are counted in 100-token episodes.
        preset_overrides={
            # Exploration samples the policy (it starts as the prior): uniformly random tokens, as epsilon-greedy
            # plays early on, make nothing but invalid strings.
            # offset_by_prior: the prior's raw logits are far from Q-values of log p + r_T / c; starting from
            # log p(a|s) keeps the first TD errors small. gamma 0.99: r_T comes at the last of ~37 tokens (0.5
            # would discount it to nothing for the early ones). A lower learning rate for the 256-cell LSTM.
            # How these were chosen: docs/molecules.md. learner_bf16 off: bf16's quality check (docs/tuning.md)
            # covers music only, and gamma 0.99 carries rounding further through the targets than 0.5.
            "fast": {"batch_size": 3200, "train_every": 400, "replay_size": 200_000, "exploration": "boltzmann",
                     "eval_episodes": 256, "offset_by_prior": True, "gamma": 0.99, "learning_rate": 3e-4,
                     "learner_bf16": "off"},
            "paper": {"batch_size": 100, "replay_size": 100_000, "exploration": "boltzmann",
                      "offset_by_prior": True, "gamma": 0.99},
        },
        # Whole molecules (<= 54 tokens + <bos>/<eos>) in one window, every prediction counted, no L2.
        pretrain_defaults={"model.hidden_size": 256, "window": 55, "skip_first": 0, "l2": 0.0,
                           "eval_every": 500, "patience": 0},
    ),
}  # fmt: skip


def get_domain(name: str) -> DomainEntry:
    """The table row named ``name``; raises :class:`ConfigError` listing the known names."""
    try:
        return DOMAINS[name]
    except KeyError:
        raise ConfigError(f"unknown domain {name!r}; choose one of {', '.join(DOMAINS)}") from None


def tune_preset(domain: str, preset: str = "fast", **overrides: Any) -> Any:
    """The tuning preset for a domain: the preset, the domain's own overrides, then ``overrides``; validated.

    Schedules the caller did not set follow ``total_steps`` (:func:`rltuner.rl.config.scaled_to_budget`).
    """
    from rltuner.rl.config import preset as base_preset

    entry = get_domain(domain)
    return base_preset(preset, preset_overrides=entry.preset_overrides.get(preset, {}), **overrides)
