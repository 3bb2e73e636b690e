"""Maximum-likelihood pretraining of a prior (the paper's Note RNN recipe as defaults).

Recipe (Jaques et al. 2017, section 5): next-step cross-entropy, Adam, batch 128, gradient L2 norm clipped to
5, an L2 weight penalty of 2.5e-5, and the losses of the first 8 steps of each sequence not used.

Batches are random fixed-length windows of the training melodies. A melody is picked with probability
proportional to its number of predictions (so every step of the corpus is equally likely to be trained on),
then a window of ``window + 1`` tokens at a uniformly random offset: the first ``window`` are the input, the
last ``window`` the targets. Melodies shorter than a window are padded and the padding is masked out of the
loss; melodies with no more than ``skip_first`` predictions are skipped (they would contribute no loss).

Validation scores every validation melody whole (from the initial state), skipping the first ``skip_first``
predictions of each, and reports accuracy and log-perplexity (mean NLL per step, nats), next to trivial
baselines fitted on the training split: always HOLD, the unigram class distribution, and a bigram.

A run folder holds the best checkpoint (``--out``), ``last.safetensors``, ``resume.pt`` (model, optimizer,
step and RNG states; loaded with ``torch.load(weights_only=True)``), ``metrics.json`` and TensorBoard logs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from rltuner.config import check_types, field, to_dict
from rltuner.devices import DEVICE_CHOICES, resolve_device
from rltuner.encoding import NO_EVENT, NUM_CLASSES
from rltuner.errors import CheckpointError, ConfigError, DatasetError, TrainingDivergedError
from rltuner.fileio import ensure_writable_dir, write_json_atomic
from rltuner.interrupts import deferred_sigint
from rltuner.models.checkpoint import load_training_state, read_checkpoint, save_prior, save_training_state
from rltuner.models.prior import ModelConfig, Prior, build_prior
from rltuner.threads import DEFAULT_THREADS, check_threads, set_threads

log = logging.getLogger(__name__)
Device = Literal["cpu", "cuda", "auto"]


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of ``rltuner pretrain``; the defaults are the paper's recipe."""

    model: ModelConfig = field(ModelConfig(), "Architecture of the prior (default: the paper's Note RNN).")  # noqa: RUF009
    steps: int = field(12000, "Optimizer steps (one batch each).")
    batch_size: int = field(128, "Windows per batch (the paper: 128).")
    window: int = field(128, "Predictions per training window (random fixed-length slices of melodies).")
    lr: float = field(3e-3, "Adam learning rate (3e-3 reaches a given loss in half the steps of 1e-3).")
    grad_clip: float = field(5.0, "Clip the gradient's global L2 norm to this (the paper: 5; 0 = off).")
    l2: float = field(2.5e-5, "L2 penalty on the weight matrices added to the loss (the paper: 2.5e-5).")
    skip_first: int = field(8, "Losses of the first N steps of each window/melody are not used (paper: 8).")
    eval_every: int = field(250, "Validate (and keep the best checkpoint) every N steps.")
    patience: int = field(8, "Stop after this many validations without improvement (0 = never stop early).")
    seed: int = field(0, "Random seed: same seed, same data, same device -> bit-identical run on the CPU.")
    device: Device = field("cpu", "Where to train: cpu, cuda, or auto (cuda when available).")  # noqa: RUF009
    threads: int = field(
        DEFAULT_THREADS,
        "CPU threads for torch (0 = torch's default; 1 is fastest on a busy machine); not part of the result",
        result=False,
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` on nonsense values."""
        check_types(self)
        from rltuner.limits import check_pretrain_config

        self.model.validate()
        for name in ("steps", "batch_size", "window", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        check_threads(self.threads)
        for name in ("grad_clip", "l2", "skip_first", "patience"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be positive, got {self.lr}")
        if self.skip_first >= self.window:
            raise ConfigError(f"skip_first ({self.skip_first}) must be smaller than window ({self.window})")
        if self.device not in DEVICE_CHOICES:
            raise ConfigError(f"device must be cpu, cuda or auto, not {self.device!r}")
        check_pretrain_config(self)  # seed range, finite numbers, memory per step


@dataclass(frozen=True)
class Metrics:
    """Next-step prediction quality on a set of melodies (first ``skip_first`` steps of each excluded)."""

    nll: float  # mean negative log-likelihood per prediction, nats ("log-perplexity")
    accuracy: float  # fraction of predictions whose argmax is the true next class
    count: int  # number of predictions scored

    def as_dict(self) -> dict[str, float]:
        return {"nll": self.nll, "accuracy": self.accuracy, "count": self.count}


@dataclass(frozen=True)
class PretrainResult:
    """What :func:`pretrain` returns."""

    best_path: Path
    run_dir: Path
    best_step: int
    steps_done: int
    best: Metrics
    baselines: dict[str, Metrics]
    seconds: float
    interrupted: bool


class WindowSampler:
    """Random fixed-length windows of a ragged melody collection, as padded batches.

    Args:
        melodies: int64 arrays of classes.
        window: predictions per window (each window holds ``window + 1`` tokens).
        min_predictions: melodies with fewer predictions (length - 1) are skipped.
        rng: the numpy generator (its state is part of the resume state).
    """

    def __init__(
        self, melodies: Sequence[np.ndarray], window: int, min_predictions: int, rng: np.random.Generator
    ) -> None:
        kept = [np.asarray(m, dtype=np.int64) for m in melodies if len(m) - 1 > min_predictions]
        if not kept:
            raise DatasetError(
                f"no training melody is long enough: each needs more than {min_predictions} predictions"
            )
        self.window = window
        self.flat = np.concatenate(kept)
        lengths = np.array([len(m) for m in kept], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        self.lengths = lengths
        preds = np.minimum(lengths - 1, window)  # predictions a window of this melody can hold
        self.weights = (lengths - 1) / (lengths - 1).sum()
        self.preds = preds
        self.rng = rng

    def batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(inputs (B, W), targets (B, W), mask (B, W) bool); padding positions are masked out."""
        idx = self.rng.choice(len(self.lengths), size=batch_size, p=self.weights)
        span = self.lengths[idx] - 1 - self.preds[idx]  # how far a window can slide
        offset = (self.rng.random(batch_size) * (span + 1)).astype(np.int64)
        pos = np.arange(self.window + 1)
        mask_tok = pos[None, :] <= self.preds[idx, None]  # (B, W + 1): tokens inside the melody
        gather = self.starts[idx, None] + offset[:, None] + np.where(mask_tok, pos[None, :], 0)
        tokens = np.where(mask_tok, self.flat[gather], NO_EVENT)
        return tokens[:, :-1], tokens[:, 1:], mask_tok[:, 1:]


def l2_penalty(model: torch.nn.Module) -> torch.Tensor:
    """Sum of squares of the weight matrices (biases and norms excluded), as TensorFlow's l2 regulariser."""
    terms = [p.pow(2).sum() for n, p in model.named_parameters() if p.dim() >= 2 and "norm" not in n]
    return torch.stack(terms).sum() if terms else torch.zeros(())


def masked_nll(
    logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """logits (B, T, V), targets (B, T), mask (B, T) -> (mean NLL, sum NLL, number correct) over the mask."""
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)
    m = mask.to(nll.dtype)
    total = (nll * m).sum()
    correct = ((logits.argmax(-1) == targets) & mask).sum()
    return total / m.sum().clamp_min(1.0), total, correct


@torch.no_grad()
def evaluate(
    model: Prior, melodies: Sequence[np.ndarray], skip_first: int = 8, batch_size: int = 256
) -> Metrics:
    """Accuracy and mean NLL (nats) of next-step prediction over whole melodies.

    Each melody is scored from the model's initial state; the first ``skip_first`` predictions of each are
    not counted (as in training).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(melodies)), key=lambda i: len(melodies[i]))
    total, correct, count = 0.0, 0, 0
    for lo in range(0, len(order), batch_size):
        chunk = [np.asarray(melodies[i], dtype=np.int64) for i in order[lo : lo + batch_size]]
        chunk = [c for c in chunk if len(c) >= 2]
        if not chunk:
            continue
        width = max(len(c) for c in chunk)
        tokens = np.full((len(chunk), width), NO_EVENT, dtype=np.int64)
        mask = np.zeros((len(chunk), width - 1), dtype=bool)
        for r, c in enumerate(chunk):
            tokens[r, : len(c)] = c
            mask[r, skip_first : len(c) - 1] = True
        x = torch.from_numpy(tokens).to(device)
        logits, _ = model(x[:, :-1])
        _, s, k = masked_nll(logits, x[:, 1:], torch.from_numpy(mask).to(device))
        total += float(s)
        correct += int(k)
        count += int(mask.sum())
    model.train(was_training)
    if count == 0:
        return Metrics(nll=float("nan"), accuracy=float("nan"), count=0)
    return Metrics(nll=total / count, accuracy=correct / count, count=count)


def baseline_metrics(
    train: Sequence[np.ndarray],
    valid: Sequence[np.ndarray],
    skip_first: int = 8,
    vocab_size: int = NUM_CLASSES,
) -> dict[str, Metrics]:
    """Trivial baselines fitted on ``train``, scored on ``valid`` exactly like :func:`evaluate`.

    * ``hold``: always predicts HOLD; its distribution puts the training frequency of HOLD on HOLD and
      spreads the rest evenly (the most uncertain distribution whose guess is always HOLD).
    * ``unigram``: the training class frequencies (add-one smoothed), ignoring context.
    * ``bigram``: the class frequencies given the previous class (add-one smoothed).
    """
    counts = np.ones((vocab_size, vocab_size))
    for m in train:
        m = np.asarray(m, dtype=np.int64)
        np.add.at(counts, (m[:-1], m[1:]), 1.0)
    unigram = counts.sum(0) / counts.sum()
    bigram = counts / counts.sum(1, keepdims=True)
    p_hold = unigram[NO_EVENT]
    hold = np.full(vocab_size, (1.0 - p_hold) / (vocab_size - 1))
    hold[NO_EVENT] = p_hold
    prev_list, nxt_list = [], []
    for m in valid:
        m = np.asarray(m, dtype=np.int64)
        if len(m) - 1 > skip_first:
            prev_list.append(m[skip_first:-1])
            nxt_list.append(m[skip_first + 1 :])
    if not prev_list:
        nan = Metrics(float("nan"), float("nan"), 0)
        return {"hold": nan, "unigram": nan, "bigram": nan}
    prev, nxt = np.concatenate(prev_list), np.concatenate(nxt_list)

    def score(probs: np.ndarray) -> Metrics:  # probs: (N, V), one row per prediction
        nll = -np.log(probs[np.arange(len(nxt)), nxt]).mean()
        acc = (probs.argmax(1) == nxt).mean()
        return Metrics(nll=float(nll), accuracy=float(acc), count=len(nxt))

    return {
        "hold": score(np.broadcast_to(hold, (len(nxt), vocab_size))),
        "unigram": score(np.broadcast_to(unigram, (len(nxt), vocab_size))),
        "bigram": score(bigram[prev]),
    }


def melodies_hash(melodies: Sequence[np.ndarray]) -> str:
    """A short content hash of a melody collection (recorded in checkpoints)."""
    h = hashlib.sha256()
    for m in melodies:
        arr = np.ascontiguousarray(m, dtype=np.int64)
        h.update(len(arr).to_bytes(8, "little"))
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def keep_freed_memory() -> None:
    """Ask glibc to keep freed memory instead of returning it to the OS after every step.

    Each training step allocates and frees the same ~100 MB of activations; by default glibc hands those
    pages back and faults them in again, which cost a third of the step time on the 2-core machine
    (72 -> 48 ms per step). No-op where glibc's ``mallopt`` is not available.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: serve big blocks from the heap, not fresh mmaps
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not give the heap back after each free
    except (OSError, AttributeError):
        pass


def _same_run(saved: dict[str, Any], current: dict[str, Any]) -> bool:
    """Whether a resume state fits the current settings; ``steps`` and ``patience`` may change (extend a run),
    and ``threads`` (a machine setting)."""
    free = ("steps", "patience", "threads")
    return {k: v for k, v in saved.items() if k not in free} == {
        k: v for k, v in current.items() if k not in free
    }


def _rng_state_json(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


def _save_resume(
    path: Path, model: Prior, opt: torch.optim.Optimizer, rng: np.random.Generator, info: dict
) -> None:
    """The full training state, as plain tensors/containers so that ``weights_only=True`` can load it."""
    save_training_state(
        path,
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "numpy_rng": _rng_state_json(rng),
            "torch_rng": torch.get_rng_state(),
            "info": json.dumps(info),
        },
    )


def _load_resume(path: Path) -> dict[str, Any]:
    state = load_training_state(path)
    try:
        state["info"] = json.loads(state["info"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot resume from {path}: not a pretraining resume state ({exc})") from None
    return state


def run_dir_for(out: str | Path) -> Path:
    """The run folder beside a checkpoint path: ``runs/note_rnn.safetensors`` -> ``runs/note_rnn.run``."""
    p = Path(out)
    return p.with_name(p.stem + ".run")


def pretrain(
    train: Sequence[np.ndarray],
    valid: Sequence[np.ndarray],
    out: str | Path,
    config: PretrainConfig | None = None,
    *,
    resume: bool = False,
    dataset_hash: str | None = None,
    progress: bool = True,
    extra_meta: dict[str, Any] | None = None,
) -> PretrainResult:
    """Train a prior by maximum likelihood; keep the best checkpoint by validation NLL.

    Args:
        train, valid: melodies (int64 class arrays) of the two splits.
        out: path of the best checkpoint; the run folder is :func:`run_dir_for` ``(out)``.
        config: settings (default: the paper's recipe).
        resume: continue from ``<run>/resume.pt``; the config must match the interrupted run's, except
            ``steps`` and ``patience`` (so a finished run can be extended).
        dataset_hash: recorded in the checkpoints (default: a hash of the melodies).
        progress: show a tqdm bar on stderr.
        extra_meta: more JSON-able metadata for the checkpoints (e.g. the dataset's path).

    Returns:
        A :class:`PretrainResult`. On Ctrl-C the resume state is saved first, then KeyboardInterrupt propagates.

    Raises:
        DatasetError: no usable training or validation melody.
        CheckpointError: ``resume`` without a readable resume state, or with another config.
    """
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    cfg = config or PretrainConfig()
    cfg.validate()
    if not valid:
        raise DatasetError("the validation split is empty: pretraining needs melodies to validate on")
    out = Path(out)
    run_dir = run_dir_for(out)
    ensure_writable_dir(run_dir)  # one clear error for an unwritable place, before any work
    resume_path = run_dir / "resume.pt"
    device = resolve_device(cfg.device)
    threads_before = torch.get_num_threads()
    if device.type == "cpu":
        keep_freed_memory()
    set_threads(cfg.threads)  # restored in the finally clause below
    data_hash = dataset_hash or melodies_hash(list(train) + list(valid))
    cfg_dict = to_dict(cfg)

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = build_prior(cfg.model).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, best_nll, best_step, stale = 0, math.inf, 0, 0
    seconds_before = 0.0  # training time of earlier sessions of a resumed run
    history: list[dict[str, float]] = []
    if resume:
        state = _load_resume(resume_path)
        info = state["info"]
        if not _same_run(info.get("config", {}), json.loads(json.dumps(cfg_dict))):
            raise CheckpointError(
                f"{resume_path} was written by a run with other settings; resume with the same options "
                "(only --steps and --patience may change)"
            )
        if info.get("dataset_hash", data_hash) != data_hash:
            raise CheckpointError(
                f"{resume_path} was written by a run on other data; resume with the same dataset"
            )
        try:  # a damaged or altered state: one error, not a traceback from deep inside torch or numpy
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            rng.bit_generator.state = json.loads(state["numpy_rng"])
            torch.set_rng_state(state["torch_rng"])
            step, best_nll = int(info["step"]), float(info["best_nll"])
            best_step, stale = int(info["best_step"]), int(info["stale"])
            history = list(info["history"])
            seconds_before = float(info.get("seconds", 0.0))
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(
                f"cannot resume from {resume_path}: the state is damaged ({first})"
            ) from None
        if step < 0 or best_step < 0 or stale < 0:
            raise CheckpointError(f"cannot resume from {resume_path}: step {step} is not a valid step")
    sampler = WindowSampler(train, cfg.window, cfg.skip_first, rng)
    baselines = baseline_metrics(train, valid, cfg.skip_first, cfg.model.vocab_size)
    meta_base = {"dataset_hash": data_hash, "train_config": cfg_dict, **(extra_meta or {})}

    def info_now() -> dict[str, Any]:
        return {
            "config": cfg_dict,
            "step": step,
            "best_nll": best_nll,
            "best_step": best_step,
            "stale": stale,
            "history": history,
            "dataset_hash": data_hash,
            "seconds": seconds_before + time.perf_counter() - t_start,
        }

    def _one_step() -> None:
        """One optimizer step, then validation and checkpoints when due."""
        nonlocal step, best_nll, best_step, stale
        x_np, y_np, m_np = sampler.batch(cfg.batch_size)
        m_np = m_np.copy()
        m_np[:, : cfg.skip_first] = False  # the first predictions of a window lack context
        x, y = torch.from_numpy(x_np).to(device), torch.from_numpy(y_np).to(device)
        mask = torch.from_numpy(m_np).to(device)
        logits, _ = model(x)
        nll, _, correct = masked_nll(logits, y, mask)
        loss = nll + cfg.l2 * l2_penalty(model) if cfg.l2 else nll
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        acc = float(correct) / max(int(m_np.sum()), 1)
        bar.update(1)
        bar.set_postfix(loss=f"{float(nll.detach()):.3f}", acc=f"{acc:.3f}", best=f"{best_nll:.3f}")
        if step % 10 == 0:
            writer.add_scalar("train/nll", float(nll.detach()), step)
            writer.add_scalar("train/accuracy", acc, step)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            val = evaluate(model, valid, cfg.skip_first)
            history.append({"step": step, **val.as_dict()})
            writer.add_scalar("valid/nll", val.nll, step)
            writer.add_scalar("valid/accuracy", val.accuracy, step)
            if not math.isfinite(val.nll):
                raise TrainingDivergedError(
                    f"pretraining diverged at step {step:,} (validation NLL {val.nll}); the best checkpoint "
                    f"so far is kept in {out}; try a smaller --lr"
                )
            if val.nll < best_nll:
                best_nll, best_step, stale = val.nll, step, 0
                save_prior(out, model, step=step, metrics={"valid": val.as_dict()}, **meta_base)
            else:
                stale += 1
            _save_resume(resume_path, model, opt, rng, info_now())

    writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=step or None)
    bar = tqdm(total=cfg.steps, initial=step, disable=not progress, desc="pretrain", unit="step", leave=True)
    t_start = time.perf_counter()
    interrupted = False
    at_boundary = True  # model, optimizer and RNGs hold the state after a whole step
    model.train()
    try:
        with deferred_sigint() as stop:
            while step < cfg.steps:
                if stop[0]:  # Ctrl-C arrived during the last step: save here, where a resume is exact
                    raise KeyboardInterrupt
                at_boundary = False
                _one_step()
                at_boundary = True
                if cfg.patience and stale >= cfg.patience:
                    log.info("validation NLL has not improved for %d evaluations: stopping early", stale)
                    break
            if stop[0] and step < cfg.steps:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
        if at_boundary:  # else (a second Ctrl-C mid-step) the resume state of the last evaluation stays
            _save_resume(resume_path, model, opt, rng, info_now())
        raise
    finally:
        torch.set_num_threads(threads_before)
        bar.close()
        writer.close()
        seconds = seconds_before + time.perf_counter() - t_start
        if step and not interrupted:
            save_prior(run_dir / "last.safetensors", model, step=step, **meta_base)
        if interrupted:
            log.info("interrupted at step %d: resume with --resume (state in %s)", step, resume_path)

    if not out.is_file():
        raise CheckpointError(f"no checkpoint was written to {out}")
    best_model_meta = read_checkpoint(out)[1]
    best = Metrics(**best_model_meta["metrics"]["valid"])
    report = {
        "best_step": best_step,
        "steps_done": step,
        "seconds": seconds,
        "valid": best.as_dict(),
        "baselines": {k: v.as_dict() for k, v in baselines.items()},
        "history": history,
        "config": cfg_dict,
        "dataset_hash": data_hash,
    }
    write_json_atomic(run_dir / "metrics.json", report)
    # Record the baselines in the best checkpoint too, so the numbers travel with the model.
    save_prior(
        out,
        _reload(out),
        step=best_step,
        metrics={"valid": best.as_dict(), "baselines": report["baselines"]},
        **meta_base,
    )
    return PretrainResult(
        best_path=out,
        run_dir=run_dir,
        best_step=best_step,
        steps_done=step,
        best=best,
        baselines=baselines,
        seconds=seconds,
        interrupted=False,
    )


def _reload(path: Path) -> Prior:
    from rltuner.models.checkpoint import load_prior

    return load_prior(path)[0]


def with_model(cfg: PretrainConfig, **changes: Any) -> PretrainConfig:
    """A copy of ``cfg`` with some model settings changed (``arch``, ``hidden_size``...), validated."""
    new = replace(cfg, model=replace(cfg.model, **changes))
    new.validate()
    return new
