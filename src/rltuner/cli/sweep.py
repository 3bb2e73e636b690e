"""``rltuner sweep``: search tuning settings on Ray Tune for issue #13's goal rows (docs/sweep.md)."""

from __future__ import annotations

from pathlib import Path

import click

from rltuner.cli.options import SEED, quiet_option
from rltuner.sweep.runner import SEARCHERS
from rltuner.sweep.trial import DEFAULT_MELODIES, DEFAULT_ROUNDS, DEFAULT_STEPS

EXAMPLES = """
Examples:

\b
  rltuner sweep --dry-run                              # print the drawn configurations; needs no Ray
  rltuner sweep --samples 24 --workers 2 --out runs/sweep
  rltuner sweep --searcher nsga2 --samples 48 --out runs/nsga2   # multi-objective search (Optuna)
  rltuner sweep --space my_space.toml --steps 300000 --melodies 2000 --out runs/small
  rltuner sweep --resume --out runs/sweep              # continue after Ctrl-C
  rltuner sweep --address ray://head:10001 --out /shared/sweep   # on a Ray cluster
"""


@click.command("sweep", epilog=EXAMPLES)
@click.option(
    "--space",
    "space_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Search-space TOML file [default: the built-in space; see --show-space].",
)
@click.option(
    "--samples", type=click.IntRange(min=1), default=32, show_default=True, help="Configurations to try."
)
@click.option(
    "--steps", type=click.IntRange(min=1), default=DEFAULT_STEPS, show_default=True,
    help="Environment steps of each trial's tuning run.",
)  # fmt: skip
@click.option(
    "--melodies", type=click.IntRange(min=1), default=DEFAULT_MELODIES, show_default=True,
    help="Melodies sampled and scored at each evaluation round.",
)  # fmt: skip
@click.option(
    "--rounds", type=click.IntRange(min=1), default=DEFAULT_ROUNDS, show_default=True,
    help="Evaluation rounds per trial (early stopping decides at each; the last is the result).",
)  # fmt: skip
@click.option(
    "--seed", type=SEED, default=0, show_default=True, help="Seeds the draw, the tuning and the evaluation."
)
@click.option(
    "--workers", type=click.IntRange(min=1), default=None,
    help="Local mode: trials at a time, one CPU and one torch thread each [default: the machine's cores]. "
    "With nsga2 / tpe, also (on a cluster too) how many configurations are asked for at a time.",
)  # fmt: skip
@click.option(
    "--address", default=None, metavar="ADDRESS",
    help="Run on a Ray cluster (ray://HEAD:10001, or auto) instead of a local Ray.",
)  # fmt: skip
@click.option(
    "--searcher",
    type=click.Choice(SEARCHERS),
    default="random",
    show_default=True,
    help="random: configurations drawn up front (seeded) and run as a grid; nsga2 / tpe: Optuna's "
    "NSGA-II or TPE sampler picks each configuration from the trials so far, on several objectives at "
    "once (Table 1 deficit, log p gap, top opening share; docs/sweep.md).",
)
@click.option("--no-early-stop", is_flag=True, help="Run every trial to the end (no ASHA).")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue the sweep in --out (finished trials are kept); give the --searcher and --seed it started with.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the drawn configurations and exit (checks the space; needs no Ray). With nsga2 / tpe, "
    "which choose as they go, it prints the space as Optuna distributions instead (needs Optuna).",
)
@click.option("--show-space", is_flag=True, help="Print the built-in search space (TOML) and exit.")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("runs/sweep"),
    show_default=True,
    help="Output folder: trials.md/.csv/.json, best.toml/.json, best_command.txt, pareto.png, ray/.",
)
@quiet_option()
def sweep(
    space_path: Path | None,
    samples: int,
    steps: int,
    melodies: int,
    rounds: int,
    seed: int,
    workers: int | None,
    address: str | None,
    searcher: str,
    no_early_stop: bool,
    resume: bool,
    dry_run: bool,
    show_space: bool,
    out_dir: Path,
    quiet: bool,
) -> None:
    """Search tuning settings (algorithm, c, gamma, learning rate, eta, batches, exploration, reward weights)
    for the goal rows of issue #13: each trial tunes at --steps and scores --melodies melodies per round.
    Random search ranks by the goal deficit (0 = every goal met); nsga2 / tpe search on several objectives
    at once. ASHA stops trials whose goal deficit trails at a round; the results mark the Pareto front.
    """
    import json

    from rltuner.sweep.space import default_space, default_space_text, draw_trials, load_space

    if show_space:
        click.echo(default_space_text(), nl=False)
        return
    space = load_space(space_path) if space_path is not None else default_space()
    if dry_run:
        drawn = draw_trials(space, samples, seed, steps, rounds)  # checks the space either way
        if searcher == "random":
            for i, params in enumerate(drawn):
                click.echo(f"t{i:03d} {json.dumps(params)}")
            return
        from rltuner.sweep.runner import require_optuna
        from rltuner.sweep.space import optuna_distributions

        require_optuna(searcher)
        searched, fixed = optuna_distributions(space)
        click.echo(
            f"--searcher {searcher} chooses each configuration from the results of the trials before it, so "
            "the configurations cannot be listed in advance; the space it searches:",
            err=True,
        )
        for name, dist in searched.items():
            click.echo(f"{name} {dist!r}")
        for name, value in fixed.items():
            click.echo(f"{name} fixed {json.dumps(value)}")
        return

    from rltuner.sweep.results import write_results
    from rltuner.sweep.runner import SweepOptions, require_ray, run_sweep
    from rltuner.sweep.trial import TrialSettings

    require_ray()  # before any work: one line saying how to install it
    if searcher != "random":
        from rltuner.sweep.runner import require_optuna

        require_optuna(searcher)
    trial = TrialSettings(steps=steps, rounds=rounds, melodies=melodies, seed=seed)
    options = SweepOptions(
        samples=samples, workers=workers, address=address, early_stop=not no_early_stop, resume=resume,
        searcher=searcher, quiet=quiet,
    )  # fmt: skip
    rows = run_sweep(space, trial, options, out_dir)
    info = {
        "space": space.source, "samples": samples, "steps": steps, "melodies": melodies, "rounds": rounds,
        "seed": seed, "address": address or "local", "early_stop": not no_early_stop, "searcher": searcher,
    }  # fmt: skip
    if searcher != "random":
        from rltuner.sweep.objective import SEARCH_OBJECTIVES

        info["objectives"] = [f"{metric} ({mode})" for metric, mode in SEARCH_OBJECTIVES]
    paths = write_results(out_dir, rows, space.names, info)
    states = [str(r["status"]) for r in rows]
    listing = ", ".join(f"{states.count(state)} {state}" for state in dict.fromkeys(states))
    click.echo(f"{len(rows)} trials ({listing}): {paths['md']}")
    if "command" in paths:
        best = min(rows, key=lambda r: float(r.get("goal_deficit", float("inf"))))
        click.echo(f"best: {best['trial']}, goal deficit {float(best['goal_deficit']):.4g}")
        click.echo(f"  {paths['command'].read_text().strip()}")
    if "unfinished" in states:
        click.echo(f"interrupted: continue with rltuner sweep --resume --out {out_dir}", err=True)
        raise SystemExit(130)
