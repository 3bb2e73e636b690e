"""``rltuner run --jobs N`` (``rltuner.evaluation.parallel``): the same results as one process, stage records,
skips, errors and Ctrl-C; on a tiny prior and quick-sized runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from rltuner.cli.main import cli

SRC = Path(__file__).resolve().parents[1] / "src"


def _base(out: Path, prior: Path) -> list[str]:
    return ["run", "--out", str(out), "--prior", str(prior), "--algorithms", "q", "--quick", "--steps", "1024",
            "--samples", "32", "--muspy-samples", "4", "--no-copying", "-q"]  # fmt: skip


def _evaluation(path: Path) -> dict[str, object]:
    data = json.loads(path.read_text())
    for model in data["models"].values():
        model.pop("seconds")  # how long it took: the one thing that differs
    return data


@pytest.mark.slow
def test_jobs_2_writes_what_jobs_1_writes_and_skips_alike(tmp_path: Path, tiny_prior_file: Path) -> None:
    from safetensors.numpy import load_file

    one, two = tmp_path / "one", tmp_path / "two"
    for out, jobs in ((one, "1"), (two, "2")):
        res = CliRunner().invoke(cli, [*_base(out, tiny_prior_file), "--seeds", "2", "--jobs", jobs])
        assert res.exit_code == 0, res.output
    first = json.loads((two / "stages.json").read_text())
    assert list(first) == list(json.loads((one / "stages.json").read_text()))  # the sequential job's order
    assert {k: v["inputs"] for k, v in first.items()} == {
        k: v["inputs"] for k, v in json.loads((one / "stages.json").read_text()).items()
    }
    for s in (0, 1):
        assert _evaluation(one / f"seed-{s}/evaluation.json") == _evaluation(
            two / f"seed-{s}/evaluation.json"
        )
        with np.load(one / f"seed-{s}/samples.npz") as a, np.load(two / f"seed-{s}/samples.npz") as b:
            assert a.files == b.files and all(np.array_equal(a[k], b[k]) for k in a.files)
        for key in ("q", "featured"):
            x = load_file(one / f"tune/{key}/seed-{s}/model.safetensors")
            y = load_file(two / f"tune/{key}/seed-{s}/model.safetensors")
            assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    assert (one / "table.md").read_text().split("(")[0] == (two / "table.md").read_text().split("(")[0]

    # the same command again runs nothing but the report
    res = CliRunner().invoke(cli, [*_base(two, tiny_prior_file), "--seeds", "2", "--jobs", "2"])
    assert res.exit_code == 0 and json.loads((two / "stages.json").read_text()) == first
    # another featured file: only its tuning runs and the evaluations after them run again
    mine = tmp_path / "mine.toml"
    mine.write_text('algorithm = "g"\ngamma = 0.7\n[reward.music_theory.weights]\ntonic = 2.0\n')
    res = CliRunner().invoke(
        cli, [*_base(two, tiny_prior_file), "--seeds", "2", "--jobs", "2", "--featured", str(mine)]
    )
    assert res.exit_code == 0, res.output
    again = json.loads((two / "stages.json").read_text())
    for name in first:
        changed = name.startswith(("tune/featured", "evaluate", "media", "figures"))
        assert (again[name]["inputs"] != first[name]["inputs"]) is changed, name
    assert json.loads((two / "tune/featured/seed-1/config.json").read_text())["algorithm"] == "g"


BOOM = """
import numpy as np

def boom(history, action, t, length):
    if t >= 4:
        raise RuntimeError(f"boom at step {t}")
    return np.zeros(action.shape[0])
"""


@pytest.mark.slow
def test_a_failing_stage_is_reported_with_its_name(
    tmp_path: Path, tiny_prior_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from rltuner.rewards.music_theory import registered_rules, unregister_rule

    rules = tmp_path / "boom_rules.py"
    rules.write_text(BOOM)
    before = set(registered_rules())
    try:
        with caplog.at_level("INFO"):
            res = CliRunner().invoke(
                cli, [*_base(tmp_path / "run", tiny_prior_file), "--jobs", "2", "--rule", f"{rules}:boom"]
            )
    finally:
        for name in set(registered_rules()) - before:
            unregister_rule(name)
    assert isinstance(res.exception, RuntimeError) and "boom at step" in str(res.exception)
    said = "\n".join(r.getMessage() for r in caplog.records)
    assert "failed: RuntimeError: boom at step" in said and "stage " in said
    stages = tmp_path / "run" / "stages.json"
    assert not stages.exists() or "evaluate" not in json.loads(stages.read_text())


@pytest.mark.slow
def test_ctrl_c_stops_the_workers_and_keeps_what_finished(tmp_path: Path, tiny_prior_file: Path) -> None:
    out = tmp_path / "run"
    args = [a for a in _base(out, tiny_prior_file) if a != "-q"]
    args[args.index("1024")] = "20000000"  # far too long to finish before the interrupt
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rltuner", *args, "--jobs", "2"],
        stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    started = out / "tune" / "q" / "resume.pt"  # the tuner saves a resume state when its loop starts
    deadline = time.monotonic() + 180
    while not started.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    try:
        _, said = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 130, said
    assert "Traceback" not in said, said
    assert "tune/q: stopped (Ctrl-C); saved" in said
    done = json.loads((out / "stages.json").read_text()) if (out / "stages.json").exists() else {}
    assert "tune/q" not in done  # interrupted: not recorded as finished, so the next run resumes it
    assert (out / "tune" / "q" / "resume.pt").is_file()


def test_an_interrupted_run_resumes_only_with_the_inputs_it_started_with(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from rltuner.evaluation.pipeline import TUNE_INPUTS_FILE, _tune
    from rltuner.rl.config import preset
    from test_rl_support import peaked_prior, toy_domain

    domain = toy_domain(peaked_prior())
    small = {"algorithm": "q", "total_steps": 512, "n_envs": 16, "batch_size": 64, "train_every": 32,
             "eval_every": 0, "eval_episodes": 16, "progress": False, "tensorboard": False}  # fmt: skip
    run, fresh = tmp_path / "run", tmp_path / "fresh"
    _tune(preset("fast", **small, seed=0), domain, run, False, "inputs-seed-0")  # leaves resume.pt, as Ctrl-C
    assert (run / "resume.pt").is_file() and (run / TUNE_INPUTS_FILE).read_text() == "inputs-seed-0"
    seed_0 = load_file(run / "model.safetensors")
    # the same inputs resume: nothing is left to play, the model stays
    _tune(preset("fast", **small, seed=0), domain, run, False, "inputs-seed-0")
    assert all(np.array_equal(seed_0[k], v) for k, v in load_file(run / "model.safetensors").items())
    # other inputs (another seed): the old state is discarded, the run is the fresh one of seed 1
    _tune(preset("fast", **small, seed=1), domain, run, False, "inputs-seed-1")
    _tune(preset("fast", **small, seed=1), domain, fresh, False, "inputs-seed-1")
    mine, theirs = load_file(run / "model.safetensors"), load_file(fresh / "model.safetensors")
    assert all(np.array_equal(mine[k], theirs[k]) for k in theirs)
    assert not all(np.array_equal(mine[k], seed_0[k]) for k in seed_0)
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert (run / TUNE_INPUTS_FILE).read_text() == "inputs-seed-1"


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process table from /proc")
def test_workers_stop_and_exit_when_the_main_process_is_killed(tmp_path: Path, tiny_prior_file: Path) -> None:
    out = tmp_path / "run"
    args = [a for a in _base(out, tiny_prior_file) if a != "-q"]
    args[args.index("1024")] = "20000000"  # far too long to finish before the kill
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rltuner", *args, "--jobs", "2"], env=env,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    started = out / "tune" / "q" / "resume.pt"
    deadline = time.monotonic() + 180
    while not started.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1)
    workers = _children(proc.pid)  # in their own process groups: a kill of the main's group misses them
    assert workers
    saved = started.stat().st_mtime_ns
    proc.kill()  # as SIGTERM from a scheduler, or an out-of-memory kill: no Ctrl-C handling in the main process
    proc.wait()
    deadline = time.monotonic() + 120
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, "workers kept running after the main process was killed"
    assert started.stat().st_mtime_ns > saved  # the tuning run saved its state as it stopped


SIGINT_WHILE_RECORDING = """
import logging, os, signal, sys
import rltuner.evaluation.parallel as parallel

class Interrupting(logging.LoggerAdapter):
    sent = False

    def info(self, msg, *args, **kwargs):
        super().info(msg, *args, **kwargs)
        if "done in" in msg and not Interrupting.sent:  # a Ctrl-C while the main process records a finished task
            Interrupting.sent = True
            os.kill(os.getpid(), signal.SIGINT)

parallel.log = Interrupting(parallel.log, {})
from rltuner.cli.main import main
main(sys.argv[1:])
"""


def test_a_ctrl_c_while_a_finished_task_is_recorded_still_stops_the_workers(
    tmp_path: Path, tiny_prior_file: Path
) -> None:
    """The interrupt lands between tasks, not in the wait: the job still stops and saves its tuning runs instead of
    leaving the workers tuning with no one to tell them (it used to hang until they finished)."""
    out = tmp_path / "run"
    args = [a for a in _base(out, tiny_prior_file) if a != "-q"]
    args[args.index("1024")] = "20000000"  # tune/q cannot finish; the Note RNN's evaluation, beside it, does
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SIGINT_WHILE_RECORDING, *args, "--no-featured", "--jobs", "2"],
        capture_output=True, text=True, env=env, timeout=180,
    )  # fmt: skip
    said = proc.stderr
    assert proc.returncode == 130, said
    assert "evaluate (note_rnn): done in" in said and "stopping:" in said, said
    assert "tune/q: stopped (Ctrl-C); saved" in said, said
    assert "Traceback" not in said, said
