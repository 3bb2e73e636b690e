import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from rltuner.benchmarks import suite
from rltuner.cli.main import cli
from rltuner.errors import RLTunerError
from rltuner.provenance import machine_description, machine_key


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


def _on_machine(monkeypatch, cpu: str, cores: int = 2) -> None:
    """Make the suite see another machine (what machine_info reads from /proc/cpuinfo and the OS)."""
    info = {
        "cpu": cpu,
        "cpu_flags": ["avx2"],
        "load_average": 0.5,
        "cores": cores,
        "memory_gib": 24.0,
        "torch_threads": 1,
        "system": "Linux test",
        "python": "3.11.7",
        "torch": "2.13.0+cpu",
    }
    monkeypatch.setattr(suite, "machine_info", lambda: dict(info))


def _figure(value: float) -> list:
    return [{"name": "speed", "value": value, "unit": "steps/s", "goal": "-", "met": None, "detail": ""}]


def _machine_sections(text: str, topic: str) -> list[str]:
    """The ``### machine`` headings of one topic, in the file's order."""
    body = text.split(f"\n## {topic}\n", 1)[1].split("\n## ", 1)[0]
    return [line[4:] for line in body.splitlines() if line.startswith("### ")]


def test_a_second_machine_keeps_the_first_machines_section(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    _on_machine(monkeypatch, "AMD EPYC")
    suite.write_benchmarks(path, {"rewards": _figure(1111.0)}, command="rltuner bench --only rewards")
    _on_machine(monkeypatch, "Intel(R) Xeon(R) Processor")
    suite.write_benchmarks(path, {"rewards": _figure(2222.0)}, command="rltuner bench --only rewards")
    text = path.read_text()
    # the current machine's section first, the earlier machine's figure still there
    assert _machine_sections(text, "rewards") == ["Intel(R) Xeon(R) Processor, 2 cores", "AMD EPYC, 2 cores"]
    assert "| speed | 2,222 steps/s |" in text and "| speed | 1,111 steps/s |" in text
    assert text.index("2,222 steps/s") < text.index("1,111 steps/s")
    assert "machine: AMD EPYC (flags: avx2), 2 cores" in text  # each with its own machine line
    assert (
        "Figures from 2 machines: **Intel(R) Xeon(R) Processor, 2 cores** (rewards); **AMD EPYC, 2 cores** (rewards)."
        in text
    )
    # the same CPU with another core count is another machine
    _on_machine(monkeypatch, "AMD EPYC", cores=16)
    suite.write_benchmarks(path, {"rewards": _figure(3333.0)}, command="rltuner bench --only rewards")
    assert _machine_sections(path.read_text(), "rewards") == [
        "AMD EPYC, 16 cores",
        "Intel(R) Xeon(R) Processor, 2 cores",
        "AMD EPYC, 2 cores",
    ]


def test_the_same_machine_replaces_only_its_own_section(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    _on_machine(monkeypatch, "Intel(R) Xeon(R) Processor")
    suite.write_benchmarks(
        path, {"rewards": _figure(2222.0), "prior": _figure(5555.0)}, command="rltuner bench"
    )
    _on_machine(monkeypatch, "AMD EPYC")
    suite.write_benchmarks(path, {"rewards": _figure(1111.0)}, command="rltuner bench --only rewards")
    suite.write_benchmarks(
        path, {"rewards": _figure(4444.0)}, command="rltuner bench --only rewards", keep_others=True
    )
    text = path.read_text()
    assert "4,444 steps/s" in text and "1,111 steps/s" not in text  # this machine's older figure is replaced
    assert "2,222 steps/s" in text and "| speed | 5,555 steps/s |" in text  # the other machine's are not
    assert _machine_sections(text, "rewards") == ["AMD EPYC, 2 cores", "Intel(R) Xeon(R) Processor, 2 cores"]
    assert _machine_sections(text, "prior") == ["Intel(R) Xeon(R) Processor, 2 cores"]
    assert text.count("\n## rewards\n") == 1 and text.count("### AMD EPYC, 2 cores") == 1


def test_a_full_run_drops_this_machines_stale_topics_but_not_other_machines(
    monkeypatch, tmp_path: Path
) -> None:
    path = tmp_path / "BENCHMARKS.md"
    for cpu in ("CPU A", "CPU B"):
        _on_machine(monkeypatch, cpu)
        suite.write_benchmarks(path, {"gone": _figure(7.0)}, command="rltuner bench --only gone")
    suite.write_benchmarks(path, {"rewards": _figure(1.0)}, command="rltuner bench")  # on CPU B, no --only
    sections = suite.read_sections(path)
    assert list(sections["gone"]) == ["CPU A, 2 cores"] and list(sections["rewards"]) == ["CPU B, 2 cores"]


def test_a_gpu_run_is_its_own_machine(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    _on_machine(monkeypatch, "AMD EPYC")
    suite.write_benchmarks(path, {"rl": _figure(1.0)}, command="rltuner bench --only rl")
    suite.write_benchmarks(
        path, {"rl": _figure(9.0)}, command="rltuner bench --only rl", accelerator="NVIDIA H200"
    )
    text = path.read_text()
    assert _machine_sections(text, "rl") == ["AMD EPYC, 2 cores, NVIDIA H200", "AMD EPYC, 2 cores"]
    # read back, each section's key is its machine line's, accelerator included
    assert list(suite.read_sections(path)["rl"]) == ["AMD EPYC, 2 cores, NVIDIA H200", "AMD EPYC, 2 cores"]
    assert (
        "; accelerator: NVIDIA H200." in text
        and "| speed | 9 steps/s |" in text
        and "| speed | 1 steps/s |" in text
    )


# The layout BENCHMARKS.md had before per-machine sections (2026-12-02): one section per topic, its provenance
# either the early one-line list or a "Measured by" line; after the marker, sections of other commands.
OLD_LAYOUT = """# Benchmarks

Written by `rltuner bench`; do not edit by hand.

## corpus

- Command: `rltuner bench`; - Date: 2026-11-21 07:28 UTC; - Machine: AMD EPYC, 2 cores, 24 GiB RAM; Linux 6.18; Python 3.11.7, torch 2.13.0+cpu (2 threads)

| figure | value | goal | met | detail |
| --- | --- | --- | --- | --- |
| dataset build | 11.6 s | < 60 s on 2 cores | yes | 1,137 files |

## rl

Measured by `rltuner bench --only rl` on 2026-12-02 03:04 UTC; machine: Intel(R) Xeon(R) Processor (flags: avx2 amx_tile), 2 cores, 24 GiB RAM; Linux 6.18; Python 3.11.7, torch 2.13.0+cpu (1 thread); load average 2.6 (other processes shared the CPU when above 0).

| figure | value | goal | met | detail |
| --- | --- | --- | --- | --- |
| acting + reward, 256 envs | 222,906 env steps/s | >= 200,000 env steps/s | yes | 1 threads |

## molecules

Measured by `rltuner bench --only molecules` on 2026-12-01 22:02 UTC; machine: Intel(R) Xeon(R) Processor, 2 cores, 24 GiB RAM; Linux 6.18; Python 3.11.7, torch 2.13.0+cpu (1 threads).

| figure | value | goal | met | detail |
| --- | --- | --- | --- | --- |
| chemistry reward r_T | 633.9 molecules/s | - | n/a | 3,000 molecules |

<!-- kept by rltuner bench: sections below are written by other commands -->

## Fuzz (hostile input, issue #14)

| format | inputs |
| --- | ---: |
| midi | 10,000 |
"""


def test_reads_the_layout_from_before_per_machine_sections(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(OLD_LAYOUT)
    sections = suite.read_sections(path)
    assert {t: list(by) for t, by in sections.items()} == {
        "corpus": ["AMD EPYC, 2 cores"],
        "rl": ["Intel(R) Xeon(R) Processor, 2 cores"],
        "molecules": ["Intel(R) Xeon(R) Processor, 2 cores"],
    }
    # the early one-line provenance reads as the current "Measured by" line, nothing of it lost
    assert sections["corpus"]["AMD EPYC, 2 cores"].startswith(
        "Measured by `rltuner bench` on 2026-11-21 07:28 UTC; machine: AMD EPYC, 2 cores, 24 GiB RAM; Linux 6.18;"
    )
    # a Xeon re-run of rl replaces the Xeon's rl; the AMD corpus, the molecules and the fuzz section stay
    _on_machine(monkeypatch, "Intel(R) Xeon(R) Processor")
    suite.write_benchmarks(
        path, {"rl": _figure(300000.0)}, command="rltuner bench --only rl", keep_others=True
    )
    text = path.read_text()
    assert "222,906" not in text and "| speed | 300,000 steps/s |" in text
    for row in (
        "| dataset build | 11.6 s |",
        "| chemistry reward r_T | 634 molecules/s |",
        "| midi | 10,000 |",
    ):
        assert row.replace("634", "633.9") in text
    assert text.endswith(OLD_LAYOUT[OLD_LAYOUT.index(suite.KEPT_MARKER) :])
    assert (
        "Figures from 2 machines: **AMD EPYC, 2 cores** (corpus); **Intel(R) Xeon(R) Processor, 2 cores** (rl, molecules)."
        in text
    )
    # read back in the new layout: the same sections, unchanged by a second rewrite
    suite.write_benchmarks(path, {}, command="-", keep_others=True)
    assert path.read_text() == text


def test_rewriting_the_repository_file_keeps_every_figure(monkeypatch, tmp_path: Path) -> None:
    repo_file = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(repo_file.read_text(encoding="utf-8"))
    _on_machine(monkeypatch, "a machine with no figures there")
    suite.write_benchmarks(path, {}, command="-", keep_others=True)

    def rows(text: str) -> list[str]:
        return sorted(line for line in text.splitlines() if line.startswith("|"))

    assert rows(path.read_text()) == rows(repo_file.read_text(encoding="utf-8"))
    assert len(rows(path.read_text())) > 20


def test_an_empty_file_says_it_has_no_figures(monkeypatch, tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    _on_machine(monkeypatch, "CPU A")
    suite.write_benchmarks(path, {}, command="-", keep_others=True)
    assert "No figures yet." in path.read_text() and suite.read_sections(path) == {}


def test_a_section_that_names_no_machine_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n## prior\n\n| figure | value |\n| --- | --- |\n| hand row | 1 s |\n")
    assert suite.read_sections(path) == {
        "prior": {suite.UNNAMED_MACHINE: "| figure | value |\n| --- | --- |\n| hand row | 1 s |"}
    }


def test_bench_only_on_another_machine_keeps_every_other_section(monkeypatch, tmp_path: Path) -> None:
    _fake_module(monkeypatch)
    out = tmp_path / "B.md"
    _on_machine(monkeypatch, "CPU A")
    assert CliRunner().invoke(cli, ["bench", "--out", str(out)]).exit_code == 0
    _on_machine(monkeypatch, "CPU B")
    result = CliRunner().invoke(cli, ["bench", "--only", "fake", "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert _machine_sections(text, "fake") == ["CPU B, 2 cores", "CPU A, 2 cores"]
    assert _machine_sections(text, "broken") == ["CPU A, 2 cores"]
    # CPU A's failed topic is kept as it was, each section with its own machine line
    assert text.count("Benchmark failed: RuntimeError: boom") == 1
    assert text.count("; machine: CPU A (flags: avx2), 2 cores") == 2
    assert text.count("; machine: CPU B (flags: avx2), 2 cores") == 1


@pytest.mark.parametrize("flags", [[], ["avx2", "amx_tile"], None])
def test_the_machine_line_names_the_machines_key(flags) -> None:
    # a section without a "### key" heading (the old layout) gets its key from its machine line
    info = {"cpu": "Intel(R) Xeon(R) Processor", "cpu_flags": flags, "load_average": 1.0, "cores": 2}
    info |= {
        "memory_gib": 24.0,
        "torch_threads": 1,
        "system": "Linux x",
        "python": "3.11.7",
        "torch": "2.13.0",
    }
    line = f"Measured by `rltuner bench` on today; machine: {machine_description(info)}."
    assert suite._key_from_provenance(line) == machine_key(info) == "Intel(R) Xeon(R) Processor, 2 cores"
    assert suite._key_from_provenance(f"machine: {machine_description()}") == machine_key()  # this machine


def test_an_old_heading_of_an_amx_machine_is_read_under_its_amx_key(tmp_path) -> None:
    # headings written before keys named AMX: the section's machine line decides
    line = "Measured by `rltuner bench` on today; machine: Intel(R) Xeon(R) Processor (flags: avx2 {flags}), 2 cores."
    text = "# Benchmarks\n\n## rl\n\n"
    text += (
        f"### Intel(R) Xeon(R) Processor, 2 cores\n\n{line.format(flags='amx_bf16 amx_tile')}\n\n| a |\n\n"
    )
    text += f"## threads\n\n### Intel(R) Xeon(R) Processor, 2 cores\n\n{line.format(flags='avx512_bf16')}\n\n| b |\n"
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(text)
    sections = suite.read_sections(path)
    assert list(sections["rl"]) == ["Intel(R) Xeon(R) Processor with AMX, 2 cores"]
    assert list(sections["threads"]) == ["Intel(R) Xeon(R) Processor, 2 cores"]
    assert (
        suite._key_from_provenance(line.format(flags="amx_bf16"))
        == "Intel(R) Xeon(R) Processor with AMX, 2 cores"
    )


def test_bench_refuses_to_overwrite_a_file_that_is_not_a_benchmarks_file(
    monkeypatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from rltuner.cli.main import main

    _fake_module(monkeypatch)
    notes = tmp_path / "notes.md"
    notes.write_text("# My notes\n\nkeep me\n")
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--only", "fake", "--out", str(notes)])
    assert exc.value.code != 0
    err = capsys.readouterr().err
    assert "is not a benchmarks file" in err and len(err.strip().splitlines()) == 1  # before measuring
    assert notes.read_text() == "# My notes\n\nkeep me\n"
    with pytest.raises(RLTunerError, match="is a folder"):  # the API's check (click's option refuses one too)
        suite.write_benchmarks(tmp_path, {}, command="-")
    # an empty file, then the file bench wrote, is (re)written
    empty = tmp_path / "empty.md"
    empty.write_text("")
    for _ in range(2):
        result = CliRunner().invoke(cli, ["bench", "--only", "fake", "--out", str(empty)])
        assert result.exit_code == 0, result.output
        assert empty.read_text().startswith(suite.TITLE + "\n")
