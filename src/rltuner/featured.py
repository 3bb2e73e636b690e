"""Tuning settings files, and the featured model of ``rltuner run`` (``make demo``): one algorithm and its settings.

A tuning settings file is what ``rltuner tune --config`` reads: a TOML file of ``TuneConfig`` fields with the
music-theory reward under ``[reward.music_theory]`` (its rule weights under ``[reward.music_theory.weights]``),
a tuning run's ``config.json``, or a sweep's ``best.toml`` (``[tune]`` settings and ``[reward]`` rule weights,
:mod:`rltuner.sweep.results`), which is read as the first form. :func:`read_tune_file` reads all three.

The featured model is such a file; the shipped one is ``rltuner/assets/featured.toml`` (where its values came
from is in its header and in docs/sweep.md). The name ``featured`` stands for it wherever a settings file is
taken (``rltuner tune --config featured``, ``rltuner run --featured featured``) unless a file of that name exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from rltuner.errors import ConfigError

FEATURED_NAME = "featured"
"""The featured model's name: its key in tables and files (``RUN/tune/featured``), and the shipped file's."""
FEATURED_FILE = "featured.toml"


def shipped_featured_path() -> Path:
    """The shipped featured model's settings file (``rltuner/assets/featured.toml``)."""
    return Path(str(resources.files("rltuner").joinpath("assets", FEATURED_FILE)))


def resolve_settings_file(path: str | Path) -> Path:
    """A settings file argument as a path: ``featured`` is the shipped featured file unless a file of that name
    exists here."""
    p = Path(path)
    if str(path) == FEATURED_NAME and not p.exists():
        return shipped_featured_path()
    return p


@dataclass(frozen=True)
class TuneFile:
    """What a tuning settings file holds.

    Attributes:
        settings: ``TuneConfig`` fields as the file gives them (not yet checked).
        domain: the domain it names (a run's config.json), or None.
        primer: the primer as ``--primer`` takes it (a run's config.json), or None.
        reward: the music-theory ``RewardConfig`` it gives, or None (the paper's reward).
    """

    settings: dict[str, Any]
    domain: str | None = None
    primer: str | None = None
    reward: Any = None


def _from_sweep_layout(data: dict[str, Any]) -> dict[str, Any]:
    """A sweep's ``best.toml`` (``[tune]`` settings, ``[reward]`` rule weights) in the ``--config`` layout."""
    if not isinstance(data.get("tune"), Mapping):
        return data
    rest = set(data) - {"tune", "reward"}
    if rest:
        raise ConfigError(f"unknown table(s) beside [tune]: {', '.join(sorted(rest))}")
    out = dict(data["tune"])
    weights = data.get("reward", {})
    if not isinstance(weights, Mapping):
        raise ConfigError("[reward] must be a table of rule weights (tonic = 2.5, ...)")
    if weights:
        out["reward"] = {"music_theory": {"weights": dict(weights)}}
    return out


def read_tune_file(path: str | Path) -> TuneFile:
    """Read a tuning settings file (see the module docstring); ``featured`` names the shipped featured file.

    Raises:
        ConfigError: the file cannot be read or parsed, or a key outside ``TuneConfig`` is malformed (the
            message names the file). The ``TuneConfig`` settings themselves are checked by the caller.
    """
    from rltuner.config import from_dict, read_settings
    from rltuner.domains import DOMAINS
    from rltuner.encoding import DEFAULT_MELODY_LENGTH

    p = resolve_settings_file(path)
    try:
        data = _from_sweep_layout(read_settings(p))
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}" if str(p) not in str(exc) else str(exc)) from None
    domain = data.pop("domain", None)
    primer_desc = data.pop("primer", None)
    reward = data.pop("reward", None)
    if domain is not None and domain not in DOMAINS:
        raise ConfigError(f"{p}: domain {domain!r} is not one of {', '.join(DOMAINS)}")
    length = data.pop("melody_length", None)
    if length is not None and length != DEFAULT_MELODY_LENGTH:
        raise ConfigError(
            f"{p}: melody_length {length!r}: tune plays melodies of {DEFAULT_MELODY_LENGTH} steps (the spec's)"
        )
    for key in ("max_length", "vocabulary"):  # the molecule domain's facts a run records, not settings
        data.pop(key, None)
    if primer_desc is not None and not isinstance(primer_desc, str):
        raise ConfigError(f'{p}: primer must be a string such as "random" or "C4", got {primer_desc!r}')
    primer = None
    if isinstance(primer_desc, str) and primer_desc not in ("<bos>",):
        primer = primer_desc if primer_desc == "random" else primer_desc.rpartition(":")[2]
    known_rewards = {"music_theory", "molecules"}
    if reward is not None and (not isinstance(reward, dict) or set(reward) - known_rewards):
        raise ConfigError(
            f"{p}: reward must be a table of {' / '.join(sorted(known_rewards))} settings "
            f'(e.g. [reward.music_theory] key = "G"), got {reward!r}'
        )
    reward_config = None
    if isinstance(reward, dict) and isinstance(reward.get("music_theory"), dict):
        from rltuner.rewards.music_theory import RewardConfig

        try:
            reward_config = from_dict(RewardConfig, reward["music_theory"], prefix="reward.music_theory.")
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None
    return TuneFile(data, None if domain is None else str(domain), primer, reward_config)


# Settings of a file that the run sets itself (per seed, per machine, per display): not the featured model's.
_RUN_OWNED = ("seed", "device", "threads", "tensorboard", "progress")


@dataclass(frozen=True)
class FeaturedModel:
    """The featured model: tuning settings and a music-theory reward, read from a settings file.

    Attributes:
        source: the file it was read from (the shipped one is named ``rltuner/assets/featured.toml``).
        settings: the ``TuneConfig`` settings the file gives (checked; the fast preset's for the others), without
            those the run sets (seed, device, threads, tensorboard, progress).
        reward: the music-theory ``RewardConfig`` (the paper's reward with the file's rule weights).
    """

    source: str
    settings: dict[str, Any]
    reward: Any

    @property
    def algorithm(self) -> str:
        return str(self.settings.get("algorithm", "q"))

    def tune_config(self, steps: int | None = None, **overrides: Any) -> Any:
        """The ``TuneConfig`` of one tuning run of this model.

        Args:
            steps: environment steps to play (None: the file's ``total_steps``, else the fast preset's). The
                step-count schedules (``epsilon_steps``...) scale from the file's budget to it, as the presets'
                do (:func:`rltuner.rl.config.scaled_to_budget`).
            overrides: the run's own settings (seed, device, threads, progress, ...).
        """
        from rltuner.domains import tune_preset
        from rltuner.rl.config import scaled_to_budget

        cfg = tune_preset("music", "fast", **self.settings)  # the file's run, at its own budget
        if steps is not None and steps != cfg.total_steps:
            cfg = scaled_to_budget(dataclasses.replace(cfg, total_steps=steps), cfg.total_steps)
        return cfg.with_overrides(**overrides) if overrides else cfg

    def weights(self) -> dict[str, float]:
        """The rule weights that differ from the paper's (1)."""
        from rltuner.config import to_dict

        return {k: float(v) for k, v in to_dict(self.reward.weights).items() if v != 1.0}

    def describe(self, tuned: Any = None) -> list[tuple[str, str]]:
        """(setting, value) rows for the report: source, algorithm, each setting, each changed rule weight.

        Args:
            tuned: the ``TuneConfig`` the run tuned it with (:meth:`tune_config`), or None. A setting the run
                changed (the budget of ``--steps`` / ``--quick`` and the schedules scaled to it) shows the value
                that was used, with the file's beside it.
        """
        rows = [("source", self.source), ("algorithm", self.algorithm)]
        for k, v in self.settings.items():
            if k == "algorithm":
                continue
            used = getattr(tuned, k, v) if tuned is not None else v
            rows.append((k, str(v) if used == v else f"{used} (the file: {v}; scaled to this run's budget)"))
        rows += [(f"rule weight {k}", f"{v:g}") for k, v in self.weights().items()]
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (``run.json``)."""
        from rltuner.config import to_dict

        return {"source": self.source, "settings": dict(self.settings), "reward": to_dict(self.reward)}


def read_featured(path: str | Path = FEATURED_NAME) -> FeaturedModel:
    """Read a featured model's settings file (default: the shipped one); checked before any work starts.

    Raises:
        ConfigError: not a music tuning settings file, random primers not used, or a bad setting (the message
            names the file and the setting).
    """
    from rltuner.config import with_settings
    from rltuner.domains import tune_preset
    from rltuner.rewards.music_theory import RewardConfig

    p = resolve_settings_file(path)
    tf = read_tune_file(p)
    if tf.domain not in (None, "music"):
        raise ConfigError(f"{p}: the featured model is a music model, the file holds {tf.domain} settings")
    if tf.primer not in (None, "random"):
        raise ConfigError(f"{p}: the featured model is primed with random notes, as every model of the run; "
                          f"the file gives primer {tf.primer!r}")  # fmt: skip
    settings = {k: v for k, v in tf.settings.items() if k not in _RUN_OWNED}
    try:
        checked = with_settings(tune_preset("music", "fast"), settings)
        tune_preset("music", "fast", **settings)  # the combination, with the algorithm's family defaults
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    typed = {k: getattr(checked, k) for k in settings}
    source = "rltuner/assets/featured.toml (shipped)" if p == shipped_featured_path() else str(p)
    return FeaturedModel(source, typed, tf.reward if tf.reward is not None else RewardConfig())
