"""The search space of a sweep: which tuning settings vary and how, read from TOML (docs/sweep.md).

A space maps a setting to a distribution::

    [space]
    algorithm = ["q", "psi", "g"]                 # a list: one of these
    reward_scale = { loguniform = [0.1, 2.0] }    # log-uniform between the bounds
    gamma = { uniform = [0.5, 0.95] }             # uniform between the bounds
    epsilon_steps = { randint = [100000, 500000] }  # an integer in [low, high)
    n_envs = 256                                  # a scalar: fixed
    [space.reward]                                # music-theory rule weights (RuleWeights fields)
    tonic = { uniform = [0.5, 3.0] }

Settings are :class:`~rltuner.rl.config.TuneConfig` fields, except those the sweep itself owns
(:data:`SWEEP_OWNED`); ``reward.<rule>`` are the rule weights of the music-theory reward. A setting that does
not apply to a trial's algorithm (``entropy_coef`` for Q, ``double_q`` for Psi...) is left out of that trial.
Configurations are drawn here, seeded, before the sweep starts, so a sweep is reproducible and every drawn
configuration is checked up front.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rltuner.config import coerce_value
from rltuner.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

KINDS = ("choice", "uniform", "loguniform", "randint")
REWARD_PREFIX = "reward."
#: TuneConfig fields the sweep sets itself (budget, evaluation rounds, seeds, device, logging).
SWEEP_OWNED = frozenset(
    {"total_steps", "eval_every", "eval_episodes", "seed", "device", "tensorboard", "progress"}
)
#: Settings read only by one family of algorithms (rl/tuner.py's ValueLearner and rl/actors.py, rl/onpolicy.py).
VALUE_ONLY = frozenset(
    {"batch_size", "train_every", "learning_starts", "gamma", "target_update_rate", "double_q",
     "replay_size", "terminal_last_step", "offset_by_prior", "exploration", "epsilon_start", "epsilon_end",
     "epsilon_steps"}
)  # fmt: skip
POLICY_ONLY = frozenset(
    {"kl_coef", "kl_estimator", "kl_in_reward", "baseline_momentum", "group_size", "group_norm",
     "entropy_coef", "sigma"}
)  # fmt: skip


@dataclass(frozen=True)
class Dimension:
    """One searched setting.

    Attributes:
        name: a TuneConfig field, or ``reward.<rule>``.
        kind: ``choice``, ``uniform``, ``loguniform``, ``randint`` or ``fixed``.
        values: the choices (``choice``, ``fixed``: one value) or ``(low, high)``.
    """

    name: str
    kind: str
    values: tuple[Any, ...]

    def sample(self, rng: np.random.Generator) -> Any:
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "choice":
            return self.values[int(rng.integers(len(self.values)))]
        low, high = self.values
        if self.kind == "uniform":
            return float(rng.uniform(low, high))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(low), math.log(high))))
        return int(rng.integers(low, high))  # randint: [low, high)

    def describe(self) -> str:
        if self.kind == "fixed":
            return repr(self.values[0])
        if self.kind == "choice":
            return "one of " + ", ".join(map(repr, self.values))
        return f"{self.kind} [{self.values[0]}, {self.values[1]}]"


@dataclass(frozen=True)
class SearchSpace:
    """The searched settings, in file order."""

    dimensions: tuple[Dimension, ...]
    source: str = "built-in"

    def sample(self, n: int, seed: int) -> list[dict[str, Any]]:
        """``n`` configurations (setting -> value), drawn with ``seed``; the same seed gives the same list."""
        rng = np.random.default_rng(seed)
        return [{d.name: d.sample(rng) for d in self.dimensions} for _ in range(n)]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dimensions)


def _field_types() -> tuple[dict[str, Any], dict[str, Any]]:
    from rltuner.rewards.music_theory import RuleWeights
    from rltuner.rl.config import TuneConfig

    return typing.get_type_hints(TuneConfig), typing.get_type_hints(RuleWeights)


def _dimension(name: str, spec: Any, tune_types: dict[str, Any], rule_types: dict[str, Any]) -> Dimension:
    if name.startswith(REWARD_PREFIX):
        rule = name[len(REWARD_PREFIX) :]
        if rule not in rule_types:
            raise ConfigError(f"space: unknown reward rule {rule!r}; rules: {', '.join(rule_types)}")
        tp: Any = float
    elif name in SWEEP_OWNED:
        raise ConfigError(
            f"space: {name} is set by the sweep itself (use --steps, --melodies, --rounds, --seed)"
        )
    elif name in tune_types:
        tp = tune_types[name]
    else:
        known = ", ".join(sorted(set(tune_types) - SWEEP_OWNED))
        raise ConfigError(f"space: unknown setting {name!r}; settings: {known}, reward.<rule>")

    def coerce(value: Any) -> Any:
        return coerce_value(value, tp, f"space: {name}")

    if isinstance(spec, list):
        spec = {"choice": spec}
    if not isinstance(spec, Mapping):
        return Dimension(name, "fixed", (coerce(spec),))
    if len(spec) != 1 or next(iter(spec)) not in KINDS:
        raise ConfigError(
            f"space: {name} must be a value, a list, or one of {{{', '.join(f'{k} = ...' for k in KINDS)}}}"
        )
    kind, values = next(iter(spec.items()))
    if not isinstance(values, list) or not values:
        raise ConfigError(f"space: {name}.{kind} needs a non-empty list")
    if kind == "choice":
        return Dimension(name, kind, tuple(coerce(v) for v in values))
    if tp not in (int, float):
        raise ConfigError(f"space: {name} is not a number: give a list of choices, not {kind}")
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ConfigError(f"space: {name}.{kind} needs two numbers [low, high], got {values!r}")
    low, high = (coerce(v) for v in values)
    if kind == "randint" and tp is not int:
        raise ConfigError(f"space: {name} is not an integer setting: use uniform or loguniform")
    if kind in ("uniform", "loguniform") and tp is int:
        raise ConfigError(f"space: {name} is an integer setting: use randint or a list")
    if not low < high:
        raise ConfigError(f"space: {name}.{kind} needs low < high, got [{low}, {high}]")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"space: {name}.loguniform needs low > 0, got {low}")
    return Dimension(name, kind, (low, high))


def parse_space(data: Mapping[str, Any], source: str = "built-in") -> SearchSpace:
    """A :class:`SearchSpace` from the parsed TOML (a mapping with a ``space`` table).

    Raises:
        ConfigError: no ``space`` table, an unknown setting or rule, a malformed distribution.
    """
    unknown = set(data) - {"space"}
    if unknown:
        raise ConfigError(f"{source}: unknown table(s) {', '.join(sorted(unknown))}; expected [space]")
    table = data.get("space")
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{source}: no [space] table with at least one setting")
    tune_types, rule_types = _field_types()
    flat: dict[str, Any] = {}
    for key, value in table.items():
        if key == "reward":
            if not isinstance(value, Mapping):
                raise ConfigError(f"{source}: space.reward must be a table of rule weights")
            flat.update({REWARD_PREFIX + rule: spec for rule, spec in value.items()})
        else:
            flat[key] = value
    try:
        dims = tuple(_dimension(name, spec, tune_types, rule_types) for name, spec in flat.items())
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return SearchSpace(dims, source)


def load_space(path: str | Path) -> SearchSpace:
    """Read a search-space TOML file.

    Raises:
        ConfigError: the file is missing, unreadable, not TOML, or not a valid space.
    """
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"search space {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read search space {p}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"search space {p} is not valid TOML: {exc}") from None
    return parse_space(data, str(p))


def applies(name: str, algorithm: str) -> bool:
    """Whether a setting is read by ``algorithm`` (reward weights and shared settings always are)."""
    from rltuner.rl.targets import get_algorithm

    algo = get_algorithm(algorithm)
    if name.startswith(REWARD_PREFIX) or name == "algorithm":
        return True
    if name in VALUE_ONLY and algo.family != "value":
        return False
    if name in POLICY_ONLY and algo.family != "policy":
        return False
    if name == "double_q" and not algo.supports_double_q:
        return False
    if name in ("kl_coef", "kl_estimator", "kl_in_reward") and not algo.kl_estimate:
        return False
    if name in ("group_size", "group_norm") and not algo.groups:
        return False
    return not (name == "sigma" and not algo.needs_score)


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
    """A drawn configuration as (TuneConfig overrides that apply to its algorithm, rule weights)."""
    algorithm = str(params.get("algorithm", "q"))
    tune_changes = {
        k: v for k, v in params.items() if not k.startswith(REWARD_PREFIX) and applies(k, algorithm)
    }
    weights = {k[len(REWARD_PREFIX) :]: float(v) for k, v in params.items() if k.startswith(REWARD_PREFIX)}
    return tune_changes, weights


def schedules_budget() -> int:
    """The environment steps a space states its step-count schedules for: the fast preset's budget."""
    from rltuner.rl.config import PRESETS

    return PRESETS["fast"].total_steps


def scaled_schedules(
    tune_changes: Mapping[str, Any], steps: int, budget: int | None = None
) -> dict[str, Any]:
    """The drawn tuning settings with their step-count schedules scaled from ``budget`` (default
    :func:`schedules_budget`, what the space states them for) to ``steps``, as the presets scale theirs
    (:func:`rltuner.rl.config.scaled_to_budget`).
    """
    from rltuner.rl.config import SCHEDULE_FIELDS

    budget = schedules_budget() if budget is None else budget
    out = dict(tune_changes)
    for name in SCHEDULE_FIELDS:
        if name in out and int(out[name]) > 0 and steps != budget:
            out[name] = max(1, round(int(out[name]) * steps / budget))
    return out


def trial_settings(params: Mapping[str, Any], steps: int, rounds: int, seed: int) -> tuple[Any, Any]:
    """The validated (TuneConfig, music-theory RewardConfig) of one drawn configuration.

    Raises:
        ConfigError: the combination is invalid (e.g. a batch size that is not a multiple of 32).
    """
    from rltuner.domains import tune_preset
    from rltuner.encoding import DEFAULT_MELODY_LENGTH
    from rltuner.rewards.music_theory import RewardConfig, RuleWeights

    changes, weights = split_params(params)
    changes = scaled_schedules(changes, steps)
    algorithm = str(changes.pop("algorithm", "q"))
    cfg = tune_preset(
        "music", "fast", algorithm=algorithm, total_steps=steps, eval_every=max(1, steps // rounds),
        eval_episodes=32, seed=seed, progress=False, tensorboard=False, **changes,
    )  # fmt: skip
    cfg.validate_for_episode_length(DEFAULT_MELODY_LENGTH)
    reward = RewardConfig(weights=dataclasses.replace(RuleWeights(), **weights))
    reward.validate()
    return cfg, reward


def draw_trials(space: SearchSpace, n: int, seed: int, steps: int, rounds: int) -> list[dict[str, Any]]:
    """``n`` configurations of ``space`` without the settings their algorithm does not read, each checked by
    building its trial settings.

    Raises:
        ConfigError: a drawn configuration is invalid (names it and why).
    """
    drawn = space.sample(n, seed)
    trials = [{k: v for k, v in p.items() if applies(k, str(p.get("algorithm", "q")))} for p in drawn]
    for i, params in enumerate(trials):
        try:
            trial_settings(params, steps, rounds, seed)
        except ConfigError as exc:
            raise ConfigError(
                f"{space.source}: drawn configuration {i} ({params}) is invalid: {exc}"
            ) from None
    return trials


#: Values Optuna's CategoricalDistribution can hold (what it stores in a study).
_OPTUNA_CHOICE_TYPES = (bool, int, float, str, type(None))


def optuna_distributions(space: SearchSpace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``space`` for a model-based searcher: (setting -> Optuna distribution, setting -> fixed value).

    A list of choices becomes ``CategoricalDistribution``, ``uniform`` a ``FloatDistribution``,
    ``loguniform`` a ``FloatDistribution(log=True)``, ``randint [low, high)`` an
    ``IntDistribution(low, high - 1)`` (Optuna's bounds are inclusive); fixed values are not searched and
    are returned apart. Needs Optuna (the ``sweep`` extra).

    Raises:
        ConfigError: a choice Optuna cannot store (not a bool, number, string or None).
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    searched: dict[str, Any] = {}
    fixed: dict[str, Any] = {}
    for d in space.dimensions:
        if d.kind == "fixed":
            fixed[d.name] = d.values[0]
        elif d.kind == "choice":
            bad = [v for v in d.values if not isinstance(v, _OPTUNA_CHOICE_TYPES)]
            if bad:
                raise ConfigError(f"{space.source}: {d.name}: Optuna cannot search the choice {bad[0]!r}")
            searched[d.name] = CategoricalDistribution(d.values)
        elif d.kind == "randint":
            searched[d.name] = IntDistribution(int(d.values[0]), int(d.values[1]) - 1)
        else:
            low, high = (float(v) for v in d.values)
            searched[d.name] = FloatDistribution(low, high, log=d.kind == "loguniform")
    return searched, fixed


DEFAULT_SPACE_FILE = "default_space.toml"


def default_space_text() -> str:
    """The built-in search space (``rltuner/sweep/default_space.toml``), as TOML text."""
    from importlib.resources import files

    return files("rltuner.sweep").joinpath(DEFAULT_SPACE_FILE).read_text(encoding="utf-8")


def default_space() -> SearchSpace:
    """The built-in search space (docs/sweep.md)."""
    return parse_space(tomllib.loads(default_space_text()), "the built-in space")
