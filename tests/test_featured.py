"""The featured model's settings files (``rltuner.featured``): the shipped one, a sweep's best.toml, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from rltuner.cli.main import cli, main
from rltuner.errors import ConfigError
from rltuner.featured import read_featured, read_tune_file, resolve_settings_file, shipped_featured_path
from rltuner.rl.config import PRESETS

# the sweep's trial t023 as its command line gives it (docs/sweep.md, "The first sweep")
T023_SETS = {"reward_scale": "1.4681326710178677", "gamma": "0.9", "learning_rate": "0.0019155348217544104",
             "target_update_rate": "0.011280415893065882", "batch_size": "512", "train_every": "320",
             "exploration": "boltzmann", "epsilon_steps": "250000"}  # fmt: skip
T023_WEIGHTS = {"tonic": "2.533110238410481", "extremes": "2.9925257326812296", "motif": "1.0258322170518321",
                "repeated_motif": "0.7565321600310111", "leaps": "1.0875121991808543"}  # fmt: skip


@pytest.fixture(scope="module")
def tiny_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rltuner.models.checkpoint import save_prior
    from rltuner.models.prior import build_prior

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prior") / "tiny.safetensors"
    save_prior(path, build_prior({"arch": "lstm", "hidden_size": 8}))
    return path


def test_the_shipped_file_holds_t023() -> None:
    featured = read_featured()
    assert featured.source.startswith("rltuner/assets/featured.toml")
    assert featured.algorithm == "psi" and featured.settings["total_steps"] == 1_000_000
    for name, text in T023_SETS.items():
        value = featured.settings[name]
        assert (value == text) if isinstance(value, str) else value == type(value)(float(text)), name
    assert featured.weights() == {k: float(v) for k, v in T023_WEIGHTS.items()}
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


def test_tune_config_featured_is_the_t023_command(tmp_path: Path, tiny_prior: Path) -> None:
    """`rltuner tune --config featured` tunes what the sweep's command line for t023 tunes."""
    common = ["tune", "--prior", str(tiny_prior), "--steps", "1024", "--seed", "0", "-q"]
    by_file = CliRunner().invoke(cli, [*common, "--config", "featured", "--out", str(tmp_path / "file")])
    assert by_file.exit_code == 0, by_file.output
    # the command at another budget states its schedule scaled to it, as the sweep's best_command.txt writes it
    scaled = {**T023_SETS, "epsilon_steps": str(round(250_000 * 1024 / 1_000_000))}
    sets = [a for k, v in scaled.items() for a in ("--set", f"{k}={v}")]
    weights = [a for k, v in T023_WEIGHTS.items() for a in ("--reward-weight", f"{k}={v}")]
    by_flags = CliRunner().invoke(
        cli, [*common, "--algorithm", "psi", *sets, *weights, "--out", str(tmp_path / "flags")]
    )
    assert by_flags.exit_code == 0, by_flags.output
    a = json.loads((tmp_path / "file" / "config.json").read_text())
    b = json.loads((tmp_path / "flags" / "config.json").read_text())
    assert a == b and a["algorithm"] == "psi" and a["reward"]["music_theory"]["weights"]["tonic"] > 2.5


def test_a_sweeps_best_toml_is_a_settings_file(tmp_path: Path) -> None:
    from rltuner.sweep.results import write_results

    row = {"trial": "t023", "status": "finished", "goal_deficit": 0.5, "goals_met": 7, "goals_scored": 11,
           "algorithm": "psi", **{k: (v if k == "exploration" else float(v)) for k, v in T023_SETS.items()},
           **{f"reward.{k}": float(v) for k, v in T023_WEIGHTS.items()}}  # fmt: skip
    for name in ("batch_size", "train_every", "epsilon_steps"):
        row[name] = int(row[name])
    params = ["algorithm", *T023_SETS, *(f"reward.{k}" for k in T023_WEIGHTS)]
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
    assert data["algorithm"] == "psi" and set(data["reward"]["music_theory"]["weights"]) == set(T023_WEIGHTS)
