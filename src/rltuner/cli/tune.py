"""``rltuner tune``: RL-tune a prior with Q, Psi, G, RL-only or on-policy KL control (heavy imports inside)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from rltuner.cli.options import (
    SEED,
    config_option,
    device_option,
    domain_option,
    given,
    quiet_option,
    rules_option,
    threads_option,
)
from rltuner.errors import ConfigError, RLTunerError
from rltuner.rl.targets import ALGORITHMS

log = logging.getLogger(__name__)
if TYPE_CHECKING:
    from rltuner.rl.tuner import TuneResult

# CLI option -> TuneConfig field, for the explicit hyperparameter options.
_OPTION_FIELDS = {
    "steps": "total_steps", "n_envs": "n_envs", "batch_size": "batch_size", "train_every": "train_every",
    "lr": "learning_rate", "gamma": "gamma", "eta": "target_update_rate", "c": "reward_scale",
    "exploration": "exploration", "epsilon_steps": "epsilon_steps", "eval_every": "eval_every",
    "seed": "seed", "device": "device", "double_q": "double_q", "beta": "kl_coef", "kl_estimator": "kl_estimator",
    "group_size": "group_size", "sigma": "sigma", "threads": "threads",
}  # fmt: skip


EXAMPLES = """
Examples:

\b
  rltuner tune -a q --out runs/q                     # the fast preset (~1 min on 2 cores)
  rltuner tune -a g --preset paper --out runs/g-paper
  rltuner tune -a psi --steps 200000 --set replay_size=100000 --out runs/psi
  rltuner tune --config runs/q/config.json --seed 1 --out runs/q-seed1   # that run again, another seed
  rltuner tune --config tune.toml --out runs/mine    # settings from a TOML file (name = value)
  rltuner tune --config featured --out runs/featured # the featured model of rltuner run (make demo)
  rltuner tune --config runs/sweep/best.toml --out runs/best   # a sweep's best configuration
  rltuner tune --rule my_rules.py:strong_beats --out runs/beats   # with your own rule
  rltuner tune --resume runs/q --steps 2000000       # continue a run, longer
  rltuner tune --domain molecules -a g --out runs/mol-g
"""


@click.command("tune", epilog=EXAMPLES)
@click.option(
    "--algorithm",
    "-a",
    type=click.Choice(list(ALGORITHMS)),
    default=None,
    help="; ".join(f"{a.name}: {a.title}" for a in ALGORITHMS.values()) + " [default: q].",
)
@click.option(
    "--prior",
    "prior_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Prior checkpoint to tune [default: the domain's shipped prior: the Note RNN, or the SMILES LSTM].",
)
@click.option(
    "--preset",
    type=click.Choice(["fast", "paper"]),
    default="fast",
    show_default=True,
    help="fast: many environments, big batches; paper: the paper's schedule (1 env, batch 32).",
)
@click.option(
    "--steps", type=int, default=None,
    help="Environment steps to play (total_steps); played in whole rounds of n_envs episodes (the fast "
    "preset: 8,192 steps), so a budget is rounded up to the next round.",
)  # fmt: skip
@click.option("--n-envs", type=int, default=None, help="Episodes composed in lockstep.")
@click.option("--batch-size", type=int, default=None, help="Transitions per gradient step (whole episodes).")
@click.option("--train-every", type=int, default=None, help="Environment steps per gradient step.")
@click.option("--lr", type=float, default=None, help="Adam learning rate.")
@click.option("--gamma", type=float, default=None, help="Discount factor in [0, 1).")
@click.option("--eta", type=float, default=None, help="Soft target update rate.")
@click.option("--c", "c", type=float, default=None, help="Reward weight c: r = log p(a|s) + r_T / c.")
@click.option("--double-q/--no-double-q", default=None, help="Double Q-learning (q and rl-only).")
@click.option(
    "--exploration",
    type=click.Choice(["epsilon", "boltzmann"]),
    default=None,
    help="Epsilon-greedy with linear annealing, or sampling from the policy.",
)
@click.option(
    "--epsilon-steps",
    type=int,
    default=None,
    help="Steps over which epsilon falls to its end value [default: the preset's, scaled to --steps].",
)
@click.option(
    "--beta", type=float, default=None, help="On-policy: KL weight, return = r_T / c - beta KL(pi || p)."
)
@click.option(
    "--kl-estimator", type=click.Choice(["k1", "k3"]), default=None, help="On-policy: per-token KL estimator."
)
@click.option("--group-size", type=int, default=None, help="rloo: episodes per primer (k).")
@click.option("--sigma", type=float, default=None, help="dap: weight of the score S in [0, 1].")
@click.option(
    "--eval-every",
    type=int,
    default=None,
    help="Steps between evaluations on sampled melodies [default: the preset's, scaled to --steps].",
)
@click.option(
    "--primer",
    default="random",
    show_default=True,
    help="Music: first input of each melody: random (a random note), a note name (e.g. C4), a class 0..37, or a "
    ".mid file (its last note); the same forms as generate's --primer (molecules always start from <bos>).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set any TuneConfig field, e.g. --set replay_size=200000 (repeatable).",
)
@click.option(
    "--reward", "reward_terms", multiple=True, metavar="NAME=PATH",
    help="Add a preference model from 'rltuner study reward' as reward term NAME, beside the music-theory "
    "rules (repeatable), e.g. --reward pref=pref.safetensors.",
)  # fmt: skip
@click.option(
    "--reward-weight", "reward_weights", multiple=True, metavar="NAME=W",
    help="Weight of a --reward term, music=W for all nine music-theory rules (music=0: the preference alone), "
    "or RULE=W for one of them (key, tonic, repetition, autocorrelation, motif, repeated_motif, intervals, "
    "leaps, extremes), e.g. --reward-weight tonic=2.",
)  # fmt: skip
@click.option("--seed", type=SEED, default=None, help="Random seed.")
@device_option(default=None, help="Torch device [default: the preset's, cpu].")
@threads_option(pass_value=True)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder for config, metrics, TensorBoard and the model [default: runs/tune-ALGORITHM].",
)
@click.option(
    "--resume",
    "resume_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Continue the run saved in this folder (options given here override its settings; not --preset, "
    "and stored_states cannot change).",
)
@quiet_option()
@config_option(
    "TuneConfig",
    "a tuning run's config.json, a sweep's best.toml, or 'featured' (rltuner run's featured model)",
)
@rules_option()
@domain_option()
@click.pass_context
def tune(
    ctx: click.Context,
    domain: str,
    algorithm: str | None,
    prior_path: Path | None,
    preset: str,
    primer: str,
    overrides: tuple[str, ...],
    out_dir: Path | None,
    resume_dir: Path | None,
    quiet: bool,
    reward_terms: tuple[str, ...],
    reward_weights: tuple[str, ...],
    config_file: Path | None,
    rules: tuple[str, ...],
    **options: Any,
) -> None:
    """RL-tune a prior: the tuned model goes to RUN_DIR/model.safetensors, Figure 2's data to metrics.csv.

    Schedules counted in steps (epsilon_steps, learning_starts, eval_every) follow --steps: the preset's values
    are scaled by steps / 1,000,000 unless set here. RUN_DIR/summary.json compares the final policy with the
    prior on the task reward; a run that ended worse than the prior prints a warning.
    """
    from rltuner.config import parse_override
    from rltuner.domains import DOMAINS, get_domain, tune_preset
    from rltuner.rl.config import TuneConfig

    from_file: dict[str, Any] = {}
    reward_config: Any = None
    if config_file is not None:
        from_file, file_domain, file_primer, reward_config = _file_settings(config_file)
        if file_domain is not None and file_domain != domain:
            if given(ctx, "domain"):
                raise ConfigError(f"{config_file} holds {file_domain} settings, but --domain is {domain}")
            domain = file_domain
        if file_primer is not None and not given(ctx, "primer"):
            primer = file_primer
        if algorithm is None and "algorithm" in from_file:
            algorithm = str(from_file["algorithm"])
    entry = get_domain(domain)
    entry.check_installed()
    changes: dict[str, Any] = {_OPTION_FIELDS[k]: v for k, v in options.items() if v is not None}
    if algorithm is not None:
        changes["algorithm"] = algorithm
    if quiet:
        changes["progress"] = False
    changes.update(dict(parse_override(text) for text in overrides))
    if resume_dir is not None:
        if out_dir is not None and out_dir != resume_dir:
            raise click.UsageError("give either --out or --resume, not both")
        if given(ctx, "preset"):  # a preset is a whole schedule: the run keeps the one it started with
            raise click.UsageError(
                "--preset does not apply with --resume (the run keeps its saved settings); change single "
                "settings with their options or --set"
            )
        base = _saved_config(resume_dir)
        out_dir = resume_dir
        saved_domain = _saved_domain(resume_dir)
        if saved_domain in DOMAINS and saved_domain != domain:
            raise RLTunerError(
                f"{resume_dir} holds a {saved_domain} run: resume it with --domain {saved_domain}"
            )
        cfg: TuneConfig = base.with_overrides(**changes)  # the saved schedules stay as they were
    else:
        file_changes: dict[str, Any] = {}
        if from_file:
            from rltuner.config import with_settings

            try:  # the file's values, checked and typed; they count as given (a run's config.json: all of them)
                checked = with_settings(tune_preset(domain, preset), from_file)
            except ConfigError as exc:
                raise ConfigError(f"{config_file}: {exc}") from None
            file_changes = {k: getattr(checked, k) for k in from_file if hasattr(checked, k)}
            file_changes = _rescaled_schedules(file_changes, changes)
        # validated: nonsense fails here, before any work; schedules not set follow total_steps
        cfg = tune_preset(domain, preset, **{**file_changes, **changes})
    out_dir = out_dir if out_dir is not None else Path("runs") / f"tune-{cfg.algorithm}"
    log.debug("tune settings: %s", cfg)

    from rltuner.rl.tuner import tune as run_tune

    kwargs: dict[str, Any] = {}
    if domain == "music":
        from rltuner.domains.music import parse_primer

        try:  # the forms generate takes too; checked before the prior is loaded
            kwargs["primer"] = parse_primer(primer)
        except ConfigError as exc:
            raise ConfigError(f"--primer: {exc}") from None
    reward_desc: dict[str, Any] = {}
    if cfg.reward_primer and domain != "music":  # checked again by tune(); here before the prior loads
        raise ConfigError(f"reward_primer applies to the music domain, not to {domain}")
    if (reward_terms or reward_weights or rules) and domain != "music":
        raise click.UsageError("--reward, --reward-weight and --rule apply to the music domain")
    if domain == "music" and reward_config is not None:
        kwargs["reward_config"] = reward_config
    if rules:
        from rltuner.rewards.user_rules import register_rule_specs

        reward_desc["rules"] = register_rule_specs(rules)
    if reward_terms or reward_weights:
        from rltuner.rewards.preference import register_reward_terms

        kwargs["reward_config"], terms_desc = register_reward_terms(reward_terms, reward_weights)
        reward_desc.update(terms_desc)
    if resume_dir is not None:
        _check_same_reward(resume_dir, reward_desc)
    task = entry.build(prior_path, **kwargs)
    if reward_desc:  # a record of the reward beside config.json (checked on --resume)
        from rltuner.fileio import ensure_writable_dir, write_json_atomic
        from rltuner.rl.tuner import REWARD_FILE

        write_json_atomic(ensure_writable_dir(out_dir) / REWARD_FILE, reward_desc)
    result = run_tune(cfg, task, out_dir, resume=resume_dir is not None)
    click.echo(summary_line(result, entry.item, out_dir / "model.safetensors"))
    if result.interrupted:
        click.echo(f"interrupted: saved; continue with rltuner tune --resume {out_dir}", err=True)
        raise SystemExit(130)


def _file_settings(path: Path) -> tuple[dict[str, Any], str | None, str | None, Any]:
    """TuneConfig settings of a ``--config`` file, and what a run's config.json adds beside them
    (:func:`rltuner.featured.read_tune_file`: TOML, a run's config.json, a sweep's best.toml, or ``featured``).

    Returns:
        (TuneConfig settings, the domain it names or None, the primer as ``--primer`` takes it or None,
        the music-theory ``RewardConfig`` it records or None).
    """
    from rltuner.featured import read_tune_file

    tf = read_tune_file(path)
    return tf.settings, tf.domain, tf.primer, tf.reward


def _rescaled_schedules(file_changes: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A file's step-count schedules, scaled when the command line gives another ``total_steps`` than the file:
    they were made for the file's budget (a run's config.json records them already scaled to its own)."""
    from rltuner.rl.config import SCHEDULE_FIELDS

    old, new = file_changes.get("total_steps"), changes.get("total_steps")
    if not old or new is None or new == old:
        return file_changes
    out = dict(file_changes)
    for name in SCHEDULE_FIELDS:
        if name in out and name not in changes and int(out[name]) > 0:
            out[name] = max(1, round(int(out[name]) * int(new) / int(old)))
    return out


def _check_same_reward(run_dir: Path, reward_desc: dict[str, Any]) -> None:
    """Refuse to resume a run with other reward terms or rules than it was tuned with (its ``reward.json``).

    The terms are not stored in the run (a rule is the user's code): they must be given again, and the same.
    """
    from rltuner.rl.tuner import REWARD_FILE

    path = run_dir / REWARD_FILE
    try:
        saved = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        saved = {}

    def names(desc: dict[str, Any]) -> list[str]:
        rules = [f"--rule {r.get('name')}" for r in desc.get("rules", []) if isinstance(r, dict)]
        terms = [f"--reward {t}" for t in desc if t not in ("rules", "music")]  # preference-model terms
        return sorted(rules + terms)

    before, now = names(saved), names(reward_desc)
    if before != now:
        raise ConfigError(
            f"{run_dir} was tuned with {', '.join(before) or 'no extra reward terms'}; give the same again to "
            f"resume it (given: {', '.join(now) or 'none'})"
        )


def summary_line(result: TuneResult, item: str, model_path: Path) -> str:
    """What ``tune`` prints at the end: the work done and the numbers of the last evaluation, with its step.

    After Ctrl-C the last evaluation is older than the saved model (evaluations run every ``eval_every``
    steps): the line says at which step it was made, and when none was made after step 0 it says so instead
    of showing the prior-initialised network's numbers as the result.
    """
    head = (
        f"{result.algorithm}: {result.env_steps:,} env steps, {result.sample_updates:,} sample-updates in "
        f"{result.wall_s:.1f} s"
    )
    last = result.metrics[-1] if result.metrics else None
    if last is None or (int(last["env_step"]) == 0 and result.env_steps > 0):
        numbers = "no evaluation was made after step 0 (the next was due later)"
    else:
        step = int(last["env_step"])
        when = "" if step == result.env_steps else f"last evaluation, at env step {step:,}: "
        numbers = (
            f"{when}mean log p(a|s) {last['mean_log_p']:.3f}, mean task reward {last['mean_task_reward']:.3f} "
            f"per step, {last['mean_return']:.3f} per {item}"
        )
        if result.prior_metrics is not None:
            numbers += f" (the prior: {result.prior_metrics['mean_task_reward']:.3f}" + (
                ", worse: see the warning above)" if result.worse_than_prior else ")"
            )
    return f"{head}; {numbers}; model: {model_path}"


def _saved_domain(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "config.json").read_text()).get("domain", "music"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return "music"


def _saved_config(run_dir: Path) -> Any:
    from rltuner.config import from_dict
    from rltuner.rl.config import VALUES_BEFORE_RECORDED, TuneConfig

    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RLTunerError(f"{run_dir} holds no run to resume (no config.json)") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RLTunerError(f"cannot read {path}: {exc}") from None
    known = set(TuneConfig.__dataclass_fields__)
    if isinstance(data, dict):  # a run recorded before a setting existed used its old value
        data = {**VALUES_BEFORE_RECORDED, **data}
    try:
        return from_dict(TuneConfig, {k: v for k, v in data.items() if k in known})
    except ConfigError as exc:
        raise RLTunerError(f"{path} is not a valid tuning config: {exc}") from None
