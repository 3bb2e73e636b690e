"""``rltuner tune``: RL-tune a prior with Q, Psi, G-learning or RL-only (heavy imports inside the command)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import SEED, device_option
from rltuner.errors import ConfigError, RLTunerError

# CLI option -> TuneConfig field, for the explicit hyperparameter options.
_OPTION_FIELDS = {
    "steps": "total_steps", "n_envs": "n_envs", "batch_size": "batch_size", "train_every": "train_every",
    "lr": "learning_rate", "gamma": "gamma", "eta": "target_update_rate", "c": "reward_scale",
    "exploration": "exploration", "epsilon_steps": "epsilon_steps", "eval_every": "eval_every",
    "seed": "seed", "device": "device", "double_q": "double_q",
}  # fmt: skip


@click.command("tune")
@click.option(
    "--algorithm",
    "-a",
    type=click.Choice(["q", "psi", "g", "rl-only"]),
    default=None,
    help="Q-learning with log-prior reward (q), generalized Psi-learning, G-learning or RL-only "
    "[default: q].",
)
@click.option(
    "--prior",
    "prior_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Prior checkpoint to tune [default: the shipped Note RNN].",
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
@click.option("--c", "c", type=float, default=None, help="Reward weight c: r = log p(a|s) + r_MT / c.")
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
@click.option("--eval-every", type=int, default=None, help="Steps between evaluations on sampled melodies.")
@click.option(
    "--primer",
    default="random",
    show_default=True,
    help="First input of each melody: random (a random note), a class 0..37, or a .mid file.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set any TuneConfig field, e.g. --set replay_size=200000 (repeatable).",
)
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
def tune(
    algorithm: str | None,
    prior_path: Path | None,
    preset: str,
    primer: str,
    overrides: tuple[str, ...],
    out_dir: Path | None,
    resume_dir: Path | None,
    quiet: bool,
    **options: Any,
) -> None:
    """RL-tune a prior: the tuned model goes to RUN_DIR/model.safetensors, Figure 2's data to metrics.csv."""
    from rltuner.config import parse_override
    from rltuner.rl.config import PRESETS, TuneConfig

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
    else:
        base = PRESETS[preset]
    cfg: TuneConfig = base.with_overrides(**changes)  # validated: nonsense fails here, before any work
    out_dir = out_dir if out_dir is not None else Path("runs") / f"tune-{cfg.algorithm}"

    from rltuner.rl.music import music_domain
    from rltuner.rl.tuner import tune as run_tune

    domain = music_domain(prior_path, primer=primer)
    result = run_tune(cfg, domain, out_dir, resume=resume_dir is not None)
    last = result.metrics[-1] if result.metrics else {}
    click.echo(
        f"{cfg.algorithm}: {result.env_steps:,} env steps, {result.sample_updates:,} sample-updates in "
        f"{result.wall_s:.1f} s; mean log p(a|s) {last.get('mean_log_p', float('nan')):.3f}, "
        f"mean r_MT {last.get('mean_r_mt', float('nan')):.3f}; model: {out_dir / 'model.safetensors'}"
    )
    if result.interrupted:
        click.echo(f"interrupted: saved; continue with rltuner tune --resume {out_dir}", err=True)
        raise SystemExit(130)


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
