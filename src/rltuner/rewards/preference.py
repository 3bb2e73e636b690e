"""A learned preference reward: a Bradley-Terry model over melodies, fit on listeners' A/B choices.

The model scores one melody as a sum of per-step scores, each a small causal convolution of the classes at
that step and the ``kernel - 1`` before it:

    s(m) = sum_t f(m[t - k + 1 .. t])          P(A preferred to B) = sigmoid(s(A) - s(B))   (Bradley-Terry)

Because the score is a sum over steps, it is also a dense reward: step ``t`` earns ``f(window ending at t)``,
so the return of a whole melody is exactly its score. That matters for tuning with the paper's discount
(gamma = 0.5): a reward paid only at the last step would barely reach the first notes. The per-step scores
are centred (their mean over the training melodies is 0), so the term neither pays nor charges for length.

:func:`fit_preference` trains it, holding out whole pairs to report the pairwise accuracy on pairs it never
saw; :func:`preference_rule` turns a model into a custom reward rule (``register_rule``), which is how
``rltuner tune --reward pref=PATH`` puts it beside (or instead of) the music-theory rules.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from rltuner.config import field
from rltuner.encoding import NUM_CLASSES
from rltuner.errors import CheckpointError, ConfigError, DatasetError

KIND = "preference"
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PreferenceConfig:
    """The preference network and how it is fit."""

    embed: int = field(8, "size of each class's embedding")
    channels: int = field(16, "hidden channels of the causal convolution")
    kernel: int = field(8, "steps each per-step score sees: this one and the kernel - 1 before it")
    epochs: int = field(15, "passes over the training ratings")
    batch_size: int = field(256, "ratings per gradient step")
    learning_rate: float = field(1e-2, "Adam learning rate")
    weight_decay: float = field(1e-2, "AdamW weight decay (the model is small and ratings are noisy)")
    holdout: float = field(0.2, "share of the pairs held out to measure the pairwise accuracy")
    seed: int = field(0, "seed of the split, the initial weights and the batches")

    def validate(self) -> None:
        for name in ("embed", "channels", "kernel", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ConfigError("learning_rate must be positive and weight_decay non-negative")
        if not 0.0 < self.holdout < 1.0:
            raise ConfigError(f"holdout must be between 0 and 1, got {self.holdout}")


class PreferenceNet(nn.Module):
    """s(m): a sum of per-step scores of a causal convolution over the class embeddings."""

    offset: torch.Tensor

    def __init__(self, embed: int = 8, channels: int = 16, kernel: int = 8):
        super().__init__()
        self.kernel = kernel
        self.pad = NUM_CLASSES  # an extra token for "before the melody started"
        self.embed = nn.Embedding(NUM_CLASSES + 1, embed)
        self.conv = nn.Conv1d(embed, channels, kernel)
        self.out = nn.Conv1d(channels, 1, 1)
        self.register_buffer("offset", torch.zeros(()))  # centres the per-step scores

    def step_scores(self, melodies: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 classes -> (B, T) float: the score of each step (the window ending there)."""
        x = F.pad(melodies, (self.kernel - 1, 0), value=self.pad)  # (B, T + k - 1)
        h = torch.relu(self.conv(self.embed(x).transpose(1, 2)))  # (B, C, T)
        return self.out(h).squeeze(1) - self.offset  # (B, T)

    def forward(self, melodies: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 -> (B,) the melody's score s(m)."""
        return self.step_scores(melodies).sum(dim=1)


@dataclass(frozen=True)
class PreferenceFit:
    """A fit model and how well it predicts held-out choices."""

    model: PreferenceNet
    config: PreferenceConfig
    heldout_accuracy: float  # share of held-out ratings whose choice the model predicts
    train_accuracy: float
    heldout_log_loss: float
    n_train: int  # ratings
    n_heldout: int
    n_heldout_pairs: int

    def metrics(self) -> dict[str, float | int]:
        return {
            "heldout_accuracy": self.heldout_accuracy,
            "train_accuracy": self.train_accuracy,
            "heldout_log_loss": self.heldout_log_loss,
            "n_train": self.n_train,
            "n_heldout": self.n_heldout,
            "n_heldout_pairs": self.n_heldout_pairs,
        }


def fit_preference(
    melodies_a: npt.ArrayLike,
    melodies_b: npt.ArrayLike,
    prefer_a: npt.ArrayLike,
    *,
    groups: npt.ArrayLike | None = None,
    strength: npt.ArrayLike | None = None,
    config: PreferenceConfig | None = None,
) -> PreferenceFit:
    """Fit a Bradley-Terry preference model on A/B choices.

    Args:
        melodies_a, melodies_b: (N, T) int classes, the two melodies of each rating.
        prefer_a: (N,) bool, True where A was preferred.
        groups: (N,) the pair each rating belongs to; whole pairs are held out (default: each rating its own).
        strength: (N,) positive weights of the ratings (the Likert strength; default 1).
        config: network and training settings.

    Returns:
        The model (eval mode, centred) and its held-out pairwise accuracy.

    Raises:
        DatasetError: shapes that do not fit, classes outside 0..37, too few pairs to hold some out.
        ConfigError: a bad config.
    """
    cfg = config or PreferenceConfig()
    cfg.validate()
    a, b = np.asarray(melodies_a, dtype=np.int64), np.asarray(melodies_b, dtype=np.int64)
    y = np.asarray(prefer_a, dtype=bool)
    if a.ndim != 2 or a.shape != b.shape or y.shape != (a.shape[0],):
        raise DatasetError(
            f"expected melodies (N, T) on both sides and N choices, got {a.shape}, {b.shape}, {y.shape}"
        )
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= NUM_CLASSES):
        raise DatasetError(f"melody classes must be in 0..{NUM_CLASSES - 1}")
    w = np.ones(len(y)) if strength is None else np.asarray(strength, dtype=np.float64)
    g = np.arange(len(y)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(cfg.seed)
    unique = np.unique(g)
    n_test = round(cfg.holdout * len(unique))
    if n_test < 1 or n_test >= len(unique):
        raise DatasetError(f"{len(unique)} rated pairs are too few to hold {cfg.holdout:.0%} of them out")
    test_groups = rng.choice(unique, size=n_test, replace=False)
    test = np.isin(g, test_groups)
    train = ~test

    torch.manual_seed(cfg.seed)
    model = PreferenceNet(cfg.embed, cfg.channels, cfg.kernel)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    ta, tb = torch.from_numpy(a[train]), torch.from_numpy(b[train])
    ty = torch.from_numpy(y[train].astype(np.float32))
    tw = torch.from_numpy(w[train].astype(np.float32))
    n = len(ty)
    model.train()
    for _ in range(cfg.epochs):
        order = torch.from_numpy(rng.permutation(n))
        for start in range(0, n, cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            logits = model(ta[idx]) - model(tb[idx])  # log-odds that A is preferred
            loss = F.binary_cross_entropy_with_logits(logits, ty[idx], weight=tw[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        seen = torch.from_numpy(np.concatenate([a[train], b[train]]))
        model.offset.fill_(float(model.step_scores(seen).mean()))

    def accuracy(mask: npt.NDArray[np.bool_]) -> tuple[float, float]:
        with torch.no_grad():
            logits = model(torch.from_numpy(a[mask])) - model(torch.from_numpy(b[mask]))
            target = torch.from_numpy(y[mask].astype(np.float32))
            loss = float(F.binary_cross_entropy_with_logits(logits, target))
        return float(((logits > 0).numpy() == y[mask]).mean()), loss

    train_acc, _ = accuracy(train)
    test_acc, test_loss = accuracy(test)
    return PreferenceFit(
        model, cfg, test_acc, train_acc, test_loss, int(train.sum()), int(test.sum()), n_test
    )


def save_preference(path: str | os.PathLike[str], fit: PreferenceFit) -> Path:
    """Write a fit model as a self-describing checkpoint (kind ``"preference"``: config, weights, metrics)."""
    from rltuner.models.checkpoint import save_checkpoint

    meta = {"kind": KIND, "config": asdict(fit.config), "metrics": fit.metrics()}
    return save_checkpoint(path, dict(fit.model.state_dict()), meta)


def load_preference(path: str | os.PathLike[str]) -> tuple[PreferenceNet, dict[str, Any]]:
    """Load a model saved by :func:`save_preference` (eval mode), with its metadata.

    Raises:
        CheckpointError: unreadable, another kind of checkpoint, or weights that do not fit the config.
    """
    from rltuner.config import from_dict
    from rltuner.models.checkpoint import read_checkpoint

    tensors, meta = read_checkpoint(path)
    if meta.get("kind") != KIND:
        raise CheckpointError(f"{path} is a checkpoint of kind {meta.get('kind')!r}, not a preference model")
    try:
        cfg = from_dict(PreferenceConfig, meta.get("config", {}))
        model = PreferenceNet(cfg.embed, cfg.channels, cfg.kernel)
        model.load_state_dict(tensors)
    except (ConfigError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the weights do not fit the recorded config ({exc})") from None
    return model.eval(), meta


def score_melodies(model: PreferenceNet, melodies: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """(N, T) int classes -> (N,) preference scores s(m)."""
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(melodies, dtype=np.int64))).double().numpy()


def preference_rule(
    model: PreferenceNet,
) -> Callable[[IntArray, IntArray, int, int], npt.NDArray[np.float64]]:
    """The model as a custom reward rule: step ``t`` earns the per-step score of the window ending at ``t``.

    Summed over a melody, the rule's values are the melody's score (up to float rounding).
    """
    k = model.kernel

    def rule(history: IntArray, action: IntArray, t: int, length: int) -> npt.NDArray[np.float64]:
        # history (B, t) int64, action (B,) int64 -> (B,): only the last k classes matter
        window = np.concatenate([history[:, max(0, t - (k - 1)) :], action[:, None]], axis=1)  # (B, <= k)
        with torch.no_grad():
            scores = model.step_scores(torch.from_numpy(np.ascontiguousarray(window, dtype=np.int64)))
        return scores[:, -1].double().numpy()

    return rule


def register_preference_reward(
    name: str, path: str | os.PathLike[str], weight: float = 1.0
) -> dict[str, Any]:
    """Load a preference model and register it as the reward rule ``name`` (replacing one of that name).

    Returns:
        The checkpoint's metadata (its held-out accuracy under ``metrics``).

    Raises:
        CheckpointError: as :func:`load_preference`; ConfigError: a bad name or weight.
    """
    from rltuner.rewards.music_theory import register_rule

    if not math.isfinite(weight):
        raise ConfigError(f"the weight of reward {name!r} must be a finite number")
    model, meta = load_preference(path)
    register_rule(name, preference_rule(model), weight=weight, replace=True)
    return meta


MUSIC_TERM = "music"


def register_reward_terms(terms: Sequence[str], weights: Sequence[str] = ()) -> tuple[Any, dict[str, Any]]:
    """Parse ``rltuner tune``'s ``--reward NAME=PATH`` and ``--reward-weight NAME=W`` and register the rules.

    Each ``NAME=PATH`` loads a preference model and registers it as the reward rule ``NAME``, summed with the
    music-theory rules. ``--reward-weight NAME=W`` sets a term's weight (default 1); ``music=W`` scales all
    nine music-theory rules (``music=0``: the preference models alone); ``RULE=W`` for one of the nine rules
    (a :class:`~rltuner.rewards.music_theory.RuleWeights` field, e.g. ``tonic=2``) sets that rule's weight,
    times ``music``'s scale.

    Returns:
        (the music-theory ``RewardConfig`` to tune with, a JSON-able description of the reward terms).

    Raises:
        ConfigError: a malformed spec, an unknown name in a weight, a weight that is not a number.
        CheckpointError: a preference model that cannot be loaded.
    """
    from rltuner.rewards.music_theory import RewardConfig, RuleWeights

    def split(spec: str, option: str, example: str) -> tuple[str, str]:
        name, sep, value = spec.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ConfigError(f"{option} {spec!r}: expected {example}")
        return name.strip(), value.strip()

    rules = tuple(RuleWeights.__dataclass_fields__)
    paths = dict(split(t, "--reward", "NAME=PATH, e.g. pref=pref.safetensors") for t in terms)
    for reserved in (MUSIC_TERM, *rules):
        if reserved in paths:
            raise ConfigError(
                f"--reward: {reserved!r} names the music-theory rules or one of them; give the model another name"
            )
    scale: dict[str, float] = {}
    for spec in weights:
        name, value = split(spec, "--reward-weight", "NAME=W, e.g. pref=2, music=0 or tonic=2")
        if name != MUSIC_TERM and name not in paths and name not in rules:
            known = ", ".join([MUSIC_TERM, *paths, *rules])
            raise ConfigError(f"--reward-weight {spec!r}: no reward term or rule {name!r} (terms: {known})")
        try:
            scale[name] = float(value)
        except ValueError:
            raise ConfigError(f"--reward-weight {spec!r}: {value!r} is not a number") from None
    music = scale.get(MUSIC_TERM, 1.0)
    rule_scale = {r: scale[r] for r in rules if r in scale}
    description: dict[str, Any] = {
        MUSIC_TERM: {"weight": music, **({"rules": rule_scale} if rule_scale else {})}
    }
    for name, path in paths.items():
        meta = register_preference_reward(name, path, scale.get(name, 1.0))
        description[name] = {"weight": scale.get(name, 1.0), "path": path, "metrics": meta.get("metrics", {})}
    rule_weights = RuleWeights(**{r: music * rule_scale.get(r, 1.0) for r in rules})
    return RewardConfig(weights=rule_weights), description
