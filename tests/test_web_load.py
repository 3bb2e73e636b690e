"""Load test: 50 simulated raters answer concurrently against a real uvicorn server for a bounded time.

Every answer the server acknowledged (200) must be in the database exactly once; replays sent in the middle
(the same answer twice at once) must be refused and add nothing.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from rltuner.evaluation.study import make_study
from rltuner.web.app import create_app
from rltuner.web.store import DB_NAME

RATERS = 50
PER_RATER = 10
SECONDS = 15.0  # the bound on the whole run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one_rater(url: str, seed: int, deadline: float) -> tuple[str, list[int], Counter[int]]:
    """Open the page, then answer until done or out of time; every third answer is sent twice at once."""
    rng = np.random.default_rng(seed)
    statuses: Counter[int] = Counter()
    acknowledged: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=10.0) as client:
        await client.get("/")
        token = client.cookies["rater"]
        while time.monotonic() < deadline:
            state = (await client.get("/api/next")).json()
            if state["done"]:
                break
            body = {
                "item": state["item"],
                "prefer": "AB"[rng.integers(2)],
                "strength": int(rng.integers(1, 4)),
            }
            copies = 2 if state["position"] % 3 == 0 else 1
            responses = await asyncio.gather(*(client.post("/api/rate", json=body) for _ in range(copies)))
            for response in responses:
                statuses[response.status_code] += 1
            if any(r.status_code == 200 for r in responses):
                acknowledged.append(state["position"])
    return token, acknowledged, statuses


async def all_raters(url: str) -> list[tuple[str, list[int], Counter[int]]]:
    deadline = time.monotonic() + SECONDS
    return list(await asyncio.gather(*(one_rater(url, seed, deadline) for seed in range(RATERS))))


def test_50_concurrent_raters_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    samples = {name: rng.integers(2, 38, size=(8, 32)) for name in ("a", "b", "c")}
    make_study(samples, tmp_path, n_pairs=18, seed=0, sample_rate=8000, midi=False, progress=False)
    app = create_app(tmp_path, admin_token="load-test-admin-token", per_rater=PER_RATER, seed=0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        started = time.monotonic()
        results = asyncio.run(all_raters(f"http://127.0.0.1:{port}"))
        elapsed = time.monotonic() - started
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert elapsed < SECONDS + 10

    statuses = sum((s for _, _, s in results), Counter())
    assert set(statuses) <= {200, 409}, statuses  # no 5xx, no 429 under the default limits
    acknowledged = {(token, position) for token, positions, _ in results for position in positions}
    with sqlite3.connect(tmp_path / DB_NAME) as db:
        stored = db.execute(
            "SELECT raters.token, ratings.position FROM ratings JOIN raters ON raters.id = ratings.rater"
        ).fetchall()
        assert db.execute("SELECT COUNT(*) FROM raters").fetchone() == (RATERS,)
    assert len(stored) == len(set(stored))  # exactly once
    assert set(stored) == acknowledged  # every acknowledged answer, and nothing else
    assert statuses[200] == len(acknowledged) and len(acknowledged) >= RATERS  # every rater got answers in
    replays = sum(len([p for p in positions if p % 3 == 0]) for _, positions, _ in results)
    assert statuses[409] == replays  # each doubled answer: one accepted, one refused
    print(
        f"load test: {RATERS} raters, {len(stored)} answers stored, {statuses[409]} replays refused, {elapsed:.1f} s"
    )


def test_answers_survive_a_killed_server(tmp_path: Path) -> None:
    """kill -9 right after the answers were acknowledged: every one of them is in the database."""
    import os
    import signal
    import subprocess
    import sys

    from rltuner.web.store import export_rows

    rng = np.random.default_rng(0)
    samples = {name: rng.integers(2, 38, size=(4, 32)) for name in ("a", "b")}
    make_study(samples, tmp_path, n_pairs=8, seed=0, sample_rate=8000, midi=False, progress=False)
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rltuner", "study", "serve", str(tmp_path), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        with httpx.Client(base_url=url, timeout=5.0) as client:
            while True:
                try:
                    client.get("/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and proc.poll() is None, "the server did not start"
                    time.sleep(0.1)
            for _ in range(5):
                item = client.get("/api/next").json()["item"]
                assert (
                    client.post("/api/rate", json={"item": item, "prefer": "B", "strength": 3}).status_code
                    == 200
                )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    rows = export_rows(tmp_path / DB_NAME)
    assert [r["position"] for r in rows] == ["1", "2", "3", "4", "5"]
