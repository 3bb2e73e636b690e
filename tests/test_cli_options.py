"""The options every command shares: --help examples, -q/--quiet, -n/--samples, -v, --config FILE, --rule."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner

from rltuner.cli.main import COMMANDS, cli, main
from test_rl_support import tiny_prior, toy_domain

FAST = ["--steps", "512", "--n-envs", "16", "--batch-size", "64", "--train-every", "32", "--eval-every", "256",
        "--quiet", "--set", "tensorboard=false", "--set", "eval_episodes=20"]  # fmt: skip


def _all_commands() -> list[tuple[str, click.Command]]:
    """(dotted name, command) of every command and sub-command."""
    out: list[tuple[str, click.Command]] = []
    ctx = click.Context(cli)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert command is not None, name
        out.append((name, command))
        if isinstance(command, click.Group):
            out.extend((f"{name} {sub}", cmd) for sub, cmd in command.commands.items())
    return out


def _examples(command: click.Command) -> list[list[str]]:
    """The example command lines of a command's epilog, as argument lists (comments dropped)."""
    lines = [
        line.strip() for line in (command.epilog or "").splitlines() if line.strip().startswith("rltuner ")
    ]
    return [shlex.split(line, comments=True)[1:] for line in lines]


def _resolve(args: list[str]) -> tuple[click.Command, list[str]]:
    ctx = click.Context(cli)
    command = cli.get_command(ctx, args[0])
    assert command is not None, args
    rest = args[1:]
    if isinstance(command, click.Group):
        sub = command.get_command(ctx, rest[0])
        assert sub is not None, args
        return sub, rest[1:]
    return command, rest


@pytest.mark.parametrize(("name", "command"), _all_commands(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_help_ends_with_examples_that_parse(
    name: str, command: click.Command, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    help_text = command.get_help(click.Context(command, info_name=name))
    assert "Examples:" in help_text
    examples = _examples(command)
    assert examples, f"{name}: no example command lines"
    monkeypatch.chdir(tmp_path)
    for args in examples:
        for arg in args:  # the files an example names exist here, so click's exists checks pass
            if arg.endswith((".npy", ".mid", ".npz", ".toml", ".json", ".py", ".csv")) and "=" not in arg:
                Path(arg).parent.mkdir(parents=True, exist_ok=True)
                Path(arg).touch()
            elif "=" in arg and arg.endswith(".npy"):
                Path(arg.split("=", 1)[1]).touch()
            elif arg.endswith("/") and not arg.startswith("~"):
                Path(arg).mkdir(parents=True, exist_ok=True)
        target, rest = _resolve(args)
        target.make_context(args[0], list(rest))  # raises on an unknown option or a bad value


LONG_RUNNING = ["run", "tune", "pretrain", "evaluate", "compare", "data build", "render", "generate", "sweep",
                "bench"]  # fmt: skip


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_commands_share_quiet(name: str) -> None:
    command, _ = _resolve(name.split())
    opts = {opt for p in command.params for opt in p.opts if p.name == "quiet"}
    assert {"-q", "--quiet"} <= opts


@pytest.mark.parametrize("name", ["generate", "evaluate", "run"])
def test_dash_n_is_the_number_of_sequences_everywhere(name: str) -> None:
    command, _ = _resolve([name])
    (param,) = [p for p in command.params if "-n" in p.opts]
    assert "--samples" in param.opts


def test_old_spellings_still_work(tmp_path: Path) -> None:
    generate, _ = _resolve(["generate"])
    assert generate.make_context("generate", ["--num", "3"]).params["n"] == 3
    pretrain, _ = _resolve(["pretrain"])
    assert (
        pretrain.make_context("pretrain", ["--out", "x.safetensors", "--no-progress"]).params["quiet"] is True
    )


# ------------------------------------------------------------------------------------------------- tune --config
@pytest.fixture
def toy_music(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def fake(prior: Any = None, **kwargs: Any) -> Any:
        calls.append({"prior": prior, **kwargs})
        return toy_domain(tiny_prior(5))

    monkeypatch.setattr("rltuner.domains.music.music_domain", fake)
    return calls


def test_tune_config_file_then_flags_override_it(tmp_path: Path, toy_music: list[dict[str, Any]]) -> None:
    settings = tmp_path / "tune.toml"
    settings.write_text('algorithm = "g"\ngamma = 0.7\nseed = 1\nreplay_size = 4096\n')
    run = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["tune", "--config", str(settings), "--seed", "3", "--out", str(run), *FAST]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert saved["algorithm"] == "g" and saved["gamma"] == 0.7 and saved["replay_size"] == 4096  # the file
    assert saved["seed"] == 3 and saved["n_envs"] == 16  # the flags


def test_tune_config_json_of_a_run_reproduces_it(tmp_path: Path, toy_music: list[dict[str, Any]]) -> None:
    first = tmp_path / "first"
    args = ["-a", "psi", "--seed", "2", "--primer", "5", *FAST]
    assert CliRunner().invoke(cli, ["tune", "--out", str(first), *args]).exit_code == 0
    recorded = json.loads((first / "config.json").read_text())
    # the toy domain stands in for music here, and records no primer: write what music's record holds
    (first / "config.json").write_text(json.dumps({**recorded, "domain": "music", "primer": "fixed:5"}))
    again = tmp_path / "again"
    result = CliRunner().invoke(cli, ["tune", "--config", str(first / "config.json"), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert json.loads((again / "config.json").read_text()) == recorded
    assert toy_music[-1]["primer"] == 5  # the primer came back from the record too (parsed: class 5)

    def rows(run: Path) -> list[dict[str, Any]]:
        return [{k: v for k, v in json.loads(line).items() if k != "wall_s"}
                for line in (run / "metrics.jsonl").read_text().splitlines()]  # fmt: skip

    assert rows(again) == rows(first)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("gamma = 0.5\nbogus = 1\n", "unknown setting(s) bogus"),
        ('seed = "abc"\n', "seed: expected int"),
        ("learning_rate = true\n", "learning_rate: expected float, got True"),
        ("[reward.music_theory.weights]\ntonic = true\n", "tonic: expected float, got True"),
        ("gamma = 1.5\n", "gamma must be in [0, 1)"),
        ("gamma = \n", "is not valid TOML"),
    ],
)
def test_tune_config_errors_name_the_key(
    tmp_path: Path,
    toy_music: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    text: str,
    message: str,
) -> None:
    settings = tmp_path / "bad.toml"
    settings.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--config", str(settings), "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and str(settings) in err and len(err.strip().splitlines()) == 1
    assert not toy_music


def test_missing_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--config", str(tmp_path / "none.toml")])
    assert exc.value.code == 2
    assert "cannot read settings file" in capsys.readouterr().err


# -------------------------------------------------------------------------------------------------- run --config
class _CapturedError(Exception):
    pass


@pytest.fixture
def captured_pipeline(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []

    def fake(config: Any, command: str | None = None) -> Path:
        seen.append(config)
        return Path("report.html")

    monkeypatch.setattr("rltuner.evaluation.pipeline.run_pipeline", fake)
    return seen


def test_run_config_file_flags_and_set(tmp_path: Path, captured_pipeline: list[Any]) -> None:
    settings = tmp_path / "run.toml"
    settings.write_text('algorithms = ["q", "g"]\nseed = 5\nsamples = 100\naudio_per_model = 1\n')
    result = CliRunner().invoke(
        cli, ["run", "--config", str(settings), "--seed", "7", "-n", "50", "--set", "midi_per_model=2",
              "--tensorboard", "-q", "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (config,) = captured_pipeline
    assert config.algorithms == ("q", "g") and config.audio_per_model == 1  # the file
    assert config.seed == 7 and config.samples == 50 and config.midi_per_model == 2  # the flags, --set
    assert config.tensorboard is True and config.progress is False
    assert config.muspy_samples == 1000  # neither: the default


def test_run_config_reads_a_run_json(tmp_path: Path, captured_pipeline: list[Any]) -> None:
    record = {"command": "rltuner run", "settings": {"pipeline": {"out": "old", "seed": 4, "quick": True}}}
    (tmp_path / "run.json").write_text(json.dumps(record))
    result = CliRunner().invoke(
        cli, ["run", "--config", str(tmp_path / "run.json"), "--out", str(tmp_path / "n")]
    )
    assert result.exit_code == 0, result.output
    assert captured_pipeline[0].seed == 4 and captured_pipeline[0].quick is True
    assert captured_pipeline[0].out == str(tmp_path / "n")


def test_run_config_unknown_key(tmp_path: Path, captured_pipeline: list[Any], capsys: Any) -> None:
    (tmp_path / "run.toml").write_text("sead = 1\n")
    with pytest.raises(SystemExit) as exc:
        main(["run", "--config", str(tmp_path / "run.toml")])
    assert exc.value.code == 2 and "unknown setting(s) sead" in capsys.readouterr().err
    assert not captured_pipeline


def test_compare_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []

    def fake(cfg: Any, task: Any, out: Any, progress: bool = True) -> Any:
        seen.append((cfg, progress))
        raise _CapturedError

    monkeypatch.setattr("rltuner.evaluation.compare.run_comparison", fake)
    (tmp_path / "c.toml").write_text(
        'budget = 4096\nseeds = 1\nalgorithms = ["q"]\n[settings]\nreward_scale = [1.0]\n'
    )
    result = CliRunner().invoke(cli, ["compare", "--config", str(tmp_path / "c.toml"), "--seeds", "2", "-q"])
    assert isinstance(result.exception, _CapturedError)
    cfg, progress = seen[0]
    assert cfg.budget == 4096 and cfg.algorithms == ("q",) and list(cfg.settings["reward_scale"]) == [1.0]
    assert cfg.seeds == 2 and progress is False


def test_pretrain_config_unknown_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.toml").write_text('[model]\narch = "gru"\nwidth = 3\n')
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--config", str(tmp_path / "p.toml"), "--out", str(tmp_path / "p.safetensors")])
    assert exc.value.code == 2
    assert "width" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- verbose
def test_verbose_shows_settings_and_files_written(
    tmp_path: Path, toy_music: list[dict[str, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    try:
        with caplog.at_level(logging.DEBUG, logger="rltuner"):
            result = CliRunner().invoke(cli, ["-v", "tune", "--out", str(tmp_path / "r"), *FAST])
        assert result.exit_code == 0, result.output
        messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
        assert any(m.startswith("tune settings: TuneConfig(") for m in messages)
        assert f"wrote {tmp_path / 'r' / 'config.json'}" in messages
    finally:
        logging.getLogger("rltuner").setLevel(logging.NOTSET)


def test_without_verbose_no_debug_lines(tmp_path: Path, toy_music: list[dict[str, Any]]) -> None:
    try:
        CliRunner().invoke(cli, ["tune", "--out", str(tmp_path / "r"), *FAST])
        assert not logging.getLogger("rltuner").isEnabledFor(logging.DEBUG)
    finally:
        logging.getLogger("rltuner").setLevel(logging.NOTSET)


# ------------------------------------------------------------------------------------------------------- --rule
RULES = """
import numpy as np

def always_one(history, action, t, length):
    return np.ones(action.shape[0])

def wrong_shape(history, action, t, length):
    return np.ones((action.shape[0], 2))

def not_finite(history, action, t, length):
    return np.full(action.shape[0], np.nan)

NOT_A_FUNCTION = 3
"""


@pytest.fixture
def rule_file(tmp_path: Path) -> Any:
    from rltuner.rewards.music_theory import registered_rules, unregister_rule

    path = tmp_path / "my_rules.py"
    path.write_text(RULES)
    before = set(registered_rules())
    yield path
    for name in set(registered_rules()) - before:
        unregister_rule(name)


def _mean_reward(args: list[str]) -> float:
    result = CliRunner().invoke(cli, ["score", *args, "--json"])
    assert result.exit_code == 0, result.output
    return float(json.loads(result.output)["mean_reward_per_step"])


def test_score_with_a_rule_from_a_file(tmp_path: Path, rule_file: Path) -> None:
    melodies = np.random.default_rng(0).integers(0, 38, size=(6, 32))
    np.save(tmp_path / "m.npy", melodies)
    plain = _mean_reward([str(tmp_path / "m.npy")])
    with_rule = _mean_reward([str(tmp_path / "m.npy"), "--rule", f"{rule_file}:always_one"])
    assert with_rule == pytest.approx(plain + 1.0)
    renamed = _mean_reward([str(tmp_path / "m.npy"), "--rule", f"bonus={rule_file}:always_one@2.5"])
    assert renamed == pytest.approx(plain + 1.0 + 2.5)  # rules stay registered for the rest of the process
    from rltuner.rewards.music_theory import registered_rules

    assert {"always_one", "bonus"} <= set(registered_rules())


def test_rule_from_an_importable_module(
    tmp_path: Path, rule_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rltuner.rewards.user_rules import load_rule

    monkeypatch.syspath_prepend(str(rule_file.parent))
    name, fn, weight, desc = load_rule("my_rules:always_one")
    assert (
        name == "always_one"
        and weight == 1.0
        and fn(np.zeros((3, 0)), np.zeros(3), 0, 32).tolist() == [1, 1, 1]
    )
    assert len(desc["sha256"]) == 64


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{file}:NOT_A_FUNCTION", "NOT_A_FUNCTION is a int, not a function"),
        ("{file}:missing", "has no attribute 'missing'"),
        ("{file}:wrong_shape", "must return one number per melody"),
        ("{dir}/nope.py:f", "no such file"),
        ("no_such_module_xyz:f", "no module named 'no_such_module_xyz'"),
        ("{dir}/broken.py:f", "importing"),
        ("just_a_name", "expected MODULE:FUNCTION"),
        ("{file}:always_one@heavy", "is not a number"),
        ("{file}:always_one@nan", "must be a finite number"),
        ("{file}:always_one@inf", "must be a finite number"),
        ("{file}:not_finite", "returned a value that is not finite"),
    ],
)
def test_rule_errors_are_one_line(
    tmp_path: Path, rule_file: Path, capsys: pytest.CaptureFixture[str], spec: str, message: str
) -> None:
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom')\n")
    np.save(tmp_path / "m.npy", np.full((2, 32), 14))
    with pytest.raises(SystemExit) as exc:
        main(["score", str(tmp_path / "m.npy"), "--rule", spec.format(file=rule_file, dir=tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_rule_is_refused_for_molecules(rule_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--domain", "molecules", "--rule", f"{rule_file}:always_one"])
    assert exc.value.code == 2
    assert "--rule applies to the music domain" in capsys.readouterr().err


def test_run_passes_rules_into_its_settings(
    tmp_path: Path, rule_file: Path, captured_pipeline: list[Any]
) -> None:
    result = CliRunner().invoke(
        cli, ["run", "--rule", f"{rule_file}:always_one", "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    assert captured_pipeline[0].rules == (f"{rule_file}:always_one",)


def test_resume_needs_the_same_rules(
    tmp_path: Path, rule_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run tuned with a rule is not resumed without it (the reward would change half-way)."""
    run = tmp_path / "run"
    args = ["tune", "-a", "q", "--seed", "0", *FAST]
    first = CliRunner().invoke(cli, [*args, "--out", str(run), "--rule", f"{rule_file}:always_one"])
    assert first.exit_code == 0, first.output
    with pytest.raises(SystemExit) as exc:
        main([*args, "--resume", str(run), "--set", "total_steps=1024"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "--rule always_one" in err and len(err.splitlines()) == 1
    again = CliRunner().invoke(
        cli, [*args, "--resume", str(run), "--set", "total_steps=1024", "--rule", f"{rule_file}:always_one"]
    )
    assert again.exit_code == 0, again.output


@pytest.mark.slow
@pytest.mark.parametrize("jobs", ["1", "2"])
def test_run_records_its_rules_in_each_tuning_folder_as_tune_does(
    tmp_path: Path, rule_file: Path, tiny_prior_file: Path, capsys: pytest.CaptureFixture[str], jobs: str
) -> None:
    rule = ["--rule", f"bonus={rule_file}:always_one@2"]
    tuned = tmp_path / "tuned"
    alone = CliRunner().invoke(
        cli, ["tune", "-a", "q", "--prior", str(tiny_prior_file), *FAST, *rule, "--out", str(tuned)]
    )
    assert alone.exit_code == 0, alone.output
    recorded = json.loads((tuned / "reward.json").read_text())
    assert [r["name"] for r in recorded["rules"]] == ["bonus"] and recorded["rules"][0]["weight"] == 2.0
    out = tmp_path / "run"
    args = ["run", "--out", str(out), "--prior", str(tiny_prior_file), "--algorithms", "q", "--quick",
            "--steps", "1024", "--samples", "32", "--muspy-samples", "0", "--no-copying", "-q", "--jobs", jobs]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, *rule])
    assert result.exit_code == 0, result.output
    for key in ("q", "featured"):  # every tuning run of the job, the featured model's too
        assert json.loads((out / "tune" / key / "reward.json").read_text()) == recorded
    # the record is the one tune checks: resuming the run's folder without the rule is refused
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--resume", str(out / "tune" / "q"), "--prior", str(tiny_prior_file), "-q"])
    assert exc.value.code == 2 and "tuned with --rule bonus" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["tune", "--steps", "512"], ["generate", "-n", "2"]])
def test_threads_beyond_the_limit_are_refused(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:  # OpenMP segfaults when asked for ~100,000 threads
        main([*command, "--threads", "100000"])
    assert exc.value.code == 2 and "--threads" in capsys.readouterr().err


@pytest.mark.parametrize("primer", ["0", "1"])
def test_a_primer_is_a_note(primer: str) -> None:
    from rltuner.domains.music import parse_primer
    from rltuner.errors import ConfigError

    with pytest.raises(ConfigError, match="not a note"):
        parse_primer(primer)
    assert parse_primer("2") == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[reward]\nkey = "G"\n', "reward must be a table of"),
        ("reward = 5\n", "reward must be a table of"),
        ("melody_length = 16\n", "melody_length 16"),
        ("primer = 14\n", "primer must be a string"),
        ('domain = "zzz"\n', "domain 'zzz' is not one of"),
    ],
)
def test_tune_config_checks_the_keys_a_run_record_adds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    settings = tmp_path / "t.toml"
    settings.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["tune", "--config", str(settings), "--steps", "512", "--out", str(tmp_path / "r")])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(settings) in err and len(err.splitlines()) == 1


def test_tune_config_schedules_follow_a_new_budget(tmp_path: Path, toy_music: list[dict[str, Any]]) -> None:
    """A run's config.json holds schedules scaled to its budget; --steps scales them again to the new one."""
    settings = tmp_path / "t.json"
    settings.write_text(json.dumps({"total_steps": 8192, "epsilon_steps": 2048, "eval_every": 1024}))
    run = tmp_path / "r"
    args = ["tune", "--config", str(settings), "--steps", "16384", "--out", str(run), "--n-envs", "16",
            "--batch-size", "64", "--train-every", "32", "--quiet", "--set", "tensorboard=false",
            "--set", "eval_episodes=20"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "config.json").read_text())
    assert (saved["total_steps"], saved["epsilon_steps"], saved["eval_every"]) == (16384, 4096, 2048)
