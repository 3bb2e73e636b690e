"""``rltuner sweep``: the search space, the goal deficit, the Pareto front, the result files (all Ray-free) and
the Ray Tune path end to end on a tiny space (skipped when Ray is not installed)."""

from __future__ import annotations

import importlib.util
import json
import math
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli, main
from rltuner.errors import ConfigError, RLTunerError
from rltuner.sweep.objective import GOALS, LOG_P_GAP, pareto_front, score
from rltuner.sweep.results import mark_pareto, tune_command, write_results
from rltuner.sweep.space import default_space, draw_trials, load_space, parse_space, split_params
from rltuner.sweep.trial import TrialSettings, run_trial

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

HAS_RAY = importlib.util.find_spec("ray") is not None
HAS_OPTUNA = importlib.util.find_spec("optuna") is not None

TINY_SPACE = """
[space]
algorithm = ["q", "g"]
n_envs = 8
batch_size = 256
reward_scale = { loguniform = [0.2, 1.0] }
[space.reward]
tonic = { uniform = [1.0, 2.0] }
"""


def _write(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------------------------------------------
# the search space


def test_space_file_is_read_into_dimensions(tmp_path: Path) -> None:
    space = load_space(
        _write(
            tmp_path,
            TINY_SPACE.replace(
                "[space]\n",
                "[space]\ngamma = { uniform = [0.5, 0.9] }\nepsilon_steps = { randint = [10, 20] }\n",
            ),
        )
    )
    kinds = {d.name: (d.kind, d.values) for d in space.dimensions}
    assert kinds["algorithm"] == ("choice", ("q", "g"))
    assert kinds["n_envs"] == ("fixed", (8,))
    assert kinds["reward_scale"] == ("loguniform", (0.2, 1.0))
    assert kinds["reward.tonic"] == ("uniform", (1.0, 2.0))
    draws = space.sample(50, seed=1)
    assert draws == space.sample(50, seed=1) and draws != space.sample(50, seed=2)
    for d in draws:
        assert d["algorithm"] in ("q", "g") and d["n_envs"] == 8
        assert 0.2 <= d["reward_scale"] <= 1.0 and 1.0 <= d["reward.tonic"] <= 2.0
        assert isinstance(d["epsilon_steps"], int) and 10 <= d["epsilon_steps"] < 20
    assert {d["algorithm"] for d in draws} == {"q", "g"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[space]\nlearning_rat = 0.1\n", "unknown setting 'learning_rat'"),
        ("[space]\ntotal_steps = [1, 2]\n", "set by the sweep itself"),
        ("[space.reward]\nkeyy = 1.0\n", "unknown reward rule 'keyy'"),
        ("[space]\ngamma = { normal = [0, 1] }\n", "must be a value, a list, or one of"),
        ("[space]\ngamma = { uniform = [0.9, 0.5] }\n", "needs low < high"),
        ("[space]\nlearning_rate = { loguniform = [0, 0.1] }\n", "needs low > 0"),
        ("[space]\ngamma = { uniform = [0.5] }\n", "two numbers"),
        ("[space]\nbatch_size = { uniform = [32, 64] }\n", "integer setting"),
        ("[space]\ngamma = { randint = [0, 1] }\n", "not an integer setting"),
        ("[space]\nexploration = { uniform = [0, 1] }\n", "not a number"),
        ("[space]\nbatch_size = [512, 'many']\n", "expected int"),
        ("[space]\nlearning_rate = true\n", "learning_rate: expected float, got True"),
        ("[space]\nlearning_rate = [true, 0.001]\n", "learning_rate: expected float, got True"),
        ("[space.reward]\ntonic = true\n", "tonic: expected float, got True"),
        ("[space]\nbatch_size = [false, 512]\n", "batch_size: expected int, got False"),
        ("[space]\nalgorithm = []\n", "non-empty list"),
        ("[grid]\ngamma = 0.5\n", "unknown table"),
        ("title = 'x'\n", "unknown table"),
        ("[space]\n", "no [space] table"),
        ("[space\ngamma = 1\n", "not valid TOML"),
    ],
)
def test_space_file_errors_are_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_space(path)


def test_space_file_error_through_the_cli_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "[space]\ngamma = { uniform = [0.9, 0.5] }\n")
    for args in (["--space", str(path)], ["--space", str(tmp_path / "missing.toml")]):
        with pytest.raises(SystemExit) as exit_info:
            main(["sweep", *args, "--dry-run"])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_drawn_trials_keep_only_what_their_algorithm_reads_and_are_checked(tmp_path: Path) -> None:
    space = parse_space(
        {
            "space": {
                "algorithm": ["q", "psi", "rloo"],
                "double_q": [True],
                "entropy_coef": 0.01,
                "gamma": 0.7,
                "exploration": "boltzmann",
            }
        }
    )
    trials = draw_trials(space, 30, seed=0, steps=1000, rounds=2)
    for t in trials:
        assert ("double_q" in t) == (t["algorithm"] == "q")  # psi has no double Q
        assert ("entropy_coef" in t) == (t["algorithm"] == "rloo")  # value family: no entropy bonus
        assert ("gamma" in t) == (t["algorithm"] != "rloo")
        assert ("exploration" in t) == (t["algorithm"] != "rloo")  # on-policy: samples the policy
    bad = parse_space({"space": {"batch_size": [100]}})  # not a multiple of the 32-step melody
    with pytest.raises(ConfigError, match=r"drawn configuration 0 .* multiple of the episode length"):
        draw_trials(bad, 1, seed=0, steps=1000, rounds=2)


def test_the_built_in_space_draws_valid_trials() -> None:
    space = default_space()
    assert {"algorithm", "reward_scale", "gamma", "learning_rate", "target_update_rate"} <= set(space.names)
    trials = draw_trials(space, 40, seed=0, steps=1_000_000, rounds=4)
    assert {t["algorithm"] for t in trials} == {"q", "psi", "g", "rloo"}
    changes, weights = split_params(trials[0])
    assert set(weights) == {"tonic", "extremes", "motif", "repeated_motif", "leaps"}
    assert not any(k.startswith("reward.") for k in changes)


def test_dry_run_and_show_space_need_no_ray(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["sweep", "--space", str(_write(tmp_path, TINY_SPACE)), "--samples", "3", "--dry-run"]
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert [line.split()[0] for line in lines] == ["t000", "t001", "t002"]
    assert json.loads(lines[0].split(" ", 1)[1])["n_envs"] == 8
    shown = CliRunner().invoke(cli, ["sweep", "--show-space"])
    assert shown.exit_code == 0 and "algorithm" in tomllib.loads(shown.output)["space"]


@pytest.mark.skipif(not HAS_OPTUNA, reason="Optuna is not installed: pip install 'rltuner[sweep]'")
def test_space_translates_to_optuna_distributions(tmp_path: Path) -> None:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from rltuner.sweep.space import optuna_distributions

    space = load_space(
        _write(
            tmp_path,
            TINY_SPACE.replace(
                "[space]\n",
                "[space]\nepsilon_steps = { randint = [10, 20] }\ndouble_q = [true, false]\n"
                "gamma = { uniform = [0.5, 0.9] }\n",
            ),
        )
    )
    searched, fixed = optuna_distributions(space)
    assert fixed == {"n_envs": 8, "batch_size": 256}
    assert searched["algorithm"] == CategoricalDistribution(("q", "g"))
    assert searched["double_q"] == CategoricalDistribution((True, False))
    assert searched["reward_scale"] == FloatDistribution(0.2, 1.0, log=True)
    assert searched["gamma"] == FloatDistribution(0.5, 0.9)
    assert searched["reward.tonic"] == FloatDistribution(1.0, 2.0)
    assert searched["epsilon_steps"] == IntDistribution(
        10, 19
    )  # randint's [low, high) as Optuna's [low, high]
    assert list(searched) == [n for n in space.names if n not in fixed]
    built_in, _ = optuna_distributions(default_space())
    assert set(built_in) <= set(default_space().names) and "algorithm" in built_in


def test_model_based_dry_run_says_it_cannot_list_configurations(tmp_path: Path) -> None:
    pytest.importorskip("optuna")
    space = str(_write(tmp_path, TINY_SPACE))
    result = CliRunner().invoke(cli, ["sweep", "--space", space, "--searcher", "tpe", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "cannot be listed in advance" in result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    assert lines["n_envs"] == "fixed 8" and lines["algorithm"].startswith("CategoricalDistribution")
    assert not any(line.startswith("t000") for line in result.stdout.splitlines())


def test_without_optuna_a_model_based_searcher_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna -> ImportError
    space = str(_write(tmp_path, TINY_SPACE))
    for extra in (["--dry-run"], ["--out", str(tmp_path / "out")]):
        with pytest.raises(SystemExit) as exit_info:
            main(["sweep", "--space", space, "--searcher", "nsga2", *extra])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        if "Ray Tune" in err:  # no Ray either: that is said first
            continue
        assert "--searcher nsga2 needs Optuna" in err and "rltuner[sweep]" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    random = CliRunner().invoke(cli, ["sweep", "--space", space, "--dry-run", "--samples", "1"])
    assert random.exit_code == 0 and random.output.startswith("t000")  # random search needs no Optuna


def test_model_based_samplers_are_seeded_and_sized_for_the_sweep() -> None:
    pytest.importorskip("optuna")
    import optuna

    from rltuner.sweep.runner import make_sampler, nsga2_population
    from rltuner.sweep.space import optuna_distributions

    assert [nsga2_population(n) for n in (2, 8, 32, 400)] == [2, 2, 8, 50]
    assert isinstance(make_sampler("tpe", 32, 0), optuna.samplers.TPESampler)
    searched, _ = optuna_distributions(default_space())

    def first_draws(seed: int) -> list[dict[str, Any]]:
        study = optuna.create_study(directions=["minimize"] * 3, sampler=make_sampler("nsga2", 32, seed))
        return [study.ask(fixed_distributions=searched).params for _ in range(3)]

    assert first_draws(3) == first_draws(3) and first_draws(3) != first_draws(4)
    with pytest.raises(ConfigError, match="no Optuna sampler"):
        make_sampler("random", 32, 0)


def test_the_searchers_objectives_are_reported_by_every_round() -> None:
    from rltuner.sweep.objective import SEARCH_OBJECTIVES, TABLE1_DEFICIT
    from rltuner.sweep.trial import report_row

    metrics = _metrics(**{"table1.leaps_resolved": 0.5, LOG_P_GAP: 1.0, "mean_log_p": -1.5})
    row = report_row({**metrics, "mean_task_reward": 0.0}, 100, 1.0)
    assert {m for m, _ in SEARCH_OBJECTIVES} <= set(row)
    assert row[TABLE1_DEFICIT] == pytest.approx((0.95 - 0.5) / 0.95)  # the log p shortfall is not in it
    assert row["goal_deficit"] == pytest.approx(row[TABLE1_DEFICIT] + 1.0)


# ---------------------------------------------------------------------------------------------------------
# the objective


def _metrics(**changes: float) -> dict[str, float]:
    """Metrics that meet every goal, with some changed."""
    met = {
        "table1.notes_excessively_repeated": 0.0, "table1.notes_not_in_key": 0.001,
        "table1.melodies_starting_with_tonic": 0.9, "table1.leaps_resolved": 0.99,
        "table1.melodies_with_unique_max_note": 0.7, "table1.melodies_with_unique_min_note": 0.7,
        "table1.notes_in_motif": 0.8, "table1.notes_in_repeated_motif": 0.01, LOG_P_GAP: 0.2,
        "diversity.distinct_melodies": 0.99, "diversity.top_opening_8": 0.01,
    }  # fmt: skip
    return {**met, **changes}


def test_goal_deficit_is_the_sum_of_normalised_shortfalls() -> None:
    s = score(_metrics())
    assert s.deficit == 0.0 and s.goals_met == len(GOALS) and s.missing == ()
    s = score(_metrics(**{"table1.melodies_starting_with_tonic": 0.6, LOG_P_GAP: 1.0}))
    assert s.shortfalls["tonic_start"] == pytest.approx((0.8 - 0.6) / 0.8)
    assert s.shortfalls["log_p_gap"] == pytest.approx((1.0 - 0.5) / 0.5)
    assert s.deficit == pytest.approx(0.25 + 1.0) and s.goals_met == len(GOALS) - 2
    at_threshold = score(_metrics(**{"table1.notes_not_in_key": 0.002, "diversity.distinct_melodies": 0.95}))
    assert at_threshold.deficit == 0.0


def test_a_goal_whose_metric_is_absent_is_skipped_and_named() -> None:
    metrics = _metrics(**{"table1.leaps_resolved": 0.5})
    del metrics["diversity.top_opening_8"]
    s = score(metrics)
    assert s.missing == ("top_opening",) and "top_opening" not in s.shortfalls
    assert s.deficit == pytest.approx((0.95 - 0.5) / 0.95)
    nan = score({**metrics, "diversity.distinct_melodies": math.nan})
    assert "distinct" in nan.missing
    back = score({**metrics, "diversity.top_opening_8": 0.5})  # the measure rltuner evaluate reports
    assert back.shortfalls["top_opening"] == pytest.approx((0.5 - 0.05) / 0.05)


def test_the_sweep_scores_the_goal_table_of_rltuner_evaluate() -> None:
    """One table of thresholds: every goal row of rltuner.evaluation.goals, and only those, is scored."""
    from rltuner.evaluation.goals import GOALS as EVALUATION_GOALS

    assert len(GOALS) == len(EVALUATION_GOALS)
    for sweep_goal, goal in zip(GOALS, EVALUATION_GOALS, strict=True):
        if goal.relative:
            assert sweep_goal.metrics == (LOG_P_GAP,) and sweep_goal.threshold == -goal.threshold
        else:
            assert sweep_goal.metrics == (goal.key,) and sweep_goal.threshold == goal.threshold
            assert sweep_goal.at_least == (goal.op == ">=")


def test_pareto_front() -> None:
    # (deficit: min, gap: min, distinct: max)
    points = [
        (1.0, 0.5, 0.9),
        (2.0, 0.2, 0.9),
        (2.0, 0.6, 0.8),
        (0.5, 0.5, 0.5),
        (1.0, math.nan, 1.0),
        (1.0, 0.5, 0.9),
    ]
    assert pareto_front(points, [False, False, True]) == [0, 1, 3, 5]  # 2 is dominated by 0; 4 has a NaN


# ---------------------------------------------------------------------------------------------------------
# result files and one trial


def _row(trial: str, deficit: float, gap: float, distinct: float, **params: Any) -> dict[str, Any]:
    return {"trial": trial, "status": "finished", "rounds": 2, "goal_deficit": deficit, "goals_met": 3,
            "goals_scored": 10, "goal.log_p_gap": gap, "goal.distinct": distinct, **params}  # fmt: skip


def test_results_table_best_config_and_plot(tmp_path: Path) -> None:
    names = ("algorithm", "n_envs", "batch_size", "reward.tonic")
    rows = [
        _row("t000", 3.0, 0.1, 0.99, algorithm="q", n_envs=8, batch_size=256, **{"reward.tonic": 2.0}),
        _row("t001", 1.5, 0.9, 0.60, algorithm="g", n_envs=8, batch_size=256, **{"reward.tonic": 1.5}),
        _row("t002", 4.0, 0.9, 0.50, algorithm="g", n_envs=8, batch_size=256, **{"reward.tonic": 1.0}),
        {"trial": "t003", "status": "error: RuntimeError", "rounds": 0, "algorithm": "q", "n_envs": 8},
    ]
    assert [(r["trial"], r["pareto"]) for r in mark_pareto(rows)] == [
        ("t001", True),
        ("t000", True),
        ("t002", False),
        ("t003", False),
    ]
    paths = write_results(tmp_path / "out", rows, names, {"steps": 512})
    md = (tmp_path / "out" / "trials.md").read_text().splitlines()
    assert md[0].startswith("| trial | status | rounds | goal_deficit") and md[2].startswith("| t001 |")
    assert len(md) == 2 + len(rows)
    csv_lines = (tmp_path / "out" / "trials.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + len(rows) and "reward.tonic" in csv_lines[0]
    assert json.loads(paths["json"].read_text())["trials"][0]["trial"] == "t001"
    best = tomllib.loads(paths["best_toml"].read_text())
    assert best == {
        "tune": {
            "algorithm": "g",
            "total_steps": 1_000_000,
            "n_envs": 8,
            "batch_size": 256,
        },  # the schedules' budget
        "reward": {"tonic": 1.5},
    }
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    command = paths["command"].read_text().strip()
    assert command == tune_command(best, 512)
    assert command == (
        "rltuner tune --algorithm g --steps 512 --set n_envs=8 --set batch_size=256 --reward-weight tonic=1.5"
    )


def test_the_best_command_is_one_that_rltuner_tune_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_tune(cfg: Any, task: Any, out_dir: Any, resume: bool = False) -> Any:
        seen["cfg"], seen["reward"] = cfg, task.reward_config
        raise SystemExit(0)

    monkeypatch.setattr("rltuner.rl.tuner.tune", fake_tune)
    command = tune_command(
        {"tune": {"algorithm": "g", "n_envs": 8, "gamma": 0.7}, "reward": {"tonic": 1.5}}, 512
    )
    result = CliRunner().invoke(cli, [*shlex.split(command)[1:], "--quiet", "--out", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    cfg = seen["cfg"]
    assert (cfg.algorithm, cfg.n_envs, cfg.gamma, cfg.total_steps) == ("g", 8, 0.7, 512)
    assert seen["reward"]["music_theory"]["weights"]["tonic"] == 1.5
    assert seen["reward"]["music_theory"]["weights"]["key"] == 1.0


@pytest.mark.parametrize("steps", [100_000, 1_000_000, 2_000_000])
def test_tune_config_best_toml_at_other_steps_plays_the_best_commands_schedules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, steps: int
) -> None:
    """best.toml states the schedules for the space's budget and says so (total_steps): --steps N scales them
    to N, so the file and best_command.txt of a sweep at N steps tune alike."""
    seen: list[Any] = []

    def fake_tune(cfg: Any, task: Any, out_dir: Any, resume: bool = False) -> Any:
        seen.append(cfg)
        raise SystemExit(0)

    monkeypatch.setattr("rltuner.rl.tuner.tune", fake_tune)
    names = ("algorithm", "epsilon_steps", "learning_starts", "n_envs", "reward.tonic")
    row = _row("t000", 1.0, 0.1, 0.9, algorithm="q", epsilon_steps=500_000, learning_starts=20_000, n_envs=8,
               **{"reward.tonic": 1.5})  # fmt: skip
    paths = write_results(tmp_path / "out", [row], names, {"steps": steps})
    from_file = CliRunner().invoke(
        cli,
        [
            "tune",
            "--config",
            str(paths["best_toml"]),
            "--steps",
            str(steps),
            "-q",
            "--out",
            str(tmp_path / "a"),
        ],
    )
    assert from_file.exit_code == 0, from_file.output
    command = shlex.split(paths["command"].read_text())[1:]
    from_command = CliRunner().invoke(cli, [*command, "-q", "--out", str(tmp_path / "b")])
    assert from_command.exit_code == 0, from_command.output
    by_file, by_command = seen
    scale = steps / 1_000_000
    assert (by_file.total_steps, by_file.epsilon_steps, by_file.learning_starts) == (
        steps,
        round(500_000 * scale),
        round(20_000 * scale),
    )
    assert by_file == by_command  # every setting, eval_every included


def test_one_trial_reports_each_evaluation_round() -> None:
    """Ray-free: the tuner's evaluation hook scores sampled melodies and reports the goal deficit."""
    reports: list[dict[str, Any]] = []
    params = {"algorithm": "q", "n_envs": 8, "batch_size": 256, "reward.tonic": 2.0}
    run_trial(params, TrialSettings(steps=512, rounds=2, melodies=64, reference_log_p=-1.2), reports.append)
    assert [r["env_step"] for r in reports] == [256, 512]
    for r in reports:
        assert r["goals_scored"] >= 10 and 0 <= r["goals_met"] <= r["goals_scored"]
        assert r["goal.log_p_gap"] == pytest.approx(-1.2 - r["mean_log_p"])
        shortfall = sum(g.shortfall(r[f"goal.{g.key}"]) for g in GOALS if f"goal.{g.key}" in r)
        assert r["goal_deficit"] == pytest.approx(shortfall) and r["goal_deficit"] > 0


def test_without_ray_the_command_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    from rltuner.sweep.runner import require_ray

    with pytest.raises(RLTunerError, match=r"pip install 'rltuner\[sweep\]'"):
        require_ray()
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", "--space", str(_write(tmp_path, TINY_SPACE)), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "rltuner[sweep]" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------
# Ray Tune, end to end


@pytest.mark.slow
@pytest.mark.skipif(not HAS_RAY, reason="Ray Tune is not installed: pip install 'rltuner[sweep]'")
def test_local_sweep_end_to_end_writes_table_best_config_and_plot(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    space = _write(tmp_path, TINY_SPACE)
    args = ["sweep", "--space", str(space), "--samples", "2", "--steps", "512", "--melodies", "100",
            "--rounds", "2", "--workers", "2", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "-q"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("2 trials") and result.stdout.count("\n") == 3  # -q: only the results
    trials = json.loads((out / "trials.json").read_text())["trials"]
    assert sorted(t["trial"] for t in trials) == ["t000", "t001"]
    for t in trials:
        assert t["status"] in ("finished", "stopped early") and t["rounds"] >= 1
        assert t["goal_deficit"] is not None and t["goal_deficit"] > 0
        assert t["n_envs"] == 8 and t["algorithm"] in ("q", "g")
    best = tomllib.loads((out / "best.toml").read_text())
    assert best["tune"]["n_envs"] == 8 and set(best["reward"]) == {"tonic"}
    assert (out / "pareto.png").stat().st_size > 1000
    assert (out / "trials.md").read_text().count("\n") == 4
    again = CliRunner().invoke(cli, args)  # the folder holds a sweep: one clear error
    assert again.exit_code != 0 and "already holds a sweep" in str(again.exception or again.output)
    resumed = CliRunner().invoke(cli, [*args, "--resume"])  # without -q: Ray's status table, not the saved -q
    assert resumed.exit_code == 0, resumed.output
    assert "Trial status: 2 TERMINATED" in resumed.stdout and "2 trials" in resumed.stdout
    assert json.loads((out / "trials.json").read_text())["trials"] == trials


def test_drawn_schedules_scale_with_the_trial_budget() -> None:
    """The space states schedules for the 1,000,000-step budget; a shorter --steps scales them alike."""
    from rltuner.sweep.space import trial_settings

    full, _ = trial_settings({"algorithm": "q", "epsilon_steps": 500_000}, 1_000_000, 4, 0)
    short, _ = trial_settings({"algorithm": "q", "epsilon_steps": 500_000}, 100_000, 4, 0)
    assert full.epsilon_steps == 500_000 and short.epsilon_steps == 50_000
    assert short.total_steps == 100_000 and short.eval_every == 25_000
    from rltuner.sweep.results import tune_command

    command = tune_command({"tune": {"algorithm": "q", "epsilon_steps": 500_000}, "reward": {}}, 100_000)
    assert "epsilon_steps=50000" in command  # the best command plays the schedule the trial played


@pytest.mark.slow
@pytest.mark.skipif(
    not (HAS_RAY and HAS_OPTUNA), reason="needs the sweep extra: pip install 'rltuner[sweep]'"
)
def test_local_nsga2_sweep_with_early_stopping_and_resume(tmp_path: Path) -> None:
    """NSGA-II picks the configurations (seed 6 draws Q, then G), and ASHA, on the scalar goal deficit beside
    the searcher's three objectives, stops the G trial that trails after its first round."""
    out = tmp_path / "sweep"
    space = _write(tmp_path, TINY_SPACE)
    args = ["sweep", "--space", str(space), "--samples", "2", "--steps", "512", "--melodies", "100",
            "--rounds", "2", "--workers", "1", "--seed", "6", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "--searcher", "nsga2"])
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "trials.json").read_text())
    assert recorded["sweep"]["searcher"] == "nsga2"
    trials = {t["trial"]: t for t in recorded["trials"]}
    assert sorted(trials) == ["t000", "t001"]
    assert [trials[k]["algorithm"] for k in ("t000", "t001")] == ["q", "g"]
    assert trials["t000"]["status"] == "finished" and trials["t000"]["rounds"] == 2
    assert trials["t001"]["status"] == "stopped early" and trials["t001"]["rounds"] == 1
    assert trials["t001"]["goal_deficit"] > trials["t000"]["goal_deficit"]
    for t in trials.values():
        assert t["n_envs"] == 8 and 0.2 <= t["reward_scale"] <= 1.0 and 1.0 <= t["reward.tonic"] <= 2.0
        assert t["table1_deficit"] <= t["goal_deficit"]
    assert tomllib.loads((out / "best.toml").read_text())["tune"]["algorithm"] == "q"
    assert (out / "pareto.png").stat().st_size > 1000
    other = CliRunner().invoke(cli, [*args, "--resume"])  # random search cannot go on with NSGA-II's sweep
    assert other.exit_code != 0 and "started with --searcher nsga2 --seed 6" in str(other.exception)
    again = CliRunner().invoke(cli, [*args, "--resume", "--searcher", "nsga2"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "trials.json").read_text())["trials"] == recorded["trials"]


def test_reward_primer_is_a_searched_choice_and_the_best_command_sets_it() -> None:
    space = parse_space({"space": {"algorithm": ["psi"], "reward_primer": [False, True]}})
    drawn = {params["reward_primer"] for params in space.sample(20, seed=0)}
    assert drawn == {False, True}
    assert "reward_primer" in default_space().names
    command = tune_command({"tune": {"algorithm": "psi", "reward_primer": True}, "reward": {}}, 1_000_000)
    assert "--set reward_primer=true" in command
    with pytest.raises(ConfigError, match="reward_primer"):
        parse_space({"space": {"reward_primer": ["maybe"]}})


def test_a_trial_that_played_its_budget_in_fewer_rounds_is_finished_not_stopped_early() -> None:
    from rltuner.sweep.runner import _row

    # --steps 4096 is played as one fast-preset round of 8,192 steps: one evaluation, not --rounds 2
    played = _row("t000", {}, {"training_iteration": 1, "env_step": 8192}, 2, 4096, status="TERMINATED")
    assert played["status"] == "finished" and played["rounds"] == 1
    stopped = _row("t001", {}, {"training_iteration": 1, "env_step": 4096}, 2, 8192, status="TERMINATED")
    assert stopped["status"] == "stopped early"
    assert _row("t002", {}, {"training_iteration": 2, "env_step": 8192}, 2, 8192)["status"] == "finished"
    assert _row("t003", {}, {"training_iteration": 1, "env_step": 4096}, 2, 8192, status="RUNNING")[
        "status"
    ] == ("unfinished")
