"""Shared test settings: tests run on the CPU, deterministic, without touching the user's cache."""

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    # Anything that caches (datasets, MIDI imports) writes into a per-session temporary folder.
    monkeypatch.setenv("RLTUNER_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    os.environ.setdefault("MPLBACKEND", "Agg")
