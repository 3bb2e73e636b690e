"""Checkpoints: round trip, metadata, and one clear CheckpointError for every bad file."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rltuner.errors import CheckpointError
from rltuner.loading import load_model
from rltuner.models.checkpoint import (
    default_prior_path,
    load_default_prior,
    load_prior,
    read_checkpoint,
    save_checkpoint,
    save_prior,
)
from rltuner.models.prior import build_prior


@pytest.fixture
def small_ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    model = build_prior({"arch": "lstm", "hidden_size": 8})
    return save_prior(
        tmp_path / "p.safetensors", model, step=42, dataset_hash="abc", metrics={"valid": {"nll": 1.5}}
    )


@pytest.mark.parametrize("arch", ["lstm", "gru", "transformer"])
def test_prior_round_trip(tmp_path: Path, arch: str) -> None:
    torch.manual_seed(1)
    model = build_prior({"arch": arch, "hidden_size": 8, "num_heads": 2})
    path = save_prior(tmp_path / "sub" / "m.safetensors", model, step=7)
    loaded, meta = load_prior(path)
    assert type(loaded) is type(model) and not loaded.training
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b)
    assert meta["kind"] == "prior" and meta["step"] == 7 and meta["model"] == model.model_config()
    assert meta["rltuner_version"]
    tokens = torch.tensor([[2, 1, 1, 0, 14]])
    assert torch.equal(model.eval()(tokens)[0], loaded(tokens)[0])


def test_metadata_is_json_in_the_safetensors_header(small_ckpt: Path) -> None:
    data = small_ckpt.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header["__metadata__"]
    assert meta["format"] == "rltuner-checkpoint" and meta["format_version"] == "1"
    assert json.loads(meta["metrics"]) == {"valid": {"nll": 1.5}}
    assert json.loads(meta["step"]) == 42 and json.loads(meta["dataset_hash"]) == "abc"


def test_low_level_round_trip(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor([1, 2], dtype=torch.int64)}
    shared = torch.zeros(4)
    tensors["c"] = shared[:2]  # a view into shared storage is saved as its own copy
    path = save_checkpoint(tmp_path / "x.safetensors", tensors, {"kind": "other", "nested": {"x": [1, 2]}})
    back, meta = read_checkpoint(path)
    assert (
        set(back) == {"a", "b", "c"}
        and torch.equal(back["a"], tensors["a"])
        and back["b"].dtype == torch.int64
    )
    assert meta["nested"] == {"x": [1, 2]} and meta["kind"] == "other"


def test_load_model_dispatches_on_kind(small_ckpt: Path, tmp_path: Path) -> None:
    assert load_model(small_ckpt).model_config()["hidden_size"] == 8
    weird = save_checkpoint(tmp_path / "w.safetensors", {"a": torch.zeros(1)}, {"kind": "dataset"})
    with pytest.raises(CheckpointError, match="unknown kind 'dataset'"):
        load_model(weird)


def _corrupt_variants(path: Path, tmp_path: Path) -> dict[str, Path]:
    data = path.read_bytes()
    out = {}
    for name, blob in {
        "truncated": data[: len(data) - 17],
        "header-cut": data[:40],
        "empty": b"",
        "text": b"this is not a checkpoint at all, just text\n" * 3,
        "bad-header-json": data[:8] + b"x" + data[9:],
    }.items():
        p = tmp_path / f"{name}.safetensors"
        p.write_bytes(blob)
        out[name] = p
    return out


@pytest.mark.parametrize("case", ["truncated", "header-cut", "empty", "text", "bad-header-json"])
def test_corrupt_files_give_one_clear_error(small_ckpt: Path, tmp_path: Path, case: str) -> None:
    bad = _corrupt_variants(small_ckpt, tmp_path)[case]
    with pytest.raises(CheckpointError, match=str(bad.name)):
        load_prior(bad)
    with pytest.raises(CheckpointError):
        load_model(bad)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_prior(tmp_path / "nope.safetensors")
    with pytest.raises(CheckpointError, match="folder"):
        load_prior(tmp_path)


def test_plain_safetensors_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(CheckpointError, match="not an rltuner checkpoint"):
        load_prior(path)


def test_checkpoint_of_another_kind(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "t.safetensors", {"w": torch.zeros(2)}, {"kind": "tuned"})
    with pytest.raises(CheckpointError, match="kind 'tuned', not a prior"):
        load_prior(path)


def test_shape_mismatch(small_ckpt: Path, tmp_path: Path) -> None:
    tensors, meta = read_checkpoint(small_ckpt)
    meta["model"]["hidden_size"] = 9  # the weights are for 8 cells
    path = save_checkpoint(tmp_path / "m.safetensors", tensors, meta)
    with pytest.raises(CheckpointError, match="shape"):
        load_prior(path)


def test_missing_weight_and_bad_config(small_ckpt: Path, tmp_path: Path) -> None:
    tensors, meta = read_checkpoint(small_ckpt)
    del tensors["out.bias"]
    with pytest.raises(CheckpointError, match=r"missing weights \['out.bias'\]"):
        load_prior(save_checkpoint(tmp_path / "a.safetensors", tensors, meta))
    tensors, meta = read_checkpoint(small_ckpt)
    meta["model"]["arch"] = "mamba"
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_prior(save_checkpoint(tmp_path / "b.safetensors", tensors, meta))


def test_failed_save_keeps_the_old_file(small_ckpt: Path) -> None:
    before = small_ckpt.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(small_ckpt, {"w": torch.zeros(1)}, {"kind": "prior", "bad": object()})
    assert small_ckpt.read_bytes() == before


def test_shipped_prior_is_the_note_rnn() -> None:
    path = default_prior_path()
    assert path.name == "note_rnn.safetensors" and path.stat().st_size < 1_000_000
    model = load_default_prior()
    assert model.model_config()["arch"] == "lstm" and model.model_config()["hidden_size"] == 100
    meta = read_checkpoint(path)[1]
    assert meta["metrics"]["valid"]["accuracy"] > meta["metrics"]["baselines"]["unigram"]["accuracy"]
