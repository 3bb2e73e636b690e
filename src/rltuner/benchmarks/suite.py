"""Run every benchmark module in one process and write BENCHMARKS.md.

Speeds are compared as ratios measured in the same run, on the same machine; the file records the machine,
the date and the exact command, and keeps each machine's latest figures of every topic side by side.
"""

from __future__ import annotations

import datetime as dt
import importlib
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rltuner.benchmarks import BenchResult
from rltuner.errors import RLTunerError
from rltuner.fileio import write_text_atomic
from rltuner.provenance import machine_description, machine_info, machine_key

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


# topic -> machine key (provenance.machine_key) -> that machine's latest section of the topic: its provenance
# line and table, the markdown below its "### key" heading.
Sections = dict[str, dict[str, str]]


def render_markdown(
    results: dict[str, list[BenchResult] | str],
    *,
    command: str,
    machine: str,
    key: str | None = None,
    kept: Sections | None = None,
) -> str:
    """BENCHMARKS.md text: per topic, one table per machine with each figure beside its goal.

    Args:
        results: the topics measured now (topic -> figures, or the error text of a topic that failed).
        command: the command line that measured them.
        machine: this machine in one line (:func:`~rltuner.provenance.machine_description`).
        key: this machine's key (:func:`~rltuner.provenance.machine_key`); by default read off ``machine``.
        kept: earlier sections (from :func:`read_sections`) written unchanged beside the new ones; a kept
            section of this machine's key for a topic in ``results`` is replaced.

    Returns:
        The markdown: every machine section starts with the command, date and machine that measured it, and
        in every topic this machine's section comes first.
    """
    key = key or _key_from_provenance(f"machine: {machine}")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections: Sections = {topic: dict(by_machine) for topic, by_machine in (kept or {}).items()}
    for topic, items in results.items():
        body = [f"Measured by `{command}` on {now}; machine: {machine}.", ""]
        if isinstance(items, str):
            body += [f"Benchmark {items}"]
        else:
            body += ["| figure | value | goal | met | detail |", "| --- | --- | --- | --- | --- |"]
            for r in items:
                met = "n/a" if r["met"] is None else ("yes" if r["met"] else "**no**")
                body.append(
                    f"| {r['name']} | {_fmt(float(r['value']))} {r['unit']} | {r['goal'] or '-'} | {met} "
                    f"| {r['detail']} |"
                )
        sections.setdefault(topic, {})[key] = "\n".join(body)
    for topic, by_machine in sections.items():
        if key in by_machine:  # this machine first, the others in the order the file had them
            sections[topic] = {key: by_machine[key], **{k: v for k, v in by_machine.items() if k != key}}
    order = [t for t in TOPICS if t in sections] + [t for t in sections if t not in TOPICS]
    lines = [
        TITLE,
        "",
        "Written by `rltuner bench`; do not edit by hand (re-run the command; `--only TOPIC` re-measures one",
        "topic and keeps the others' sections). Each topic keeps the latest section of every machine (CPU model,",
        "AMX or not, cores, and the GPU when one was used), each with its own command, date and machine line",
        "(CPU flags, torch threads, load average); the last run's machine comes first, and a re-run replaces only",
        "its machine's section.",
        "",
        _machines_line(sections, order),
        "",
        "On a shared virtual machine the absolute figures vary between runs (up to 2x seen on the project's",
        "2-core machine); compare figures measured in the same run, as ratios.",
        "",
    ]
    for topic in order:
        lines += [f"## {topic}", ""]
        for machine_key_, text in sections[topic].items():
            lines += [f"### {machine_key_}", "", text.strip("\n"), ""]
    return "\n".join(lines)


def _machines_line(sections: Sections, order: Sequence[str]) -> str:
    """``Figures from 2 machines: **A** (corpus, rewards); **B** (rl).``, the first topic's first machine first."""
    topics_of: dict[str, list[str]] = {}
    for topic in order:
        for key in sections[topic]:
            topics_of.setdefault(key, []).append(topic)
    if not topics_of:
        return "No figures yet."
    listed = "; ".join(f"**{key}** ({', '.join(topics)})" for key, topics in topics_of.items())
    count = f"{len(topics_of)} machine{'' if len(topics_of) == 1 else 's'}"
    return f"Figures from {count}: {listed}."


# Sections from here on are measured by other commands (the large fuzz run) and kept when bench rewrites the file.
KEPT_MARKER = "<!-- kept by rltuner bench: sections below are written by other commands -->"


# "Machine: AMD EPYC (flags: ...), 2 cores, 24 GiB RAM; ..." -> the CPU model and the core count
_MACHINE_IN_LINE = re.compile(r"machine: (?P<cpu>[^;\n]+?)(?: \(flags:[^)]*\))?, (?P<cores>\d+) cores", re.I)
_FLAGS_IN_LINE = re.compile(r"machine: [^;\n]*?\(flags: (?P<flags>[^)]*)\)", re.I)
_ACCELERATOR_IN_LINE = re.compile(r"; accelerator: (?P<name>[^;\n]+?)\.?$", re.I | re.M)
_MACHINE_TEXT = re.compile(r"machine: (?P<text>[^;\n]*)", re.I)
# One-line provenance of files written before "Measured by ..." (2026-11): rewritten as the current line.
_LEGACY_PROVENANCE = re.compile(
    r"^- Command: (?P<command>.+?); - Date: (?P<date>.+?); - Machine: (?P<machine>.+?)\.?$", re.M
)
UNNAMED_MACHINE = "unnamed machine"


def _key_from_provenance(text: str) -> str:
    """A section's machine key, read off its provenance line: a section without a ``### key`` heading, and
    one whose heading was written before keys said what they say now (AMX)."""
    found = _MACHINE_IN_LINE.search(text)
    if found:
        accelerator = _ACCELERATOR_IN_LINE.search(text)
        info = {"cpu": found["cpu"].strip(), "cores": int(found["cores"]), "cpu_flags": _flags(text)}
        return machine_key(info, accelerator["name"].strip() if accelerator else None)
    named = _MACHINE_TEXT.search(text)
    return (named["text"].strip().rstrip(".") if named else "") or UNNAMED_MACHINE


def _flags(text: str) -> list[str]:
    """The CPU flags a provenance line names ([] when it names none)."""
    found = _FLAGS_IN_LINE.search(text)
    if not found or found["flags"].startswith("none of "):  # "(flags: none of avx2 ...)": it has none
        return []
    return found["flags"].split()


def read_sections(path: str | Path) -> Sections:
    """The sections of an existing BENCHMARKS.md (topic -> machine key -> markdown); {} when absent.

    Only the part above :data:`KEPT_MARKER` is read (what follows it is carried over whole). Files written
    before per-machine sections are read too: a ``## topic`` section without ``### machine`` headings belongs
    to the machine its provenance line names; a section from a file written before per-section provenance
    gets the file's own command/date/machine. Where a topic names one machine twice, the first is kept.
    """
    p = Path(path)
    if not p.is_file():
        return {}
    text = p.read_text(encoding="utf-8").split(KEPT_MARKER, 1)[0]
    header = "; ".join(line[2:] for line in text.split("## ", 1)[0].splitlines() if line.startswith("- "))
    out: Sections = {}
    for chunk in text.split("\n## ")[1:]:
        topic, _, body = chunk.partition("\n")
        # [text before the first "### key", key, its section, key, its section, ...]
        parts = re.split(r"^### (.*)$", body, flags=re.M)
        found = list(zip(parts[1::2], parts[2::2], strict=True))
        legacy = parts[0]
        if legacy.strip():  # one section, from before per-machine sections
            if "measured" not in legacy.split("|", 1)[0].lower() and header:  # no provenance of its own
                legacy = f"Measured with the file's earlier run: {header}.\n\n" + legacy
            legacy = _LEGACY_PROVENANCE.sub(
                r"Measured by \g<command> on \g<date>; machine: \g<machine>.", legacy
            )
            found.insert(0, (_key_from_provenance(legacy.split("|", 1)[0]), legacy))
        by_machine = out.setdefault(topic.strip(), {})
        for key, section in found:
            # the machine line decides (keys gained AMX after some headings were written); else the heading
            line_key = _key_from_provenance(section) if _MACHINE_IN_LINE.search(section) else key.strip()
            by_machine.setdefault(line_key, section.strip("\n"))
    return out


TITLE = "# Benchmarks"  # the first line of every file this module writes


def check_output_file(path: str | Path) -> None:
    """Refuse to overwrite what is not a benchmarks file: ``path`` may be missing, empty, start with
    :data:`TITLE` or hold :data:`KEPT_MARKER` (a file :func:`write_benchmarks` wrote, whose other sections it
    keeps).

    Raises:
        RLTunerError: a folder, an unreadable file, or a file of something else (a user's notes).
    """
    p = Path(path)
    if p.is_dir():
        raise RLTunerError(f"{p} is a folder; --out takes the markdown file to write")
    if not p.exists():
        return
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise RLTunerError(f"cannot read {p} ({e}); give another --out") from None
    if text.strip() and not text.startswith(TITLE + "\n") and KEPT_MARKER not in text:
        raise RLTunerError(
            f"{p} is not a benchmarks file (its first line is not {TITLE!r}), so it would be overwritten; "
            "give another --out or remove it"
        )


def write_benchmarks(
    path: str | Path,
    results: dict[str, list[BenchResult] | str],
    *,
    command: str,
    keep_others: bool = False,
    accelerator: str | None = None,
) -> Path:
    """Write BENCHMARKS.md: this machine's sections of the topics in ``results`` replace its earlier ones.

    Other machines' sections are always kept (each is that machine's latest); with ``keep_others``, so are
    this machine's sections of topics not in ``results``. Whatever follows :data:`KEPT_MARKER` in the old file
    (sections written by other commands) is kept too.

    Args:
        path: the markdown file, read first when it exists.
        results: the topics measured now (:func:`run_topics`).
        command: the command line that measured them.
        keep_others: keep this machine's sections of the topics not measured now.
        accelerator: the GPU's name when the figures were measured on one; part of the machine's key.
    """
    check_output_file(path)
    info = machine_info()
    key = machine_key(info, accelerator)
    machine = machine_description(info) + (f"; accelerator: {accelerator}" if accelerator else "")
    kept = {
        topic: {k: section for k, section in by_machine.items() if k != key or keep_others}
        for topic, by_machine in read_sections(path).items()
    }
    text = render_markdown(
        results, command=command, machine=machine, key=key, kept={t: s for t, s in kept.items() if s}
    )
    try:
        old = Path(path).read_text(encoding="utf-8")
    except OSError:
        old = ""
    if KEPT_MARKER in old:
        text = text.rstrip("\n") + "\n\n" + old[old.index(KEPT_MARKER) :]
    return write_text_atomic(path, text)
