"""The run report: one self-contained HTML file (images, audio and MIDI embedded as base64).

Audio clips are embedded as MP3 (about a tenth of the WAV's size; every current browser plays it), encoded with
``soundfile``'s bundled libsndfile; where that is missing or cannot write MP3, the WAV itself is embedded.

Sections, in order: summary, the featured model's settings and source (only when the run has one), Table 1
beside the paper's, the other metrics, the goals of issue #13, Figure 2,
Figure 4, piano rolls, interval histograms, listen (audio players and MIDI downloads per model), the exact
command and configuration, versions, timings. A section whose material is missing says so instead of disappearing, so a reader always
sees what was and was not produced.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rltuner.fileio import write_text_atomic

PathLike = str | os.PathLike[str]

SECTIONS = (
    ("summary", "Summary"),
    ("featured", "Featured model: its settings and where they came from"),
    ("table1", "Table 1: melody statistics beside the paper's"),
    ("metrics", "Data probability, reward, KL, diversity, copying, muspy"),
    ("goals", "Goals of issue #13: pass/fail per model"),
    ("figure2", "Figure 2: log p(a|s) and r_MT during training"),
    ("figure4", "Figure 4: each model's next-class probabilities on one melody"),
    ("pianorolls", "Piano rolls of sample melodies"),
    ("intervals", "Interval histograms"),
    ("listen", "Listen: sample melodies (audio) and MIDI files"),
    ("command", "Command and configuration"),
    ("versions", "Versions"),
    ("timings", "Timings"),
)

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; font-size: .9em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f3f3f3; } td.paper, th.paper { background: #fbf7ea; color: #555; }
img { max-width: 100%; border: 1px solid #eee; } pre { background: #f6f6f6; padding: .8em; overflow-x: auto; }
.model { margin: 1em 0; } .clip { display: inline-block; margin: .3em 1em .3em 0; font-size: .85em; }
.missing { color: #a33; font-style: italic; } nav a { margin-right: .8em; font-size: .9em; }
"""


@dataclass
class ReportData:
    """What the report shows. Paths are files on disk (embedded when the report is written).

    Attributes:
        title: page title.
        summary: a few sentences on what was run and how to read the page.
        table_header / table_rows: Table 1 and the other metrics (see ``EvaluationResult.table_rows``);
            rows whose label starts with one of ``metric_prefixes`` go to the metrics section.
        goal_rows: the goals of issue #13, one cell per model (``EvaluationResult.goal_rows``).
        featured: the featured model's (setting, value) rows, its source first (``FeaturedModel.describe``);
            empty when the run has none (the section is then left out).
        paper_columns: how many trailing columns hold the paper's numbers.
        figure2, figure4, intervals: PNG paths (or None where not produced).
        pianorolls: model name -> PNG.
        audio: model name -> WAV paths; midi: model name -> MIDI paths.
        command: the exact command line; config: the run's settings (JSON-able).
        versions: name -> version; timings: stage -> seconds.
    """

    title: str = "rltuner run report"
    summary: str = ""
    table_header: list[str] = field(default_factory=list)
    table_rows: list[tuple[str, list[str]]] = field(default_factory=list)
    paper_columns: int = 4
    metric_rows_from: int | None = None
    goal_rows: list[tuple[str, list[str]]] = field(default_factory=list)
    featured: list[tuple[str, str]] = field(default_factory=list)
    figure2: Path | None = None
    figure4: Path | None = None
    intervals: Path | None = None
    pianorolls: dict[str, Path] = field(default_factory=dict)
    audio: dict[str, list[Path]] = field(default_factory=dict)
    midi: dict[str, list[Path]] = field(default_factory=dict)
    command: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    timings: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)


def _data_uri(path: Path, mime: str) -> str:
    return _bytes_uri(path.read_bytes(), mime)


def _bytes_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def compressed_audio(path: PathLike) -> tuple[bytes, str]:
    """A WAV clip as the report embeds it: ``(MP3 bytes, "audio/mpeg")``, or the WAV itself as a fallback.

    The fallback (``(WAV bytes, "audio/wav")``) is taken when ``soundfile`` is not installed, when its
    libsndfile cannot write MP3 (older than 1.1), or when the file is not audio libsndfile can read.
    """
    wav = Path(path).read_bytes()
    try:
        import soundfile
    except ImportError:
        return wav, "audio/wav"
    try:
        samples, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
        buf = io.BytesIO()
        soundfile.write(buf, samples, rate, format="MP3", subtype="MPEG_LAYER_III")
    except (RuntimeError, ValueError, TypeError):  # LibsndfileError is a RuntimeError; no MP3: ValueError
        return wav, "audio/wav"
    return buf.getvalue(), "audio/mpeg"


def _missing(what: str) -> str:
    return f'<p class="missing">{html.escape(what)} was not produced in this run.</p>'


def _img(path: Path | None, alt: str) -> str:
    if path is None or not Path(path).is_file():
        return _missing(alt)
    return f'<img src="{_data_uri(Path(path), "image/png")}" alt="{html.escape(alt)}">'


def _table(header: Sequence[str], rows: Sequence[tuple[str, list[str]]], paper_columns: int) -> str:
    n = len(header)
    first_paper = n - paper_columns

    def cls(i: int) -> str:
        return ' class="paper"' if i >= first_paper else ""

    head = "".join(f"<th{cls(i)}>{html.escape(h)}</th>" for i, h in enumerate(header))
    body = []
    for label, cells in rows:
        tds = "".join(f"<td{cls(i + 1)}>{html.escape(c)}</td>" for i, c in enumerate(cells))
        body.append(f"<tr><td>{html.escape(label)}</td>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _listen(data: ReportData) -> str:
    names = list(dict.fromkeys([*data.audio, *data.midi]))
    if not names:
        return _missing("Audio and MIDI")
    parts = []
    for name in names:
        label = html.escape(data.labels.get(name, name))
        clips = []
        for i, wav in enumerate(data.audio.get(name, [])):
            if Path(wav).is_file():
                # preload="metadata": the player shows the clip's length before it is clicked
                clips.append(
                    f'<span class="clip">#{i + 1}<br><audio controls preload="metadata" '
                    f'src="{_bytes_uri(*compressed_audio(wav))}"></audio></span>'
                )
        links = []
        for mid in data.midi.get(name, []):
            if Path(mid).is_file():
                links.append(
                    f'<a download="{html.escape(Path(mid).name)}" '
                    f'href="{_data_uri(Path(mid), "audio/midi")}">{html.escape(Path(mid).name)}</a>'
                )
        parts.append(
            f'<div class="model"><h3>{label}</h3>{"".join(clips) or _missing("Audio")}'
            f"<p>MIDI: {' '.join(links) or 'none'}</p></div>"
        )
    return "".join(parts)


def render_html(data: ReportData) -> str:
    """The report as one HTML string, every image, clip and MIDI file embedded (no external files needed)."""
    split = data.metric_rows_from if data.metric_rows_from is not None else len(data.table_rows)
    table1 = data.table_rows[:split]
    metrics = data.table_rows[split:]
    ours = data.table_header[: len(data.table_header) - data.paper_columns]
    bodies: dict[str, str] = {
        "summary": f"<p>{html.escape(data.summary)}</p>" if data.summary else _missing("A summary"),
        "featured": _table(["setting", "value"], [(k, [v]) for k, v in data.featured], 0),
        "table1": _table(data.table_header, table1, data.paper_columns) if table1 else _missing("Table 1"),
        "metrics": _table(ours, [(lbl, c[: len(ours) - 1]) for lbl, c in metrics], 0)
        if metrics
        else _missing("The metrics table"),
        "goals": _table(["goal", *ours[1:]], data.goal_rows, 0)
        if data.goal_rows
        else _missing("The goals table"),
        "figure2": _img(data.figure2, "Figure 2"),
        "figure4": _img(data.figure4, "Figure 4"),
        "pianorolls": "".join(_img(p, f"piano roll {n}") for n, p in data.pianorolls.items())
        or _missing("Piano rolls"),
        "intervals": _img(data.intervals, "Interval histograms"),
        "listen": _listen(data),
        "command": f"<pre>{html.escape(data.command)}</pre><pre>"
        f"{html.escape(json.dumps(dict(data.config), indent=2, default=str))}</pre>",
        "versions": _table(["package", "version"], [(k, [str(v)]) for k, v in data.versions.items()], 0),
        "timings": _table(
            ["stage", "seconds"], [(k, [f"{float(v):.1f}"]) for k, v in data.timings.items()], 0
        ),
    }
    shown = [(key, title) for key, title in SECTIONS if key != "featured" or data.featured]
    nav = "".join(f'<a href="#{key}">{html.escape(title.split(":")[0])}</a>' for key, title in shown)
    sections = "".join(
        f'<section id="{key}"><h2>{html.escape(title)}</h2>{bodies[key]}</section>' for key, title in shown
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(data.title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(data.title)}</h1><nav>{nav}</nav>{sections}</body></html>\n"
    )


def write_report(path: PathLike, data: ReportData) -> Path:
    """Render :func:`render_html` and write it atomically; returns the path."""
    return write_text_atomic(path, render_html(data))
