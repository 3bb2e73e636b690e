"""The thread policy: ``--threads`` on every torch command, its default, the wait policy, provenance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner

from rltuner.cli.main import cli
from rltuner.config import result_inputs, to_dict
from rltuner.errors import ConfigError, RLTunerError
from rltuner.threads import DEFAULT_THREADS, set_passive_wait_policy, set_threads, using_threads
from test_cli_tune import FAST, toy_music  # noqa: F401  (a fixture)

# command line -> the function (looked up at call time) that each command reaches once its work starts
TORCH_COMMANDS: dict[str, tuple[list[str], str]] = {
    "tune": (["tune", "--steps", "0"], "rltuner.rl.config.TuneConfig.validate"),
    "run": (["run", "--out", "{tmp}/run"], "rltuner.evaluation.pipeline.resolve_device"),
    "pretrain": (["pretrain", "--out", "{tmp}/p.safetensors"], "rltuner.cli.pretrain._load_dataset"),
    "generate": (["generate", "-n", "2", "--out", "{tmp}/g"], "rltuner.loading.load_model"),
    "evaluate": (["evaluate", "--no-corpus", "-n", "2"], "rltuner.devices.resolve_device"),
    "compare": (["compare", "--quick", "--out", "{tmp}/c"], "rltuner.evaluation.compare.run_comparison"),
    "study reward": (["study", "reward", "{tmp}/ratings.csv"], "rltuner.cli.study._ratings_and_key"),
    "bench": (["bench", "--out", "{tmp}/B.md"], "rltuner.benchmarks.suite.run_topics"),
}


@pytest.mark.parametrize("name", list(TORCH_COMMANDS))
def test_every_torch_command_has_threads_and_applies_it(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args, target = TORCH_COMMANDS[name]
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    seen: list[int] = []

    def probe(*_: Any, **__: Any) -> Any:
        seen.append(torch.get_num_threads())
        raise RLTunerError("probe reached")

    monkeypatch.setattr(target, probe)
    helped = CliRunner().invoke(cli, [*args[: 2 if name == "study reward" else 1], "--help"])
    assert "--threads N" in helped.output and "0 = torch's default" in helped.output
    before = torch.get_num_threads()
    result = CliRunner().invoke(cli, [*args, "--threads", "3"])
    assert isinstance(result.exception, RLTunerError), result.output
    assert seen == [3]  # the command's work ran with the asked count...
    assert torch.get_num_threads() == before  # ...and the count is restored when it returns
    seen.clear()
    CliRunner().invoke(cli, args)
    assert seen == [DEFAULT_THREADS]


def test_threads_zero_is_torchs_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from rltuner import threads

    monkeypatch.setattr(threads, "_torch_default", 2)
    with using_threads(0) as count:
        assert count == 2 and torch.get_num_threads() == 2
    with using_threads(1):
        assert torch.get_num_threads() == 1


def test_more_threads_than_cores_get_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from rltuner import threads

    monkeypatch.setattr(threads, "available_cores", lambda: 2)
    monkeypatch.setattr(threads, "_warned_counts", set())
    with caplog.at_level("WARNING", logger="rltuner.threads"):
        for count in (2, 3, 3):
            with using_threads(count):
                assert torch.get_num_threads() == count
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "3 torch threads on the 2 CPU core(s)" in warnings[0]


@pytest.mark.parametrize(
    "cores, threads, processes, expected",
    [
        (2, 1, 1, 2),
        (2, 2, 1, 1),
        (2, 0, 1, 1),
        (2, 1, 2, 1),
        (8, 2, 1, 4),
        (8, 1, 3, 2),
        (1, 1, 1, 1),
        (2, 4, 1, 1),
    ],
)
def test_batch_workers_fill_the_cores_left_to_each_op(
    monkeypatch: pytest.MonkeyPatch, cores: int, threads: int, processes: int, expected: int
) -> None:
    """One batch worker per core that the op's torch threads (0: torch's default, here 2) and the other
    processes of ``run --jobs`` leave; never 0."""
    from rltuner import threads as policy

    monkeypatch.setattr(policy, "available_cores", lambda: cores)
    monkeypatch.setattr(policy, "_torch_default", 2)
    assert policy.batch_workers(threads, processes) == expected
    with pytest.raises(ConfigError, match="threads"):
        policy.batch_workers(-1)


@pytest.mark.parametrize("args", [["--threads", "-1"], ["--threads", "two"]])
def test_bad_thread_counts_give_one_clear_error(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["generate", *args])
    assert result.exit_code == 2 and "Invalid value for '--threads'" in result.output
    assert "Traceback" not in result.output


def test_api_refuses_negative_threads() -> None:
    from rltuner.models.train import PretrainConfig
    from rltuner.rl.config import TuneConfig

    for bad in (-1, 1.5, True):
        with pytest.raises(ConfigError, match="threads must be a whole number"):
            set_threads(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="threads"):
        TuneConfig(threads=-2).validate()
    with pytest.raises(ConfigError, match="threads"):
        PretrainConfig(threads=-1).validate()


@pytest.mark.usefixtures("toy_music")
def test_tune_records_threads_but_does_not_fingerprint_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import rltuner.rl.tuner as tuner

    seen: list[int] = []
    original = tuner.evaluate_policy

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    monkeypatch.setattr(tuner, "evaluate_policy", recording)
    result = CliRunner().invoke(cli, ["tune", "--out", str(tmp_path / "r"), "--threads", "2", *FAST])
    assert result.exit_code == 0, result.output
    assert seen and set(seen) == {2}
    assert json.loads((tmp_path / "r" / "config.json").read_text())["threads"] == 2

    from rltuner.evaluation.pipeline import PipelineConfig, _inputs_config
    from rltuner.rl.config import preset

    one, two = preset("fast"), preset("fast", threads=2)
    assert to_dict(one) != to_dict(two) and result_inputs(one) == result_inputs(two)
    assert "threads" not in result_inputs(one)
    assert _inputs_config(PipelineConfig(out="a", threads=1)) == _inputs_config(
        PipelineConfig(out="a", threads=4)
    )
    assert _inputs_config(PipelineConfig(out="a", seed=1)) != _inputs_config(PipelineConfig(out="a"))


def test_pretrain_resume_may_change_threads() -> None:
    from rltuner.models.train import PretrainConfig, _same_run

    saved = to_dict(PretrainConfig(threads=1))
    assert _same_run(saved, to_dict(PretrainConfig(threads=2)))
    assert not _same_run(saved, to_dict(PretrainConfig(threads=2, lr=1e-3)))


def test_passive_wait_policy_is_set_only_when_unset() -> None:
    env: dict[str, str] = {}
    assert set_passive_wait_policy(env) and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert not set_passive_wait_policy(env) and env == {"OMP_WAIT_POLICY": "ACTIVE"}


# Records OMP_WAIT_POLICY at the moment torch is first imported, then runs the CLI (a command that loads torch
# and fails on a bad setting: exit 2).
_PROBE = """
import os, sys
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and "seen" not in globals():
            globals()["seen"] = os.environ.get("OMP_WAIT_POLICY", "<unset>")
        return None
sys.meta_path.insert(0, Watch())
from rltuner.cli.main import main
assert "torch" not in sys.modules
try:
    main(["tune", "--steps", "0", "--quiet"])
except SystemExit as exc:
    print(exc.code, seen)
"""


@pytest.mark.parametrize(("user", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_cli_sets_the_wait_policy_before_torch_loads(user: str | None, expected: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if user is not None:
        env["OMP_WAIT_POLICY"] = user
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.split() == ["2", expected]


def test_threads_benchmark_rows_are_ratios_of_the_same_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from rltuner.benchmarks import threads as bench

    calls: list[tuple[int, str | None, bool]] = []
    busy = {"PASSIVE": 1.2, None: 9.0}
    burning = [False]

    @contextmanager
    def fake_burner(n: int = 1) -> Iterator[list[Any]]:
        burning[0] = True
        yield []
        burning[0] = False

    def fake_slice(threads: int, wait: str | None, quick: bool, limit: float) -> tuple[float, dict[str, str]]:
        calls.append((threads, wait, burning[0]))
        base = 2.0 if threads == 1 else 1.6
        return base * (busy[wait] if burning[0] else 1.0), {"threads": str(threads), "wait": str(wait)}

    monkeypatch.setattr(bench, "run_slice", fake_slice)
    monkeypatch.setattr(bench, "cpu_burner", fake_burner)
    monkeypatch.setattr(bench, "available_cores", lambda: 2)
    rows = bench.measure()
    assert calls == [(1, "PASSIVE", False), (1, "PASSIVE", True), (2, None, False), (2, None, True),
                     (2, "PASSIVE", False), (2, "PASSIVE", True)]  # fmt: skip
    assert [round(r["value"], 3) for r in rows] == [1.2, 9.0, 1.2]
    assert rows[0]["met"] is True and rows[0]["goal"] == "<= 1.5x" and rows[1]["met"] is None
    assert "0.8x quiet and 6.0x busy the default policy's time" in rows[1]["detail"]


def test_cpu_burner_spins_and_stops() -> None:
    from rltuner.benchmarks.threads import cpu_burner

    with cpu_burner(1) as procs:
        assert all(p.poll() is None for p in procs)
        pid = procs[0].pid
        ticks = int(Path(f"/proc/{pid}/stat").read_text().split()[13]) if Path("/proc").is_dir() else 1
        assert ticks > 0  # it used CPU time in its first half second
    assert all(p.returncode is not None for p in procs)


def test_a_quiet_slice_that_timed_out_has_no_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    from rltuner.benchmarks import threads as bench

    @contextmanager
    def no_burner(n: int = 1) -> Iterator[list[Any]]:
        yield []

    def fake_slice(threads: int, wait: str | None, quick: bool, limit: float) -> tuple[float, dict[str, str]]:
        assert limit == (600.0 if threads == 1 else bench.MIN_LIMIT_S)  # 10 x 2.0 s is below the minimum
        return (limit if wait is None else 2.0), {}

    monkeypatch.setattr(bench, "run_slice", fake_slice)
    monkeypatch.setattr(bench, "cpu_burner", no_burner)
    rows = bench.measure()
    assert rows[1]["value"] != rows[1]["value"] and "at least" in rows[1]["detail"]  # NaN: no ratio
    assert rows[0]["value"] == 1.0 and rows[2]["value"] == 1.0
