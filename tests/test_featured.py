"""The featured model's settings files (``rltuner.featured``): the shipped one, a sweep's best.toml, errors."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli, main
from rltuner.errors import ConfigError
from rltuner.featured import read_featured, read_tune_file, resolve_settings_file, shipped_featured_path
from rltuner.rl.config import PRESETS

# the confirmed command of the featured configuration (docs/sweep.md, "The second and third sweeps")
CONFIRMED = Path(__file__).resolve().parents[1] / "docs" / "results" / "sweep-3-t001.cmd"


def _confirmed() -> tuple[str, dict[str, str], dict[str, str]]:
    words = shlex.split(CONFIRMED.read_text())
    algorithm = words[words.index("--algorithm") + 1]
    pairs = [
        (flag, words[i + 1].split("=", 1))
        for i, flag in enumerate(words)
        if flag in ("--set", "--reward-weight")
    ]
    sets = {k: v for flag, (k, v) in pairs if flag == "--set"}
    weights = {k: v for flag, (k, v) in pairs if flag == "--reward-weight"}
    return algorithm, sets, weights


ALGORITHM, SETS, WEIGHTS = _confirmed()


def _value(text: str) -> object:
    if text in ("true", "false"):
        return text == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def test_the_shipped_file_holds_the_confirmed_configuration() -> None:
    featured = read_featured()
    assert featured.source.startswith("rltuner/assets/featured.toml")
    assert featured.algorithm == ALGORITHM and featured.settings["total_steps"] == 1_000_000
    for name, text in SETS.items():
        assert featured.settings[name] == _value(text), name
    assert featured.weights() == {k: float(v) for k, v in WEIGHTS.items()}
    rows = dict(featured.describe())
    assert list(dict(featured.describe()))[:2] == ["source", "algorithm"] and rows["rule weight tonic"]
    # the header says where the values came from
    assert "docs/sweep.md" in shipped_featured_path().read_text()


def test_featured_name_resolves_to_the_shipped_file_unless_a_file_has_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_settings_file("featured") == shipped_featured_path()
    (tmp_path / "featured").write_text('algorithm = "g"\n')
    assert resolve_settings_file("featured") == Path("featured")
    assert read_featured("featured").algorithm == "g"


def test_schedules_scale_with_the_run_budget_as_the_presets_do() -> None:
    featured = read_featured()
    full = featured.tune_config()
    assert full.total_steps == 1_000_000 and full.epsilon_steps == 250_000
    assert full.eval_every == PRESETS["fast"].eval_every
    short = featured.tune_config(8192, seed=3)
    assert short.total_steps == 8192 and short.seed == 3
    assert short.epsilon_steps == round(250_000 * 8192 / 1_000_000)
    assert short.eval_every == round(PRESETS["fast"].eval_every * 8192 / 1_000_000)
    assert short.gamma == full.gamma and short.batch_size == full.batch_size


def test_report_rows_show_the_budget_the_run_tuned_with() -> None:
    featured = read_featured()
    assert dict(featured.describe(featured.tune_config()))["total_steps"] == "1000000"
    rows = dict(featured.describe(featured.tune_config(8192, seed=3)))
    assert rows["total_steps"].startswith("8192 (the file: 1000000")
    assert rows["epsilon_steps"].startswith(f"{round(250_000 * 8192 / 1_000_000)} (the file: 250000")
    assert rows["gamma"] == str(
        featured.settings["gamma"]
    )  # not changed by the budget: the file's value alone


def test_tune_config_featured_is_the_confirmed_command(tmp_path: Path, tiny_prior_file: Path) -> None:
    """`rltuner tune --config featured` tunes what the sweep's command line for the featured trial tunes."""
    common = ["tune", "--prior", str(tiny_prior_file), "--steps", "1024", "--seed", "0", "-q"]
    by_file = CliRunner().invoke(cli, [*common, "--config", "featured", "--out", str(tmp_path / "file")])
    assert by_file.exit_code == 0, by_file.output
    # the command at another budget states its schedule scaled to it, as the sweep's best_command.txt writes it
    scaled = {**SETS, "epsilon_steps": str(round(250_000 * 1024 / 1_000_000))}
    sets = [a for k, v in scaled.items() for a in ("--set", f"{k}={v}")]
    weights = [a for k, v in WEIGHTS.items() for a in ("--reward-weight", f"{k}={v}")]
    by_flags = CliRunner().invoke(
        cli, [*common, "--algorithm", ALGORITHM, *sets, *weights, "--out", str(tmp_path / "flags")]
    )
    assert by_flags.exit_code == 0, by_flags.output
    a = json.loads((tmp_path / "file" / "config.json").read_text())
    b = json.loads((tmp_path / "flags" / "config.json").read_text())
    assert a == b and a["algorithm"] == ALGORITHM
    assert a["reward"]["music_theory"]["weights"]["tonic"] == float(WEIGHTS["tonic"])


def test_a_sweeps_best_toml_is_a_settings_file(tmp_path: Path) -> None:
    from rltuner.sweep.results import write_results

    row = {"trial": "t001", "status": "finished", "goal_deficit": 0.5, "goals_met": 9, "goals_scored": 11,
           "algorithm": ALGORITHM, **{k: _value(v) for k, v in SETS.items()},
           **{f"reward.{k}": float(v) for k, v in WEIGHTS.items()}}  # fmt: skip
    params = ["algorithm", *SETS, *(f"reward.{k}" for k in WEIGHTS)]
    paths = write_results(tmp_path, [row], params, {"steps": 1_000_000})
    assert "[tune]" in paths["best_toml"].read_text()
    best, shipped = read_featured(paths["best_toml"]), read_featured()
    assert best.algorithm == shipped.algorithm and best.weights() == shipped.weights()
    assert best.tune_config(8192) == shipped.tune_config(8192)  # total_steps absent: the fast preset's 1M
    assert read_tune_file(paths["best_toml"]).reward == shipped.reward


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('algorithm = "psi"\nwarp = 2\n', "unknown setting"),
        ('algorithm = "dqn"\n', "algorithm"),
        ('domain = "molecules"\n', "music model"),
        ('primer = "C4"\n', "random notes"),
        ("[tune]\ngamma = 0.9\n[extra]\nx = 1\n", r"beside \[tune\]"),
        ("[tune]\ngamma = 0.9\n[reward]\nbass = 2.0\n", "bass"),
        ("algorithm = ", "not valid TOML"),
    ],
)
def test_a_bad_featured_file_is_one_error_naming_it(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as exc:
        read_featured(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_run_refuses_a_bad_featured_file_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mine.toml"
    path.write_text("gamma = 2.0\n")
    with pytest.raises(SystemExit) as exc:
        main(["run", "--featured", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "mine.toml" in err and "gamma" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "o").exists()  # checked before anything is written
    with pytest.raises(SystemExit) as exc:
        main(["run", "--featured", str(path), "--no-featured", "--out", str(tmp_path / "o")])
    assert exc.value.code == 2 and "not both" in capsys.readouterr().err


def test_shipped_file_parses_as_plain_toml() -> None:
    from rltuner.config import read_settings

    data = read_settings(shipped_featured_path())
    assert data["algorithm"] == ALGORITHM and set(data["reward"]["music_theory"]["weights"]) == set(WEIGHTS)
