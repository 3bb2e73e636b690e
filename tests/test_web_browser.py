"""The study page in a real browser (headless Chromium via Playwright) against ``rltuner study serve``.

The whole flow: open the page, the audio elements load and have a duration, rate 20 pairs with mouse and
keyboard, reload mid-way (progress kept), a second rater at the same time, a phone-sized screen, then
``study export`` and ``study analyze`` on what the browser submitted.

Set ``RLTUNER_SCREENSHOTS=docs/images`` to also write the screenshots used in docs/study.md.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli
from rltuner.evaluation.study import make_study

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip("Chromium is not installed (make test installs Debian's chromium)", allow_module_level=True)

# Chromium's own network activity (updates, sync, QUIC) is switched off: the tests talk to 127.0.0.1 only.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip
TOKEN = "browser-test-admin-token-42"
PAIRS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    rng = np.random.default_rng(1)
    samples = {name: rng.integers(2, 38, size=(12, 32)) for name in ("note_rnn", "q", "g")}
    folder = tmp_path_factory.mktemp("browser-study")
    make_study(samples, folder, n_pairs=24, seed=0, sample_rate=8000, midi=False, progress=False)
    port = free_port()
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1] / "src"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "rltuner", "study", "serve", str(folder), "--port", str(port)]
    proc = subprocess.Popen(
        [*command, "--admin-token", TOKEN, "--per-rater", str(PAIRS)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{url}/static/style.css", timeout=1).close()
                break
            except OSError as exc:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the server did not start: {proc.stdout.read() if proc.stdout else ''}"
                    ) from exc
                time.sleep(0.1)
        yield url, folder
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


def progress_text(page: object) -> str:
    return str(page.locator("#progress-text").inner_text())  # type: ignore[attr-defined]


def wait_for_pair(page: object, n: int) -> None:
    page.locator("#progress-text").filter(has_text=f"Pair {n} of {PAIRS}").wait_for(timeout=10_000)  # type: ignore[attr-defined]


def audio_durations(page: object) -> list[float]:
    # Wait until both players have loaded their WAV's metadata, then read the durations (seconds).
    page.wait_for_function(  # type: ignore[attr-defined]
        "() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 1 && a.duration > 0)",
        timeout=10_000,
    )
    return list(page.evaluate("() => [...document.querySelectorAll('audio')].map(a => a.duration)"))  # type: ignore[attr-defined]


def rate(page: object, n: int, how: str) -> None:
    """Answer pair ``n`` with the mouse (a scale button) or the keyboard (keys 1..6)."""
    if how == "mouse":
        page.get_by_role("button", name="B is more pleasing", exact=True).click()  # type: ignore[attr-defined]
    else:
        page.keyboard.press(str(1 + n % 6))  # type: ignore[attr-defined]
    wait_for_pair(page, n + 1) if n < PAIRS else page.locator("#done").wait_for(state="visible")  # type: ignore[attr-defined]


def test_the_whole_flow_in_chromium(server: tuple[str, Path], browser: object, tmp_path: Path) -> None:
    url, folder = server
    shots = os.environ.get("RLTUNER_SCREENSHOTS")
    first = browser.new_context(viewport={"width": 900, "height": 640})  # type: ignore[attr-defined]
    second = browser.new_context(viewport={"width": 900, "height": 640})  # type: ignore[attr-defined]
    alice, bob = first.new_page(), second.new_page()
    errors: list[str] = []
    for page in (alice, bob):
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(url)
        wait_for_pair(page, 1)

    # the players load real audio: a 32-sixteenth melody at 120 bpm lasts 4 s (plus the release tail)
    durations = audio_durations(alice)
    assert len(durations) == 2 and all(4.0 <= d <= 6.0 for d in durations)
    alice.keyboard.press("a")  # play A: it starts
    alice.wait_for_function("() => !document.getElementById('audio-a').paused", timeout=5_000)
    if shots:
        alice.screenshot(path=str(Path(shots) / "study-page.png"))

    for n in range(1, 11):  # both raters at once, interleaved; mouse and keyboard alternately
        rate(alice, n, "mouse" if n % 2 else "keyboard")
        rate(bob, n, "keyboard" if n % 2 else "mouse")
    assert audio_durations(bob)[0] > 0
    alice.reload()  # mid-way: the progress is kept
    wait_for_pair(alice, 11)
    assert progress_text(alice) == f"Pair 11 of {PAIRS}"
    assert alice.locator("#progress-bar").get_attribute("value") == "10"
    for n in range(11, PAIRS + 1):
        rate(alice, n, "keyboard" if n % 2 else "mouse")
        rate(bob, n, "mouse")
    for page in (alice, bob):
        assert progress_text(page) == f"All {PAIRS} pairs rated"
        assert page.locator("#done").is_visible() and not page.locator("#pair").is_visible()
    assert errors == []

    # on a phone: everything fits the width, the buttons are reachable
    phone = browser.new_context(viewport={"width": 375, "height": 740}, is_mobile=True, has_touch=True)  # type: ignore[attr-defined]
    mobile = phone.new_page()
    mobile.goto(url)
    wait_for_pair(mobile, 1)
    assert mobile.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")
    mobile.get_by_role("button", name="A is much more pleasing").tap()
    wait_for_pair(mobile, 2)
    if shots:
        mobile.screenshot(path=str(Path(shots) / "study-phone.png"), full_page=True)
        admin = first.new_page()
        admin.goto(f"{url}/admin?token={TOKEN}")
        admin.screenshot(path=str(Path(shots) / "study-admin.png"), full_page=True)
    for context in (first, second, phone):
        context.close()

    out = tmp_path / "ratings.csv"
    exported = CliRunner().invoke(cli, ["study", "export", str(folder), "--out", str(out)])
    assert exported.exit_code == 0 and f"{2 * PAIRS + 1} ratings from 3 raters" in exported.output
    analyzed = CliRunner().invoke(cli, ["study", "analyze", str(folder), "--json"])
    assert analyzed.exit_code == 0, analyzed.output
    result = json.loads(analyzed.output)
    assert result["n_ratings"] == 2 * PAIRS + 1
    assert sum(result["wins"].values()) == 2 * PAIRS + 1
    assert sum(result["comparisons"].values()) == 2 * (2 * PAIRS + 1)


def test_report_players_show_their_length_before_a_click(browser: object, tmp_path: Path) -> None:
    """rltuner run's report: its embedded MP3 clips decode in Chromium and show their length unclicked."""
    from rltuner.data.audio import render_wav
    from rltuner.evaluation.report import ReportData, write_report

    melody = np.array([14, 1, 1, 1, 18, 1, 0, 21] * 4)  # 32 sixteenths at 120 bpm: 4 s plus the tail
    wavs = [render_wav(melody, tmp_path / f"q_{i:03d}.wav", sample_rate=22050) for i in range(2)]
    report = write_report(tmp_path / "report.html", ReportData(audio={"q": wavs}))
    assert "audio/mpeg;base64" in report.read_text()
    context = browser.new_context()  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(report.as_uri())
    durations = audio_durations(page)
    assert len(durations) == 2 and all(4.0 <= d <= 6.0 for d in durations)
    assert page.evaluate("() => [...document.querySelectorAll('audio')].every(a => a.error === null)")
    context.close()
