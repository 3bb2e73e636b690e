"""``rltuner tune``: RL-tune a prior with Q, Psi, G, RL-only or on-policy KL control (heavy imports inside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import SEED, device_option, domain_option
from rltuner.errors import ConfigError, RLTunerError
from rltuner.rl.targets import ALGORITHMS

# CLI option -> TuneConfig field, for the explicit hyperparameter options.
_OPTION_FIELDS = {
    "steps": "total_steps", "n_envs": "n_envs", "batch_size": "batch_size", "train_every": "train_every",
    "lr": "learning_rate", "gamma": "gamma", "eta": "target_update_rate", "c": "reward_scale",
    "exploration": "exploration", "epsilon_steps": "epsilon_steps", "eval_every": "eval_every",
    "seed": "seed", "device": "device", "double_q": "double_q", "beta": "kl_coef", "kl_estimator": "kl_estimator",
    "group_size": "group_size", "sigma": "sigma",
}  # fmt: skip


@click.command("tune")
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
@click.option("--steps", type=int, default=None, help="Environment steps to play (total_steps).")
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
    "--epsilon-steps", type=int, default=None, help="Steps over which epsilon falls to its end value."
)
@click.option(
    "--beta", type=float, default=None, help="On-policy: KL weight, return = r_T / c - beta KL(pi || p)."
)
@click.option(
    "--kl-estimator", type=click.Choice(["k1", "k3"]), default=None, help="On-policy: per-token KL estimator."
)
@click.option("--group-size", type=int, default=None, help="rloo: episodes per primer (k).")
@click.option("--sigma", type=float, default=None, help="dap: weight of the score S in [0, 1].")
@click.option("--eval-every", type=int, default=None, help="Steps between evaluations on sampled melodies.")
@click.option(
    "--primer",
    default="random",
    show_default=True,
    help="Music: first input of each melody: random (a random note), a class 0..37, or a .mid file "
    "(molecules always start from <bos>).",
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
    help="Continue the run saved in this folder (options given here override its settings).",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@domain_option()
def tune(
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
    **options: Any,
) -> None:
    """RL-tune a prior: the tuned model goes to RUN_DIR/model.safetensors, Figure 2's data to metrics.csv."""
    from rltuner.config import parse_override
    from rltuner.domains import DOMAINS, get_domain, tune_preset
    from rltuner.rl.config import TuneConfig

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
        base = _saved_config(resume_dir)
        out_dir = resume_dir
        saved_domain = _saved_domain(resume_dir)
        if saved_domain in DOMAINS and saved_domain != domain:
            raise RLTunerError(
                f"{resume_dir} holds a {saved_domain} run: resume it with --domain {saved_domain}"
            )
    else:
        base = tune_preset(domain, preset, **({"algorithm": algorithm} if algorithm else {}))
    cfg: TuneConfig = base.with_overrides(**changes)  # validated: nonsense fails here, before any work
    out_dir = out_dir if out_dir is not None else Path("runs") / f"tune-{cfg.algorithm}"

    from rltuner.rl.tuner import tune as run_tune

    kwargs: dict[str, Any] = {"primer": primer} if domain == "music" else {}
    reward_desc: dict[str, Any] = {}
    if reward_terms or reward_weights:
        if domain != "music":
            raise click.UsageError("--reward and --reward-weight apply to the music domain")
        from rltuner.rewards.preference import register_reward_terms

        kwargs["reward_config"], reward_desc = register_reward_terms(reward_terms, reward_weights)
    task = entry.build(prior_path, **kwargs)
    if reward_desc:  # a record of the reward beside config.json (not read on --resume)
        from rltuner.fileio import ensure_writable_dir, write_json_atomic

        write_json_atomic(ensure_writable_dir(out_dir) / "reward.json", reward_desc)
    result = run_tune(cfg, task, out_dir, resume=resume_dir is not None)
    last = result.metrics[-1] if result.metrics else {}
    nan = float("nan")
    click.echo(
        f"{cfg.algorithm}: {result.env_steps:,} env steps, {result.sample_updates:,} sample-updates in "
        f"{result.wall_s:.1f} s; mean log p(a|s) {last.get('mean_log_p', nan):.3f}, mean task reward "
        f"{last.get('mean_task_reward', nan):.3f} per step, {last.get('mean_return', nan):.3f} per {entry.item}; "
        f"model: {out_dir / 'model.safetensors'}"
    )
    if result.interrupted:
        click.echo(f"interrupted: saved; continue with rltuner tune --resume {out_dir}", err=True)
        raise SystemExit(130)


def _saved_domain(run_dir: Path) -> str:
    try:
        return str(json.loads((run_dir / "config.json").read_text()).get("domain", "music"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return "music"


def _saved_config(run_dir: Path) -> Any:
    from rltuner.config import from_dict
    from rltuner.rl.config import TuneConfig

    path = run_dir / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RLTunerError(f"{run_dir} holds no run to resume (no config.json)") from None
    except (OSError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise RLTunerError(f"cannot read {path}: {exc}") from None
    known = set(TuneConfig.__dataclass_fields__)
    try:
        return from_dict(TuneConfig, {k: v for k, v in data.items() if k in known})
    except ConfigError as exc:
        raise RLTunerError(f"{path} is not a valid tuning config: {exc}") from None
