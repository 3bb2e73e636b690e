"""The molecule main job (``rltuner run --domain molecules``): tune the shipped SMILES prior, evaluate, report.

Stages (skipped when finished with the same inputs, as in the melody job): ``tune/<algorithm>`` into
``RUN/tune/<algorithm>/``; ``evaluate`` -> ``RUN/evaluation.{json,csv,txt}`` and ``RUN/<model>.smi``;
``figures`` -> ``RUN/figures`` (reward curves, property histograms); ``report`` -> ``RUN/report.html`` and
``RUN/run.json`` (command, seeds, machine, settings, versions, timings), ``RUN/table.md`` and ``RUN/summary.json``.
With ``seeds > 1`` the tuning runs and evaluations are per seed (:class:`~rltuner.evaluation.pipeline.SeedLayout`)
and the table shows mean ± sd over seeds.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rltuner.config import field, result_inputs
from rltuner.devices import resolve_device
from rltuner.evaluation.pipeline import (
    MACHINE_FILE,
    SeedLayout,
    _result_settings,
    _Stages,
    evaluated_on,
    file_digest,
    fingerprint,
    model_key,
    run_seed_stages,
    tuning_outcomes,
    validate_run_settings,
    versions,
    worse_than_prior_note,
)
from rltuner.evaluation.seeds import aggregate_seeds, spread_cell, write_seed_summary
from rltuner.fileio import ensure_writable_dir, write_json_atomic
from rltuner.provenance import machine_description, machine_info
from rltuner.rl.targets import ALGORITHMS as _TABLE
from rltuner.threads import DEFAULT_THREADS, using_threads

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
    seed: int = field(0, "seed of tuning, sampling and evaluation (the first one with seeds > 1)")
    seeds: int = field(1, "tuning seeds: seed, seed + 1, ...; with more than one, tables show mean ± sd")
    device: str = field("cpu", "torch device: cpu, cuda or auto")
    threads: int = field(DEFAULT_THREADS, "CPU threads for torch (0 = torch's default)", result=False)
    quick: bool = field(False, "a smoke version of a minute or two: few steps, few samples, no FCD")
    fcd: bool = field(True, "compute FCD to the MOSES test set (about 30 s per model)")
    force: bool = field(False, "redo every stage")
    tensorboard: bool = field(False, "write TensorBoard event files of each tuning run to RUN/tune/ALGO/tb")
    progress: bool = field(True, "show progress bars on stderr")

    def validate(self) -> None:
        validate_run_settings(
            self.out, self.algorithms, ALGORITHMS, {"samples": self.samples, "steps": self.steps}, self.device,
            threads=self.threads, seed=self.seed, seeds=self.seeds,
        )  # fmt: skip

    @property
    def seed_list(self) -> list[int]:
        """The tuning seeds: ``seed .. seed + seeds - 1``."""
        return list(range(self.seed, self.seed + self.seeds))

    @property
    def n_samples(self) -> int:
        return self.samples if self.samples is not None else (QUICK_SAMPLES if self.quick else RUN_SAMPLES)

    @property
    def n_steps(self) -> int:
        return self.steps if self.steps is not None else (QUICK_STEPS if self.quick else 1_000_000)


def _tune_config(cfg: MoleculeRunConfig, algorithm: str, seed: int) -> Any:
    from rltuner.domains import tune_preset

    steps = cfg.n_steps
    return tune_preset(
        "molecules", "fast", algorithm=algorithm, seed=seed, device=cfg.device, threads=cfg.threads,
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
    prior_id = file_digest(prior_path)
    code = versions()["rltuner"]
    layout = SeedLayout(run_dir, config.seed_list)
    layout.check_matches(stages.done)
    seeds, multi = layout.seeds, layout.multi
    shown_only = (
        "out",
        "force",
        "tensorboard",
        "progress",
    )  # where and how it is shown, not what it computes
    settings_in = {k: v for k, v in asdict(config).items() if k not in shown_only}
    inputs = {k: v for k, v in result_inputs(config).items() if k not in shown_only}  # not threads either
    if not multi:
        inputs.pop("seeds")  # run folders made before --seeds existed keep their fingerprints

    def evaluation_inputs(s: int, tune_inputs: dict[str, str]) -> str:
        if not multi:
            return fingerprint(inputs, prior_id, code, tune_inputs)
        shared = {k: v for k, v in inputs.items() if k not in ("seed", "seeds")}
        return fingerprint(shared, s, prior_id, code, tune_inputs)

    def bind_evaluate(tune_dirs: dict[str, Path], s: int, out_dir: Path) -> Callable[[], None]:
        def evaluate() -> None:
            result = evaluate_molecule_models(
                dict(tune_dirs), n=config.n_samples, seed=s, prior=prior_path,
                fcd=config.fcd and not config.quick, novelty=True, device=device, progress=config.progress,
            )  # fmt: skip
            result.write(out_dir)
            write_json_atomic(out_dir / MACHINE_FILE, machine_info())  # the machine that made it
            print(result.format_table(), file=sys.stderr)

        return evaluate

    tune_cfgs_by_seed, later = run_seed_stages(
        stages,
        layout,
        {k: functools.partial(_tune_config, config, a) for k, a in keys.items()},
        lambda _key, c: fingerprint(_result_settings(c), prior_id, code, domain.reward_config),
        evaluation_inputs,
        bind_evaluate,
        lambda _key: domain,
        config.force,
    )
    # the figures and molecule grids show the first seed's models: they rerun only when those changed
    tune_dirs = layout.tune_dirs(keys, seeds[0])
    evaluations = [json.loads((layout.eval_dir(s) / "evaluation.json").read_text()) for s in seeds]
    evaluation = evaluations[0]
    metrics: dict[str, dict[str, float]] = evaluation["metrics"]
    smiles = {
        name: (layout.eval_dir(seeds[0]) / f"{name}.smi").read_text().split("\n")[:-1] for name in metrics
    }

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
    # NaN (not measured) is left out of a seed's statistic, as the JSON writes it as null
    over_seeds = aggregate_seeds(
        [{n: {k: (math.nan if v is None else v) for k, v in m.items()} for n, m in e["metrics"].items()}
         for e in evaluations]
    )  # fmt: skip

    def cell(name: str, key: str, fmt: str) -> str:
        stat = over_seeds[name].get(key)
        if stat is None:
            return _fmt(math.nan, fmt)
        mean = _fmt(stat.mean, fmt)
        return (
            mean if not multi or math.isnan(stat.sd) else f"{mean} ± {spread_cell(mean, _fmt(stat.sd, fmt))}"
        )

    rows = [(label, [*(cell(n, k, f) for n in names), _fmt(ref.get(k, math.nan), f)]) for k, label, f in ROWS]
    first_header = f"metric (mean ± sd over seeds {', '.join(map(str, seeds))})" if multi else "metric"
    cmd = command if command is not None else " ".join(["rltuner", *sys.argv[1:]])
    tuning = layout.tuning_settings(tune_cfgs_by_seed)
    machine = evaluated_on(layout.eval_dir(seeds[0]))
    settings = {"pipeline": {**settings_in, "out": config.out}, "tuning": tuning,
                "evaluation": evaluation["settings"], "prior": str(prior_path), "prior_sha256": prior_id}  # fmt: skip
    outcomes: dict[str, Any] = {}  # each tuning run's summary.json (final task reward beside the prior's)
    for s in seeds:
        outcomes.update(
            {k + layout.suffix(s): v for k, v in tuning_outcomes(layout.tune_dirs(keys, s)).items()}
        )
    info = {"command": cmd, "finished": dt.datetime.now().isoformat(timespec="seconds"), "seeds": seeds,
            "machine": machine, "settings": settings, "versions": versions(), "timings_s": stages.timings,
            "tuning": outcomes}  # fmt: skip
    write_json_atomic(run_dir / "run.json", info)
    header = [first_header, *names, "MOSES CharRNN"]
    differences = write_seed_summary(run_dir, over_seeds, seeds, header, rows, command=cmd, machine=machine,
                                     evaluation=evaluation["settings"])  # fmt: skip
    if multi:
        spread = (
            f" Each algorithm was tuned with {len(seeds)} seeds ({', '.join(map(str, seeds))}) and every model "
            "evaluated once per seed: each cell is the mean ± sd over seeds (summary.json has the 95% intervals); "
            "figures and molecule grids show the first seed's models. "
            + ("Differences the seeds support (95% intervals apart): " + "; ".join(differences) + "."
               if differences else "No difference between models has non-overlapping 95% intervals.")
        )  # fmt: skip
    else:
        spread = " One tuning seed: the numbers carry no spread (--seeds 3 gives mean ± sd)."
    summary = (
        f"The SMILES prior was tuned with {', '.join(config.algorithms)} ({config.n_steps:,} environment steps "
        f"each{', quick smoke version' if config.quick else ''}); every model, the prior included, then sampled "
        f"{config.n_samples:,} strings from <bos> (temperature 1). Validity, uniqueness, novelty, IntDiv, filters "
        "and FCD follow MOSES's definitions; the last column is MOSES's published CharRNN (trained on the same "
        "data; their FCD uses 30,000 samples against the whole test set, so it is lower by construction). r_T is "
        "the chemistry reward of shared/spec/molecules.md; log p(a|s) is under the prior, KL from it per token."
        + spread
    ) + worse_than_prior_note(outcomes, "the prior", "r_T")
    report = write_molecule_report(
        run_dir / "report.html", title=f"rltuner run (molecules): {run_dir.name}", summary=summary,
        table_header=header, table_rows=rows,
        figures={"curves": fig_dir / "curves.png", "properties": fig_dir / "properties.png"}, grids=grids,
        command=cmd, config=settings, versions={**versions(), "machine": machine_description(machine)},
        timings=stages.timings,
    )  # fmt: skip
    return report
