"""Off-policy against on-policy KL control on equal terms: every algorithm at the same budget of env steps.

A comparison tunes each algorithm of the table that has a KL weight (:attr:`Algorithm.kl_weight`: ``c`` for
Q, Psi, G, REINFORCE-KL and RLOO, ``sigma`` for DAP) at several settings of that weight and several seeds, all
for the same number of environment steps, and records at every evaluation the mean task reward per step and
the exact ``KL(pi || p)`` per step of freshly sampled episodes. From the points it draws the Pareto figure
(task reward against KL, mean +- standard deviation over seeds), writes the table, and states in words which
family gives the most task reward per nat of KL at each budget (computed from the numbers).

Resumable: each finished (algorithm, setting, seed) point is one JSON file under ``OUT/points/``, holding its
inputs (the full tuning config, the domain, a hash of the prior's weights); a rerun skips the points whose
inputs are unchanged and runs the rest.
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rltuner.config import result_inputs, to_dict
from rltuner.errors import ConfigError
from rltuner.fileio import ensure_writable_dir, write_json_atomic, write_text_atomic
from rltuner.threads import DEFAULT_THREADS, check_threads, using_threads

POINT_VERSION = 1


def swept_algorithms() -> tuple[str, ...]:
    """Every row of the algorithm table that has a KL weight (all but RL-only today), in table order."""
    from rltuner.rl.targets import ALGORITHMS

    return tuple(name for name, a in ALGORITHMS.items() if a.kl_weight is not None)


@dataclass(frozen=True)
class CompareConfig:
    """The grid of a comparison.

    Attributes:
        domain: a name of the domain table.
        algorithms: names of the algorithm table (each must have a KL weight; default: all that have one).
        budget: environment steps per run (the paper's 1,000,000).
        seeds: runs per (algorithm, setting), seeds 0 .. seeds-1.
        settings: KL-weight field -> the values swept (``reward_scale`` is c, ``sigma`` DAP's sigma).
        eval_every: environment steps between evaluations: the budgets the verdict is given at.
        eval_episodes: episodes sampled per evaluation.
        preset: the tuning preset each run starts from (with the domain's and the family's defaults).
        threads: CPU threads for torch in each run (0 = torch's default); not part of a point's inputs.
    """

    domain: str = "music"
    algorithms: tuple[str, ...] = field(default_factory=lambda: swept_algorithms())
    budget: int = 1_000_000
    seeds: int = 3
    settings: dict[str, tuple[float, ...]] = field(
        default_factory=lambda: {"reward_scale": (0.2, 0.5, 1.25), "sigma": (30.0, 60.0, 120.0)}
    )
    eval_every: int = 250_000
    eval_episodes: int = 256
    preset: str = "fast"
    threads: int = DEFAULT_THREADS

    def validate(self) -> None:
        """Raise :class:`ConfigError` for an unknown algorithm, one without a KL weight, or an empty grid."""
        from rltuner.domains import get_domain
        from rltuner.rl.targets import get_algorithm

        get_domain(self.domain)
        if not self.algorithms:
            raise ConfigError("a comparison needs at least one algorithm")
        for name in self.algorithms:
            weight = get_algorithm(name).kl_weight
            if weight is None:
                raise ConfigError(
                    f"{name} has no KL weight to sweep: it cannot be placed on the Pareto figure"
                )
            if not self.settings.get(weight):
                raise ConfigError(f"no settings of {weight} given for {name}")
        check_threads(self.threads)
        if self.seeds < 1 or self.budget < 1 or self.eval_episodes < 1 or self.eval_every < 0:
            raise ConfigError("seeds, budget and eval_episodes must be at least 1, eval_every not negative")


QUICK = CompareConfig(
    budget=200_000, seeds=3, settings={"reward_scale": (0.25, 1.0), "sigma": (30.0, 120.0)},
    eval_every=100_000, eval_episodes=128,
)  # fmt: skip
"""The ``--quick`` grid: 200,000 env steps, two settings per algorithm, three seeds (minutes on 2 cores)."""


@dataclass(frozen=True)
class Point:
    """One run of the grid."""

    algorithm: str
    weight: str  # the TuneConfig field swept
    value: float
    seed: int

    @property
    def key(self) -> str:
        return f"{self.algorithm}__{self.weight}={self.value:g}__seed{self.seed}"


@dataclass
class Comparison:
    """What :func:`run_comparison` returns: the prior's reference evaluation and every point's metrics."""

    config: CompareConfig
    prior: dict[str, float]
    runs: dict[Point, dict[str, Any]]  # point -> {"metrics": [...], "wall_s": ..., "env_steps": ...}
    ran: int = 0  # points run in this call (the rest were finished before)
    interrupted: bool = False


def grid(cfg: CompareConfig) -> list[Point]:
    """Every point of the grid, algorithm by algorithm."""
    from rltuner.rl.targets import get_algorithm

    out: list[Point] = []
    for name in cfg.algorithms:
        weight = get_algorithm(name).kl_weight
        assert weight is not None
        for value in cfg.settings[weight]:
            out.extend(Point(name, weight, float(value), seed) for seed in range(cfg.seeds))
    return out


def point_config(cfg: CompareConfig, point: Point) -> Any:
    """The tuning config of one point: the preset, the budget, the seed and the KL weight."""
    from rltuner.domains import tune_preset

    return tune_preset(
        cfg.domain, cfg.preset, algorithm=point.algorithm, total_steps=cfg.budget, seed=point.seed,
        eval_every=cfg.eval_every, eval_episodes=cfg.eval_episodes, progress=False, tensorboard=False,
        threads=cfg.threads, **{point.weight: point.value},
    )  # fmt: skip


def prior_hash(prior: Any) -> str:
    """A short hash of a prior's architecture and weights: a point is rerun when the prior changed."""
    h = hashlib.sha256(json.dumps(prior.model_config(), sort_keys=True).encode())
    for name, tensor in sorted(prior.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_comparison(
    cfg: CompareConfig,
    domain: Any,
    out_dir: str | Path,
    progress: bool = True,
    on_point: Callable[[Point, dict[str, Any]], None] | None = None,
) -> Comparison:
    """Run (or finish) every point of the grid and write the point files.

    Args:
        cfg: the grid.
        domain: the built :class:`~rltuner.domains.base.Domain` (its prior is the reference).
        out_dir: the results folder; ``points/`` holds one JSON per finished point.
        progress: a progress bar over the points on stderr.
        on_point: called after each point (run or loaded).

    Returns:
        The :class:`Comparison`; ``interrupted`` when Ctrl-C stopped it (finished points are kept).
    """
    from rltuner.rl.tuner import evaluate_policy, tune

    cfg.validate()
    out = ensure_writable_dir(out_dir)
    points_dir = ensure_writable_dir(out / "points")
    p_hash = prior_hash(domain.prior)
    reference_file = points_dir / "prior.json"
    reference_inputs = {"domain": cfg.domain, "prior": p_hash, "episodes": cfg.eval_episodes}
    prior_eval = _load_if_same(reference_file, reference_inputs)
    if prior_eval is None:
        with using_threads(cfg.threads):
            prior_eval = {"metrics": [evaluate_policy(domain.prior, domain, "q", cfg.eval_episodes, seed=0)]}
        write_json_atomic(reference_file, {"inputs": reference_inputs, **prior_eval})
    todo = grid(cfg)
    bar = _bar(progress, len(todo))
    result = Comparison(cfg, prior_eval["metrics"][0], {})
    for point in todo:
        tc = point_config(cfg, point)
        inputs = {"version": POINT_VERSION, "tune": result_inputs(tc), "domain": cfg.domain, "prior": p_hash}
        path = points_dir / f"{point.key}.json"
        record = _load_if_same(path, inputs)
        if record is None:
            t0 = time.perf_counter()
            run = tune(tc, domain)
            if run.interrupted:
                result.interrupted = True
                break
            record = {"metrics": run.metrics, "wall_s": time.perf_counter() - t0, "env_steps": run.env_steps,
                      "gradient_steps": run.gradient_steps}  # fmt: skip
            write_json_atomic(path, {"inputs": inputs, **record})
            result.ran += 1
        result.runs[point] = record
        if on_point is not None:
            on_point(point, record)
        if bar is not None:
            bar.set_postfix_str(point.key, refresh=False)
            bar.update(1)
    if bar is not None:
        bar.close()
    return result


def _load_if_same(path: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("inputs") != json.loads(json.dumps(inputs)):
        return None
    return {k: v for k, v in data.items() if k != "inputs"}


def _bar(progress: bool, total: int) -> Any:
    if not progress:
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=total, unit="run", file=sys.stderr, desc="compare", dynamic_ncols=True)


# ---- the numbers: aggregate over seeds, the table, the verdict ---------------------------------------------


@dataclass(frozen=True)
class Summary:
    """One (algorithm, setting) at one budget, over its seeds."""

    algorithm: str
    family: str
    weight: str
    value: float
    env_step: int  # the nominal budget: a multiple of eval_every, or the whole budget
    actual_steps: int  # env steps actually played (whole rounds: a little more than the budget)
    reward: float  # mean task reward per step, mean over seeds
    reward_sd: float
    kl: float  # exact KL(pi || p) per step, mean over seeds
    kl_sd: float
    seeds: int
    wall_s: float  # mean seconds per run (the whole budget)

    def gain_per_nat(self, prior_reward: float) -> float:
        """Task reward gained over the prior per nat of KL (per step); inf when no KL was spent."""
        return (self.reward - prior_reward) / self.kl if self.kl > 0 else math.inf


def summarise(result: Comparison) -> list[Summary]:
    """Mean and standard deviation over seeds at every budget that all seeds of a setting reached.

    Runs count env steps in whole rounds (of ``n_envs`` episodes), so families evaluate a little past each
    nominal budget by different amounts; each evaluation is filed under its nominal budget.
    """
    from rltuner.rl.targets import get_algorithm

    cfg = result.config

    def nominal(step: int) -> int:
        if step >= cfg.budget or cfg.eval_every == 0:
            return cfg.budget if step > 0 else 0
        return min(cfg.budget, cfg.eval_every * round(step / cfg.eval_every))

    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for point, record in result.runs.items():
        groups.setdefault((point.algorithm, point.weight, point.value), []).append(record)
    rows = []
    for (name, weight, value), records in groups.items():
        by_step = [{nominal(int(m["env_step"])): m for m in r["metrics"]} for r in records]
        common = sorted(set.intersection(*(set(s) for s in by_step)))
        for step in common:
            rewards = [s[step]["mean_task_reward"] for s in by_step]
            kls = [s[step]["mean_kl"] for s in by_step]
            wall = statistics.fmean(r["wall_s"] for r in records)
            family = get_algorithm(name).family
            actual = round(statistics.fmean(s[step]["env_step"] for s in by_step))
            summary = Summary(name, family, weight, value, step, actual, statistics.fmean(rewards), _sd(rewards),
                              statistics.fmean(kls), _sd(kls), len(records), wall)  # fmt: skip
            rows.append(summary)
    return rows


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def budgets(rows: list[Summary]) -> list[int]:
    """The evaluation steps after step 0, in order (the last one is the full budget, rounded up to rounds)."""
    return sorted({r.env_step for r in rows if r.env_step > 0})


def final_rows(rows: list[Summary]) -> list[Summary]:
    """Each (algorithm, setting) at its last evaluation."""
    last: dict[tuple[str, float], Summary] = {}
    for r in rows:
        key = (r.algorithm, r.value)
        if key not in last or r.env_step > last[key].env_step:
            last[key] = r
    return sorted(last.values(), key=lambda r: (r.family != "value", r.algorithm, r.value))


WEIGHT_SYMBOL = {"reward_scale": "c", "sigma": "sigma"}


def _label(r: Summary) -> str:
    return f"{r.algorithm} ({WEIGHT_SYMBOL.get(r.weight, r.weight)} = {r.value:g})"


def verdict(rows: list[Summary], prior_reward: float) -> list[str]:
    """Which family gives the most task reward per nat of KL, at each budget: one sentence per budget."""
    lines = []
    for step in budgets(rows):
        best: dict[str, Summary] = {}
        for r in rows:
            if r.env_step != step or r.kl <= 0:
                continue
            if r.family not in best or r.gain_per_nat(prior_reward) > best[r.family].gain_per_nat(
                prior_reward
            ):
                best[r.family] = r
        if not best:
            continue
        ranked = sorted(best.values(), key=lambda r: -r.gain_per_nat(prior_reward))
        top = ranked[0]
        text = (
            f"At {step:,} env steps the {top.family} family gives the most task reward per nat of KL: "
            f"{_label(top)} gains {top.reward - prior_reward:.2f} per step over the prior for "
            f"{top.kl:.3f} nats per step ({top.gain_per_nat(prior_reward):.1f} per nat)"
        )
        if len(ranked) > 1:
            other = ranked[1]
            text += (
                f"; the best of the {other.family} family, {_label(other)}, gains "
                f"{other.reward - prior_reward:.2f} for {other.kl:.3f} nats "
                f"({other.gain_per_nat(prior_reward):.1f} per nat)"
            )
        highest = max((r for r in rows if r.env_step == step), key=lambda r: r.reward)
        text += f". Highest task reward: {_label(highest)}, {highest.reward:.2f} per step at {highest.kl:.3f} nats."
        lines.append(text)
    return lines


def table_markdown(rows: list[Summary], prior: dict[str, float]) -> str:
    """The table of every point at the full budget (mean +- sd over seeds)."""
    head = (
        "| algorithm | family | KL weight | env steps | mean task reward / step | KL(pi \\|\\| p) / step | "
        "gain per nat | seeds | s per run |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = [
        f"| prior | - | - | 0 | {prior['mean_task_reward']:.3f} | 0 | - | - | - |",
    ]
    for r in final_rows(rows):
        lines.append(
            f"| {r.algorithm} | {r.family} | {WEIGHT_SYMBOL.get(r.weight, r.weight)} = {r.value:g} | "
            f"{r.actual_steps:,} | {r.reward:.3f} +- {r.reward_sd:.3f} | {r.kl:.3f} +- {r.kl_sd:.3f} | "
            f"{r.gain_per_nat(prior['mean_task_reward']):.2f} | {r.seeds} | {r.wall_s:.1f} |"
        )
    return head + "\n".join(lines) + "\n"


def pareto_figure(rows: list[Summary], prior: dict[str, float], path: str | Path, title: str = "") -> Path:
    """Mean task reward per step against KL(pi || p) per step at the full budget, +- sd over seeds."""
    from rltuner.evaluation.figures import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    final = final_rows(rows)
    for i, name in enumerate(dict.fromkeys(r.algorithm for r in final)):
        pts = sorted((r for r in final if r.algorithm == name), key=lambda r: r.kl)
        marker = "o" if pts[0].family == "value" else "s"
        ax.errorbar(
            [r.kl for r in pts], [r.reward for r in pts], xerr=[r.kl_sd for r in pts],
            yerr=[r.reward_sd for r in pts], marker=marker, linestyle="-" if marker == "o" else "--",
            color=f"C{i}", capsize=3, label=f"{name} ({pts[0].family})",
        )  # fmt: skip
        for r in pts:
            ax.annotate(f"{WEIGHT_SYMBOL.get(r.weight, r.weight)}={r.value:g}", (r.kl, r.reward), fontsize=7,
                        textcoords="offset points", xytext=(4, 4))  # fmt: skip
    ax.scatter([0.0], [prior["mean_task_reward"]], marker="*", s=160, color="black", label="prior", zorder=5)
    ax.set_xlabel("KL(pi || p) per step (nats), exact over the vocabulary")
    ax.set_ylabel("mean task reward per step")
    ax.set_title(title or "task reward against KL to the prior")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)


def write_report(result: Comparison, out_dir: str | Path, command: str, machine: str) -> dict[str, Path]:
    """Write ``comparison.md`` (command, machine, table, verdict), ``comparison.csv``, ``comparison.json`` and
    ``pareto.png``; returns their paths."""
    out = Path(out_dir)
    rows = summarise(result)
    prior = result.prior
    cfg = result.config
    lines = verdict(rows, prior["mean_task_reward"])
    figure = pareto_figure(
        rows, prior, out / "pareto.png",
        title=f"{cfg.domain}: {cfg.budget:,} env steps, {cfg.seeds} seeds (mean +- sd)",
    )  # fmt: skip
    md = (
        f"# Comparison: {cfg.domain}, {cfg.budget:,} env steps per run, {cfg.seeds} seeds\n\n"
        f"- Command: `{command}`\n- Machine: {machine}\n- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
        f"- Points: {len(result.runs)} runs; mean task reward and exact KL(pi || p) per step of "
        f"{cfg.eval_episodes} sampled episodes per evaluation\n\n"
        f"![Pareto figure]({figure.name})\n\n{table_markdown(rows, prior)}\n## Verdict\n\n"
        + "".join(f"- {line}\n" for line in lines)
    )
    paths = {"markdown": write_text_atomic(out / "comparison.md", md), "figure": figure}
    csv_lines = ["algorithm,family,weight,value,env_step,reward,reward_sd,kl,kl_sd,seeds,wall_s"]
    csv_lines += [
        f"{r.algorithm},{r.family},{r.weight},{r.value:g},{r.env_step},{r.reward:.6g},{r.reward_sd:.6g},"
        f"{r.kl:.6g},{r.kl_sd:.6g},{r.seeds},{r.wall_s:.3f}"
        for r in sorted(rows, key=lambda r: (r.algorithm, r.value, r.env_step))
    ]
    paths["csv"] = write_text_atomic(out / "comparison.csv", "\n".join(csv_lines) + "\n")
    paths["json"] = write_json_atomic(
        out / "comparison.json",
        {"config": to_dict(cfg), "prior": prior, "verdict": lines,
         "rows": [to_dict(r) for r in rows], "command": command, "machine": machine},
    )  # fmt: skip
    return paths
