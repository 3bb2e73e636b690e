import sys
import types
from pathlib import Path

from click.testing import CliRunner

from rltuner.benchmarks import suite
from rltuner.cli.main import cli


def _fake_module(monkeypatch):
    mod = types.ModuleType("fake_bench")

    def measure(quick=False):
        return [
            {
                "name": "speed",
                "value": 1234567.0,
                "unit": "steps/s",
                "goal": ">= 1",
                "met": True,
                "detail": "d",
            },
            {"name": "slow", "value": 0.5, "unit": "s", "goal": "<= 0.1 s", "met": False, "detail": ""},
        ]

    mod.measure = measure
    broken = types.ModuleType("broken_bench")

    def fail(quick=False):
        raise RuntimeError("boom")

    broken.measure = fail
    monkeypatch.setitem(sys.modules, "fake_bench", mod)
    monkeypatch.setitem(sys.modules, "broken_bench", broken)
    monkeypatch.setattr(suite, "TOPICS", {"fake": "fake_bench", "broken": "broken_bench"})


def test_suite_records_figures_goals_and_failures(monkeypatch, tmp_path):
    _fake_module(monkeypatch)
    results = suite.run_topics(["fake", "broken"])
    assert isinstance(results["broken"], str) and "boom" in results["broken"]
    text = suite.render_markdown(results, command="rltuner bench", machine="test machine")
    assert "| speed | 1,234,567 steps/s | >= 1 | yes | d |" in text
    assert "| slow | 0.5 s | <= 0.1 s | **no** |" in text
    assert "failed: RuntimeError: boom" in text and "test machine" in text


def test_bench_cli_writes_file_and_rejects_unknown_topic(monkeypatch, tmp_path):
    _fake_module(monkeypatch)
    out = tmp_path / "B.md"
    result = CliRunner().invoke(cli, ["bench", "--only", "fake", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "## fake" in out.read_text() and "## broken" not in out.read_text()
    result = CliRunner().invoke(cli, ["bench", "--only", "nope", "--out", str(out)])
    assert result.exit_code != 0 and "unknown topic" in result.output


def test_bench_quiet_prints_only_the_results(monkeypatch, tmp_path):
    _fake_module(monkeypatch)
    args = ["bench", "--only", "fake", "--only", "broken"]
    loud = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "loud.md")])
    assert loud.exit_code == 0, loud.output
    assert "[bench] fake ..." in loud.stderr and "[bench] broken done in" in loud.stderr
    quiet = CliRunner().invoke(cli, [*args, "-q", "--out", str(tmp_path / "quiet.md")])
    assert quiet.exit_code == 0, quiet.output
    assert "[bench]" not in quiet.output  # no progress lines
    assert "fake: speed: 1.235e+06 steps/s (goal >= 1) [met]" in quiet.stdout
    assert "broken: failed: RuntimeError: boom" in quiet.stderr  # a failed topic is a result: still said
    assert "| speed | 1,234,567 steps/s |" in (tmp_path / "quiet.md").read_text()


def test_bench_only_keeps_the_other_topics_sections(monkeypatch, tmp_path):
    _fake_module(monkeypatch)
    out = tmp_path / "B.md"
    out.write_text(
        "# Benchmarks\n\n- Command: `rltuner bench`\n- Date: 2026-01-01\n- Machine: old box\n\n"
        "## broken\n\n| figure | value | goal | met | detail |\n| --- | --- | --- | --- | --- |\n"
        "| kept row | 1 s | - | n/a | x |\n"
    )
    result = CliRunner().invoke(cli, ["bench", "--only", "fake", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "| kept row | 1 s |" in text and "old box" in text  # the old section and its provenance stay
    assert "## fake" in text and "| speed | 1,234,567 steps/s |" in text
    assert text.index("## fake") < text.index("## broken")  # in the table's order


def test_bench_keeps_the_sections_other_commands_write(tmp_path: Path) -> None:
    from rltuner.benchmarks.suite import KEPT_MARKER, write_benchmarks

    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# old figures\n\n{KEPT_MARKER}\n\n## fuzz\n\n| table |\n")
    write_benchmarks(path, {"corpus": "skipped"}, command="rltuner bench --only corpus")
    text = path.read_text()
    assert "old figures" not in text and text.endswith(f"{KEPT_MARKER}\n\n## fuzz\n\n| table |\n")
