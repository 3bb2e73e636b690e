"""The HTML report: every section present, media embedded, missing material said so."""

from __future__ import annotations

import base64
import io
import re
import sys

import numpy as np

from rltuner.evaluation import figures
from rltuner.evaluation.report import SECTIONS, ReportData, compressed_audio, render_html, write_report


def tiny_media(tmp_path):
    rng = np.random.default_rng(0)
    samples = {"note_rnn": rng.integers(0, 38, size=(3, 8)), "q": rng.integers(0, 38, size=(3, 8))}
    fig2 = figures.figure2(
        {"q": [{"env_step": 0, "mean_log_p": -1.0, "mean_task_reward": -3.0}, {"env_step": 10, "mean_log_p": -1.5,
                                                                          "mean_task_reward": 1.0}]},
        tmp_path / "figure2.png",
    )  # fmt: skip
    iv = figures.interval_histograms(samples, tmp_path / "intervals.png")
    wav = tmp_path / "q_000.wav"
    wav.write_bytes(b"RIFF-fake-wav")
    mid = tmp_path / "q_000.mid"
    mid.write_bytes(b"MThd-fake-midi")
    return fig2, iv, wav, mid


def test_report_has_every_section_and_embeds_media(tmp_path) -> None:
    fig2, iv, wav, mid = tiny_media(tmp_path)
    data = ReportData(
        title="tiny <run>",
        summary="A tiny run.",
        table_header=["metric", "note_rnn", "q", "paper Note RNN", "paper Q", "paper Psi", "paper G"],
        table_rows=[
            ("Notes excessively repeated", ["60.00%", "1.00%", "63.3%", "0.0%", "0.02%", "0.03%"]),
            ("Mean log p(a|s) under Note RNN", ["-0.500", "-1.200", "", "", "", ""]),
        ],
        metric_rows_from=1,
        goal_rows=[
            ("Notes not in key <= 0.2%", ["2.55% FAIL", "0.05% pass"]),
            ("Goals met", ["1/11", "7/11"]),
        ],
        figure2=fig2,
        figure4=None,
        intervals=iv,
        pianorolls={},
        audio={"q": [wav]},
        midi={"q": [mid]},
        command="rltuner run --quick",
        config={"seed": 0},
        versions={"python": "3.11", "torch": "2.x"},
        timings={"evaluate": 1.25},
        labels={"q": "Q"},
        featured=[("source", "mine/best.toml"), ("algorithm", "psi"), ("rule weight tonic", "2.5")],
    )
    out = write_report(tmp_path / "report.html", data)
    text = out.read_text()
    for key, title in SECTIONS:
        assert f'id="{key}"' in text, key
        assert title.split(":")[0] in text
    assert "tiny &lt;run&gt;" in text  # escaped
    # the featured model's settings come right after the summary, its source first
    assert text.index('id="summary"') < text.index('id="featured"') < text.index('id="table1"')
    assert "<tr><td>source</td><td>mine/best.toml</td></tr><tr><td>algorithm</td><td>psi</td></tr>" in text
    assert "63.3%" in text and 'class="paper"' in text
    assert "-1.200" in text
    assert "<td>Notes not in key &lt;= 0.2%</td><td>2.55% FAIL</td><td>0.05% pass</td>" in text
    assert "<th>goal</th><th>note_rnn</th><th>q</th>" in text  # the goals table: our models, no paper columns
    assert base64.b64encode(b"RIFF-fake-wav").decode() in text  # audio embedded
    assert base64.b64encode(b"MThd-fake-midi").decode() in text and 'download="q_000.mid"' in text
    assert text.count("data:image/png;base64,") == 2  # figure 2 and the interval histograms
    assert "Figure 4 was not produced" in text
    assert "rltuner run --quick" in text and "1.2" in text
    # self-contained: no reference to any outside file or URL
    assert not re.search(r'(src|href)="(?!data:|#)', text)


def test_report_of_nothing_says_what_is_missing() -> None:
    text = render_html(ReportData())
    assert "Table 1 was not produced" in text
    assert 'id="featured"' not in text  # a run without a featured model has no such section
    assert "The goals table was not produced" in text
    assert "Audio and MIDI was not produced" in text


def test_audio_is_embedded_compressed_with_its_length_shown(tmp_path) -> None:
    import soundfile

    from rltuner.data.audio import render_wav

    wav = render_wav(np.array([14, 1, 1, 1, 18, 1, 0, 21] * 4), tmp_path / "q_000.wav", sample_rate=22050)
    data, mime = compressed_audio(wav)
    assert mime == "audio/mpeg"
    assert len(data) < wav.stat().st_size / 4  # the point: a fraction of the WAV
    decoded, rate = soundfile.read(io.BytesIO(data))
    original = soundfile.info(str(wav))
    assert rate == original.samplerate
    assert abs(len(decoded) / rate - original.duration) < 0.1  # the same clip (encoder padding aside)
    text = render_html(ReportData(audio={"q": [wav]}))
    assert 'preload="metadata"' in text  # the player knows the length before a click
    assert "data:audio/mpeg;base64," + base64.b64encode(data).decode() in text


def test_audio_falls_back_to_wav_without_soundfile(tmp_path, monkeypatch) -> None:
    from rltuner.data.audio import render_wav

    wav = render_wav(np.array([14, 1, 18, 1]), tmp_path / "a.wav", sample_rate=8000)
    monkeypatch.setitem(sys.modules, "soundfile", None)  # import soundfile -> ImportError
    assert compressed_audio(wav) == (wav.read_bytes(), "audio/wav")
