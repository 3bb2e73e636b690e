"""Shared test settings: tests run on the CPU, deterministic, without touching the user's cache."""

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Anything that caches (datasets, MIDI imports) writes into a per-session temporary folder.
    monkeypatch.setenv("RLTUNER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def tiny_prior_file(tmp_path_factory):
    """A tiny LSTM prior over the 38 melody classes, saved as a checkpoint (read-only for the tests)."""
    import torch

    from rltuner.models.checkpoint import save_prior
    from rltuner.models.prior import build_prior

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("prior") / "tiny.safetensors"
    save_prior(path, build_prior({"arch": "lstm", "hidden_size": 8}))
    return path
