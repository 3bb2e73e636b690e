"""Run every benchmark module in one process and write BENCHMARKS.md.

Speeds are compared as ratios measured in the same run, on the same machine; the file records the machine,
the date and the exact command.
"""

from __future__ import annotations

import datetime as dt
import importlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rltuner.benchmarks import BenchResult
from rltuner.fileio import write_text_atomic
from rltuner.provenance import machine_description

# topic -> module; each module has measure(quick: bool = False) -> list[BenchResult]
TOPICS: dict[str, str] = {
    "corpus": "rltuner.benchmarks.corpus",
    "rewards": "rltuner.benchmarks.rewards",
    "prior": "rltuner.benchmarks.prior",
    "rl": "rltuner.benchmarks.rl",
    "threads": "rltuner.benchmarks.threads",
    "evaluation": "rltuner.benchmarks.evaluation",
    "molecules": "rltuner.benchmarks.molecules",
}


def run_topics(
    topics: Sequence[str], *, quick: bool = False, progress: bool = True
) -> dict[str, list[BenchResult] | str]:
    """Run the named topics; a topic that fails records its error instead of stopping the suite.

    With ``progress`` a line on stderr when each topic starts and when it is done (and its time).
    """
    results: dict[str, list[BenchResult] | str] = {}
    for topic in topics:
        module_name = TOPICS[topic]
        start = time.perf_counter()
        if progress:
            print(f"[bench] {topic} ...", file=sys.stderr, flush=True)
        try:
            module = importlib.import_module(module_name)
            results[topic] = list(module.measure(quick=quick))
        except Exception as exc:  # a broken benchmark must not hide the others' figures
            results[topic] = f"failed: {type(exc).__name__}: {exc}"
        if progress:
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


def render_markdown(
    results: dict[str, list[BenchResult] | str],
    *,
    command: str,
    machine: str,
    kept: dict[str, str] | None = None,
) -> str:
    """BENCHMARKS.md text: one table per topic with each figure beside its goal.

    Every topic section starts with the command, date and machine that measured it; ``kept`` holds the
    sections (topic -> markdown) of topics not re-run this time, carried over unchanged from the old file.
    """
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Benchmarks",
        "",
        "Written by `rltuner bench`; do not edit by hand (re-run the command; `--only TOPIC` re-measures one",
        "topic and keeps the others' sections as they were, each with its own command, date and machine).",
        "",
        "On a shared virtual machine the absolute figures vary between runs (up to 2x seen on the project's",
        "2-core machine); compare figures measured in the same run, as ratios.",
        "",
    ]
    sections: dict[str, list[str]] = {t: [text.rstrip("\n"), ""] for t, text in (kept or {}).items()}
    for topic, items in results.items():
        body = [f"## {topic}", "", f"Measured by `{command}` on {now}; machine: {machine}.", ""]
        if isinstance(items, str):
            body += [f"Benchmark {items}", ""]
        else:
            body += ["| figure | value | goal | met | detail |", "| --- | --- | --- | --- | --- |"]
            for r in items:
                met = "n/a" if r["met"] is None else ("yes" if r["met"] else "**no**")
                body.append(
                    f"| {r['name']} | {_fmt(float(r['value']))} {r['unit']} | {r['goal'] or '-'} | {met} "
                    f"| {r['detail']} |"
                )
            body.append("")
        sections[topic] = body
    order = [t for t in TOPICS if t in sections] + [t for t in sections if t not in TOPICS]
    for topic in order:
        lines += sections[topic]
    return "\n".join(lines)


# Sections from here on are measured by other commands (the large fuzz run) and kept when bench rewrites the file.
KEPT_MARKER = "<!-- kept by rltuner bench: sections below are written by other commands -->"


def read_sections(path: str | Path) -> dict[str, str]:
    """The ``## topic`` sections of an existing BENCHMARKS.md (topic -> its markdown); {} when absent.

    Only the part above :data:`KEPT_MARKER` is read (what follows it is carried over whole). A section from a
    file written before per-section provenance gets the file's own command/date/machine.
    """
    p = Path(path)
    if not p.is_file():
        return {}
    text = p.read_text(encoding="utf-8").split(KEPT_MARKER, 1)[0]
    header = "; ".join(line[2:] for line in text.split("## ", 1)[0].splitlines() if line.startswith("- "))
    out: dict[str, str] = {}
    for chunk in text.split("\n## ")[1:]:
        topic, _, body = chunk.partition("\n")
        if "measured" not in body.split("|", 1)[0].lower() and header:  # no provenance of its own
            body = f"\nMeasured with the file's earlier run: {header}.\n" + body
        out[topic.strip()] = f"## {topic.strip()}\n{body}"
    return out


def write_benchmarks(
    path: str | Path, results: dict[str, list[BenchResult] | str], *, command: str, keep_others: bool = False
) -> Path:
    """Write BENCHMARKS.md; with ``keep_others``, the sections of topics not in ``results`` are kept.

    Whatever follows :data:`KEPT_MARKER` in the old file (sections written by other commands) is kept too.
    """
    kept = {t: s for t, s in read_sections(path).items() if t not in results} if keep_others else None
    text = render_markdown(results, command=command, machine=machine_description(), kept=kept)
    try:
        old = Path(path).read_text(encoding="utf-8")
    except OSError:
        old = ""
    if KEPT_MARKER in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(KEPT_MARKER) :]
    return write_text_atomic(path, text)
