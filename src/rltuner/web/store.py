"""The listening study's ratings database: raters, their balanced pair assignments and their answers (SQLite).

One file, ``STUDY_DIR/ratings.sqlite``, in WAL mode with ``synchronous=FULL``: every answer is its own
transaction, committed before the browser hears back, so a crash or Ctrl-C loses nothing already submitted.
All writes go through one connection guarded by a lock (the web server and ``rltuner study export`` may run
at the same time: WAL lets readers in while the server writes).

Tables:

- ``meta``: the study's fingerprint (the hash of its pair ids), so a database is never reused for another
  study folder's pairs.
- ``raters``: ``id`` (public, ``r001``...) and ``token`` (the secret in the rater's cookie or link).
- ``assignments``: the pairs a rater hears, in order (``position`` 1..n). ``flipped`` records the randomised
  presentation order: 1 when the study's side B plays as the page's "A". ``item``, ``audio_a`` and
  ``audio_b`` are random opaque ids, the only names the browser ever sees.
- ``ratings``: one answer per assignment (primary key ``rater, position``), in the study's sides.
"""

from __future__ import annotations

import hashlib
import os
import random
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rltuner.errors import DatasetError, RLTunerError
from rltuner.evaluation.study import Rating

DB_NAME = "ratings.sqlite"
SCHEMA_VERSION = "1"
STRENGTHS = (1, 2, 3)  # slightly, clearly, much more pleasing

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS raters (
    id INTEGER PRIMARY KEY,
    token TEXT NOT NULL UNIQUE,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    rater INTEGER NOT NULL REFERENCES raters(id),
    position INTEGER NOT NULL,
    pair_id TEXT NOT NULL,
    flipped INTEGER NOT NULL,
    item TEXT NOT NULL UNIQUE,
    audio_a TEXT NOT NULL UNIQUE,
    audio_b TEXT NOT NULL UNIQUE,
    PRIMARY KEY (rater, position),
    UNIQUE (rater, pair_id)
);
CREATE TABLE IF NOT EXISTS ratings (
    rater INTEGER NOT NULL,
    position INTEGER NOT NULL,
    pair_id TEXT NOT NULL,
    choice TEXT NOT NULL CHECK (choice IN ('A', 'B')),
    strength INTEGER NOT NULL,
    flipped INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (rater, position),
    FOREIGN KEY (rater, position) REFERENCES assignments(rater, position)
);
"""


class SubmissionError(RLTunerError):
    """A request the store refuses; ``status`` is the HTTP status the web app answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Item:
    """What the page shows a rater next: no pair id, no model, no file name."""

    item: str
    position: int
    audio_a: str
    audio_b: str


def rater_label(rater: int) -> str:
    """The public id of a rater in exports and the admin view (never the secret token)."""
    return f"r{rater:03d}"


def study_fingerprint(pair_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(pair_ids).encode()).hexdigest()[:16]


class RatingStore:
    """Raters, assignments and answers of one study.

    Args:
        path: the SQLite file (created).
        pair_ids: the study's pairs (``pairs.csv``), recorded on first use and checked afterwards.
        per_rater: pairs each rater hears (at most the number of pairs).
        seed: random seed of assignments and presentation orders (None: fresh randomness).

    Raises:
        DatasetError: the database belongs to another study or cannot be opened.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        pair_ids: Sequence[str],
        *,
        per_rater: int = 20,
        seed: int | None = None,
    ):
        if not pair_ids:
            raise DatasetError("the study has no pairs")
        self.path = Path(path)
        self.pair_ids = list(pair_ids)
        self.per_rater = max(1, min(per_rater, len(self.pair_ids)))
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._db = _connect(self.path)
        fingerprint = study_fingerprint(self.pair_ids)
        with self._write() as db:
            row = db.execute("SELECT value FROM meta WHERE name = 'study'").fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO meta VALUES ('study', ?), ('schema', ?)", (fingerprint, SCHEMA_VERSION)
                )
            elif row[0] != fingerprint:
                raise DatasetError(
                    f"{self.path} holds ratings of another set of pairs; move it away or use that study's folder"
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so a read-then-write (balancing) is never stale.
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def new_rater(self) -> str:
        """Create a rater with a balanced set of pairs in a random order; returns their secret token.

        Balanced: each new rater gets the ``per_rater`` pairs assigned least often so far (ties at random),
        so assignment counts of any two pairs never differ by more than one.
        """
        token = secrets.token_urlsafe(18)
        with self._write() as db:
            cur = db.execute("INSERT INTO raters (token, created) VALUES (?, ?)", (token, time.time()))
            rater = int(cur.lastrowid or 0)
            counts = dict.fromkeys(self.pair_ids, 0)
            for pair_id, n in db.execute("SELECT pair_id, COUNT(*) FROM assignments GROUP BY pair_id"):
                if pair_id in counts:
                    counts[pair_id] = n
            ranked = sorted(self.pair_ids, key=lambda p: (counts[p], self._rng.random()))
            chosen = ranked[: self.per_rater]
            self._rng.shuffle(chosen)
            rows = [
                (
                    rater,
                    position,
                    pair_id,
                    self._rng.randrange(2),
                    secrets.token_urlsafe(12),
                    secrets.token_urlsafe(12),
                    secrets.token_urlsafe(12),
                )
                for position, pair_id in enumerate(chosen, start=1)
            ]
            db.executemany("INSERT INTO assignments VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        return token

    def rater_id(self, token: str | None) -> int | None:
        """The rater behind a token, or None."""
        if not token:
            return None
        with self._lock:
            row = self._db.execute("SELECT id FROM raters WHERE token = ?", (token,)).fetchone()
        return None if row is None else int(row[0])

    def next_item(self, rater: int) -> Item | None:
        """The rater's first unanswered pair (None when all are answered)."""
        with self._lock:
            row = self._db.execute(
                "SELECT a.position, a.item, a.audio_a, a.audio_b FROM assignments a "
                "LEFT JOIN ratings r ON r.rater = a.rater AND r.position = a.position "
                "WHERE a.rater = ? AND r.position IS NULL ORDER BY a.position LIMIT 1",
                (rater,),
            ).fetchone()
        if row is None:
            return None
        return Item(item=row[1], position=int(row[0]), audio_a=row[2], audio_b=row[3])

    def rater_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM raters").fetchone()[0])

    def counts(self, rater: int) -> tuple[int, int]:
        """(pairs answered, pairs assigned) of a rater."""
        with self._lock:
            answered = self._db.execute("SELECT COUNT(*) FROM ratings WHERE rater = ?", (rater,)).fetchone()
            assigned = self._db.execute(
                "SELECT COUNT(*) FROM assignments WHERE rater = ?", (rater,)
            ).fetchone()
        return int(answered[0]), int(assigned[0])

    def audio(self, rater: int, audio_id: str) -> tuple[str, str] | None:
        """The (pair id, study side "a"/"b") behind one of this rater's opaque audio ids, or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT pair_id, flipped, audio_a = ? FROM assignments "
                "WHERE rater = ? AND (audio_a = ? OR audio_b = ?)",
                (audio_id, rater, audio_id, audio_id),
            ).fetchone()
        if row is None:
            return None
        shown_a = bool(row[2])
        study_a = shown_a != bool(row[1])  # flipped swaps which study side plays as the page's A
        return str(row[0]), "a" if study_a else "b"

    def rate(self, rater: int, item: str, prefer: str, strength: int) -> int:
        """Record one answer in its own transaction; returns the position answered.

        Args:
            rater: the rater (from their token).
            item: the opaque id of the pair as shown.
            prefer: "A" or "B", the side *as shown* on the page.
            strength: 1, 2 or 3 (slightly, clearly, much more pleasing).

        Raises:
            SubmissionError: 400 for a malformed answer, 404 for an item that is not this rater's, 409 for a
                pair already answered or not the current one. Nothing is written then.
        """
        if prefer not in ("A", "B"):
            raise SubmissionError(400, "prefer must be 'A' or 'B'")
        if strength not in STRENGTHS:
            raise SubmissionError(400, f"strength must be one of {', '.join(map(str, STRENGTHS))}")
        with self._write() as db:
            row = db.execute(
                "SELECT position, pair_id, flipped FROM assignments WHERE rater = ? AND item = ?",
                (rater, item),
            ).fetchone()
            if row is None:
                raise SubmissionError(404, "no such pair for this rater")
            position, pair_id, flipped = int(row[0]), str(row[1]), int(row[2])
            done = db.execute(
                "SELECT 1 FROM ratings WHERE rater = ? AND position = ?", (rater, position)
            ).fetchone()
            if done is not None:
                raise SubmissionError(409, "this pair is already rated")
            current = db.execute(
                "SELECT MIN(a.position) FROM assignments a LEFT JOIN ratings r "
                "ON r.rater = a.rater AND r.position = a.position WHERE a.rater = ? AND r.position IS NULL",
                (rater,),
            ).fetchone()[0]
            if position != current:
                raise SubmissionError(409, "this is not the current pair; reload the page")
            choice = prefer if not flipped else ("B" if prefer == "A" else "A")
            db.execute(
                "INSERT INTO ratings VALUES (?, ?, ?, ?, ?, ?, ?)",
                (rater, position, pair_id, choice, strength, flipped, time.time()),
            )
        return position

    def export_rows(self) -> list[dict[str, str]]:
        """The ratings CSV rows (see :func:`export_rows`)."""
        with self._lock:
            return _export_rows(self._db)

    def progress(self) -> list[tuple[str, int, int]]:
        """Per rater: (public id, answered, assigned)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT a.rater, COUNT(r.position), COUNT(*) FROM assignments a LEFT JOIN ratings r "
                "ON r.rater = a.rater AND r.position = a.position GROUP BY a.rater ORDER BY a.rater"
            ).fetchall()
        return [(rater_label(int(r)), int(n), int(total)) for r, n, total in rows]

    def assignment_counts(self) -> dict[str, int]:
        """Per pair: how many raters were assigned it."""
        counts = dict.fromkeys(self.pair_ids, 0)
        with self._lock:
            for pair_id, n in self._db.execute("SELECT pair_id, COUNT(*) FROM assignments GROUP BY pair_id"):
                counts[str(pair_id)] = int(n)
        return counts


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(_SCHEMA)
    except sqlite3.Error as exc:
        raise DatasetError(f"cannot open the ratings database {path}: {exc}") from None
    return db


EXPORT_COLUMNS = ("pair_id", "choice", "rater_id", "strength", "position", "flipped", "time")


def _export_rows(db: sqlite3.Connection) -> list[dict[str, str]]:
    rows = db.execute(
        "SELECT pair_id, choice, rater, strength, position, flipped, created FROM ratings "
        "ORDER BY created, rater, position"
    ).fetchall()
    return [
        {
            "pair_id": str(p),
            "choice": str(c),
            "rater_id": rater_label(int(r)),
            "strength": str(s),
            "position": str(pos),
            "flipped": str(f),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)),
        }
        for p, c, r, s, pos, f, t in rows
    ]


def export_rows(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """The answers in a ratings database, read-only, as rows of the documented ratings CSV.

    Columns (:data:`EXPORT_COLUMNS`): ``pair_id,choice,rater_id,strength`` (what ``study analyze`` reads;
    ``choice`` is the study's side, whatever order the page played them in), then the rater's ``position``
    (1..n), ``flipped`` (1: the study's side B was played as the page's A) and the ``time`` (UTC).

    Raises:
        DatasetError: no database there, or not one written by ``rltuner study serve``.
    """
    source = Path(path)
    if not source.is_file():
        raise DatasetError(f"no ratings database at {source} (run 'rltuner study serve' first)")
    try:
        db = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30.0)
        try:
            return _export_rows(db)
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise DatasetError(f"cannot read the ratings database {source}: {exc}") from None


def rows_to_ratings(rows: Sequence[dict[str, str]]) -> list[Rating]:
    return [Rating(r["pair_id"], r["choice"], r["rater_id"], float(r["strength"])) for r in rows]
