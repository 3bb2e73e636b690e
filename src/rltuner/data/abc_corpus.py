"""The default melody source: the folk-tune collections that ship inside music21's corpus, as ABC text.

music21's own ABC parser needs about 410 CPU-seconds for these ~12,900 tunes, so tunes are parsed with
``symusic.Score.from_abc`` instead (it embeds abc2midi and expands repeats). abc2midi reads only the first
tune of a text, so files are split on ``X:`` first; grace notes, decorations and chord symbols are stripped
before parsing (abc2midi would play grace notes as real notes and chord symbols as accompaniment tracks),
and its chatter on the C-level stdout/stderr is silenced. The notes then go through the shared quantizer in
:mod:`rltuner.data.midi_import` (key signature -> C major / A minor, octave shift, 16th grid, encoding).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from rltuner.data.midi_import import (
    Extraction,
    ExtractSettings,
    empty_extraction,
    parallel_map,
    score_to_melodies,
)
from rltuner.errors import ConfigError, RLTunerError


@dataclass(frozen=True)
class Collection:
    """One folk collection inside music21's corpus."""

    name: str  # what users type: --collections essen,oneills
    folder: str  # folder under <music21>/corpus/
    title: str
    licence: str


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        Collection(
            "essen",
            "essenFolksong",
            "Essen Folksong Collection (ABC by Seymour Shlien)",
            "permission for non-commercial distribution and use (see essenFolksong/license.txt in music21)",
        ),
        Collection(
            "oneills", "oneills1850", "O'Neill's Music of Ireland (1850 tunes)", "no licence file shipped"
        ),
        Collection("ryans", "ryansMammoth", "Ryan's Mammoth Collection", "no licence file shipped"),
        Collection("airds", "airdsAirs", "Aird's Selection of Airs", "no licence file shipped"),
        Collection("misc", "miscFolk", "miscellaneous folk tunes", "no licence file shipped"),
    )
}
# The folder names are accepted too (``--collections essenFolksong``).
_ALIASES = {c.folder.lower(): c.name for c in COLLECTIONS.values()}


@dataclass(frozen=True)
class AbcTune:
    """One tune's ABC text (with the file header prepended) and where it came from."""

    collection: str
    source: str  # file name and tune number, for messages
    text: str


def music21_corpus_dir() -> Path:
    """The ``corpus`` folder of the installed music21 (found without importing music21, which is slow)."""
    import importlib.util

    spec = importlib.util.find_spec("music21")
    if spec is None or spec.origin is None:
        raise RLTunerError(
            "music21 is not installed; it carries the default folk corpus (pip install music21)"
        )
    return Path(spec.origin).parent / "corpus"


def resolve_collections(include: Sequence[str] | None = None, exclude: Sequence[str] = ()) -> list[str]:
    """Collection names to use: ``include`` (default: all) minus ``exclude``; names or folder names.

    Raises:
        ConfigError: an unknown name, or nothing left.
    """

    def canon(name: str) -> str:
        key = name.strip().lower()
        key = _ALIASES.get(key, key)
        if key not in COLLECTIONS:
            raise ConfigError(f"unknown collection {name!r}; known: {', '.join(COLLECTIONS)}")
        return key

    chosen = [canon(n) for n in include] if include else list(COLLECTIONS)
    dropped = {canon(n) for n in exclude}
    names = [n for n in dict.fromkeys(chosen) if n not in dropped]
    if not names:
        raise ConfigError("no collection left to build from (all excluded)")
    return names


_FIELD = re.compile(r"^[A-Za-z+]:")
_GRACE = re.compile(r"\{[^}]*\}")
_QUOTED = re.compile(r'"[^"]*"')  # chord symbols and text annotations
_DECORATION = re.compile(r"![^!\n]*!|\+[^+\n:]*\+")  # !trill! and the older +trill+
_SHORT_DECORATION = re.compile(r"[~.HLMOPSTuv](?=[\^_=]*[A-Ga-gz(\[{])")  # ~ roll, . staccato, T trill, ...


def clean_abc_body(line: str) -> str:
    """Strip grace notes, chord symbols/annotations and decorations from one line of tune body."""
    line = _QUOTED.sub("", line)
    line = _GRACE.sub("", line)
    line = _DECORATION.sub("", line)
    return _SHORT_DECORATION.sub("", line)


def split_abc_tunes(text: str) -> list[str]:
    """Split an ABC file into tunes at each ``X:`` line; header fields before the first tune are prepended.

    Body lines are cleaned with :func:`clean_abc_body`; field lines (``K:``, ``M:`` ...) are kept as they are.
    """
    header: list[str] = []
    tunes: list[list[str]] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        line = raw.rstrip()
        if line.startswith("X:"):
            tunes.append([line, *header])
            continue
        if not tunes:
            if _FIELD.match(line) or line.startswith("%%"):
                header.append(line)
            continue
        if _FIELD.match(line) or line.startswith("%"):
            tunes[-1].append(line)
        else:
            tunes[-1].append(clean_abc_body(line))
    return ["\n".join(t) + "\n" for t in tunes]


def iter_collection_tunes(names: Sequence[str], corpus_dir: Path | None = None) -> Iterator[AbcTune]:
    """Every tune of the named collections, in a fixed order (collection, file name, position).

    Raises:
        RLTunerError: a collection folder is missing from the installed music21.
    """
    root = corpus_dir or music21_corpus_dir()
    for name in names:
        folder = root / COLLECTIONS[name].folder
        if not folder.is_dir():
            raise RLTunerError(f"collection {name!r} not found at {folder} (is music21's corpus installed?)")
        for path in sorted(folder.rglob("*.abc")):
            text = path.read_text(encoding="utf-8", errors="replace")
            for i, tune in enumerate(split_abc_tunes(text)):
                yield AbcTune(name, f"{path.relative_to(root)}#{i + 1}", tune)


@contextlib.contextmanager
def silenced_c_output() -> Iterator[None]:
    """Send the process's file descriptors 1 and 2 to /dev/null (abc2midi prints warnings at the C level)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def abc_to_melodies(text: str, settings: ExtractSettings) -> Extraction:
    """Parse one ABC tune and extract its melody (the first voice); failures are counted, not raised.

    A text longer than ``limits.DEFAULT.max_file_bytes`` is dropped as ``limit``; the parsed score goes
    through the same limits as a MIDI file (:func:`~rltuner.data.midi_import.score_to_melodies`).

    Returns:
        An :class:`Extraction` with ``counts["tunes"] == 1``.
    """
    import symusic

    from rltuner.limits import DEFAULT as LIMITS

    if len(text) > LIMITS.max_file_bytes:  # before abc2midi sees it
        out = empty_extraction()
        out.counts.update({"tunes": 1, "limit": 1})
        return out
    try:
        with silenced_c_output():
            score = symusic.Score.from_abc(text)
    except Exception:  # abc2midi gives up with a RuntimeError ("did not create output.mid")
        out = empty_extraction()
        out.counts.update({"tunes": 1, "unparseable": 1})
        return out
    return score_to_melodies(score, settings, first_track_only=True)


def _extract_batch(args: tuple[list[str], ExtractSettings]) -> Extraction:
    """Tunes in a worker, each under the per-file time limit (past it: counted as ``timeout``)."""
    from rltuner.errors import ReadTimeoutError
    from rltuner.limits import DEFAULT as LIMITS
    from rltuner.limits import time_limit

    texts, settings = args
    out = empty_extraction()
    for text in texts:
        try:
            with time_limit(LIMITS.max_file_seconds):
                result = abc_to_melodies(text, settings)
        except ReadTimeoutError:
            result = empty_extraction()
            result.counts.update({"tunes": 1, "timeout": 1})
        out.merge(result)
    return out


def abc_texts_to_melodies(
    texts: Sequence[str],
    settings: ExtractSettings | None = None,
    *,
    jobs: int = 0,
    progress: bool = True,
    batch_size: int = 100,
) -> Extraction:
    """Extract melodies from many ABC tunes, over a process pool when ``jobs != 1``; order is kept.

    Args:
        texts: one tune per string (see :func:`split_abc_tunes`).
        settings: extraction settings (defaults when None).
        jobs: worker processes; 0 = one per CPU core.
        progress: show a progress bar (in batches of ``batch_size`` tunes).
        batch_size: tunes per pool task (large enough that pickling costs little).
    """
    settings = settings or ExtractSettings()
    settings.validate()
    batches = [(list(texts[i : i + batch_size]), settings) for i in range(0, len(texts), batch_size)]
    total = empty_extraction()
    sizes = [len(b[0]) for b in batches]
    for result in parallel_map(_extract_batch, batches, jobs, progress, "tunes", sizes=sizes, chunksize=1):
        total.merge(result)
    return total


def build_folk_corpus(
    collections: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    settings: ExtractSettings | None = None,
    *,
    jobs: int = 0,
    progress: bool = True,
) -> tuple[Extraction, list[dict[str, str]]]:
    """Melodies from music21's folk collections.

    Args:
        collections: names to include (default: all of :data:`COLLECTIONS`).
        exclude: names to leave out.
        settings: extraction settings.
        jobs: worker processes (0 = all cores).
        progress: show a progress bar.

    Returns:
        The extraction (``counts["files"]`` = ABC files read) and one source record per collection
        (name, title, folder, licence) for the manifest.
    """
    names = resolve_collections(collections, exclude)
    root = music21_corpus_dir()
    tunes = list(iter_collection_tunes(names, root))
    result = abc_texts_to_melodies([t.text for t in tunes], settings, jobs=jobs, progress=progress)
    result.counts["files"] += len({t.source.split("#")[0] for t in tunes})
    sources = [
        {
            "kind": "music21-abc",
            "name": n,
            "title": COLLECTIONS[n].title,
            "folder": COLLECTIONS[n].folder,
            "licence": COLLECTIONS[n].licence,
        }
        for n in names
    ]
    return result, sources
