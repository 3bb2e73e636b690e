"""Molecule domain speed: the MOSES dataset build, the chemistry reward, and tuning on the paper's budget.

Run with ``rltuner bench --only molecules`` or ``python -m rltuner.benchmarks.molecules [--quick]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from rltuner.benchmarks import BenchResult

BUDGET = 1_000_000  # the paper's environment steps per tuning run
MEASURED_STEPS = 200_000  # measured per algorithm; the full budget is projected from the rate (see detail)


def _build(quick: bool) -> list[BenchResult]:
    from rltuner.domains.molecules.corpus import MoleculeBuildConfig, build_molecule_dataset

    limit = 20_000 if quick else 0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = build_molecule_dataset(MoleculeBuildConfig(limit=limit), Path(tmp) / "m.npz", progress=False)
        seconds = time.perf_counter() - t0
    what = f"first {limit:,} MOSES SMILES" if limit else "the whole MOSES train set"
    return [
        BenchResult(
            name=f"dataset build ({what})",
            value=seconds,
            unit="s",
            goal="<= 120 s on 2 cores (whole set)" if not limit else "",
            met=None if limit else seconds <= 120,
            detail=f"{report.counts.get('read', 0):,} read, {report.counts.get('kept', 0):,} kept; RDKit "
            "canonicalisation over all cores, then tokenising, de-duplication and the split in one process",
        )
    ]


def _reward(quick: bool) -> list[BenchResult]:
    from rltuner.domains.molecules.metrics import moses_test_smiles
    from rltuner.domains.molecules.reward import MoleculeReward

    smiles = moses_test_smiles(sample_size=300 if quick else 3_000, seed=0)
    scorer = MoleculeReward()
    t0 = time.perf_counter()
    scorer(smiles)
    cold = len(smiles) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    scorer(smiles)
    warm = len(smiles) / (time.perf_counter() - t0)
    return [
        BenchResult(name="chemistry reward r_T, new molecules", value=cold, unit="molecules/s", goal="",
                    met=None, detail=f"{len(smiles):,} MOSES test molecules; QED, SA, logP, rings, size, chains"),
        BenchResult(name="chemistry reward r_T, cached", value=warm, unit="molecules/s", goal="", met=None,
                    detail="the same molecules again (tuning re-scores the same strings often)"),
    ]  # fmt: skip


def _tuning(quick: bool) -> list[BenchResult]:
    from rltuner.benchmarks import warm_up_optimizers
    from rltuner.domains import get_domain, tune_preset
    from rltuner.rl.tuner import tune

    domain = get_domain("molecules").build(None)
    steps = 5_000 if quick else MEASURED_STEPS
    results: list[BenchResult] = []
    warm_up_optimizers()  # not in the first algorithm's time
    for algorithm in ("q", "psi", "g", "rl-only"):
        cfg = tune_preset("molecules", "fast", algorithm=algorithm, total_steps=steps, eval_every=0,
                          eval_episodes=16, tensorboard=False, progress=False)  # fmt: skip
        t0 = time.perf_counter()
        result = tune(cfg, domain)
        seconds = time.perf_counter() - t0
        rate = result.env_steps / seconds
        projected = BUDGET / rate
        results.append(
            BenchResult(
                name=f"tune --domain molecules -a {algorithm}, fast preset",
                value=rate,
                unit="env steps/s",
                goal=f"{BUDGET:,} steps <= 240 s (>= {BUDGET / 240:,.0f} steps/s)",
                met=None if quick else projected <= 240,
                detail=f"{result.env_steps:,} steps measured in {seconds:.1f} s ({result.sample_updates:,} "
                f"sample-updates); the full budget projected at {projected:.0f} s; shipped SMILES prior",
            )
        )
    return results


def measure(quick: bool = False) -> list[BenchResult]:
    """Every molecule figure (quick: tiny sizes, to check that the benchmarks run)."""
    return [*_build(quick), *_reward(quick), *_tuning(quick)]


if __name__ == "__main__":
    for r in measure(quick="--quick" in sys.argv):
        print(f"{r['name']}: {r['value']:.4g} {r['unit']}  {r['detail']}")
