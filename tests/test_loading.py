"""``rltuner.loading``: one resolver of model arguments, shared by load_model, generate and evaluate."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rltuner.cli.evaluate import _parse_models
from rltuner.cli.main import cli
from rltuner.errors import CheckpointError, ConfigError
from rltuner.loading import MODEL_FILE, load_model, resolve_model_path
from rltuner.models.checkpoint import save_prior
from rltuner.models.prior import build_prior


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    """A folder laid out as ``rltuner tune --out runs/q`` leaves it: the model in model.safetensors."""
    torch.manual_seed(0)
    folder = tmp_path / "runs" / "q"
    save_prior(folder / MODEL_FILE, build_prior({"arch": "lstm", "hidden_size": 8}))
    return folder


def test_a_run_folder_resolves_to_its_model(run_folder: Path) -> None:
    file = run_folder / MODEL_FILE
    assert resolve_model_path(run_folder) == file
    assert resolve_model_path(str(file)) == file  # a file is taken as given
    tokens = torch.tensor([[14, 1, 18, 0]])
    torch.testing.assert_close(load_model(run_folder)(tokens)[0], load_model(file)(tokens)[0])


def test_load_model_generate_and_evaluate_accept_the_same_folder(run_folder: Path, tmp_path: Path) -> None:
    load_model(run_folder)
    out = tmp_path / "gen"
    args = [
        "generate",
        "--model",
        str(run_folder),
        "-n",
        "2",
        "--seed",
        "0",
        "--no-midi",
        "--no-wav",
        "--no-png",
    ]
    res = CliRunner().invoke(cli, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out / "melodies.npy").shape == (2, 33)  # the primer, then 32 steps
    assert _parse_models((f"q={run_folder}",)) == {"q": str(run_folder / MODEL_FILE)}


def test_folders_without_a_model_are_refused_by_all_three_alike(tmp_path: Path, run_folder: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match=r"folder without model\.safetensors"):
        load_model(empty)
    with pytest.raises(ConfigError, match=r"model 'e': .*folder without model\.safetensors"):
        _parse_models((f"e={empty}",))
    res = CliRunner().invoke(cli, ["generate", "--model", str(empty), "--out", str(tmp_path / "g")])
    assert res.exit_code != 0 and "folder without model.safetensors" in str(res.exception)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_model_path(tmp_path / "missing.safetensors")


def test_an_rltuner_run_folder_names_its_models(tmp_path: Path, run_folder: Path) -> None:
    job = tmp_path / "job"
    for alg in ("g", "q"):
        (job / "tune" / alg).mkdir(parents=True)
        shutil.copy(run_folder / MODEL_FILE, job / "tune" / alg / MODEL_FILE)
    with pytest.raises(CheckpointError, match=r"'rltuner run' folder.*tune/g, .*tune/q"):
        load_model(job)
    assert resolve_model_path(job / "tune" / "q") == job / "tune" / "q" / MODEL_FILE
