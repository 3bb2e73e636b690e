"""``rltuner run`` and ``rltuner evaluate`` end to end on a tiny prior, kept short."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rltuner.cli.main import cli
from rltuner.errors import ConfigError
from rltuner.evaluation.pipeline import PipelineConfig

QUICK = [
    "--quick",
    "--steps",
    "8192",
    "--samples",
    "64",
    "--muspy-samples",
    "8",
    "--no-copying",
    "--jobs",
    "1",
]


@pytest.mark.slow
def test_run_quick_end_to_end_then_resume(tmp_path, tiny_prior_file, caplog) -> None:
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--prior", str(tiny_prior_file), "--algorithms", "q,g", *QUICK]
    with caplog.at_level("INFO"):
        res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    # the report's path is said once: printed by the command, not logged as well
    said = res.output + "".join(r.getMessage() for r in caplog.records)
    assert said.count("report.html") == 1 and f"report: {out / 'report.html'}" in res.output
    assert (out / "report.html").is_file()
    stages = json.loads((out / "stages.json").read_text())
    assert list(stages) == ["tune/q", "tune/g", "tune/featured", "evaluate", "media", "figures"]
    for f in ("evaluation.json", "evaluation.csv", "samples.npz", "run.json", "figures/figure2.png",
              "figures/figure4.png", "figures/intervals.png", "figures/pianoroll_g.png", "midi/q/q_000.mid",
              "audio/note_rnn/note_rnn_000.wav", "tune/q/model.safetensors", "tune/g/metrics.jsonl"):  # fmt: skip
        assert (out / f).is_file(), f
    ev = json.loads((out / "evaluation.json").read_text())
    assert list(ev["models"]) == ["note_rnn", "q", "g", "featured"]
    assert ev["models"]["note_rnn"]["mean_kl"] == 0.0
    assert ev["models"]["g"]["mean_kl"] > 0.0
    assert ev["settings"]["n"] == 64
    html = (out / "report.html").read_text()
    for section in ("table1", "figure2", "figure4", "pianorolls", "listen", "command", "versions", "timings"):
        assert f'id="{section}"' in html
    assert "was not produced" not in html
    assert "audio/mpeg;base64" in html and "Notes excessively repeated" in html  # MP3, not WAV
    assert "audio/wav;base64" not in html and 'preload="metadata"' in html
    assert 'id="goals"' in html and "Goals met" in html and "Melodies opening with the most common 8" in html
    # the featured model: the shipped settings, scaled to the run's budget, its source named before Table 1
    featured = json.loads((out / "tune" / "featured" / "config.json").read_text())
    from rltuner.featured import read_featured

    shipped = read_featured()
    assert featured["algorithm"] == shipped.algorithm and featured["total_steps"] == 8192
    assert (
        featured["gamma"] == shipped.settings["gamma"]
        and featured["reward_primer"] == shipped.settings["reward_primer"]
    )
    assert featured["reward"]["music_theory"]["weights"]["extremes"] == shipped.weights()["extremes"]
    assert html.index('id="featured"') < html.index('id="table1"')
    assert "rltuner/assets/featured.toml" in html and "<th>goal</th><th>note_rnn</th><th>q</th>" in html
    # the MIDI files play the melody as heard: the primer's note-on at t = 0, then the sampled steps
    from rltuner.data.midi_io import midi_to_melody
    from rltuner.evaluation.pipeline import load_samples

    samples, primers = load_samples(out / "samples.npz")
    heard = midi_to_melody(out / "midi" / "q" / "q_000.mid", fit_range=False)
    assert heard[0] == primers["q"][0] and np.array_equal(heard[1:], samples["q"][0][: len(heard) - 1])
    run_info = json.loads((out / "run.json").read_text())
    assert run_info["versions"]["torch"] == torch.__version__ and run_info["timings_s"]["evaluate"] > 0
    # each tuning run's final task reward beside the prior's; the report's summary warns of a worse one
    tuning = run_info["tuning"]
    assert list(tuning) == ["q", "g", "featured"]
    assert run_info["settings"]["featured"]["source"].startswith("rltuner/assets/featured.toml")
    for outcome in tuning.values():
        assert outcome["env_steps"] == 8192
        worse = outcome["final"]["mean_task_reward"] < outcome["prior"]["mean_task_reward"]
        assert outcome["worse_than_prior"] is worse
    assert ("at the end of tuning" in html) is any(o["worse_than_prior"] for o in tuning.values())
    assert run_info["seeds"] == [0] and run_info["machine"]["cores"] >= 1
    # one seed: the summary has n = 1 and no spread, and states no comparison
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"]["g"]["mean_kl"] == {"mean": ev["models"]["g"]["mean_kl"], "sd": None, "n": 1,
                                                 "ci95_low": None, "ci95_high": None}  # fmt: skip
    assert "no difference between models is claimed" in (out / "table.md").read_text()
    assert re.search(r"<td[^>]*>[^<]*±", html) is None  # no table cell has a spread

    # a second run with the same folder skips every finished stage and rebuilds only the report
    before = (out / "evaluation.json").stat().st_mtime_ns
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert (out / "evaluation.json").stat().st_mtime_ns == before


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"algorithms": ("q", "dqn")}, "unknown algorithm"),
        ({"algorithms": ()}, "at least one"),
        ({"algorithms": ("q", "q")}, "twice"),
        ({"samples": 0}, "samples"),
        ({"device": "tpu"}, "device"),
        ({"out": ""}, "run folder"),
    ],
)
def test_pipeline_config_rejects_nonsense(overrides, message) -> None:
    cfg = PipelineConfig(**{"out": "x", **overrides})
    with pytest.raises(ConfigError, match=message):
        cfg.validate()


def test_run_bad_algorithm_is_one_line_error(tmp_path) -> None:
    from rltuner.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["run", "--out", str(tmp_path / "r"), "--algorithms", "q,nope"])
    assert exc.value.code == 2


def test_evaluate_command_writes_table_json_csv(tmp_path, tiny_prior_file) -> None:
    out = tmp_path / "ev"
    args = ["evaluate", f"mine={tiny_prior_file}", "--prior", str(tiny_prior_file), "-n", "50", "--muspy-samples", "5",
            "--no-corpus", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "Notes excessively repeated" in res.output and "paper Note RNN" in res.output
    assert "Distinct 8-grams of steps" in res.output and "that 8-step opening" in res.output
    assert "goal (issue #13)" in res.output and "Goals met" in res.output
    data = json.loads((out / "evaluation.json").read_text())
    assert list(data["models"]) == ["note_rnn", "mine"]
    # the same weights as the prior: KL is 0 up to float error
    assert abs(data["models"]["mine"]["mean_kl"]) < 1e-6
    assert (out / "evaluation.csv").read_text().startswith("metric,note_rnn,mine")


def test_evaluate_missing_checkpoint_is_a_clear_error(tmp_path) -> None:
    from rltuner.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["evaluate", f"x={tmp_path / 'none.safetensors'}", "--no-corpus"])
    assert exc.value.code == 2


def test_corpus_excerpts_start_on_bar_lines_and_come_from_distinct_melodies() -> None:
    import numpy as np

    from rltuner.evaluation.pipeline import corpus_excerpts

    corpus = [np.arange(64) % 38, np.full(20, 14), np.arange(100, 148) % 38, np.arange(200, 232) % 38]
    out = corpus_excerpts(corpus, n=5, length=32, seed=0)
    assert out.shape == (3, 32)  # the 20-step melody is too short
    windows = {
        (i, start): m[start : start + 32].tobytes()
        for i, m in enumerate(corpus)
        for start in range(0, len(m) - 31, 16)
    }
    found = [next(k for k, w in windows.items() if w == row.tobytes()) for row in out]
    assert len({i for i, _ in found}) == 3  # three different melodies, each cut on a bar line
    assert corpus_excerpts(corpus, n=0, length=32, seed=0).shape == (0, 32)


@pytest.mark.slow
def test_run_reruns_the_stages_whose_inputs_changed(tmp_path, tiny_prior_file) -> None:
    out = tmp_path / "run"
    base = ["run", "--out", str(out), "--prior", str(tiny_prior_file), "--algorithms", "q", "--no-featured", "-j", "1",
            "--quick", "--samples", "32", "--muspy-samples", "0", "--no-copying"]  # fmt: skip
    assert CliRunner().invoke(cli, [*base, "--steps", "1024"]).exit_code == 0
    first = json.loads((out / "stages.json").read_text())
    same = CliRunner().invoke(cli, [*base, "--steps", "1024"])
    assert same.exit_code == 0 and json.loads((out / "stages.json").read_text()) == first
    # another thread count is the same run: every stage is skipped, and run.json records the count
    threads = CliRunner().invoke(cli, [*base, "--steps", "1024", "--threads", "2"])
    assert threads.exit_code == 0 and json.loads((out / "stages.json").read_text()) == first
    assert json.loads((out / "run.json").read_text())["settings"]["pipeline"]["threads"] == 2
    # another budget: the tuning run and everything after it run again, and the record says so
    res = CliRunner().invoke(cli, [*base, "--steps", "2048"])
    assert res.exit_code == 0, res.output
    second = json.loads((out / "stages.json").read_text())
    assert all(second[k]["inputs"] != first[k]["inputs"] for k in ("tune/q", "evaluate", "figures"))
    config = json.loads((out / "tune" / "q" / "config.json").read_text())
    assert config["total_steps"] == 2048
    info = json.loads((out / "run.json").read_text())
    assert info["settings"]["tuning"]["q"]["total_steps"] == 2048
    # only the number of samples changed: tuning is kept, evaluation reruns
    res = CliRunner().invoke(cli, [*base[:-5], "--samples", "16", "--muspy-samples", "0", "--no-copying",
                                   "--steps", "2048"])  # fmt: skip
    assert res.exit_code == 0, res.output
    third = json.loads((out / "stages.json").read_text())
    assert third["tune/q"] == second["tune/q"] and third["evaluate"]["inputs"] != second["evaluate"]["inputs"]


@pytest.mark.slow
def test_run_several_seeds_per_seed_folders_mean_sd_and_skips(tmp_path, tiny_prior_file) -> None:
    out = tmp_path / "run"
    base = ["run", "--out", str(out), "--prior", str(tiny_prior_file), "--algorithms", "q", "--quick", "--jobs", "1",
            "--steps", "1024", "--samples", "32", "--muspy-samples", "0", "--no-copying"]  # fmt: skip
    res = CliRunner().invoke(cli, [*base, "--seeds", "2"])
    assert res.exit_code == 0, res.output
    first = json.loads((out / "stages.json").read_text())
    assert list(first) == ["tune/q/seed-0", "tune/featured/seed-0", "evaluate/seed-0", "tune/q/seed-1",
                           "tune/featured/seed-1", "evaluate/seed-1", "media", "figures"]  # fmt: skip
    for s in (0, 1):
        assert json.loads((out / f"tune/q/seed-{s}/config.json").read_text())["seed"] == s
        assert json.loads((out / f"tune/featured/seed-{s}/config.json").read_text())["seed"] == s
        assert json.loads((out / f"seed-{s}/evaluation.json").read_text())["settings"]["seed"] == s
    assert not (out / "evaluation.json").exists() and not (out / "tune/q/model.safetensors").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["machine"]["torch"] == torch.__version__
    reward = summary["models"]["q"]["mean_task_reward"]
    per_seed = [json.loads((out / f"seed-{s}/evaluation.json").read_text())["models"]["q"]["mean_task_reward"]
                for s in (0, 1)]  # fmt: skip
    assert reward["n"] == 2 and reward["mean"] == pytest.approx(sum(per_seed) / 2)
    assert reward["sd"] == pytest.approx(abs(per_seed[0] - per_seed[1]) / 2**0.5) and reward["sd"] > 0
    assert reward["ci95_low"] < reward["mean"] < reward["ci95_high"]
    table = (out / "table.md").read_text()
    assert "mean ± sd over seeds 0, 1" in table and f"{reward['mean']:.3f} ± {reward['sd']:.3f}" in table
    assert re.search(r"<td[^>]*>[^<]*±", (out / "report.html").read_text())
    info = json.loads((out / "run.json").read_text())
    assert info["seeds"] == [0, 1] and info["machine"]["cpu"] and info["machine"]["torch_threads"] >= 1
    assert set(info["settings"]["tuning"]) == {"q/seed-0", "q/seed-1", "featured/seed-0", "featured/seed-1"}
    assert summary["models"]["featured"]["mean_task_reward"]["n"] == 2

    # the same command skips everything, and with other threads the tables still name the machine that made them
    assert CliRunner().invoke(cli, [*base, "--seeds", "2", "--threads", "2"]).exit_code == 0
    assert json.loads((out / "stages.json").read_text()) == first
    assert (out / "table.md").read_text() == table
    assert json.loads((out / "seed-0/machine.json").read_text())["torch_threads"] == 1
    # one seed more: only that seed's tuning and evaluation run
    assert CliRunner().invoke(cli, [*base, "--seeds", "3"]).exit_code == 0
    third = json.loads((out / "stages.json").read_text())
    assert {k: v for k, v in third.items() if k in first} == first
    assert set(third) - set(first) == {"tune/q/seed-2", "tune/featured/seed-2", "evaluate/seed-2"}
    assert json.loads((out / "summary.json").read_text())["models"]["q"]["mean_task_reward"]["n"] == 3
    # seeds 1, 2: both are done already; only media and figures (which show the first seed) run again
    assert CliRunner().invoke(cli, [*base, "--seed", "1", "--seeds", "2"]).exit_code == 0
    shifted = json.loads((out / "stages.json").read_text())
    assert all(shifted[k] == third[k] for k in third if k.endswith(("seed-1", "seed-2")))
    assert all(shifted[k]["inputs"] != third[k]["inputs"] for k in ("media", "figures"))
    assert json.loads((out / "summary.json").read_text())["seeds"] == [1, 2]
    # one seed into this folder would leave the three seeds' results stale beside it: refused
    single = CliRunner().invoke(cli, base)
    assert "holds a run with several tuning seeds" in str(single.exception)  # one line, exit 2 in main()


def test_pipeline_seed_settings_and_fingerprint() -> None:
    from rltuner.evaluation.pipeline import _inputs_config

    # one seed keeps the fingerprint of folders made before --seeds existed
    assert "seeds" not in _inputs_config(PipelineConfig(out="x"))
    assert _inputs_config(PipelineConfig(out="x", seeds=2))["seeds"] == 2
    with pytest.raises(ConfigError, match="seeds"):
        PipelineConfig(out="x", seeds=0).validate()
    with pytest.raises(ConfigError, match="last seed"):
        PipelineConfig(out="x", seed=2**63 - 1, seeds=2).validate()


def test_reward_primer_is_a_result_input_and_off_keeps_older_fingerprints() -> None:
    from rltuner.evaluation.pipeline import _result_settings
    from rltuner.rl.config import preset

    # off (the default) leaves the fingerprint of runs made before the setting existed; on changes it
    assert "reward_primer" not in _result_settings(preset("fast"))
    assert _result_settings(preset("fast", reward_primer=True))["reward_primer"] is True


def test_run_quiet_holds_back_the_stage_lines_not_warnings(tmp_path, tiny_prior_file, caplog) -> None:
    out = tmp_path / "run"
    base = ["run", "--out", str(out), "--prior", str(tiny_prior_file), "--algorithms", "q", "--no-featured", "-j", "1",
            "--quick", "--samples", "32", "--muspy-samples", "0", "--no-copying", "--steps", "1024"]  # fmt: skip
    logger = logging.getLogger("rltuner")
    logger.setLevel(logging.INFO)  # what the command line sets without -v
    with caplog.at_level(logging.INFO, logger="rltuner"):
        loud = CliRunner().invoke(cli, base)
    assert loud.exit_code == 0, loud.output
    assert any(r.getMessage().startswith("stage ") for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rltuner"):
        quiet = CliRunner().invoke(cli, [*base, "-q"])
    assert quiet.exit_code == 0, quiet.output
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]
    assert f"report: {out / 'report.html'}" in quiet.output  # the result line stays
    assert logger.level == logging.INFO  # restored after the command
