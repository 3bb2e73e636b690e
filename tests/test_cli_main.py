import subprocess
import sys

import click
import pytest

from rltuner.cli import main as cli_main
from rltuner.errors import DatasetError


def _run(*args):
    return subprocess.run(
        [sys.executable, "-m", "rltuner", *args], capture_output=True, text=True, timeout=120
    )


def test_help_lists_every_subcommand():
    result = _run("--help")
    assert result.returncode == 0
    for name in cli_main.COMMANDS:
        assert name in result.stdout


def test_unknown_command_is_an_error():
    result = _run("no-such-command")
    assert result.returncode == 2 and "No such command" in result.stderr


def test_user_error_becomes_one_line_and_exit_2(monkeypatch, capsys):
    @click.command()
    def failing():
        raise DatasetError("dataset file x.npz is corrupt")

    monkeypatch.setitem(cli_main.COMMANDS, "failing", ("tests.fake:failing", "test"))
    monkeypatch.setattr(cli_main.LazyGroup, "get_command", lambda self, ctx, name: failing)
    with pytest.raises(SystemExit) as exc:
        cli_main.main(["failing"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: dataset file x.npz is corrupt"
