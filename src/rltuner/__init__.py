"""rltuner: refine a trained sequence model with RL while keeping what it learned from data.

The flagship use is RL Tuner (Jaques, Gu, Turner, Eck, "Tuning Recurrent Neural Networks with Reinforcement
Learning", https://arxiv.org/abs/1611.02796): a Note RNN trained on melodies is fine-tuned with Q-learning
with log-prior augmentation, generalized Psi-learning or G-learning against a music-theory reward.

The public API is importable from the package root; heavy modules (torch, music21) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # encoding
    "Melody": "rltuner.encoding",
    "Note": "rltuner.encoding",
    "NUM_CLASSES": "rltuner.encoding",
    "NOTE_OFF": "rltuner.encoding",
    "NO_EVENT": "rltuner.encoding",
    "classes_to_notes": "rltuner.encoding",
    "notes_to_classes": "rltuner.encoding",
    "normalize_notes": "rltuner.encoding",
    "key_set_classes": "rltuner.encoding",
    # data
    "MelodyDataset": "rltuner.data.dataset",
    "BuildConfig": "rltuner.data.dataset",
    "BuildReport": "rltuner.data.dataset",
    "build_dataset": "rltuner.data.dataset",
    "save_dataset": "rltuner.data.dataset",
    "load_dataset": "rltuner.data.dataset",
    "load_default_dataset": "rltuner.data.dataset",
    "default_dataset_path": "rltuner.data.dataset",
    "dataset_stats": "rltuner.data.dataset",
    "ExtractSettings": "rltuner.data.midi_import",
    "import_midi_folder": "rltuner.data.midi_import",
    "estimate_key": "rltuner.data.midi_import",
    # the prior
    "Prior": "rltuner.models.prior",
    "ModelConfig": "rltuner.models.prior",
    "build_prior": "rltuner.models.prior",
    "load_model": "rltuner.loading",
    "load_prior": "rltuner.models.checkpoint",
    "save_prior": "rltuner.models.checkpoint",
    "load_default_prior": "rltuner.models.checkpoint",
    "pretrain": "rltuner.models.train",
    "PretrainConfig": "rltuner.models.train",
    "sample": "rltuner.models.sampling",
    # output
    "write_midi": "rltuner.data.midi_io",
    "write_midi_batch": "rltuner.data.midi_io",
    "midi_to_melody": "rltuner.data.midi_io",
    "render_wav": "rltuner.data.audio",
    "synthesize": "rltuner.data.audio",
    "plot_piano_roll": "rltuner.data.pianoroll",
    # listening study
    "make_study": "rltuner.evaluation.study",
    "analyze_ratings": "rltuner.evaluation.study",
    # rewards
    "music_theory_rewards": "rltuner.rewards.music_theory",
    "MusicTheoryReward": "rltuner.rewards.music_theory",
    "RewardConfig": "rltuner.rewards.music_theory",
    "register_rule": "rltuner.rewards.music_theory",
    "unregister_rule": "rltuner.rewards.music_theory",
    "RULE_NAMES": "rltuner.rewards.music_theory",
    "melody_statistics": "rltuner.rewards.statistics",
    "PAPER_TABLE1": "rltuner.rewards.statistics",
    # RL tuning
    "tune": "rltuner.rl.tuner",
    "TuneResult": "rltuner.rl.tuner",
    "TuneConfig": "rltuner.rl.config",
    "Domain": "rltuner.domains.base",
    "music_domain": "rltuner.domains.music",
    "load_policy": "rltuner.rl.policy",
    "ALGORITHMS": "rltuner.rl.targets",
    # CPU threads (the policy of every command: docs/tuning.md, "Threads")
    "set_threads": "rltuner.threads",
    # evaluation
    "evaluate_models": "rltuner.evaluation.evaluate",
    "EvaluationResult": "rltuner.evaluation.evaluate",
    "run_pipeline": "rltuner.evaluation.pipeline",
    "PipelineConfig": "rltuner.evaluation.pipeline",
    # errors
    "RLTunerError": "rltuner.errors",
    "InvalidMelodyError": "rltuner.errors",
    "MelodyRangeError": "rltuner.errors",
    "MidiReadError": "rltuner.errors",
    "DatasetError": "rltuner.errors",
    "CheckpointError": "rltuner.errors",
    "ConfigError": "rltuner.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rltuner' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from rltuner.data.audio import render_wav, synthesize
    from rltuner.data.dataset import (
        BuildConfig,
        BuildReport,
        MelodyDataset,
        build_dataset,
        dataset_stats,
        default_dataset_path,
        load_dataset,
        load_default_dataset,
        save_dataset,
    )
    from rltuner.data.midi_import import ExtractSettings, estimate_key, import_midi_folder
    from rltuner.data.midi_io import midi_to_melody, write_midi, write_midi_batch
    from rltuner.data.pianoroll import plot_piano_roll
    from rltuner.domains.base import Domain
    from rltuner.domains.music import music_domain
    from rltuner.encoding import (
        NO_EVENT,
        NOTE_OFF,
        NUM_CLASSES,
        Melody,
        Note,
        classes_to_notes,
        key_set_classes,
        normalize_notes,
        notes_to_classes,
    )
    from rltuner.errors import (
        CheckpointError,
        ConfigError,
        DatasetError,
        InvalidMelodyError,
        MelodyRangeError,
        MidiReadError,
        RLTunerError,
    )
    from rltuner.evaluation.evaluate import EvaluationResult, evaluate_models
    from rltuner.evaluation.pipeline import PipelineConfig, run_pipeline
    from rltuner.evaluation.study import analyze_ratings, make_study
    from rltuner.loading import load_model
    from rltuner.models.checkpoint import load_default_prior, load_prior, save_prior
    from rltuner.models.prior import ModelConfig, Prior, build_prior
    from rltuner.models.sampling import sample
    from rltuner.models.train import PretrainConfig, pretrain
    from rltuner.rewards.music_theory import (
        RULE_NAMES,
        MusicTheoryReward,
        RewardConfig,
        music_theory_rewards,
        register_rule,
        unregister_rule,
    )
    from rltuner.rewards.statistics import PAPER_TABLE1, melody_statistics
    from rltuner.rl.config import TuneConfig
    from rltuner.rl.policy import load_policy
    from rltuner.rl.targets import ALGORITHMS
    from rltuner.rl.tuner import TuneResult, tune
    from rltuner.threads import set_threads
