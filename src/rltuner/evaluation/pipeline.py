"""The main job (``rltuner run``, ``make demo``) as one API function: tune, evaluate, draw, report.

Stages, each keeping its outputs in the run folder so that a re-run with the same folder skips what is done:

1. ``tune/<algorithm>``: RL-tune the shipped Note RNN with each algorithm (``fast`` preset) into
   ``RUN/tune/<algorithm>/`` (model.safetensors, config.json, metrics.jsonl);
2. ``evaluate``: sample every model (the Note RNN included) and measure it -> ``RUN/evaluation.{json,csv,txt}``
   and ``RUN/samples.npz``;
3. ``media``: MIDI and WAV files of a few melodies per model, piano rolls -> ``RUN/midi``, ``RUN/audio``,
   ``RUN/figures``;
4. ``figures``: Figure 2, Figure 4, interval histograms -> ``RUN/figures``;
5. ``report``: ``RUN/report.html`` (self-contained), ``RUN/run.json`` (command, seeds, machine, settings,
   versions, timings), ``RUN/table.md`` and ``RUN/summary.json`` (mean, sd, n, 95% interval per metric).

With ``seeds > 1`` (``rltuner run --seeds N``) stages 1 and 2 run per seed, into ``RUN/tune/<algorithm>/seed-<s>/``
and ``RUN/seed-<s>/`` (:class:`SeedLayout`); media and figures show the first seed's models, and the tables
give mean ± sd over seeds (:mod:`rltuner.evaluation.seeds`).

A stage is finished when ``RUN/stages.json`` records it (written atomically after the stage's own files), so
an interrupted run resumes at the first unfinished stage.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import platform
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rltuner.config import check_types, field, result_inputs, to_dict
from rltuner.devices import DEVICE_CHOICES, resolve_device
from rltuner.encoding import STEPS_PER_BAR, with_primers
from rltuner.errors import ConfigError, RLTunerError
from rltuner.featured import FEATURED_NAME
from rltuner.fileio import atomic_path, ensure_writable_dir, write_json_atomic
from rltuner.limits import check_seed
from rltuner.provenance import machine_description, machine_info
from rltuner.rl.targets import ALGORITHMS as _TABLE
from rltuner.threads import DEFAULT_THREADS, batch_workers, check_threads, using_threads

log = logging.getLogger(__name__)

# The paper's job tunes every value-family row of the algorithm table (Q, Psi, G, RL-only); the on-policy rows
# are compared with them by `rltuner compare`.
ALGORITHMS = tuple(a.name for a in _TABLE.values() if a.family == "value")
QUICK_STEPS = 8_192
QUICK_SAMPLES = 1_000
# 20,000 per model keeps the whole job within 15 minutes on 2 cores; `rltuner evaluate` defaults to 100,000
RUN_SAMPLES = 100_000  # the paper's count: ~12 s per model since sampling and scoring share one pass
MAX_JOBS = 256


@dataclass(frozen=True)
class PipelineConfig:
    """Settings of the main job. ``None`` means "the preset's value" (``fast``, or the quick smoke version)."""

    out: str = field("", "run folder (created; finished stages found there are skipped)")
    algorithms: tuple[str, ...] = field(ALGORITHMS, "algorithms to tune: q, psi, g, rl-only")
    samples: int | None = field(
        None, "melodies sampled per model for evaluation (default 20,000; quick 1,000)"
    )
    steps: int | None = field(
        None, "environment steps per tuning run (default the fast preset's; quick 8,192)"
    )
    prior: str | None = field(None, "Note RNN checkpoint to tune and compare against (None: the shipped one)")
    seed: int = field(0, "seed of tuning, sampling and evaluation (the first one with seeds > 1)")
    seeds: int = field(1, "tuning seeds: seed, seed + 1, ...; with more than one, tables show mean ± sd")
    device: str = field("cpu", "torch device: cpu, cuda or auto")
    threads: int = field(DEFAULT_THREADS, "CPU threads for torch (0 = torch's default)", result=False)
    quick: bool = field(False, "a smoke version (~16-23 s on 2 cores): few steps, few samples")
    length: int = field(32, "melody length in steps")
    muspy_samples: int = field(1_000, "melodies per model scored by muspy (a Python loop, ~1 ms each)")
    audio_per_model: int = field(3, "sample melodies per model rendered to WAV for the report")
    midi_per_model: int = field(8, "sample melodies per model written as MIDI files")
    copying: bool = field(True, "measure copying against the training corpus (builds it once if needed)")
    force: bool = field(False, "redo every stage even where its outputs exist")
    rules: tuple[str, ...] = field(
        (), "user reward rules, MODULE:FUNCTION or FILE.py:FUNCTION (docs/rewards.md)"
    )
    tensorboard: bool = field(False, "write TensorBoard event files of each tuning run to RUN/tune/ALGO/tb")
    progress: bool = field(True, "show progress bars on stderr")
    featured: str | None = field(
        FEATURED_NAME,
        "settings file of the featured model, tuned beside the algorithms as model 'featured' (a TOML file "
        "rltuner tune --config reads, a sweep's best.toml; 'featured': the shipped one; None: no featured model)",
    )
    jobs: int = field(
        0, "worker processes for the tuning runs and model evaluations (0: one per CPU core)", result=False
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` on nonsense settings, before any work starts."""
        check_types(self)
        validate_run_settings(
            self.out, self.algorithms, ALGORITHMS, {"samples": self.samples, "steps": self.steps}, self.device,
            threads=self.threads, seed=self.seed, seeds=self.seeds,
        )  # fmt: skip
        if self.length < 2:
            raise ConfigError(f"length must be at least 2, got {self.length}")
        if not 0 <= self.jobs <= MAX_JOBS:
            raise ConfigError(f"jobs must be in 0..{MAX_JOBS} (0: one per CPU core), got {self.jobs}")
        if self.featured is not None and not self.featured.strip():
            raise ConfigError("featured: name a settings file (or 'featured' for the shipped one)")
        for name in ("muspy_samples", "audio_per_model", "midi_per_model"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")

    @property
    def n_samples(self) -> int:
        return self.samples if self.samples is not None else (QUICK_SAMPLES if self.quick else RUN_SAMPLES)

    @property
    def seed_list(self) -> list[int]:
        """The tuning seeds: ``seed .. seed + seeds - 1``."""
        return list(range(self.seed, self.seed + self.seeds))

    @property
    def n_jobs(self) -> int:
        """Worker processes: ``jobs``, or one per CPU core for 0."""
        from rltuner.evaluation.parallel import default_jobs

        return self.jobs if self.jobs > 0 else default_jobs()


def model_key(algorithm: str) -> str:
    """Model name used in tables and files (``rl-only`` -> ``rl_only``)."""
    return algorithm.replace("-", "_")


def versions() -> dict[str, str]:
    """Versions of Python, torch, numpy, muspy and rltuner, and the platform."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("rltuner", "torch", "numpy", "muspy", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able inputs (settings, file hashes, versions): what a stage's outputs depend on."""
    import hashlib

    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (a prior checkpoint: the stage inputs name it by content, not by path)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


class _Stages:
    """The record of finished stages (``stages.json``): name -> seconds it took and the fingerprint of its inputs.

    A stage is skipped only when it finished with the same inputs (settings, prior, data, code version); a
    stage whose inputs changed runs again, and so does every stage after it (they read its outputs).
    """

    def __init__(self, run_dir: Path, force: bool) -> None:
        self.path = run_dir / "stages.json"
        self.force = force
        self.done: dict[str, dict[str, Any]] = {}
        self.changed = False  # an earlier stage of this invocation ran: later ones must too
        if self.path.is_file() and not force:
            try:
                raw = json.loads(self.path.read_text())
                # older run folders recorded seconds only: their inputs are unknown, so they rerun
                self.done = {k: v if isinstance(v, dict) else {"seconds": float(v), "inputs": None}
                             for k, v in raw.items()}  # fmt: skip
            except (ValueError, AttributeError):
                log.warning("ignoring the unreadable %s: every stage runs again", self.path)

    @property
    def timings(self) -> dict[str, float]:
        return {k: float(v.get("seconds", 0.0)) for k, v in self.done.items()}

    def is_current(self, name: str, inputs: str) -> bool:
        record = self.done.get(name)
        return record is not None and record.get("inputs") == inputs and not self.changed

    def skipped(self, name: str, inputs: str) -> bool:
        """Whether ``name`` finished with these ``inputs``, so it need not run (said in the log)."""
        if not self.is_current(name, inputs):
            return False
        log.info("stage %s: done already with the same inputs (%.1f s), skipped", name,
                 self.done[name]["seconds"])  # fmt: skip
        return True

    def run(self, name: str, fn: Callable[[], None], inputs: str = "") -> bool:
        """Run ``fn`` unless ``name`` finished with these ``inputs``; returns whether it ran."""
        if self.skipped(name, inputs):
            return False
        if name in self.done and not self.changed:
            log.info("stage %s: its inputs changed since it ran: running it again", name)
        elif name in self.done:
            log.debug(
                "stage %s: runs again because an earlier stage of this run did (it reads its outputs)", name
            )
        else:
            log.debug(
                "stage %s: not done yet in %s%s", name, self.path.parent, " (--force)" if self.force else ""
            )
        log.info("stage %s ...", name)
        start = time.perf_counter()
        fn()
        self.record(name, time.perf_counter() - start, inputs)
        return True

    def record(self, name: str, seconds: float, inputs: str) -> None:
        """Record ``name`` as finished (``stages.json`` is rewritten at once)."""
        self.done[name] = {"seconds": round(seconds, 3), "inputs": inputs}
        self.changed = True
        write_json_atomic(self.path, self.done)

    def reorder(self, names: Sequence[str]) -> None:
        """Put the records of ``names`` first, in that order (stages that ran side by side finish in any
        order; the record keeps the order the sequential job writes)."""
        order = [n for n in names if n in self.done] + [n for n in self.done if n not in names]
        if order != list(self.done):
            self.done = {n: self.done[n] for n in order}
            write_json_atomic(self.path, self.done)


def _tune_config(cfg: PipelineConfig, algorithm: str, seed: int) -> Any:
    from rltuner.rl.config import preset

    overrides: dict[str, Any] = {
        "algorithm": algorithm,
        "seed": seed,
        "device": cfg.device,
        "threads": cfg.threads,
        "tensorboard": cfg.tensorboard,
        "progress": cfg.progress,
    }
    steps = cfg.steps if cfg.steps is not None else (QUICK_STEPS if cfg.quick else None)
    if steps is not None:
        overrides["total_steps"] = steps  # the preset scales its schedules to it (rl.config.scaled_to_budget)
    if cfg.quick:
        overrides["eval_episodes"] = 32
    return preset("fast", **overrides)


def _load_corpus(split: str = "train") -> list[npt.NDArray[np.int64]] | None:
    from rltuner.data.dataset import load_default_dataset

    try:
        dataset = load_default_dataset()
    except RLTunerError as exc:
        log.warning("copying not measured: the training corpus is unavailable (%s)", exc)
        return None
    melodies = dataset.train if split == "train" else dataset.valid
    return [np.asarray(m, dtype=np.int64) for m in melodies]


def corpus_excerpts(
    melodies: Sequence[npt.ArrayLike], n: int, length: int, seed: int
) -> npt.NDArray[np.int64]:
    """``n`` excerpts of ``length`` steps from different corpus melodies, each starting on a bar line.

    They let a listener hear the data the Note RNN learned from beside what the models compose.
    Returns (k, length) int64 with k <= n (fewer when the corpus has fewer melodies that long).
    """
    arrays = [np.asarray(m, dtype=np.int64) for m in melodies]
    long_enough = [m for m in arrays if len(m) >= length]
    if not long_enough or n < 1:
        return np.empty((0, length), dtype=np.int64)
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(long_enough), size=min(n, len(long_enough)), replace=False)
    out = []
    for i in picks:
        mel = long_enough[int(i)]
        starts = np.arange(0, len(mel) - length + 1, STEPS_PER_BAR)
        start = int(rng.choice(starts))
        out.append(mel[start : start + length])
    return np.stack(out)


def _save_samples(path: Path, samples: dict[str, Any], primers: dict[str, Any]) -> None:
    arrays = {f"samples_{k}": v for k, v in samples.items()}
    arrays.update({f"primers_{k}": v for k, v in primers.items()})
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]


def load_samples(path: Path) -> tuple[dict[str, npt.NDArray[np.int64]], dict[str, npt.NDArray[np.int64]]]:
    """Read ``samples.npz``: (model -> (n, T) melodies, model -> (n,) primers)."""
    with np.load(path) as data:
        samples = {k[len("samples_") :]: data[k] for k in data.files if k.startswith("samples_")}
        primers = {k[len("primers_") :]: data[k] for k in data.files if k.startswith("primers_")}
    return samples, primers


def run_pipeline(config: PipelineConfig, *, command: str | None = None) -> Path:
    """Tune, evaluate, draw and report in one run folder; returns the path of ``report.html``.

    Torch uses ``config.threads`` CPU threads throughout (restored on return).

    Args:
        config: the job's settings (validated here).
        command: the command line to record in the report (default: ``sys.argv``).

    Raises:
        ConfigError: bad settings. CheckpointError: no shipped Note RNN. RLTunerError: unwritable folder.
    """
    config.validate()
    with using_threads(config.threads):
        return _run_pipeline(config, command)


def _run_pipeline(config: PipelineConfig, command: str | None) -> Path:
    from rltuner.domains.music import music_domain
    from rltuner.evaluation import figures
    from rltuner.evaluation.evaluate import load_result, step_probabilities
    from rltuner.evaluation.report import ReportData, write_report
    from rltuner.evaluation.seeds import aggregate_seeds, mean_sd_rows, write_seed_summary
    from rltuner.loading import load_model
    from rltuner.models.checkpoint import default_prior_path, load_default_prior, load_prior

    config.validate()
    featured = None
    if config.featured is not None:  # read and checked before anything is written
        from rltuner.featured import read_featured

        featured = read_featured(config.featured)
    rules: list[Any] = []  # user rules take part in the reward: their source is an input of every stage
    if config.rules:
        from rltuner.rewards.user_rules import register_rule_specs

        rules = register_rule_specs(config.rules)
    # each tuning folder records them as `rltuner tune --rule` does (its reward.json)
    reward = {"rules": rules} if rules else None
    device = str(resolve_device(config.device))
    prior = load_default_prior(device) if config.prior is None else load_prior(config.prior, device)[0]
    prior.eval()
    run_dir = ensure_writable_dir(config.out)
    fig_dir = run_dir / "figures"
    stages = _Stages(run_dir, config.force)
    domain = music_domain(prior, length=config.length, device=device)
    layout = SeedLayout(run_dir, config.seed_list)
    layout.check_matches(stages.done)
    seeds = layout.seeds
    keys = {model_key(a): a for a in config.algorithms}
    make_config: dict[str, Callable[[int], Any]] = {k: functools.partial(_tune_config, config, a)
                                                    for k, a in keys.items()}  # fmt: skip
    domains: dict[str, Any] = dict.fromkeys(keys, domain)
    if featured is not None:  # one more model: its own settings and rule weights (rltuner.featured)
        keys[FEATURED_NAME] = featured.algorithm
        make_config[FEATURED_NAME] = functools.partial(_featured_config, config, featured)
        domains[FEATURED_NAME] = music_domain(prior, length=config.length, reward_config=featured.reward,
                                              device=device)  # fmt: skip

    prior_id = file_digest(config.prior) if config.prior else "shipped:" + file_digest(default_prior_path())
    code = versions()["rltuner"]

    def evaluation_inputs(s: int, tune_inputs: dict[str, str]) -> str:
        if not layout.multi:  # as before --seeds existed, so that old run folders still skip
            return fingerprint(_inputs_config(config), prior_id, code, tune_inputs)
        shared = {k: v for k, v in _inputs_config(config).items() if k not in ("seed", "seeds")}
        return fingerprint(shared, s, prior_id, code, tune_inputs)

    def tune_fingerprint(key: str, c: Any) -> str:
        if key == FEATURED_NAME and featured is not None:  # its reward differs from the paper's: an input
            return fingerprint(
                _result_settings(c), prior_id, code, *rules, {"reward": to_dict(featured.reward)}
            )
        return fingerprint(_result_settings(c), prior_id, code, *rules)

    # 1-2. per seed: tuning (each run depends on its settings, the prior and the code; a changed run starts
    # afresh), then the evaluation of every model of that seed (the Note RNN included, sampled with that seed)
    jobs = config.n_jobs
    if jobs > 1:
        from rltuner.evaluation.parallel import MusicSetup

        setup = MusicSetup(config.prior, config.length, device, config.rules,
                           {FEATURED_NAME: featured.reward} if featured is not None else {})  # fmt: skip
        tune_cfgs_by_seed, later = run_seed_stages_parallel(
            stages, layout, make_config, tune_fingerprint, evaluation_inputs, config, setup, jobs, reward
        )
    else:
        tune_cfgs_by_seed, later = run_seed_stages(
            stages,
            layout,
            make_config,
            tune_fingerprint,
            evaluation_inputs,
            lambda dirs, s, out_dir: _bind_evaluate(config, dirs, prior, s, out_dir, device),
            domains.__getitem__,
            config.force,
            reward=reward,
        )
    # media and figures show the first seed's models and samples: they rerun only when those changed
    tune_dirs = layout.tune_dirs(keys, seeds[0])
    samples, primers = load_samples(layout.eval_dir(seeds[0]) / "samples.npz")
    outcomes: dict[str, Any] = {}  # each tuning run's summary.json (final task reward beside the prior's)
    for s in seeds:
        outcomes.update(
            {k + layout.suffix(s): v for k, v in tuning_outcomes(layout.tune_dirs(keys, s)).items()}
        )

    # 3. media: MIDI, WAV, piano rolls of the melodies as heard (primer first)
    def media() -> None:
        from rltuner.data.audio import render_wav_batch
        from rltuner.data.midi_io import write_midi_batch

        heard = {key: with_primers(primers[key], mel) for key, mel in samples.items()}
        for key, mel in heard.items():
            if config.midi_per_model:
                write_midi_batch(mel[: config.midi_per_model], run_dir / "midi" / key, prefix=key)
            if config.audio_per_model:
                render_wav_batch(mel[: config.audio_per_model], run_dir / "audio" / key, prefix=key)
        figures.piano_rolls(heard, fig_dir)
        # a few real melodies of the training data, for listening beside the models
        corpus = _load_corpus(split="valid") if config.copying else None
        if corpus:
            excerpts = corpus_excerpts(corpus, max(config.audio_per_model, 4), config.length, config.seed)
            if len(excerpts):
                write_midi_batch(excerpts, run_dir / "midi" / "corpus", prefix="corpus")
                render_wav_batch(
                    excerpts[: config.audio_per_model], run_dir / "audio" / "corpus", prefix="corpus"
                )
                figures.piano_rolls({"corpus": excerpts}, fig_dir)

    stages.run("media", media, later)

    # 4. figures
    def draw() -> None:
        figures.figure2(tune_dirs, fig_dir / "figure2.png")
        melody, primer = samples["note_rnn"][0], int(primers["note_rnn"][0])
        models = {"note_rnn": prior}
        models.update({k: load_model(f / "model.safetensors", device) for k, f in tune_dirs.items()})
        probs = {k: step_probabilities(m, melody, primer, device) for k, m in models.items()}
        figures.figure4(probs, melody, fig_dir / "figure4.png", primer=primer)
        figures.interval_histograms(
            {key: with_primers(primers[key], mel) for key, mel in samples.items()}, fig_dir / "intervals.png"
        )

    stages.run("figures", draw, later)

    # 5. summary over seeds and report (always rebuilt: cheap, and they show this invocation's timings too)
    results = [load_result(layout.eval_dir(s) / "evaluation.json") for s in seeds]
    cmd = command if command is not None else " ".join(["rltuner", *sys.argv[1:]])
    machine = evaluated_on(layout.eval_dir(seeds[0]))
    settings = {
        "pipeline": _jsonable_config(config),
        "tuning": layout.tuning_settings(tune_cfgs_by_seed),
        "evaluation": results[0].settings,
    }
    if featured is not None:
        settings["featured"] = featured.to_dict()
    info: dict[str, Any] = {
        "command": cmd,
        "finished": dt.datetime.now().isoformat(timespec="seconds"),
        "seeds": seeds,
        "machine": machine,
        "settings": settings,
        "versions": versions(),
        "timings_s": stages.timings,
        "tuning": outcomes,
    }
    write_json_atomic(run_dir / "run.json", info)
    summary = aggregate_seeds([{k: m.flat() for k, m in r.models.items()} for r in results])
    header, rows = list(results[0].header()), mean_sd_rows(results)
    if layout.multi:
        header[0] = f"metric (mean ± sd over seeds {', '.join(map(str, seeds))})"
    differences = write_seed_summary(run_dir, summary, seeds, header, rows, command=cmd, machine=machine,
                                     evaluation=results[0].settings)  # fmt: skip
    first = results[0]
    n_table1 = len(next(iter(first.models.values())).table1) if first.models else 0
    media_keys = [*samples, *(["corpus"] if (run_dir / "midi" / "corpus").is_dir() else [])]
    data = ReportData(
        title=f"rltuner run: {run_dir.name}",
        summary=_summary(config, first.settings, differences, featured)
        + worse_than_prior_note(outcomes, "the Note RNN", "r_MT"),
        featured=featured.describe(_featured_config(config, featured, seeds[0]))
        if featured is not None
        else [],
        table_header=header,
        table_rows=rows,
        metric_rows_from=n_table1,
        goal_rows=_goal_rows(summary, layout.multi),
        figure2=fig_dir / "figure2.png",
        figure4=fig_dir / "figure4.png",
        intervals=fig_dir / "intervals.png",
        pianorolls={
            k: fig_dir / f"pianoroll_{k}.png"
            for k in media_keys
            if (fig_dir / f"pianoroll_{k}.png").is_file()
        },
        audio={k: sorted((run_dir / "audio" / k).glob("*.wav")) for k in media_keys},
        midi={k: sorted((run_dir / "midi" / k).glob("*.mid")) for k in media_keys},
        command=cmd,
        config=settings,
        versions={**versions(), "machine": machine_description(machine)},
        timings=stages.timings,
        labels={k: figures.model_label(k) for k in media_keys},
    )
    report = write_report(run_dir / "report.html", data)
    return report


def _bind_evaluate(
    config: PipelineConfig, tune_dirs: dict[str, Path], prior: Any, seed: int, out_dir: Path, device: str
) -> Callable[[], None]:
    def evaluate() -> None:
        from rltuner.evaluation.evaluate import evaluate_models
        from rltuner.loading import load_model

        models = {key: load_model(folder / "model.safetensors", device) for key, folder in tune_dirs.items()}
        corpus = _load_corpus() if config.copying else None
        result = evaluate_models(
            models,
            n=config.n_samples,
            length=config.length,
            seed=seed,
            corpus=corpus,
            prior=prior,
            muspy_samples=config.muspy_samples,
            device=device,
            show_progress=config.progress,
            workers=batch_workers(config.threads),
        )
        write_evaluation(result, out_dir)

    return evaluate


def write_evaluation(result: Any, out_dir: Path) -> None:
    """A seed's evaluation files: samples.npz, evaluation.{json,csv,txt}, machine.json; the table on stderr."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _save_samples(out_dir / "samples.npz", result.samples, result.primers)
    result.write(out_dir)
    write_json_atomic(out_dir / MACHINE_FILE, machine_info())  # the machine that made it
    print(result.format_table(), file=sys.stderr)


@dataclass(frozen=True)
class SeedLayout:
    """Where each tuning seed's runs and evaluation live in a run folder.

    One seed: the layout of before ``--seeds`` (``tune/<alg>/``, the evaluation in the run folder, stages
    ``tune/<alg>`` and ``evaluate``), so old run folders still skip. Several: ``tune/<alg>/seed-<s>/`` and
    ``seed-<s>/`` (stages ``tune/<alg>/seed-<s>``, ``evaluate/seed-<s>``).
    """

    run_dir: Path
    seeds: list[int]

    @property
    def multi(self) -> bool:
        return len(self.seeds) > 1

    def suffix(self, seed: int) -> str:
        """What seed ``seed`` adds to a stage name and a tuning folder (nothing with one seed)."""
        return f"/seed-{seed}" if self.multi else ""

    def eval_dir(self, seed: int) -> Path:
        return self.run_dir / f"seed-{seed}" if self.multi else self.run_dir

    def tune_dirs(self, keys: Iterable[str], seed: int) -> dict[str, Path]:
        return {k: self.run_dir / "tune" / (k + self.suffix(seed)) for k in keys}

    def check_matches(self, done: dict[str, Any]) -> None:
        """Refuse a run folder that holds the other layout (one seed against several): mixing them would
        leave one layout's results stale beside the other's.

        Raises:
            ConfigError: the folder's finished stages are of the other layout.
        """
        several = any(name.startswith("evaluate/seed-") for name in done)
        one = "evaluate" in done
        if (self.multi and one) or (not self.multi and several):
            held = "several tuning seeds" if several else "one tuning seed"
            raise ConfigError(
                f"{self.run_dir} holds a run with {held}: give another --out for this one "
                f"(--seeds {len(self.seeds)}), or --force to start the folder afresh"
            )

    def tuning_settings(self, configs: dict[int, dict[str, Any]]) -> dict[str, Any]:
        """``run.json``'s tuning settings: ``<alg>`` (one seed) or ``<alg>/seed-<s>`` -> the run's config."""
        return {k + self.suffix(s): to_dict(c) for s, cfgs in configs.items() for k, c in cfgs.items()}


def _seed_runs(
    layout: SeedLayout,
    make_config: dict[str, Callable[[int], Any]],
    tune_fingerprint: Callable[[str, Any], str],
    seed: int,
) -> tuple[str, dict[str, Path], dict[str, Any], dict[str, str]]:
    """One seed's tuning runs: its stage-name suffix, and model key -> folder, config and fingerprint."""
    configs = {k: make(seed) for k, make in make_config.items()}
    inputs = {k: tune_fingerprint(k, c) for k, c in configs.items()}
    return layout.suffix(seed), layout.tune_dirs(make_config, seed), configs, inputs


def run_seed_stages(
    stages: _Stages,
    layout: SeedLayout,
    make_config: dict[str, Callable[[int], Any]],
    tune_fingerprint: Callable[[str, Any], str],
    evaluation_inputs: Callable[[int, dict[str, str]], str],
    make_evaluate: Callable[[dict[str, Path], int, Path], Callable[[], None]],
    domain_of: Callable[[str], Any],
    force: bool,
    reward: Mapping[str, Any] | None = None,
) -> tuple[dict[int, dict[str, Any]], str]:
    """Per seed, the ``tune/<key>`` stages, then that seed's ``evaluate`` stage (both main jobs share this).

    Args:
        make_config: model key -> (seed -> its tuning config).
        tune_fingerprint: (model key, its tuning config) -> the fingerprint of everything its run depends on.
        evaluation_inputs: (seed, key -> tuning fingerprint) -> the fingerprint of that seed's evaluation.
        make_evaluate: (key -> tuning folder, seed, evaluation folder) -> the evaluation stage.
        domain_of: model key -> the domain it is tuned in (its reward).
        reward: the record of the reward terms added to every run's (user rules), written in each tuning
            folder as ``reward.json`` (:data:`rltuner.rl.tuner.REWARD_FILE`); None: no record.

    Returns:
        seed -> key -> tuning config, and the first seed's evaluation fingerprint (what the later stages, which
        show the first seed's models, depend on). ``stages.changed`` is left saying whether the first seed's
        stages ran, so that the later ones rerun exactly when those did.
    """
    configs: dict[int, dict[str, Any]] = {}
    first_inputs, first_ran = "", False
    for s in layout.seeds:
        suffix, dirs, configs[s], inputs = _seed_runs(layout, make_config, tune_fingerprint, s)
        run_tune_stages(stages, {k + suffix: d for k, d in dirs.items()},
                        {k + suffix: c for k, c in configs[s].items()},
                        {k + suffix: i for k, i in inputs.items()},
                        {k + suffix: domain_of(k) for k in dirs}, force, reward)  # fmt: skip
        evaluated = evaluation_inputs(s, inputs)
        stages.run("evaluate" + suffix, make_evaluate(dirs, s, layout.eval_dir(s)), evaluated)
        if s == layout.seeds[0]:
            first_inputs, first_ran = evaluated, stages.changed
    stages.changed = first_ran
    return configs, first_inputs


def run_tune_stages(
    stages: _Stages,
    tune_dirs: dict[str, Path],
    tune_cfgs: dict[str, Any],
    tune_inputs: dict[str, str],
    domains: dict[str, Any],
    force: bool,
    reward: Mapping[str, Any] | None = None,
) -> None:
    """The ``tune/<key>`` stages: each runs unless it finished with the same inputs; a run whose inputs changed
    starts afresh (its old folder is removed), an interrupted one resumes. Later stages run when any did.
    ``domains``: key -> the domain the run tunes in; ``reward``: see :func:`run_seed_stages`."""
    ran = []
    for key, folder in tune_dirs.items():
        name = f"tune/{key}"
        fresh = _starts_afresh(stages, name, tune_inputs[key], force)
        stages.changed = False  # tuning runs are independent of each other
        ran.append(
            stages.run(
                name,
                _bind_tune(tune_cfgs[key], domains[key], folder, fresh, tune_inputs[key], reward),
                tune_inputs[key],
            )
        )
    stages.changed = any(ran)


def _starts_afresh(stages: _Stages, name: str, inputs: str, force: bool) -> bool:
    """Whether a tuning stage that runs starts afresh: forced, or its inputs changed (else it may resume)."""
    return force or (name in stages.done and not stages.is_current(name, inputs))


def run_seed_stages_parallel(
    stages: _Stages,
    layout: SeedLayout,
    make_config: dict[str, Callable[[int], Any]],
    tune_fingerprint: Callable[[str, Any], str],
    evaluation_inputs: Callable[[int, dict[str, str]], str],
    config: PipelineConfig,
    setup: Any,
    jobs: int,
    reward: Mapping[str, Any] | None = None,
) -> tuple[dict[int, dict[str, Any]], str]:
    """:func:`run_seed_stages` of the music job with the tuning runs and model evaluations in ``jobs`` worker
    processes (:mod:`rltuner.evaluation.parallel`): the same stages, inputs, seeds and results.

    A stage runs exactly when the sequential job would run it: a tuning run unless it finished with the same
    inputs, a seed's evaluation when its inputs changed or one of its tuning runs runs.
    """
    from rltuner.evaluation.parallel import EvalTask, SeedPlan, TuneTask, quiet_config, run_plans

    configs: dict[int, dict[str, Any]] = {}
    plans: list[SeedPlan] = []
    tune_inputs: dict[str, str] = {}
    order: list[str] = []
    first_inputs = ""
    stages.changed = False
    for s in layout.seeds:
        suffix, dirs, configs[s], inputs = _seed_runs(layout, make_config, tune_fingerprint, s)
        tasks = []
        for k, c in configs[s].items():
            name = f"tune/{k}{suffix}"
            tune_inputs[name] = inputs[k]
            order.append(name)
            if stages.skipped(name, inputs[k]):
                continue
            fresh = _starts_afresh(stages, name, inputs[k], config.force)
            tasks.append(TuneTask(name, k, quiet_config(c), dirs[k], fresh, inputs[k], reward))
        eval_name, evaluated = "evaluate" + suffix, evaluation_inputs(s, inputs)
        order.append(eval_name)
        if s == layout.seeds[0]:
            first_inputs = evaluated
        parts: list[EvalTask] = []
        if tasks or not stages.skipped(eval_name, evaluated):
            checkpoints = {k: d / "model.safetensors" for k, d in dirs.items()}
            parts = [EvalTask(s, m, checkpoints, config.n_samples, config.muspy_samples, config.copying)
                     for m in ["note_rnn", *dirs]]  # fmt: skip
        if tasks or parts:
            plans.append(SeedPlan(s, tasks, parts, eval_name, evaluated, layout.eval_dir(s)))
    ran: set[int] = set()
    if plans:
        try:
            ran = run_plans(plans, setup, min(jobs, sum(len(p.tune) + len(p.evaluate) for p in plans)),
                            config.threads, stages.record, tune_inputs, write_evaluation)  # fmt: skip
        finally:
            stages.reorder(order)
    stages.changed = layout.seeds[0] in ran
    return configs, first_inputs


MACHINE_FILE = "machine.json"
"""Beside each evaluation: the machine (CPU, threads, load) it ran on."""


def evaluated_on(eval_dir: Path) -> dict[str, Any]:
    """The machine an evaluation folder's results were made on (recorded when it ran); the current one for a
    folder made before that was recorded."""
    try:
        recorded = json.loads((eval_dir / MACHINE_FILE).read_text())
        if isinstance(recorded, dict):
            return recorded
    except (OSError, ValueError):
        pass
    return machine_info()


def _goal_rows(summary: dict[str, dict[str, Any]], multi: bool) -> list[tuple[str, list[str]]]:
    """Issue #13's goal rows of each model, on its mean over seeds (said in each label when there are several)."""
    from rltuner.evaluation.goals import goal_rows

    rows = goal_rows({model: {k: s.mean for k, s in stats.items()} for model, stats in summary.items()})
    return [(f"{label} (mean over seeds)", cells) for label, cells in rows] if multi else rows


def tuning_outcomes(tune_dirs: dict[str, Path]) -> dict[str, Any]:
    """Model -> its tuning run's ``summary.json`` (final evaluation, the prior's, ``worse_than_prior``).

    Runs without one (made before it existed) are left out.
    """
    from rltuner.rl.tuner import SUMMARY_FILE

    out: dict[str, Any] = {}
    for key, folder in tune_dirs.items():
        try:
            out[key] = json.loads((folder / SUMMARY_FILE).read_text())
        except (OSError, ValueError):
            continue
    return out


def worse_than_prior_note(outcomes: dict[str, Any], prior_name: str, reward_name: str) -> str:
    """A sentence for the report naming the tuned models whose final policy was worse than the prior on the task
    reward (at their last training evaluation), or ``""`` when none was."""
    worse = [
        f"{key} ({o['final']['mean_task_reward']:.3f} against {o['prior']['mean_task_reward']:.3f})"
        for key, o in outcomes.items()
        if o.get("worse_than_prior")
    ]
    if not worse:
        return ""
    return (
        f" Warning: at the end of tuning, {', '.join(worse)} had a lower mean {reward_name} per step than "
        f"{prior_name} on the same primers: the run was probably too short for its schedule, or a setting harmful."
    )


def validate_run_settings(
    out: str,
    algorithms: Sequence[str],
    known: Sequence[str],
    sizes: dict[str, int | None],
    device: str,
    *,
    threads: int,
    seed: int,
    seeds: int,
) -> None:
    """The checks every main job shares: a run folder, known algorithms named once, positive sizes, a device,
    a thread count, and tuning seeds ``seed .. seed + seeds - 1`` in range."""
    if not out:
        raise ConfigError("out: a run folder is needed")
    if not algorithms:
        raise ConfigError("algorithms: name at least one of " + ", ".join(known))
    for a in algorithms:
        if a not in known:
            raise ConfigError(f"algorithms: unknown algorithm {a!r}; choose from {', '.join(known)}")
    if len(set(algorithms)) != len(algorithms):
        raise ConfigError("algorithms: an algorithm is named twice")
    for name, value in sizes.items():
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if device not in DEVICE_CHOICES:
        raise ConfigError(f"device must be cpu, cuda or auto, not {device!r}")
    check_threads(threads)
    if seeds < 1:
        raise ConfigError(f"seeds must be at least 1, got {seeds}")
    check_seed(seed + seeds - 1, "the last seed (seed + seeds - 1)")


def _bind_tune(
    tune_config: Any, domain: Any, folder: Path, force: bool, inputs: str, reward: Mapping[str, Any] | None
) -> Callable[[], None]:
    def stage() -> None:
        _tune(tune_config, domain, folder, force, inputs, reward)

    return stage


TUNE_INPUTS_FILE = "stage-inputs.txt"
"""In a tuning stage's folder: the fingerprint of the inputs it was started with (an interrupted run resumes only
with the same inputs)."""


def _tune(
    tune_config: Any,
    domain: Any,
    folder: Path,
    force: bool,
    inputs: str | None = None,
    reward: Mapping[str, Any] | None = None,
) -> None:
    """One tuning run; an earlier interrupted run in ``folder`` is resumed (or discarded with ``force``).

    ``inputs``: the stage's fingerprint. An interrupted run started with other inputs (another seed, budget,
    featured file, code version, or a folder from before this was recorded) is discarded, not resumed: resuming
    it would go on from the other run's state under this run's settings. ``reward``: the record of the reward
    terms added to the task's, written as the folder's ``reward.json`` before tuning (as ``rltuner tune`` does).
    """
    import shutil

    from rltuner.fileio import write_text_atomic
    from rltuner.rl.tuner import RESUME_FILE, REWARD_FILE, tune

    marker = folder / TUNE_INPUTS_FILE
    if not force and inputs is not None and (folder / RESUME_FILE).is_file():
        started = marker.read_text() if marker.is_file() else None
        if started != inputs:
            log.warning("discarding the interrupted tuning run in %s: it was started with other inputs "
                        "(settings, seed, budget, reward or code version); this one starts afresh", folder)  # fmt: skip
            force = True
    if force and folder.exists():
        shutil.rmtree(folder)
    resume = (folder / RESUME_FILE).is_file()
    if resume:
        log.info("resuming the interrupted tuning run in %s", folder)
    if inputs is not None:
        ensure_writable_dir(folder)
        write_text_atomic(marker, inputs)
    if reward:
        write_json_atomic(ensure_writable_dir(folder) / REWARD_FILE, dict(reward))
    result = tune(tune_config, domain, out_dir=folder, resume=resume)
    if result.interrupted:
        # the tuner saved what it did; stop here so the stage is not recorded as finished
        raise KeyboardInterrupt


def _inputs_config(config: PipelineConfig) -> dict[str, Any]:
    """The settings that change a run's results (not where it is written, whether it was forced, or threads)."""
    data = _jsonable_config(config)
    # the featured model's file: its settings are inputs of its tuning stage (the file's name is not)
    shown_only = ("out", "force", "tensorboard", "progress", "featured")
    for key in (*shown_only, *(f.name for f in dataclasses.fields(config) if not f.metadata["result"])):
        data.pop(key, None)
    if not data.get("rules"):
        data.pop("rules", None)  # so the runs made before --rule existed keep their fingerprints
    if config.seeds == 1:
        data.pop("seeds")  # run folders made before --seeds existed keep their fingerprints
    return data


def _result_settings(tune_config: Any) -> dict[str, Any]:
    """A tuning config with the settings that only change what is shown or logged, not the model, at fixed
    values (those that runs made before --tensorboard/--quiet had, so their fingerprints still match)."""
    data = {**result_inputs(tune_config), "tensorboard": False, "progress": True}
    if not data.get("reward_primer"):
        data.pop("reward_primer", None)  # runs made before reward_primer existed keep their fingerprints
    return data


def _jsonable_config(config: PipelineConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data["algorithms"] = list(config.algorithms)
    return data


def _featured_config(config: PipelineConfig, featured: Any, seed: int) -> Any:
    """The featured model's tuning config for one seed: its file's settings, the run's budget (the file's own
    unless --steps or --quick set one; schedules scale with it) and the run's seed, device and display."""
    steps = config.steps if config.steps is not None else (QUICK_STEPS if config.quick else None)
    overrides: dict[str, Any] = {"seed": seed, "device": config.device, "threads": config.threads,
                                 "tensorboard": config.tensorboard, "progress": config.progress}  # fmt: skip
    if config.quick:
        overrides["eval_episodes"] = 32
    return featured.tune_config(steps, **overrides)


def _summary(
    config: PipelineConfig, settings: dict[str, Any], differences: Sequence[str] = (), featured: Any = None
) -> str:
    algos = f"{', '.join(config.algorithms)} (fast preset{', quick smoke version' if config.quick else ''})"
    if featured is not None:
        algos += (
            f", and the featured model ('featured': {featured.algorithm} with the settings and rule weights of "
            f"{featured.source}, listed under 'Featured model')"
        )
    seeds = config.seed_list
    if len(seeds) > 1:
        spread = (
            f" Each algorithm was tuned with {len(seeds)} seeds ({', '.join(map(str, seeds))}) and every model "
            "evaluated once per seed: each cell is the mean ± sd over seeds (summary.json has the 95% intervals). "
            "Media and figures show the first seed's models. "
            + (
                "Differences the seeds support (95% intervals apart): " + "; ".join(differences) + "."
                if differences
                else "No difference between models has non-overlapping 95% intervals."
            )
        )
    else:
        spread = " One tuning seed: the numbers carry no spread (rltuner run --seeds 3 gives mean ± sd)."
    return (
        f"The shipped Note RNN was tuned with {algos}, then every model, the Note RNN included, sampled {settings.get('n')} melodies of "
        f"{settings.get('length')} steps from its stochastic policy (temperature 1), each after one random "
        "priming note that is played as its first note (the audio, MIDI and Table 1 count it). "
        "Table 1 compares them with the paper's numbers (shaded columns; the paper's Note RNN was trained on "
        "other data, so they are a reference, not a target). log p(a|s) is under the Note RNN; higher means "
        "closer to the data. r_MT is the music-theory reward per step; KL measures how far each policy moved "
        "from the Note RNN. The goals table says which rows of issue #13's goals each model meets." + spread
    )
