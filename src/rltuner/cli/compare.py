"""``rltuner compare``: every KL-controlled algorithm at the same budget; Pareto figure, table and verdict."""

from __future__ import annotations

import dataclasses
import shlex
import sys
from pathlib import Path
from typing import Any

import click

from rltuner.cli.options import config_option, domain_option, given, quiet_option, threads_option
from rltuner.errors import ConfigError
from rltuner.evaluation.compare import swept_algorithms

_SWEPT = list(swept_algorithms())

EXAMPLES = """
Examples:

\b
  rltuner compare --quick --out out/compare-quick     # minutes: 200,000 steps, 2 settings, 3 seeds
  rltuner compare -a q -a rloo --c 0.5,1 --seeds 2 --out out/q-rloo
  rltuner compare --config compare.toml --out out/mine  # settings from a TOML file (budget = 500000 ...)
  rltuner compare --domain molecules --quick
"""


@click.command("compare", epilog=EXAMPLES)
@domain_option()
@click.option(
    "--quick", is_flag=True, help="200,000 env steps, two settings per algorithm, 3 seeds (minutes)."
)
@click.option(
    "--algorithm", "-a", "algorithms", multiple=True, type=click.Choice(_SWEPT),
    help=f"Algorithms to compare (repeatable) [default: {', '.join(_SWEPT)}].",
)  # fmt: skip
@click.option(
    "--budget", type=int, default=None, help="Env steps per run [default: 1,000,000; quick 200,000]."
)
@click.option("--seeds", type=int, default=None, help="Seeds per setting [default: 3].")
@click.option(
    "--c",
    "c_values",
    type=str,
    default=None,
    help="Comma-separated values of c to sweep [default: 0.2,0.5,1.25; quick 0.25,1].",
)
@click.option(
    "--sigma",
    "sigma_values",
    type=str,
    default=None,
    help="Comma-separated sigmas of dap [default: 30,60,120; quick 30,120].",
)
@click.option(
    "--prior", "prior_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Prior checkpoint [default: the domain's shipped prior].",
)  # fmt: skip
@click.option(
    "--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Results folder (rerun to resume: finished points are kept) [default: out/compare-DOMAIN].",
)  # fmt: skip
@quiet_option()
@threads_option(pass_value=True)
@config_option("CompareConfig")
@click.pass_context
def compare(
    ctx: click.Context,
    domain: str,
    quick: bool,
    algorithms: tuple[str, ...],
    budget: int | None,
    seeds: int | None,
    c_values: str | None,
    sigma_values: str | None,
    prior_path: Path | None,
    out_dir: Path | None,
    quiet: bool,
    threads: int,
    config_file: Path | None,
) -> None:
    """Tune every algorithm at the same budget of env steps and several KL weights; write OUT/comparison.md
    (table and verdict), OUT/pareto.png, comparison.csv/json and one JSON per finished run under OUT/points/."""
    from rltuner.domains import get_domain
    from rltuner.evaluation.compare import QUICK, CompareConfig, run_comparison, write_report
    from rltuner.provenance import machine_description

    base = QUICK if quick else CompareConfig()
    if config_file is not None:
        from rltuner.config import read_settings, with_settings

        try:
            base = with_settings(base, read_settings(config_file))
        except ConfigError as exc:
            raise ConfigError(f"{config_file}: {exc}") from None
        if not given(ctx, "domain"):
            domain = base.domain
    settings = dict(base.settings)
    if c_values is not None:
        settings["reward_scale"] = _floats(c_values, "--c")
    if sigma_values is not None:
        settings["sigma"] = _floats(sigma_values, "--sigma")
    changes: dict[str, Any] = {"domain": domain, "settings": settings}
    if config_file is None or given(ctx, "threads"):
        changes["threads"] = threads
    changes.update({k: v for k, v in {"budget": budget, "seeds": seeds}.items() if v is not None})
    if algorithms:
        changes["algorithms"] = tuple(algorithms)
    cfg = dataclasses.replace(base, **changes)  # type: ignore[arg-type]
    cfg.validate()
    out = out_dir if out_dir is not None else Path("out") / f"compare-{domain}"
    task = get_domain(domain).build(prior_path)
    result = run_comparison(cfg, task, out, progress=not quiet)
    command = (
        "rltuner " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "rltuner compare"
    )
    paths = write_report(result, out, command, machine_description())
    click.echo(f"{len(result.runs)} runs ({result.ran} new); wrote {paths['markdown']} and {paths['figure']}")
    if result.interrupted:
        click.echo("interrupted: finished runs are kept; rerun the same command to continue", err=True)
        raise SystemExit(130)


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not a comma-separated list of numbers", param_hint=option
        ) from None
    if not values or any(not v > 0 for v in values):
        raise click.BadParameter("give one or more positive numbers", param_hint=option)
    return values
