"""``rltuner tune`` through click's test runner."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli
from test_rl_support import tiny_prior, toy_domain

FAST = ["--steps", "512", "--n-envs", "16", "--batch-size", "64", "--train-every", "32", "--eval-every", "256",
        "--quiet", "--set", "tensorboard=false", "--set", "eval_episodes=20"]  # fmt: skip


@pytest.fixture
def toy_music(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Replace the music domain by the toy one (the CLI path is the same); records the arguments."""
    calls: list[dict[str, Any]] = []

    def fake(prior: Any = None, **kwargs: Any) -> Any:
        calls.append({"prior": prior, **kwargs})
        return toy_domain(tiny_prior(5))

    monkeypatch.setattr("rltuner.domains.music.music_domain", fake)
    return calls


def test_tune_then_resume(tmp_path: Path, toy_music: list[dict[str, Any]]) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["tune", "-a", "psi", "--out", str(run), "--seed", "3", *FAST])
    assert result.exit_code == 0, result.output
    assert "psi: 512 env steps, 1,024 sample-updates" in result.output
    config = json.loads((run / "config.json").read_text())
    assert config["algorithm"] == "psi" and config["seed"] == 3 and config["n_envs"] == 16
    assert (run / "model.safetensors").is_file()
    assert toy_music[0]["primer"] is None  # random primers
    # --steps 512: the preset's 250,000 exploration steps of 1,000,000 scaled to 128; --eval-every is as given
    assert (config["epsilon_steps"], config["eval_every"], config["total_steps"]) == (128, 256, 512)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["env_steps"] == 512 and isinstance(summary["worse_than_prior"], bool)
    assert f"(the prior: {summary['prior']['mean_task_reward']:.3f}" in result.output
    # a preset is a whole schedule: refused on a resume (the saved settings stay), before any work
    other = CliRunner().invoke(cli, ["tune", "--resume", str(run), "--preset", "paper", "--steps", "1024"])
    assert other.exit_code == 2 and "--preset does not apply with --resume" in other.output
    more = CliRunner().invoke(cli, ["tune", "--resume", str(run), "--steps", "1024", "--quiet"])
    assert more.exit_code == 0, more.output
    assert "psi: 1,024 env steps" in more.output
    # a resumed run keeps the schedule it was started with
    assert json.loads((run / "config.json").read_text())["epsilon_steps"] == 128
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["0", "256", "512", "768", "1024"]


def test_a_run_recorded_before_the_fast_numerics_resumes_with_its_own(
    tmp_path: Path, toy_music: list[dict[str, Any]]
) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["tune", "-a", "q", "--out", str(run), *FAST])
    assert result.exit_code == 0, result.output
    config = json.loads((run / "config.json").read_text())
    assert config["fused_adam"] is True and config["learner_bf16"] == "auto"  # today's defaults
    for name in ("fused_adam", "learner_bf16"):  # as a run made before these settings existed records it
        del config[name]
    (run / "config.json").write_text(json.dumps(config))
    more = CliRunner().invoke(cli, ["tune", "--resume", str(run), "--steps", "1024", "--quiet"])
    assert more.exit_code == 0, more.output
    resumed = json.loads((run / "config.json").read_text())
    assert resumed["fused_adam"] is False and resumed["learner_bf16"] == "off"


@pytest.mark.parametrize("option", [["--epsilon-steps", "300"], ["--set", "epsilon_steps=300"]])
def test_an_explicit_schedule_wins_over_the_scaled_one(
    tmp_path: Path, toy_music: list[dict[str, Any]], option: list[str]
) -> None:
    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["tune", "-a", "q", "--out", str(run), *FAST, *option])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["epsilon_steps"] == 300


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gamma", "1.5"], "gamma must be in [0, 1)"),
        (["--c", "0"], "reward_scale (c) must be positive"),
        (["--lr", "-1"], "learning_rate must be positive"),
        (["--set", "nonsense=1"], "unknown setting"),
        (["--set", "gamma"], "must look like name=value"),
        (["-a", "g", "--double-q"], "double_q applies to q and rl-only"),
        (["--primer", "H9"], "--primer: 'H9' is not a primer"),
        (["--primer", "38"], "--primer: primer class 38 is outside 0..37"),
    ],
)
def test_bad_settings_give_one_clear_error(
    tmp_path: Path,
    toy_music: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    from rltuner.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["tune", "--out", str(tmp_path / "x"), *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err
    assert not toy_music  # rejected before the domain (and the prior) was even loaded


@pytest.mark.parametrize(("primer", "token"), [("C4", 14), ("F#3", 8), ("14", 14)])
def test_tune_takes_the_primer_forms_generate_takes(
    tmp_path: Path, toy_music: list[dict[str, Any]], primer: str, token: int
) -> None:
    result = CliRunner().invoke(cli, ["tune", "--primer", primer, "--out", str(tmp_path / "run"), *FAST])
    assert result.exit_code == 0, result.output
    assert toy_music[0]["primer"] == token


def test_bad_settings_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rltuner.cli.main import main

    with pytest.raises(SystemExit):
        main(["tune", "--gamma", "1.5", "--out", str(tmp_path)])
    assert capsys.readouterr().err.strip() == "error: gamma must be in [0, 1), got 1.5"


def test_resume_of_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    from rltuner.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main(["tune", "--resume", str(tmp_path)])
    assert exc.value.code == 2


class _CtrlCAfter(list):  # type: ignore[type-arg]
    """deferred_sigint's flag, pressed (True) from its ``reads``-th read on: Ctrl-C after some rounds."""

    def __init__(self, reads: int) -> None:
        super().__init__([False])
        self.left = reads

    def __getitem__(self, i: Any) -> Any:
        self.left -= 1
        return self.left < 0


@pytest.mark.parametrize(("eval_every", "rounds"), [("0", 2), ("256", 5)])  # 0: evaluate only at the end
def test_ctrl_c_summary_names_the_last_evaluation(
    tmp_path: Path,
    toy_music: list[dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    eval_every: str,
    rounds: int,
) -> None:
    import contextlib
    import re

    @contextlib.contextmanager
    def ctrl_c(message: str = "") -> Any:
        yield _CtrlCAfter(rounds)

    monkeypatch.setattr("rltuner.rl.tuner.deferred_sigint", ctrl_c)
    run = tmp_path / "run"
    args = ["tune", "--out", str(run), *FAST, "--steps", "4096", "--eval-every", eval_every]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 130, result.output
    line = result.output.splitlines()[0]
    done = int(re.match(r"q: ([\d,]+) env steps", line).group(1).replace(",", ""))  # type: ignore[union-attr]
    assert 0 < done < 4096 and (run / "resume.pt").is_file()  # stopped early, saved
    rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    if eval_every == "0":
        assert [r["env_step"] for r in rows] == [0]
        assert "no evaluation was made after step 0" in line and "mean log p" not in line  # no step-0 numbers
    else:
        assert 0 < last["env_step"] < done
        assert (
            f"last evaluation, at env step {last['env_step']:,}: mean log p(a|s) {last['mean_log_p']:.3f}"
            in line
        )


def test_reward_primer_is_set_recorded_and_refused_for_molecules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rltuner.cli.main import main

    run = tmp_path / "run"
    result = CliRunner().invoke(cli, ["tune", "--out", str(run), "--set", "reward_primer=true", *FAST])
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["reward_primer"] is True
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--domain", "molecules", "--set", "reward_primer=true", "--out", str(tmp_path / "m")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "reward_primer applies to the music domain, not to molecules" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
