"""``rltuner compare``: the grid, resumable point files, the numbers over seeds, the verdict and the CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli
from rltuner.errors import ConfigError
from rltuner.evaluation.compare import (
    CompareConfig,
    Comparison,
    Point,
    grid,
    point_config,
    run_comparison,
    summarise,
    table_markdown,
    verdict,
    write_report,
)
from test_rl_support import peaked_prior, toy_domain

TINY = CompareConfig(
    algorithms=("q", "rloo", "dap"), budget=2048, seeds=2, settings={"reward_scale": (0.5,), "sigma": (8.0, 16.0)},
    eval_every=1024, eval_episodes=16,
)  # fmt: skip


def _toy() -> Any:
    return dataclasses.replace(toy_domain(peaked_prior()), score_range=(-3.0, 3.0))


def test_grid_and_point_configs() -> None:
    points = grid(TINY)
    assert [p.key for p in points] == [
        "q__reward_scale=0.5__seed0", "q__reward_scale=0.5__seed1", "rloo__reward_scale=0.5__seed0",
        "rloo__reward_scale=0.5__seed1", "dap__sigma=8__seed0", "dap__sigma=8__seed1", "dap__sigma=16__seed0",
        "dap__sigma=16__seed1",
    ]  # fmt: skip
    cfg = point_config(TINY, points[-1])
    assert (cfg.algorithm, cfg.sigma, cfg.seed, cfg.total_steps, cfg.n_envs) == ("dap", 16.0, 1, 2048, 64)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"algorithms": ("rl-only",)}, "has no KL weight"),
        ({"algorithms": ("q",), "settings": {"sigma": (1.0,)}}, "no settings of reward_scale"),
        ({"seeds": 0}, "at least 1"),
        ({"algorithms": ("nope",)}, "unknown algorithm"),
    ],
)
def test_bad_grids_are_rejected(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(TINY, **changes).validate()


def test_points_are_written_once_and_rerun_when_inputs_change(tmp_path: Path) -> None:
    domain = _toy()
    first = run_comparison(TINY, domain, tmp_path, progress=False)
    assert first.ran == 8 and len(first.runs) == 8 and not first.interrupted
    files = sorted(p.name for p in (tmp_path / "points").iterdir())
    assert "prior.json" in files and "rloo__reward_scale=0.5__seed1.json" in files
    record = json.loads((tmp_path / "points" / "q__reward_scale=0.5__seed0.json").read_text())
    assert record["inputs"]["tune"]["total_steps"] == 2048 and record["metrics"][-1]["mean_kl"] > 0
    again = run_comparison(TINY, domain, tmp_path, progress=False)
    assert again.ran == 0 and again.runs == first.runs
    more = run_comparison(dataclasses.replace(TINY, settings={"reward_scale": (0.5,), "sigma": (8.0, 4.0)}),
                          domain, tmp_path, progress=False)  # fmt: skip
    assert more.ran == 2  # only the two seeds of the new sigma
    paths = write_report(first, tmp_path, "rltuner compare --test", "test machine")
    md = paths["markdown"].read_text()
    assert "`rltuner compare --test`" in md and "| rloo | policy | c = 0.5 |" in md and "## Verdict" in md
    assert paths["figure"].read_bytes()[:4] == b"\x89PNG"
    # q plays rounds of 256 x 8 steps (evaluations at 0 and 2,048); the others 64 x 8 (0, 1,024 and 2,048).
    assert len(paths["csv"].read_text().splitlines()) == 1 + 2 + 3 * 3


def _metrics(*rows: tuple[int, float, float]) -> dict[str, Any]:
    return {
        "metrics": [{"env_step": s, "mean_task_reward": r, "mean_kl": k} for s, r, k in rows],
        "wall_s": 2.0,
    }


def test_summary_verdict_and_table_by_hand() -> None:
    cfg = dataclasses.replace(TINY, algorithms=("q", "rloo"), budget=1000, eval_every=500)
    runs = {
        # q evaluates at 0, 512 and 1024 (whole rounds): filed under the budgets 0, 500 and 1000.
        Point("q", "reward_scale", 0.5, 0): _metrics((0, -1.0, 0.0), (512, 1.0, 0.5), (1024, 2.0, 1.0)),
        Point("q", "reward_scale", 0.5, 1): _metrics((0, -1.0, 0.0), (512, 2.0, 0.5), (1024, 4.0, 1.0)),
        Point("rloo", "reward_scale", 0.5, 0): _metrics((0, -1.0, 0.0), (500, 2.0, 0.5), (1000, 3.0, 2.0)),
        Point("rloo", "reward_scale", 0.5, 1): _metrics((0, -1.0, 0.0), (500, 2.0, 0.5), (1000, 3.0, 2.0)),
    }
    comparison = Comparison(cfg, {"mean_task_reward": -1.0}, runs)
    rows = {(r.algorithm, r.env_step): r for r in summarise(comparison)}
    q = rows[("q", 1000)]
    assert (q.reward, q.kl, q.actual_steps, q.seeds) == (3.0, 1.0, 1024, 2)
    assert q.reward_sd == pytest.approx(2**0.5) and q.gain_per_nat(-1.0) == 4.0
    assert rows[("rloo", 1000)].gain_per_nat(-1.0) == 2.0
    lines = verdict(list(rows.values()), -1.0)
    # At 500: q gains 2.5 / 0.5 = 5 per nat, rloo 3 / 0.5 = 6: the policy family. At 1000: q 4, rloo 2.
    assert lines[0].startswith("At 500 env steps the policy family") and "(6.0 per nat)" in lines[0]
    assert lines[1].startswith("At 1,000 env steps the value family") and "(4.0 per nat)" in lines[1]
    assert (
        "the best of the policy family, rloo (c = 0.5), gains 4.00 for 2.000 nats (2.0 per nat)" in lines[1]
    )
    table = table_markdown(list(rows.values()), {"mean_task_reward": -1.0})
    assert "| q | value | c = 0.5 | 1,024 | 3.000 +- 1.414 | 1.000 +- 0.000 | 4.00 | 2 | 2.0 |" in table


@pytest.fixture
def toy_music(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rltuner.domains.music.music_domain", lambda prior=None, **kw: _toy())


def test_cli_compare_writes_the_report_and_resumes(tmp_path: Path, toy_music: None) -> None:
    args = ["compare", "--quick", "--budget", "1024", "--seeds", "1", "-a", "psi", "-a", "reinforce-kl",
            "--c", "0.5,2", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "4 runs (4 new)" in res.output
    assert (tmp_path / "pareto.png").is_file() and (tmp_path / "comparison.json").is_file()
    assert "4 runs (0 new)" in CliRunner().invoke(cli, args).output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--c", "0.5,x"], "comma-separated list"),
        (["--sigma", "-1"], "positive"),
        (["-a", "rl-only"], "rl-only"),
    ],
)
def test_cli_compare_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    res = CliRunner().invoke(cli, ["compare", *args, "--out", str(tmp_path)])
    assert res.exit_code == 2 and message in res.output
