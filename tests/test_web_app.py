"""The study web app through its HTTP interface: flow, blindness, safety, balance, persistence, export."""

from __future__ import annotations

import csv
import io
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from rltuner.cli.main import cli
from rltuner.errors import DatasetError
from rltuner.evaluation.study import load_key, make_study
from rltuner.web.app import Limits, create_app
from rltuner.web.store import DB_NAME, RatingStore, export_rows

TOKEN = "admin-token-for-tests-0123"
MODELS = ("note_rnn", "q_learning")


@pytest.fixture(scope="module")
def study_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    samples = {name: rng.integers(2, 38, size=(12, 32)) for name in MODELS}
    folder = tmp_path_factory.mktemp("study")
    make_study(samples, folder, n_pairs=24, seed=0, sample_rate=8000, midi=False, progress=False)
    return folder


@pytest.fixture
def study(study_template: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "study"
    shutil.copytree(study_template, folder)
    return folder


def client(study: Path, **kwargs: object) -> TestClient:
    options: dict[str, object] = {"admin_token": TOKEN, "per_rater": 20, "seed": 0} | kwargs
    return TestClient(create_app(study, **options))  # type: ignore[arg-type]


def answer(c: TestClient, item: str, prefer: str = "A", strength: int = 2) -> object:
    return c.post("/api/rate", json={"item": item, "prefer": prefer, "strength": strength})


def test_flow_records_answers_in_the_studys_sides(study: Path) -> None:
    c = client(study)
    assert c.get("/").status_code == 200 and "rater" in c.cookies
    store: RatingStore = c.app.state.store  # type: ignore[attr-defined]
    rater = store.rater_id(c.cookies["rater"])
    assert rater is not None
    shown_study_sides = []
    for position in range(1, 21):
        state = c.get("/api/next").json()
        assert (state["position"], state["total"], state["answered"], state["done"]) == (
            position,
            20,
            position - 1,
            False,
        )
        pair_id, side = store.audio(rater, state["audio_a"].removeprefix("/audio/")) or ("", "")
        shown_study_sides.append((pair_id, side))
        prefer = "A" if position % 3 else "B"
        response = c.post(
            "/api/rate", json={"item": state["item"], "prefer": prefer, "strength": 1 + position % 3}
        )
        assert response.status_code == 200
    assert c.get("/api/next").json() == {
        "answered": 20,
        "total": 20,
        "link": f"/r/{c.cookies['rater']}",
        "done": True,
    }
    rows = export_rows(study / DB_NAME)
    assert len(rows) == 20 and len({r["pair_id"] for r in rows}) == 20
    for position, row in enumerate(rows, start=1):
        pair_id, side_shown_as_a = shown_study_sides[position - 1]
        prefer = "A" if position % 3 else "B"
        # the page's A is the study's side a unless the order was flipped; the stored choice is the study's
        expected = prefer if side_shown_as_a == "a" else {"A": "B", "B": "A"}[prefer]
        assert row["pair_id"] == pair_id and row["choice"] == expected
        assert row["flipped"] == ("0" if side_shown_as_a == "a" else "1")
        assert row["strength"] == str(1 + position % 3) and row["rater_id"] == "r001"
    flips = [r["flipped"] for r in rows]
    assert "0" in flips and "1" in flips  # the order is randomised per pair


def test_nothing_the_browser_gets_names_a_model(study: Path) -> None:
    c = client(study)
    seen = [c.get("/").text, c.get("/static/app.js").text, c.get("/static/style.css").text]
    tokens: list[str] = []
    for _ in range(5):
        state = c.get("/api/next").json()
        seen.append(json.dumps(state))
        tokens += [state["item"], state["audio_a"][7:], state["audio_b"][7:], state["link"][3:]]
        for side in ("audio_a", "audio_b"):
            audio = c.get(state[side])
            assert audio.status_code == 200 and audio.headers["content-type"] == "audio/wav"
            assert "content-disposition" not in audio.headers and "etag" not in audio.headers
            seen.append(json.dumps(dict(audio.headers)))
            data = audio.content
            chunks = []  # a WAV of only the 'fmt ' and 'data' chunks: no metadata
            offset = 12
            while offset < len(data):
                chunks.append(data[offset : offset + 4])
                offset += 8 + int.from_bytes(data[offset + 4 : offset + 8], "little")
            assert data[:4] == b"RIFF" and chunks == [b"fmt ", b"data"]
        answer(c, state["item"])
    text = "\n".join(seen)
    for token in tokens:  # random ids could spell anything by chance
        text = text.replace(token, "<id>")
    hints = [*MODELS, "note", "rnn", "model", "p001", "p01", ".wav", "pairs.csv", "key.json", "midi"]
    assert [h for h in hints if h in text.lower()] == []


def test_bad_and_replayed_submissions_change_nothing(study: Path) -> None:
    c, other = client(study), None
    c.get("/")
    first = c.get("/api/next").json()
    assert answer(c, first["item"]).status_code == 200  # type: ignore[attr-defined]
    cases = [
        (c.post("/api/rate", json={"item": first["item"], "prefer": "A", "strength": 2}), 409),  # replay
        (c.post("/api/rate", json={"item": "no-such-item", "prefer": "A", "strength": 2}), 404),
        (
            c.post(
                "/api/rate", json={"item": c.get("/api/next").json()["item"], "prefer": "C", "strength": 2}
            ),
            400,
        ),
        (c.post("/api/rate", json={"item": first["item"], "prefer": "A", "strength": 7}), 400),
        (c.post("/api/rate", json={"item": first["item"], "prefer": "A", "strength": True}), 400),
        (c.post("/api/rate", json={"item": first["item"], "prefer": "A"}), 400),
        (c.post("/api/rate", json=["A"]), 400),
        (c.post("/api/rate", content=b"{not json", headers={"content-type": "application/json"}), 400),
        (
            c.post(
                "/api/rate", content=b"item=x", headers={"content-type": "application/x-www-form-urlencoded"}
            ),
            415,
        ),
        (c.post("/api/rate", content=b"x" * 5000, headers={"content-type": "application/json"}), 413),
        (c.get("/audio/not-an-audio-id"), 404),
        (c.get("/admin"), 403),
        (c.get("/admin/export.csv?token=wrong-token-wrong-token"), 403),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json") and response.json()["error"]
    # another rater cannot answer, hear or see this rater's pairs
    other = client(study)
    other.get("/")
    current = c.get("/api/next").json()
    assert answer(other, current["item"]).status_code == 404  # type: ignore[attr-defined]
    assert other.get(current["audio_a"]).status_code == 404
    fresh = TestClient(c.app)
    assert fresh.get("/api/next").status_code == 401
    assert (
        fresh.post("/api/rate", json={"item": current["item"], "prefer": "A", "strength": 1}).status_code
        == 401
    )
    assert len(export_rows(study / DB_NAME)) == 1


def test_rates_and_sizes_are_limited(study: Path) -> None:
    c = client(study, limits=Limits(ratings_per_minute=1, ratings_burst=3, raters_per_minute=2, max_raters=3))
    c.get("/")
    statuses = [answer(c, c.get("/api/next").json()["item"]).status_code for _ in range(5)]  # type: ignore[attr-defined]
    assert statuses == [200, 200, 200, 429, 429]
    assert len(export_rows(study / DB_NAME)) == 3
    second = TestClient(c.app)
    assert second.get("/").status_code == 200  # the second new rater from this address this minute
    assert TestClient(c.app).get("/").status_code == 429
    store: RatingStore = c.app.state.store  # type: ignore[attr-defined]
    store.new_rater()
    assert TestClient(c.app).get("/").status_code == 503  # all three raters exist


def test_pairs_are_balanced_across_raters_and_never_repeated(study: Path) -> None:
    c = client(study, per_rater=10)
    store: RatingStore = c.app.state.store  # type: ignore[attr-defined]
    for raters in range(1, 8):
        store.new_rater()
        counts = store.assignment_counts()
        assert sum(counts.values()) == 10 * raters
        assert max(counts.values()) - min(counts.values()) <= 1
    with sqlite3.connect(study / DB_NAME) as db:
        assert db.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT rater, pair_id FROM assignments)"
        ).fetchone() == (70,)
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_progress_survives_a_restart_and_the_link_resumes(study: Path) -> None:
    c = client(study)
    c.get("/")
    for _ in range(7):
        answer(c, c.get("/api/next").json()["item"])
    link = c.get("/api/next").json()["link"]
    c.app.state.store.close()  # type: ignore[attr-defined]
    restarted = client(study)
    phone = TestClient(restarted.app, follow_redirects=False)
    response = phone.get(link)
    assert response.status_code == 303 and "rater" in response.cookies
    phone.cookies.set("rater", response.cookies["rater"])
    state = phone.get("/api/next").json()
    assert (state["position"], state["answered"]) == (8, 7)
    assert TestClient(restarted.app).get("/r/unknown-token").status_code == 404


def test_a_database_of_another_study_is_refused(study: Path, tmp_path: Path) -> None:
    RatingStore(tmp_path / "other.sqlite", ["x1", "x2"]).close()
    shutil.copy(tmp_path / "other.sqlite", study / DB_NAME)
    with pytest.raises(DatasetError, match="another set of pairs"):
        create_app(study, admin_token=TOKEN)


def test_admin_progress_export_and_the_cli(study: Path, tmp_path: Path) -> None:
    c = client(study)
    for _ in range(2):
        rater = TestClient(c.app)
        rater.get("/")
        for _ in range(4):
            answer(rater, rater.get("/api/next").json()["item"])
    progress = c.get("/admin/progress.json", headers={"authorization": f"Bearer {TOKEN}"}).json()
    assert progress["ratings"] == 8 and [r["answered"] for r in progress["raters"]] == [4, 4]
    assert set(progress["models"]) == set(MODELS)
    assert sum(m["rated"] for m in progress["models"].values()) == 16
    assert sum(m["wins"] for m in progress["models"].values()) == 8
    page = c.get(f"/admin?token={TOKEN}")
    assert page.status_code == 200 and "note_rnn" in page.text and "r002" in page.text
    exported = c.get(f"/admin/export.csv?token={TOKEN}").text

    out = tmp_path / "ratings.csv"
    result = CliRunner().invoke(cli, ["study", "export", str(study), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "8 ratings from 2 raters" in result.output
    assert out.read_text() == exported
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [k for k in rows[0]][:4] == ["pair_id", "choice", "rater_id", "strength"]
    key = load_key(study / "key.json")
    assert all(r["pair_id"] in key and r["choice"] in "AB" for r in rows)

    from_csv = CliRunner().invoke(
        cli, ["study", "analyze", str(out), "--key", str(study / "key.json"), "--json"]
    )
    from_folder = CliRunner().invoke(cli, ["study", "analyze", str(study), "--json"])
    assert from_csv.exit_code == 0 and from_folder.exit_code == 0, from_folder.output
    assert json.loads(from_csv.output) == json.loads(from_folder.output)
    assert json.loads(from_folder.output)["n_ratings"] == 8


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    from rltuner.cli.main import main

    for args, message in [
        (["study", "export", str(tmp_path), "--out", str(tmp_path / "r.csv")], "no ratings database"),
        (["study", "serve", str(tmp_path)], "not a study folder"),
        (["study", "analyze", str(tmp_path / "r.csv")], "--key is required"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert exit_info.value.code == 2, message


def test_a_key_of_another_study_and_a_short_token_are_refused(study: Path, tmp_path: Path) -> None:
    from rltuner.errors import ConfigError

    other = tmp_path / "other"
    make_study({"x": np.array([[14, 1, 16, 0]]), "y": np.array([[21, 1, 1, 1]])}, other, n_pairs=2,
               audio=False, midi=False, progress=False)  # fmt: skip
    with pytest.raises(DatasetError, match="key of another study"):
        create_app(study, admin_token=TOKEN, key_path=other / "key.json")
    with pytest.raises(DatasetError, match="does not exist"):
        create_app(study, admin_token=TOKEN, key_path=tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="at least 16"):
        create_app(study, admin_token="short")
