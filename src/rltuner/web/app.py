"""The listening study's web app (Starlette): listeners hear blind A/B pairs and say which is more pleasing.

Routes (everything a browser can see is blind: no model, pair id or file name):

- ``GET /``: the page. A first visit creates a rater (a random token in an HttpOnly cookie).
- ``GET /r/{token}``: the rater's own link (to continue on another device): sets the cookie.
- ``GET /api/next``: the rater's progress and current pair (an opaque item id, two opaque audio URLs).
- ``POST /api/rate``: ``{"item", "prefer": "A"|"B", "strength": 1|2|3}`` (the side *as shown*).
- ``GET /audio/{id}``: one WAV, only for the rater it was issued to.
- ``GET /admin``, ``/admin/progress.json``, ``/admin/export.csv``: progress per model and per rater, and the
  ratings CSV; they need the admin token (``?token=`` or ``Authorization: Bearer``).

Limits: request bodies over :attr:`Limits.max_body` bytes get 413; each client address may create
:attr:`Limits.raters_per_minute` raters a minute and :attr:`Limits.max_raters` in all; each rater may submit
:attr:`Limits.ratings_per_minute` answers a minute (with a burst), beyond which the answer is 429.
"""

from __future__ import annotations

import csv
import html
import io
import json
import os
import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rltuner.errors import ConfigError, DatasetError
from rltuner.evaluation.study import load_key
from rltuner.web.store import DB_NAME, EXPORT_COLUMNS, RatingStore, SubmissionError, rows_to_ratings

STATIC_DIR = Path(__file__).with_name("static")
COOKIE = "rater"


@dataclass(frozen=True)
class Limits:
    """Sizes and rates the server accepts."""

    max_body: int = 1024  # bytes of a request body (an answer is ~80)
    max_raters: int = 1000  # raters in all
    raters_per_minute: int = 120  # new raters per client address and minute
    ratings_per_minute: int = 120  # answers per rater and minute...
    ratings_burst: int = 30  # ...with bursts of this many


@dataclass(frozen=True)
class StudyPairs:
    """The public part of a study folder: pair id -> the two WAV files (side a, side b)."""

    folder: Path
    audio: dict[str, tuple[Path, Path]]


def load_study_pairs(folder: str | Path) -> StudyPairs:
    """Read ``pairs.csv`` of a folder written by ``rltuner study make`` and check its audio files.

    Raises:
        DatasetError: no pairs.csv, missing columns, an audio file missing or outside the folder.
    """
    root = Path(folder).resolve()
    manifest = root / "pairs.csv"
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"{root} is not a study folder (no pairs.csv; run 'rltuner study make')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {manifest}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = set(reader.fieldnames or [])
    if "pair_id" in columns and not {"audio_a", "audio_b"} & columns:
        raise DatasetError(
            f"{root} was made with --no-audio (for simulated raters): it has nothing to listen to"
        )
    if not {"pair_id", "audio_a", "audio_b"} <= columns:
        raise DatasetError(f"{manifest}: needs the columns pair_id,audio_a,audio_b (see docs/study.md)")
    audio: dict[str, tuple[Path, Path]] = {}
    for line, row in enumerate(reader, start=2):
        sides = []
        for column in ("audio_a", "audio_b"):
            path = (root / row[column]).resolve()
            if not path.is_relative_to(root):
                raise DatasetError(f"{manifest} line {line}: {row[column]} is outside the study folder")
            if not path.is_file():
                raise DatasetError(f"{manifest} line {line}: audio file {row[column]} does not exist")
            sides.append(path)
        audio[row["pair_id"]] = (sides[0], sides[1])
    if not audio:
        raise DatasetError(f"{manifest} lists no pairs")
    return StudyPairs(root, audio)


class RateLimiter:
    """Token buckets by key: ``rate`` tokens a minute, at most ``burst`` saved up."""

    def __init__(self, per_minute: int, burst: int):
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                return False
            self._buckets[key] = (tokens - 1.0, now)
            return True


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``max_body`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await _error(413, f"request body over {self.max_body} bytes")(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLargeError
            return message

        try:
            await self.app(scope, counted, send)
        except _BodyTooLargeError:
            await _error(413, f"request body over {self.max_body} bytes")(scope, receive, send)


class _BodyTooLargeError(Exception):
    pass


class SecurityHeaders:
    """ASGI middleware: a strict content security policy, no caching of answers, no referrer."""

    HEADERS = (
        (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'"),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"x-frame-options", b"DENY"),
        (b"cache-control", b"no-store"),
    )

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.HEADERS if k not in names
                ]
            await send(message)

        await self.app(scope, receive, with_headers)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    study_dir: str | Path,
    *,
    admin_token: str,
    per_rater: int = 20,
    key_path: str | Path | None = None,
    limits: Limits | None = None,
    seed: int | None = None,
) -> Starlette:
    """The study's ASGI app.

    Args:
        study_dir: a folder written by ``rltuner study make``; ratings go to ``study_dir/ratings.sqlite``.
        admin_token: the secret of the admin view.
        per_rater: pairs each rater hears (at most the study's pairs).
        key_path: the study key, for the admin view's per-model progress (default: ``study_dir/key.json``
            when it exists; the listeners' pages never use it).
        limits: sizes and rates (default :class:`Limits`).
        seed: seed of assignments and presentation orders (None: fresh randomness).

    Raises:
        DatasetError: not a study folder, or a database of another study.
    """
    if len(admin_token) < 16:
        raise ConfigError("the admin token must be at least 16 characters")
    limits = limits or Limits()
    study = load_study_pairs(study_dir)
    store = RatingStore(study.folder / DB_NAME, list(study.audio), per_rater=per_rater, seed=seed)
    key_file = Path(key_path) if key_path is not None else study.folder / "key.json"
    key = load_key(key_file) if key_path is not None or key_file.is_file() else None  # given: must exist
    if key is not None and not set(study.audio) <= set(key):
        raise DatasetError(
            f"{key_file} is the key of another study (it lacks pairs of {study.folder}/pairs.csv)"
        )
    new_raters = RateLimiter(limits.raters_per_minute, limits.raters_per_minute)
    answers = RateLimiter(limits.ratings_per_minute, limits.ratings_burst)
    page = (STATIC_DIR / "index.html").read_text(encoding="utf-8")

    def current_rater(request: Request) -> int | None:
        return store.rater_id(request.cookies.get(COOKIE))

    def with_cookie(response: Response, token: str) -> Response:
        response.set_cookie(COOKIE, token, max_age=60 * 24 * 3600, httponly=True, samesite="strict")
        return response

    async def index(request: Request) -> Response:
        if current_rater(request) is not None:
            return HTMLResponse(page)
        host = request.client.host if request.client else "?"
        if store.rater_count() >= limits.max_raters:
            return HTMLResponse("<p>This study has all the listeners it needs. Thank you!</p>", 503)
        if not new_raters.allow(host):
            return HTMLResponse(
                "<p>Too many new listeners from your address; try again in a minute.</p>", 429
            )
        return with_cookie(HTMLResponse(page), store.new_rater())

    async def rater_link(request: Request) -> Response:
        token = request.path_params["token"]
        if store.rater_id(token) is None:
            return HTMLResponse("<p>Unknown link.</p>", 404)
        return with_cookie(RedirectResponse("/", 303), token)

    def state(rater: int, token: str) -> dict[str, Any]:
        item = store.next_item(rater)
        answered, assigned = store.counts(rater)
        body: dict[str, Any] = {"answered": answered, "total": assigned, "link": f"/r/{token}"}
        if item is None:
            body["done"] = True
        else:
            body.update(
                done=False,
                item=item.item,
                position=item.position,
                audio_a=f"/audio/{item.audio_a}",
                audio_b=f"/audio/{item.audio_b}",
            )
        return body

    async def api_next(request: Request) -> Response:
        rater = current_rater(request)
        if rater is None:
            return _error(401, "no rater: open the study page first")
        return JSONResponse(state(rater, request.cookies[COOKIE]))

    async def api_rate(request: Request) -> Response:
        rater = current_rater(request)
        if rater is None:
            return _error(401, "no rater: open the study page first")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "send the answer as application/json")
        if not answers.allow(str(rater)):
            return _error(429, "too many answers at once; slow down")
        try:
            data = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the answer is not JSON")
        if not isinstance(data, dict) or set(data) != {"item", "prefer", "strength"}:
            return _error(400, "the answer needs exactly: item, prefer, strength")
        item, prefer, strength = data["item"], data["prefer"], data["strength"]
        if not isinstance(item, str) or not isinstance(strength, int) or isinstance(strength, bool):
            return _error(400, "item must be a string and strength an integer")
        try:
            store.rate(rater, item, str(prefer), strength)
        except SubmissionError as exc:
            return _error(exc.status, str(exc))
        return JSONResponse(state(rater, request.cookies[COOKIE]))

    async def audio(request: Request) -> Response:
        rater = current_rater(request)
        found = None if rater is None else store.audio(rater, request.path_params["audio_id"])
        if found is None:
            return _error(404, "no such audio")
        pair_id, side = found
        path = study.audio[pair_id][0 if side == "a" else 1]
        # No filename: no Content-Disposition; the WAV holds only fmt and data chunks (no metadata).
        response = FileResponse(
            path, media_type="audio/wav", stat_result=os.stat(path), headers={"cache-control": "private"}
        )
        for header in ("etag", "last-modified"):  # nothing that could tell files (or their order) apart
            del response.headers[header]
        return response

    def admin_ok(request: Request) -> bool:
        given = request.query_params.get("token", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        return secrets.compare_digest(given.encode(), admin_token.encode())

    def progress() -> dict[str, Any]:
        raters = [{"rater": r, "answered": n, "assigned": total} for r, n, total in store.progress()]
        ratings = rows_to_ratings(store.export_rows())
        models: dict[str, dict[str, int]] = {}
        if key is not None:
            for pair_id, count in store.assignment_counts().items():
                for model in key.get(pair_id, ()):
                    models.setdefault(model, {"assigned": 0, "rated": 0, "wins": 0})["assigned"] += count
            for r in ratings:
                a, b = key[r.pair_id]
                for model in (a, b):
                    models[model]["rated"] += 1
                models[a if r.choice == "A" else b]["wins"] += 1
        return {"ratings": len(ratings), "raters": raters, "models": models}

    async def admin(request: Request) -> Response:
        if not admin_ok(request):
            return _error(403, "admin token required")
        return HTMLResponse(_admin_html(progress(), admin_token))

    async def admin_progress(request: Request) -> Response:
        if not admin_ok(request):
            return _error(403, "admin token required")
        return JSONResponse(progress())

    async def admin_export(request: Request) -> Response:
        if not admin_ok(request):
            return _error(403, "admin token required")
        return Response(export_csv(store.export_rows()), media_type="text/csv")

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/r/{token}", rater_link),
            Route("/api/next", api_next),
            Route("/api/rate", api_rate, methods=["POST"]),
            Route("/audio/{audio_id}", audio),
            Route("/admin", admin),
            Route("/admin/progress.json", admin_progress),
            Route("/admin/export.csv", admin_export),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders), Middleware(BodyLimit, max_body=limits.max_body)],
    )
    app.state.store = store
    return app


def export_csv(rows: list[dict[str, str]]) -> str:
    """The ratings CSV (header :data:`~rltuner.web.store.EXPORT_COLUMNS`) of export rows."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(EXPORT_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _admin_html(progress: Mapping[str, Any], token: str) -> str:
    def table(head: list[str], rows: list[list[Any]]) -> str:
        cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>" for r in rows)
        return f"<table><tr>{cells}</tr>{body}</table>"

    models = [
        [m, v["assigned"], v["rated"], v["wins"], f"{v['wins'] / v['rated']:.2f}" if v["rated"] else "-"]
        for m, v in sorted(progress["models"].items())
    ]
    raters = [[r["rater"], r["answered"], r["assigned"]] for r in progress["raters"]]
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>Study admin</title>'
        '<link rel="stylesheet" href="/static/style.css"></head><body class="admin">'
        f"<h1>Listening study: {progress['ratings']} ratings</h1>"
        "<h2>Per model</h2>"
        + (
            table(["model", "comparisons assigned", "rated", "wins", "share"], models)
            if models
            else "<p>no key</p>"
        )
        + f"<h2>Per rater ({len(raters)})</h2>"
        + table(["rater", "answered", "assigned"], raters)
        + f'<p><a href="/admin/export.csv?token={html.escape(token)}">Export the ratings (CSV)</a> '
        "(or <code>rltuner study export</code>).</p></body></html>"
    )
