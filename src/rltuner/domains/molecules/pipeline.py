"""The molecule main job (``rltuner run --domain molecules``): tune the shipped SMILES prior, evaluate, report.

Stages (skipped when finished with the same inputs, as in the melody job): ``tune/<algorithm>`` into
``RUN/tune/<algorithm>/``; ``evaluate`` -> ``RUN/evaluation.{json,csv,txt}`` and ``RUN/<model>.smi``;
``figures`` -> ``RUN/figures`` (reward curves, property histograms); ``report`` -> ``RUN/report.html`` and
``RUN/run.json`` (command, settings, versions, timings).
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rltuner.config import field, result_inputs, to_dict
from rltuner.devices import resolve_device
from rltuner.evaluation.pipeline import (
    _result_settings,
    _Stages,
    file_digest,
    fingerprint,
    model_key,
    run_tune_stages,
    tuning_outcomes,
    validate_run_settings,
    versions,
    worse_than_prior_note,
)
from rltuner.fileio import ensure_writable_dir, write_json_atomic
from rltuner.rl.targets import ALGORITHMS as _TABLE
from rltuner.threads import DEFAULT_THREADS, check_threads, using_threads

# The paper's job tunes every value-family row of the algorithm table (Q, Psi, G, RL-only); the on-policy rows
# are compared with them by `rltuner compare`.
ALGORITHMS = tuple(a.name for a in _TABLE.values() if a.family == "value")
QUICK_STEPS = 20_000
QUICK_SAMPLES = 300
RUN_SAMPLES = 5_000


@dataclass(frozen=True)
class MoleculeRunConfig:
    """Settings of the molecule job. ``None``: the default (or the quick smoke version's) value."""

    out: str = field("", "run folder (created; stages finished with the same inputs are skipped)")
    algorithms: tuple[str, ...] = field(ALGORITHMS, "algorithms to tune")
    samples: int | None = field(None, "strings sampled per model for evaluation (default 5,000; quick 300)")
    steps: int | None = field(None, "environment steps per tuning run (default 1,000,000; quick 20,000)")
    prior: str | None = field(None, "SMILES prior checkpoint (None: the shipped one)")
    seed: int = field(0, "seed of tuning, sampling and evaluation")
    device: str = field("cpu", "torch device: cpu, cuda or auto")
    threads: int = field(DEFAULT_THREADS, "CPU threads for torch (0 = torch's default)", result=False)
    quick: bool = field(False, "a smoke version of a minute or two: few steps, few samples, no FCD")
    fcd: bool = field(True, "compute FCD to the MOSES test set (about 30 s per model)")
    force: bool = field(False, "redo every stage")
    tensorboard: bool = field(False, "write TensorBoard event files of each tuning run to RUN/tune/ALGO/tb")
    progress: bool = field(True, "show progress bars on stderr")

    def validate(self) -> None:
        validate_run_settings(
            self.out, self.algorithms, ALGORITHMS, {"samples": self.samples, "steps": self.steps}, self.device
        )
        check_threads(self.threads)

    @property
    def n_samples(self) -> int:
        return self.samples if self.samples is not None else (QUICK_SAMPLES if self.quick else RUN_SAMPLES)

    @property
    def n_steps(self) -> int:
        return self.steps if self.steps is not None else (QUICK_STEPS if self.quick else 1_000_000)


def _tune_config(cfg: MoleculeRunConfig, algorithm: str) -> Any:
    from rltuner.domains import tune_preset

    steps = cfg.n_steps
    return tune_preset(
        "molecules", "fast", algorithm=algorithm, seed=cfg.seed, device=cfg.device, threads=cfg.threads,
        tensorboard=cfg.tensorboard, progress=cfg.progress,
        total_steps=steps, **({"eval_episodes": 64} if cfg.quick else {}),
    )  # fmt: skip


def run_molecule_pipeline(config: MoleculeRunConfig, *, command: str | None = None) -> Path:
    """Tune, evaluate, draw and report in one run folder; returns the path of ``report.html``.

    Raises:
        ConfigError: bad settings. CheckpointError: no usable SMILES prior. RLTunerError: RDKit missing or an
            unwritable folder.
    """
    config.validate()
    with using_threads(config.threads):
        return _run_molecule_pipeline(config, command)


def _run_molecule_pipeline(config: MoleculeRunConfig, command: str | None) -> Path:
    from rltuner.domains.molecules.domain import default_smiles_prior_path, molecule_domain
    from rltuner.domains.molecules.evaluate import ROWS, _fmt, evaluate_molecule_models
    from rltuner.domains.molecules.metrics import MOSES_BASELINES, moses_test_smiles, properties
    from rltuner.domains.molecules.report import (
        molecule_grid_svg,
        property_histograms,
        reward_curves,
        write_molecule_report,
    )
    from rltuner.domains.molecules.reward import MoleculeReward

    device = str(resolve_device(config.device))
    prior_path = Path(config.prior) if config.prior else default_smiles_prior_path()
    domain = molecule_domain(prior_path, device=device)
    run_dir = ensure_writable_dir(config.out)
    fig_dir = run_dir / "figures"
    stages = _Stages(run_dir, config.force)
    keys = {model_key(a): a for a in config.algorithms}
    tune_dirs = {k: run_dir / "tune" / k for k in keys}
    tune_cfgs = {k: _tune_config(config, a) for k, a in keys.items()}
    prior_id = file_digest(prior_path)
    code = versions()["rltuner"]
    tune_inputs = {
        k: fingerprint(_result_settings(c), prior_id, code, domain.reward_config)
        for k, c in tune_cfgs.items()
    }
    run_tune_stages(stages, tune_dirs, tune_cfgs, tune_inputs, domain, config.force)
    # where and how it is shown, not what it computes
    shown_only = ("out", "force", "tensorboard", "progress")
    settings_in = {k: v for k, v in asdict(config).items() if k not in shown_only}
    inputs = {k: v for k, v in result_inputs(config).items() if k not in shown_only}  # not threads either
    later = fingerprint(inputs, prior_id, code, tune_inputs)

    def evaluate() -> None:
        result = evaluate_molecule_models(
            {k: f for k, f in tune_dirs.items()}, n=config.n_samples, seed=config.seed, prior=prior_path,
            fcd=config.fcd and not config.quick, novelty=True, device=device, progress=config.progress,
        )  # fmt: skip
        result.write(run_dir)
        print(result.format_table(), file=sys.stderr)

    stages.run("evaluate", evaluate, later)
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    metrics: dict[str, dict[str, float]] = evaluation["metrics"]
    smiles = {name: (run_dir / f"{name}.smi").read_text().split("\n")[:-1] for name in metrics}

    def draw() -> None:
        reward_curves(tune_dirs, fig_dir / "curves.png")
        props = {"MOSES test": properties(moses_test_smiles(sample_size=2_000, seed=config.seed))}
        props.update({name: properties([s for s in strings if s]) for name, strings in smiles.items()})
        property_histograms(props, fig_dir / "properties.png")

    stages.run("figures", draw, later)

    scorer = MoleculeReward()
    grids: dict[str, tuple[str, str]] = {}
    for name, strings in smiles.items():
        rng = np.random.default_rng(config.seed)
        pick = [strings[i] for i in rng.choice(len(strings), size=min(12, len(strings)), replace=False)]
        total, _ = scorer(strings)
        top = [strings[i] for i in np.argsort(-total, kind="stable")[:12]]
        top_scores = [f"r_T {v:.2f}" for v in np.sort(total)[::-1][:12]]
        grids[name] = (molecule_grid_svg(pick), molecule_grid_svg(top, top_scores))
    names = list(metrics)
    ref = MOSES_BASELINES.get("CharRNN", {})
    rows = [(label, [*(_fmt(metrics[n].get(k, float("nan")), f) for n in names), _fmt(ref.get(k, float("nan")), f)])
            for k, label, f in ROWS]  # fmt: skip
    cmd = command if command is not None else " ".join(["rltuner", *sys.argv[1:]])
    settings = {"pipeline": {**settings_in, "out": config.out}, "tuning": {k: to_dict(c) for k, c in tune_cfgs.items()},
                "evaluation": evaluation["settings"], "prior": str(prior_path), "prior_sha256": prior_id}  # fmt: skip
    outcomes = tuning_outcomes(tune_dirs)
    info = {"command": cmd, "finished": dt.datetime.now().isoformat(timespec="seconds"), "settings": settings,
            "versions": versions(), "timings_s": stages.timings, "tuning": outcomes}  # fmt: skip
    write_json_atomic(run_dir / "run.json", info)
    summary = (
        f"The SMILES prior was tuned with {', '.join(config.algorithms)} ({config.n_steps:,} environment steps "
        f"each{', quick smoke version' if config.quick else ''}); every model, the prior included, then sampled "
        f"{config.n_samples:,} strings from <bos> (temperature 1). Validity, uniqueness, novelty, IntDiv, filters "
        "and FCD follow MOSES's definitions; the last column is MOSES's published CharRNN (trained on the same "
        "data; their FCD uses 30,000 samples against the whole test set, so it is lower by construction). r_T is "
        "the chemistry reward of shared/spec/molecules.md; log p(a|s) is under the prior, KL from it per token."
    ) + worse_than_prior_note(outcomes, "the prior", "r_T")
    report = write_molecule_report(
        run_dir / "report.html", title=f"rltuner run (molecules): {run_dir.name}", summary=summary,
        table_header=["metric", *names, "MOSES CharRNN"], table_rows=rows,
        figures={"curves": fig_dir / "curves.png", "properties": fig_dir / "properties.png"}, grids=grids,
        command=cmd, config=settings, versions=versions(), timings=stages.timings,
    )  # fmt: skip
    return report
