"""Results over several tuning seeds: mean, sd, n and a 95% interval of every metric of every model.

One seed is not a result: float results differ across CPUs, and a tuning run's outcome varies with its seed.
``rltuner run --seeds N`` tunes every algorithm with N seeds and evaluates each model; the functions here
aggregate whatever the evaluation measured (they know no metric names, so a new measure is aggregated as soon
as the evaluation returns it) and say which differences between models the seeds support.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rltuner.evaluation.evaluate import EvaluationResult, ModelEvaluation
from rltuner.fileio import write_json_atomic, write_text_atomic
from rltuner.provenance import machine_description

# Per-model bookkeeping in ``ModelEvaluation.flat()`` that is not a result (timings, raw tallies).
NOT_COMPARED = ("seconds.", "counts.")


@dataclass(frozen=True)
class SeedStatistic:
    """One metric of one model over seeds.

    Attributes:
        mean: mean over the seeds with a finite value (NaN when none has one).
        sd: sample standard deviation (n - 1 in the denominator); NaN with fewer than 2 values.
        n: how many seeds had a finite value.
        low / high: the 95% confidence interval of the mean, Student's t with n - 1 degrees of freedom
            (NaN with fewer than 2 values).
    """

    mean: float
    sd: float
    n: int
    low: float
    high: float

    def to_dict(self) -> dict[str, float | int | None]:
        """JSON-able (NaN as ``None``)."""

        def num(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {"mean": num(self.mean), "sd": num(self.sd), "n": self.n, "ci95_low": num(self.low),
                "ci95_high": num(self.high)}  # fmt: skip


def seed_statistic(values: Sequence[float]) -> SeedStatistic:
    """Mean, sd, n and 95% interval of ``values`` (one per seed); NaN values (not measured) are left out."""
    from scipy import stats

    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(finite)
    if n == 0:
        return SeedStatistic(math.nan, math.nan, 0, math.nan, math.nan)
    mean = statistics.fmean(finite)
    if n < 2:
        return SeedStatistic(mean, math.nan, n, math.nan, math.nan)
    sd = statistics.stdev(finite)
    half = float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return SeedStatistic(mean, sd, n, mean - half, mean + half)


def aggregate_seeds(
    per_seed: Sequence[Mapping[str, Mapping[str, float]]],
) -> dict[str, dict[str, SeedStatistic]]:
    """Aggregate flat results over seeds.

    Args:
        per_seed: one ``model -> metric -> value`` mapping per seed (e.g. ``ModelEvaluation.flat()`` per
            model). A model or metric missing from some seeds is aggregated over the seeds that have it.

    Returns:
        ``model -> metric -> SeedStatistic``, models and metrics in first-seen order.
    """
    models: dict[str, list[str]] = {}
    for result in per_seed:
        for model, metrics in result.items():
            keys = models.setdefault(model, [])
            keys.extend(k for k, v in metrics.items() if k not in keys and _is_number(v))
    return {
        model: {
            key: seed_statistic(
                [r[model][key] for r in per_seed if model in r and _is_number(r[model].get(key))]
            )
            for key in keys
        }
        for model, keys in models.items()
    }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def overlap(a: SeedStatistic, b: SeedStatistic) -> bool:
    """Whether two 95% intervals overlap (True when either has none: no claim is supported then)."""
    if any(math.isnan(v) for v in (a.low, a.high, b.low, b.high)):
        return True
    return a.low <= b.high and b.low <= a.high


def supported_differences(summary: Mapping[str, Mapping[str, SeedStatistic]]) -> list[str]:
    """Statements ``metric: A > B`` for every pair of models whose 95% intervals do not overlap.

    The only comparisons a report may state: a difference inside the seeds' spread is not a result.
    """
    names = list(summary)
    metrics: list[str] = []
    for model in names:
        metrics.extend(k for k in summary[model] if k not in metrics and not k.startswith(NOT_COMPARED))
    out = []
    for key in metrics:
        pairs = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                sa, sb = summary[a].get(key), summary[b].get(key)
                if sa is None or sb is None or overlap(sa, sb):
                    continue
                hi, lo = (a, b) if sa.mean > sb.mean else (b, a)
                pairs.append(f"{hi} > {lo}")
        if pairs:
            out.append(f"{key}: {', '.join(pairs)}")
    return out


def _map_leaves(trees: Sequence[Any], fn: Callable[[list[float]], float]) -> Any:
    # trees of dicts with numbers at the leaves (a ModelEvaluation as a dict): fn over each leaf's values
    first = trees[0]
    if isinstance(first, Mapping):
        keys: list[str] = []
        for t in trees:
            keys.extend(k for k in t if k not in keys)
        return {k: _map_leaves([t[k] for t in trees if k in t], fn) for k in keys}
    if _is_number(first):
        return fn([float(v) for v in trees if _is_number(v)])
    return first  # a name


def _statistic_of(name: str) -> Callable[[list[float]], float]:
    def get(values: list[float]) -> float:
        return float(getattr(seed_statistic(values), name))

    return get


def mean_and_sd_results(results: Sequence[EvaluationResult]) -> tuple[EvaluationResult, EvaluationResult]:
    """Two results shaped like one seed's: every number the mean over seeds, and its sd.

    They let the one table formatter (``EvaluationResult.table_rows``) print both, whatever it shows.
    """
    import dataclasses

    models = list(dict.fromkeys(m for r in results for m in r.models))
    out = []
    for stat in ("mean", "sd"):
        evals = {}
        for model in models:
            trees = [dataclasses.asdict(r.models[model]) for r in results if model in r.models]
            tree = _map_leaves(trees, _statistic_of(stat))
            evals[model] = ModelEvaluation(**tree)
        out.append(EvaluationResult(models=evals, settings=dict(results[0].settings)))
    return out[0], out[1]


def mean_sd_rows(results: Sequence[EvaluationResult]) -> list[tuple[str, list[str]]]:
    """The summary table's rows with every model's cell ``mean ± sd`` over seeds (the paper's cells as they are).

    The sd of a percentage is in percentage points (``61.3% ± 2.1``).

    With one seed the cells are the seed's values, as ``EvaluationResult.table_rows`` prints them.
    """
    mean, sd = mean_and_sd_results(results)
    mean_rows = mean.table_rows()
    if len(results) < 2:
        return mean_rows
    n_models = len(mean.models)
    rows = []
    for (label, cells), (_, sd_cells) in zip(mean_rows, sd.table_rows(), strict=True):
        joined = [
            c
            if i >= n_models or c in ("", "n/a") or s in ("", "n/a") or _is_text(c)
            else f"{c} ± {spread_cell(c, s)}"
            for i, (c, s) in enumerate(zip(cells, sd_cells, strict=True))
        ]
        rows.append((label, joined))
    return rows


def _is_text(cell: str) -> bool:
    """A cell that is not a number (e.g. the most common opening's notes): it has no spread to print."""
    try:
        float(cell.strip().lstrip("<+").rstrip("%"))
    except ValueError:
        return True
    return False


def spread_cell(mean_cell: str, sd_cell: str) -> str:
    """The sd cell to print after ``mean_cell ±``: a percentage's sd in percentage points, to the mean's
    decimals (at least one), as in ``61.3% ± 2.1``; other cells as formatted (a sign dropped)."""
    sd = sd_cell.lstrip("+")
    if mean_cell.endswith("%") and sd.endswith("%"):
        try:
            float(mean_cell[:-1])
            value = float(sd[:-1])
        except ValueError:
            return sd  # "<0.001%"
        decimals = len(mean_cell[:-1].partition(".")[2])
        return f"{value:.{max(decimals, 1)}f}"
    return sd


def markdown_table(header: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]]) -> str:
    """A GitHub-flavoured Markdown table (``|`` in cells escaped)."""

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join(
        [line(header), line(["---"] * len(header)), *(line([label, *cells]) for label, cells in rows)]
    )


def summary_json(
    summary: Mapping[str, Mapping[str, SeedStatistic]], seeds: Sequence[int], **extra: Any
) -> dict[str, Any]:
    """``summary.json``'s content: the seeds, ``extra`` (machine, command...), model -> metric -> statistic."""
    return {
        "seeds": list(seeds),
        **extra,
        "models": {m: {k: s.to_dict() for k, s in metrics.items()} for m, metrics in summary.items()},
    }


def write_seed_summary(
    run_dir: Path,
    summary: Mapping[str, Mapping[str, SeedStatistic]],
    seeds: Sequence[int],
    header: Sequence[str],
    rows: Sequence[tuple[str, Sequence[str]]],
    *,
    command: str,
    machine: Mapping[str, Any],
    evaluation: Mapping[str, Any],
) -> list[str]:
    """Write ``RUN/summary.json`` (model -> metric -> mean, sd, n, 95% interval) and ``RUN/table.md``.

    Args:
        summary: :func:`aggregate_seeds` of the per-seed results.
        header / rows: the table as the report shows it (cells ``mean ± sd``; ``header[0]`` is replaced).
        command, machine, evaluation: what made it (the command line, :func:`rltuner.provenance.machine_info`,
            the evaluation's settings such as the number of samples).

    Returns:
        The differences between models that the seeds support (:func:`supported_differences`; none with one
        seed), for the report's prose.
    """
    listed = ", ".join(str(s) for s in seeds)
    several = len(seeds) > 1
    differences = supported_differences(summary) if several else []
    settings = {k: v for k, v in evaluation.items() if k != "seed"}
    write_json_atomic(
        run_dir / "summary.json",
        summary_json(summary, seeds, command=command, machine=dict(machine), evaluation=settings,
                     supported_differences=differences),
    )  # fmt: skip
    if not several:
        claims = "One seed: no interval, so no difference between models is claimed."
    elif differences:
        claims = "\n".join(f"- {d}" for d in differences)
    else:
        claims = "None: every pair of models overlaps on every metric."
    first = f"metric (mean ± sd over seeds {listed})" if several else f"metric (seed {listed})"
    text = (
        f"# rltuner run over {len(seeds)} tuning seed{'s' if several else ''} ({listed})\n\n"
        f"- Command: `{command}`\n- Machine: {machine_description(dict(machine))}\n"
        f"- Per seed and model: {evaluation.get('n')} samples; sd is the sample standard deviation over seeds "
        "(of a percentage: in percentage points); `summary.json` has mean, sd, n and the 95% interval "
        "(Student's t) of every metric\n\n"
        f"{markdown_table([first, *header[1:]], rows)}\n\n"
        "## Differences the seeds support (95% intervals of the mean do not overlap)\n\n"
        f"{claims}\n"
    )
    write_text_atomic(run_dir / "table.md", text)
    return differences
