"""Corpus figures: wall time and size of the default dataset build (issue 2: under 60 s on 2 cores)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from rltuner.benchmarks import BenchResult


def measure(quick: bool = False) -> list[BenchResult]:
    """Build the default folk dataset (all collections, all cores) into a temporary folder and time it.

    Args:
        quick: build only the small ``misc`` collection (a smoke test of this benchmark).
    """
    from rltuner.data.dataset import BuildConfig, build_dataset

    config = BuildConfig(collections=("misc",)) if quick else BuildConfig()
    what = "misc collection only (quick)" if quick else "default folk corpus, all 5 collections"
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="rltuner-bench-") as tmp:
        began = time.perf_counter()
        report = build_dataset(config, Path(tmp) / "melodies.npz", progress=False)
        seconds = time.perf_counter() - began
        size_mb = (Path(tmp) / "melodies.npz").stat().st_size / 1e6
    c = report.counts
    drops = ", ".join(f"{k} {v}" for k, v in report.drops.items() if v) or "none"
    detail = (
        f"{what}; {cores} worker processes; {c.get('files', 0):,} files, {c.get('tunes', 0):,} tunes; "
        f"drops: {drops}; {c.get('rounded_off_grid', 0):,} kept after rounding triplets; file {size_mb:.1f} MB"
    )
    return [
        BenchResult(
            name=f"dataset build ({what})",
            value=seconds,
            unit="s",
            goal="< 60 s on 2 cores" if not quick else "",
            met=(seconds < 60.0) if not quick else None,
            detail=detail,
        ),
        BenchResult(
            name="corpus size: tunes read",
            value=float(c.get("tunes", 0)),
            unit="tunes",
            goal="about 12,900" if not quick else "",
            met=None,
            detail=what,
        ),
        BenchResult(
            name="corpus size: melodies kept",
            value=float(c.get("kept", 0)),
            unit="melodies",
            goal="",
            met=None,
            detail=f"train {report.train_melodies:,}, valid {report.valid_melodies:,}",
        ),
        BenchResult(
            name="corpus size: sixteenth steps",
            value=float(report.steps),
            unit="steps",
            goal="2.5-3M" if not quick else "",
            met=None,
            detail=what,
        ),
    ]
