"""Evaluation of SMILES models: MOSES metrics, the chemistry reward and its terms, log p and KL to the prior.

Every model samples ``n`` strings from its stochastic policy (temperature 1, from ``<bos>``); the prior (the
Reward RNN) scores every sampled token, which gives the mean ``log p(a|s)`` and the KL of each model's
sampling distribution from the prior's per token. The table puts the prior, the tuned models and MOSES's
published CharRNN row side by side, in the style of Sequence Tutor's molecule table.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rltuner.fileio import ensure_writable_dir, write_json_atomic, write_text_atomic

PRIOR_NAME = "prior"
# Rows of the table: (key, label, format). Fractions print as percentages.
ROWS: tuple[tuple[str, str, str], ...] = (
    ("valid", "Valid", "pct"),
    ("unique@1000", "Unique@1k", "pct"),
    ("unique@10000", "Unique@10k", "pct"),
    ("novelty", "Novel (not in MOSES train)", "pct"),
    ("IntDiv1", "IntDiv1", "f3"),
    ("IntDiv2", "IntDiv2", "f3"),
    ("scaffold_diversity", "Scaffold diversity", "pct"),
    ("filters", "Filters (MCF + PAINS)", "pct"),
    ("FCD/Test", "FCD/Test (10k MOSES test)", "f3"),
    ("qed_mean", "Mean QED", "f3"),
    ("sa_mean", "Mean SA (1 easy .. 10 hard)", "f2"),
    ("logp_mean", "Mean logP", "f2"),
    ("weight_mean", "Mean mol. weight", "f1"),
    ("reward_mean", "Mean r_T per molecule", "f3"),
    ("hit_large_rings", "Hit: ring > 6 atoms", "pct"),
    ("hit_size", "Hit: size outside 10..40", "pct"),
    ("hit_carbon_chains", "Hit: carbon chain >= 6", "pct"),
    ("mean_log_p", "Mean log p(a|s) under the prior", "f3"),
    ("mean_kl", "KL(pi || p) per token", "f3"),
    ("mean_length", "Mean tokens per string", "f1"),
)


@dataclass
class MoleculeEvaluation:
    """What :func:`evaluate_molecule_models` returns: one metrics dict per model, and the sampled strings."""

    metrics: dict[str, dict[str, float]]
    smiles: dict[str, list[str]]
    settings: dict[str, Any] = field(default_factory=dict)

    def format_table(self, baselines: bool = True) -> str:
        """A fixed-width text table: one column per model, then MOSES's CharRNN."""
        from rltuner.domains.molecules.metrics import MOSES_BASELINES

        names = list(self.metrics)
        cols = [*names, "MOSES CharRNN"] if baselines else names
        ref = MOSES_BASELINES.get("CharRNN", {})
        width = max(12, *(len(c) + 2 for c in cols))
        lines = [f"{'metric':<34}" + "".join(f"{c:>{width}}" for c in cols)]
        for key, label, fmt in ROWS:
            values = [self.metrics[n].get(key, math.nan) for n in names]
            if baselines:
                values.append(ref.get(key, math.nan))
            lines.append(f"{label:<34}" + "".join(f"{_fmt(v, fmt):>{width}}" for v in values))
        return "\n".join(lines)

    def format_markdown(self) -> str:
        from rltuner.domains.molecules.metrics import MOSES_BASELINES

        names = list(self.metrics)
        ref = MOSES_BASELINES.get("CharRNN", {})
        out = ["| metric | " + " | ".join(names) + " | MOSES CharRNN |", "|---" * (len(names) + 2) + "|"]
        for key, label, fmt in ROWS:
            cells = [_fmt(self.metrics[n].get(key, math.nan), fmt) for n in names]
            out.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(ref.get(key, math.nan), fmt)} |")
        return "\n".join(out)

    def write(self, folder: str | os.PathLike[str]) -> dict[str, Path]:
        """evaluation.json (metrics and settings), evaluation.csv, evaluation.txt, and NAME.smi per model."""
        d = ensure_writable_dir(folder)
        paths = {
            "json": write_json_atomic(
                d / "evaluation.json", {"settings": self.settings, "metrics": self.metrics}
            ),
            "txt": write_text_atomic(d / "evaluation.txt", self.format_table() + "\n"),
        }
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["metric", *self.metrics])
        for key, _, _ in ROWS:
            w.writerow([key, *(self.metrics[n].get(key, math.nan) for n in self.metrics)])
        paths["csv"] = write_text_atomic(d / "evaluation.csv", buf.getvalue())
        for name, strings in self.smiles.items():
            paths[f"smi:{name}"] = write_text_atomic(d / f"{name}.smi", "".join(s + "\n" for s in strings))
        return paths


def _fmt(value: float, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if fmt == "pct":
        return f"{100 * value:.1f}%"
    return f"{value:.{fmt[1]}f}"


def evaluate_molecule_models(
    models: dict[str, Any],
    *,
    n: int = 10_000,
    seed: int = 0,
    prior: Any = None,
    reward_config: Any = None,
    fcd: bool = True,
    novelty: bool = True,
    device: str = "cpu",
    progress: bool = False,
) -> MoleculeEvaluation:
    """Sample ``n`` strings from the prior and each model; score them all the same way.

    Args:
        models: name -> a checkpoint path / run folder, or a loaded model (the prior's vocabulary is used).
        n: strings per model.
        seed: the sampling seed (the same for every model).
        prior: the prior's checkpoint (None: the shipped SMILES prior); it is evaluated too, as ``prior``.
        reward_config: the ``MoleculeRewardConfig`` to score with (None: a tuned run's recorded one if all
            models agree on it, else the spec's defaults).
        fcd: compute FCD to 10,000 MOSES test molecules (slow: ~30 s per model on 2 cores).
        novelty: compare with the MOSES training set (needs it in memory: ~1.6M strings).
        device: where the networks run.

    Raises:
        CheckpointError: a model that cannot be loaded or does not fit the prior's vocabulary.
    """
    import torch

    from rltuner.config import from_dict
    from rltuner.domains.molecules.domain import load_smiles_model
    from rltuner.domains.molecules.metrics import moses_metrics, moses_train_smiles
    from rltuner.domains.molecules.reward import MoleculeReward, MoleculeRewardConfig
    from rltuner.domains.molecules.sampling import sample_smiles
    from rltuner.errors import CheckpointError

    prior_model, vocab = load_smiles_model(prior, device)
    loaded: dict[str, Any] = {PRIOR_NAME: prior_model}
    recorded: list[dict[str, Any]] = []
    for name, spec in models.items():
        if isinstance(spec, torch.nn.Module):
            loaded[name] = spec
            continue
        model, model_vocab = load_smiles_model(spec, device)
        if model_vocab != vocab:
            raise CheckpointError(f"model {name!r} uses another SMILES vocabulary than the prior")
        loaded[name] = model
        recorded.append(_recorded_reward(spec))
    if reward_config is None:
        known = [r for r in recorded if r]
        if known and all(r == known[0] for r in known):
            reward_config = from_dict(MoleculeRewardConfig, known[0])
        else:
            reward_config = MoleculeRewardConfig()
    scorer = MoleculeReward(reward_config)
    train_set = set(moses_train_smiles()) if novelty else None
    metrics: dict[str, dict[str, float]] = {}
    smiles: dict[str, list[str]] = {}
    for name, model in loaded.items():
        drawn = sample_smiles(model, vocab, n, seed=seed, reference=prior_model)
        strings, broken = drawn["smiles"], drawn["broken"]
        usable = [s if not b else "" for s, b in zip(strings, broken, strict=True)]
        m = moses_metrics(usable, train_set=train_set, fcd=fcd, device=device, seed=seed)
        total, terms = scorer(strings, truncated=broken)
        valid = terms["invalid"] == 0
        mask = drawn["mask"]
        m.update(
            reward_mean=float(total.mean()),
            **{f"term_{k}": float(v.mean()) for k, v in terms.items()},
            **{f"hit_{k}": float((terms[k][valid] < 0).mean()) if valid.any() else math.nan
               for k in ("large_rings", "size", "carbon_chains")},
            mean_log_p=float(drawn["ref_log_p"][mask].mean()),
            mean_kl=float(drawn["kl"][mask].mean()),
            mean_length=float(mask.sum(1).mean()),
        )  # fmt: skip
        metrics[name] = {k: float(v) for k, v in m.items()}
        smiles[name] = strings
    settings = {"n": n, "seed": seed, "prior": str(prior) if prior else "shipped", "fcd": fcd,
                "reward": reward_config.to_dict(),
                "models": {k: str(v) for k, v in models.items() if not isinstance(v, torch.nn.Module)}}  # fmt: skip
    return MoleculeEvaluation(metrics, smiles, settings)


def _recorded_reward(spec: Any) -> dict[str, Any]:
    """The molecule reward settings a tuned checkpoint recorded ({} for a prior or an older file)."""
    from rltuner.loading import resolve_model_path
    from rltuner.models.checkpoint import read_meta

    meta = read_meta(resolve_model_path(spec))
    reward = meta.get("reward")
    if isinstance(reward, str):
        reward = json.loads(reward)
    if isinstance(reward, dict) and isinstance(reward.get("molecules"), dict):
        return dict(reward["molecules"])
    return {}


def property_arrays(smiles: list[str]) -> dict[str, np.ndarray]:
    """QED, SA, logP and weight of the valid strings (for histograms)."""
    from rltuner.domains.molecules.metrics import properties

    return properties([s for s in smiles if s])
