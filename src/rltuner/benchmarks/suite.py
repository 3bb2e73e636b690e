"""Run every benchmark module in one process and write BENCHMARKS.md.

Speeds are compared as ratios measured in the same run, on the same machine; the file records the machine,
the date and the exact command.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rltuner.benchmarks import BenchResult
from rltuner.fileio import write_text_atomic

# topic -> module; each module has measure(quick: bool = False) -> list[BenchResult]
TOPICS: dict[str, str] = {
    "corpus": "rltuner.benchmarks.corpus",
    "rewards": "rltuner.benchmarks.rewards",
    "prior": "rltuner.benchmarks.prior",
    "rl": "rltuner.benchmarks.rl",
    "evaluation": "rltuner.benchmarks.evaluation",
}


def machine_description() -> str:
    """CPU model, cores, memory, Python and torch versions, in one line."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError, AttributeError):
        pass
    import torch

    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def run_topics(topics: Sequence[str], *, quick: bool = False) -> dict[str, list[BenchResult] | str]:
    """Run the named topics; a topic that fails records its error instead of stopping the suite."""
    results: dict[str, list[BenchResult] | str] = {}
    for topic in topics:
        module_name = TOPICS[topic]
        start = time.perf_counter()
        print(f"[bench] {topic} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(module_name)
            results[topic] = list(module.measure(quick=quick))
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            results[topic] = f"failed: {type(exc).__name__}: {exc}"
        print(f"[bench] {topic} done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return results


def _fmt(value: float) -> str:
    if value != value:  # NaN
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def render_markdown(results: dict[str, list[BenchResult] | str], *, command: str, machine: str) -> str:
    """BENCHMARKS.md text: one table per topic with each figure beside its goal."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        "Written by `rltuner bench`; do not edit by hand (re-run the command).",
        "",
        "On a shared virtual machine the absolute figures vary between runs (up to 2x seen on the project's",
        "2-core machine); compare figures measured in the same run, as ratios.",
        "",
        f"- Command: `{command}`",
        f"- Date: {now}",
        f"- Machine: {machine}",
        "",
    ]
    for topic, items in results.items():
        lines += [f"## {topic}", ""]
        if isinstance(items, str):
            lines += [f"Benchmark {items}", ""]
            continue
        lines += ["| figure | value | goal | met | detail |", "| --- | --- | --- | --- | --- |"]
        for r in items:
            met = "n/a" if r["met"] is None else ("yes" if r["met"] else "**no**")
            lines.append(
                f"| {r['name']} | {_fmt(float(r['value']))} {r['unit']} | {r['goal'] or '-'} | {met} "
                f"| {r['detail']} |"
            )
        lines.append("")
    return "\n".join(lines)


# Sections from here on are measured by other commands (the large fuzz run) and kept when bench rewrites the file.
KEPT_MARKER = "<!-- kept by rltuner bench: sections below are written by other commands -->"


def write_benchmarks(path: str | Path, results: dict[str, list[BenchResult] | str], *, command: str) -> Path:
    text = render_markdown(results, command=command, machine=machine_description())
    try:
        old = Path(path).read_text(encoding="utf-8")
    except OSError:
        old = ""
    if KEPT_MARKER in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(KEPT_MARKER) :]
    return write_text_atomic(path, text)
