"""A sweep's result files: every trial in a table (Markdown, CSV, JSON), the best configuration as settings
``rltuner tune`` takes, and the Pareto plot (docs/sweep.md)."""

from __future__ import annotations

import csv
import io
import math
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rltuner.fileio import atomic_path, ensure_writable_dir, nan_to_null, write_json_atomic, write_text_atomic
from rltuner.sweep.objective import GOALS, pareto_front
from rltuner.sweep.space import split_params

#: The Pareto front's objectives: (column, maximise).
PARETO_OBJECTIVES: tuple[tuple[str, bool], ...] = (
    ("goal_deficit", False),
    ("goal.log_p_gap", False),
    ("goal.distinct", True),
)
_SUMMARY = ("trial", "status", "rounds", "goal_deficit", "goals_met", "pareto")


def _number(row: Mapping[str, Any], key: str) -> float:
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def mark_pareto(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows sorted by goal deficit (failed trials last), each with ``pareto`` True/False."""
    points = [[_number(r, k) for k, _ in PARETO_OBJECTIVES] for r in rows]
    front = set(pareto_front(points, [up for _, up in PARETO_OBJECTIVES]))
    marked = [{**r, "pareto": i in front} for i, r in enumerate(rows)]
    return sorted(marked, key=lambda r: (math.isnan(_number(r, "goal_deficit")), _number(r, "goal_deficit")))


def columns(rows: Sequence[Mapping[str, Any]], param_names: Sequence[str]) -> list[str]:
    goal_cols = [f"goal.{g.key}" for g in GOALS if any(f"goal.{g.key}" in r for r in rows)]
    rest = ["mean_log_p", "mean_task_reward", "env_step", "wall_s", "missing_goals"]
    return [*_SUMMARY, *param_names, *goal_cols, *rest]


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], cols: Sequence[str]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def best_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"tune": TuneConfig overrides, "reward": rule weights}`` of a configuration (applicable ones only).

    ``tune`` also holds ``total_steps``: the budget the space states the step-count schedules for
    (:func:`rltuner.sweep.space.schedules_budget`), so that ``rltuner tune --config best.toml --steps N`` scales
    them to N as each trial's were scaled to the sweep's ``--steps`` (without it they would be taken as given
    for any N).
    """
    from rltuner.sweep.space import schedules_budget

    changes, weights = split_params(params)
    first = {"algorithm": changes["algorithm"]} if "algorithm" in changes else {}
    return {"tune": {**first, "total_steps": schedules_budget(), **changes}, "reward": weights}


def tune_command(settings: Mapping[str, Any], steps: int) -> str:
    """The ``rltuner tune`` command line of :func:`best_settings`, at ``steps`` environment steps."""
    from rltuner.sweep.space import scaled_schedules

    tune_part = dict(settings["tune"])
    budget = tune_part.pop("total_steps", None)  # the schedules' budget; the command's is --steps
    tune_part = scaled_schedules(
        tune_part, steps, None if budget is None else int(budget)
    )  # as the trial ran
    args = ["rltuner", "tune", "--algorithm", str(tune_part.pop("algorithm", "q")), "--steps", str(steps)]
    for key, value in tune_part.items():
        args += ["--set", f"{key}={str(value).lower() if isinstance(value, bool) else value}"]
    for rule, weight in settings["reward"].items():
        args += ["--reward-weight", f"{rule}={weight}"]
    return shlex.join(args)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def settings_toml(settings: Mapping[str, Any], comment: str) -> str:
    lines = [f"# {line}" for line in comment.splitlines()]
    for table in ("tune", "reward"):
        lines += ["", f"[{table}]"] + [f"{k} = {_toml_value(v)}" for k, v in settings[table].items()]
    return "\n".join(lines) + "\n"


def pareto_plot(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Goal deficit against log p gap, coloured by distinct melodies; the Pareto front (of all three) ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in rows if not math.isnan(_number(r, "goal_deficit"))]
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=120)
    if ok:
        x = [_number(r, "goal.log_p_gap") for r in ok]
        y = [_number(r, "goal_deficit") for r in ok]
        c = [_number(r, "goal.distinct") for r in ok]
        points = ax.scatter(x, y, c=c, cmap="viridis", s=28, vmin=0.0, vmax=1.0)
        fig.colorbar(points, ax=ax, label="distinct melodies")
        front = sorted((a, b) for a, b, r in zip(x, y, ok, strict=True) if r.get("pareto"))
        if front:
            fx, fy = zip(*front, strict=True)
            ax.scatter(fx, fy, facecolors="none", edgecolors="crimson", s=90, label="Pareto front")
            ax.legend(loc="upper right")
    ax.axvline(0.5, color="grey", ls=":", lw=1)
    ax.set_xlabel("log p gap to the Note RNN's samples (nats per step; goal <= 0.5)")
    ax.set_ylabel("goal deficit (0 = every goal met)")
    ax.set_title(f"rltuner sweep: {len(ok)} trials")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def write_results(
    out_dir: str | Path,
    rows: list[dict[str, Any]],
    param_names: Sequence[str],
    info: Mapping[str, Any],
) -> dict[str, Path]:
    """Write trials.{md,csv,json}, best.{toml,json}, best_command.txt and pareto.png into ``out_dir``.

    Args:
        rows: one per trial: ``trial``, ``status``, the drawn settings, the last report's metrics.
        param_names: the searched settings (the table's setting columns).
        info: the sweep's settings (steps, melodies, seed, space), recorded beside the trials.
    """
    out = ensure_writable_dir(out_dir)
    rows = mark_pareto(rows)
    cols = columns(rows, param_names)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows([{c: _cell(r.get(c)) for c in cols} for r in rows])
    paths = {
        "csv": write_text_atomic(out / "trials.csv", buf.getvalue()),
        "json": write_json_atomic(out / "trials.json", nan_to_null({"sweep": info, "trials": rows})),
        "md": write_text_atomic(out / "trials.md", markdown_table(rows, cols)),
        "png": pareto_plot(rows, out / "pareto.png"),
    }
    scored = [r for r in rows if not math.isnan(_number(r, "goal_deficit"))]
    if scored:
        best = scored[0]
        params = {k: best[k] for k in param_names if k in best and best[k] is not None}
        settings = best_settings(params)
        command = tune_command(settings, int(info.get("steps", 1_000_000)))
        comment = (
            f"rltuner sweep: best of {len(scored)} trials ({best['trial']}), goal deficit "
            f"{best['goal_deficit']:.4g}, {best['goals_met']} of {best['goals_scored']} goals met.\n"
            f"Run it with: {command}\n"
            "Step-count schedules (epsilon_steps, learning_starts, eval_every) are stated for total_steps;\n"
            "rltuner tune --config best.toml --steps N scales them to N (as the command above does)."
        )
        paths["best_toml"] = write_text_atomic(out / "best.toml", settings_toml(settings, comment))
        paths["best_json"] = write_json_atomic(
            out / "best.json", nan_to_null({**settings, "trial": best["trial"], "command": command})
        )
        paths["command"] = write_text_atomic(out / "best_command.txt", command + "\n")
    return paths
