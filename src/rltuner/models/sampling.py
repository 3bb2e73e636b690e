"""Batched sampling from a prior (or any model behind the Prior interface), and scoring of melodies.

Thousands of melodies advance in lockstep through the model's stepper (``Prior.stepper``, started from the
state after the primer; for the LSTM preallocated, ~1.5x faster than ``model.step`` at 1,024 melodies and the same
logits to the bit); the next token is drawn by inverting the cumulative distribution of ``softmax(logits / T)``
with one uniform number per melody (a softmax, a cumsum and a comparison: cheaper than ``torch.multinomial`` or
the Gumbel-max trick on the CPU). Randomness comes from one ``torch.Generator`` seeded by ``seed``, so a seed
gives the same melodies for the same model, batch size and device.

``workers`` > 1 (:func:`sample_scored`, CPU, no stop token) runs that many batches side by side in Python
threads: torch's kernels release the GIL, so on 2 cores two batches (each stepped and scored with
single-thread kernels) take about the time of one. The main thread draws each batch's uniform numbers from the
generator in batch order before handing the batch out, the numbers the sequential loop draws step by step (one
``rand`` of (length, B, 1) is the same stream as ``length`` draws of (B, 1) from a CPU generator), so the
melodies are the same as with one worker, bit for bit, and so are log p and the KL (each batch is the same
computation).

Primers are fed as input and are not part of the output:

* ``None`` or ``"random"``: one uniformly random note-on class (2..37) per melody (the paper's setting);
* an ``int``: that class for every melody;
* a 1-D sequence: the same primer sequence for every melody (e.g. the end of a MIDI melody);
* a 2-D array (n, k): one primer sequence per melody (k = 1: one token per melody).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rltuner.encoding import FIRST_NOTE_CLASS, validate_classes
from rltuner.errors import ConfigError, InvalidMelodyError

Primer = int | str | Sequence[int] | np.ndarray | None
DEFAULT_BATCH = 1024  # fastest on 2 CPU cores (the state stays in cache); larger batches only add memory
_SCORE_BATCH = 512  # sequences per forward pass of the reference when it scores a sampled batch


def _generator(device: torch.device, seed: int | None) -> torch.Generator:
    from rltuner.limits import check_seed

    if seed is not None:
        check_seed(int(seed))
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()  # fresh entropy
    else:
        gen.manual_seed(int(seed))
    return gen


def primer_tokens(
    primer: Primer, n: int, vocab_size: int, gen: torch.Generator | None = None
) -> torch.Tensor:
    """The primer as int64 (n, k) on the CPU (see the module docstring for the accepted forms).

    Raises:
        InvalidMelodyError: a class outside the vocabulary, an empty primer, or a 2-D primer with a row count
            other than ``n``.
    """
    if primer is None or (isinstance(primer, str) and primer == "random"):
        device = gen.device if gen is not None else None
        return torch.randint(FIRST_NOTE_CLASS, vocab_size, (n, 1), generator=gen, device=device).cpu()
    if isinstance(primer, str):
        raise InvalidMelodyError(f"primer {primer!r}: expected 'random', a class, or a sequence of classes")
    arr = validate_classes(np.asarray(primer))
    if arr.max() >= vocab_size:
        raise InvalidMelodyError(
            f"primer class {int(arr.max())} is outside the model's vocabulary ({vocab_size})"
        )
    if arr.ndim == 0:
        arr = np.full((n, 1), int(arr))
    elif arr.ndim == 1:
        arr = np.broadcast_to(arr, (n, len(arr)))
    elif arr.ndim == 2:
        if arr.shape[0] != n:
            raise InvalidMelodyError(f"a 2-D primer needs one row per melody ({n}), got {arr.shape[0]} rows")
    else:
        raise InvalidMelodyError(f"a primer has at most 2 dimensions, got shape {arr.shape}")
    return torch.from_numpy(np.array(arr, dtype=np.int64))  # a writable copy (broadcast views are read-only)


def _check_args(n: int, length: int, temperature: float, batch_size: int, workers: int = 1) -> None:
    from rltuner.threads import check_workers

    check_workers(workers)
    if n < 0:
        raise ConfigError(f"the number of melodies must not be negative, got {n}")
    if length < 1:
        raise ConfigError(f"length must be at least 1 step, got {length}")
    from rltuner.limits import MAX_TEMPERATURE, MIN_TEMPERATURE, check_sample_size

    if not MIN_TEMPERATURE <= temperature <= MAX_TEMPERATURE:  # also refuses NaN
        raise ConfigError(
            f"temperature must be in [{MIN_TEMPERATURE:g}, {MAX_TEMPERATURE:g}] (use greedy for the most "
            f"likely class), got {temperature}"
        )

    check_sample_size(n, length)  # before the (n, length) output is allocated
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1, got {batch_size}")


@torch.inference_mode()
def sample(
    model: Any,
    n: int,
    length: int = 32,
    *,
    temperature: float = 1.0,
    greedy: bool = False,
    primer: Primer = None,
    seed: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    stop_token: int | None = None,
    pad_token: int = 0,
) -> np.ndarray:
    """Sample ``n`` melodies of ``length`` steps.

    Args:
        model: a Prior (or a tuned policy behind the same interface); its outputs are read as logits.
        n: number of melodies.
        length: steps per melody (the primer not included).
        temperature: divides the logits (< 1: safer, > 1: wilder).
        greedy: take the most likely class at each step instead of sampling.
        primer: see the module docstring (default: one random note-on per melody).
        seed: seeds the sampler's generator (None: fresh randomness).
        batch_size: melodies advanced in lockstep (memory vs. speed).
        stop_token: a token that ends a sequence (e.g. a SMILES ``<eos>``): it is kept, every later position
            holds ``pad_token``, and sampling stops once every sequence of a batch has ended.
        pad_token: what fills a sequence after its stop token.

    Returns:
        int64 array (n, length) of classes.
    """
    return sample_scored(
        model,
        n,
        length,
        temperature=temperature,
        greedy=greedy,
        primer=primer,
        seed=seed,
        batch_size=batch_size,
        stop_token=stop_token,
        pad_token=pad_token,
    ).melodies


@dataclass(frozen=True)
class ScoredSamples:
    """Melodies sampled from a model, with per-step measures against a reference model (e.g. the Note RNN).

    Attributes:
        melodies: int64 (n, length) sampled classes.
        primers: int64 (n, k) the primer each melody was sampled after.
        ref_log_p: float64 (n, length) ``log p_ref(a_t | s_t)`` of each sampled class (None without reference).
        kl: float64 (n, length) ``KL(pi(.|s_t) || p_ref(.|s_t))`` of the sampling distribution (None without
            reference; 0 where the reference is the model itself).
        mask: bool (n, length), true where a token was sampled (false after a stop token; all true without).
    """

    melodies: np.ndarray
    primers: np.ndarray
    ref_log_p: np.ndarray | None = None
    kl: np.ndarray | None = None
    mask: np.ndarray | None = None


@torch.inference_mode()
def sample_scored(
    model: Any,
    n: int,
    length: int = 32,
    *,
    reference: Any = None,
    temperature: float = 1.0,
    greedy: bool = False,
    primer: Primer = None,
    seed: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    stop_token: int | None = None,
    pad_token: int = 0,
    progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> ScoredSamples:
    """:func:`sample`, and the reference model's log-probability of every sampled class and the KL divergence
    of the sampling distribution from the reference's (what evaluation reports).

    Only the model runs step by step; its sampling logits are kept, and once a batch is drawn the reference
    reads the sampled tokens in one forward pass (teacher forcing: the same maths as stepping it beside the
    model, equal up to float rounding). ``reference=model`` (or the model itself) gives KL = 0 and takes
    log p from the sampling logits, at no extra pass. Same seed, same melodies as :func:`sample`.
    ``progress`` (e.g. a tqdm bar's ``update``) is called with the size of each batch once it is drawn; it
    changes no result.

    ``workers``: batches sampled and scored side by side in Python threads (see the module docstring); the
    results equal one worker's bit for bit. Give at most one per CPU core, each with one torch thread
    (``rltuner.threads.batch_workers``). Used on the CPU without a stop token (where a batch's draws do not
    depend on its tokens); otherwise the batches run one after another.

    Raises:
        ConfigError: n, length, temperature, batch_size or workers out of range.
    """
    _check_args(n, length, temperature, batch_size, workers)
    device = next(model.parameters()).device
    gen = _generator(device, seed)
    primers = primer_tokens(primer, n, model.vocab_size, gen)  # (n, k)
    models = [model] if reference is None or reference is model else [model, reference]
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    out = torch.empty((n, length), dtype=torch.int64)
    mask = torch.ones((n, length), dtype=torch.bool)
    ref_log_p = torch.empty((n, length), dtype=torch.float64) if reference is not None else None
    kl = torch.empty((n, length), dtype=torch.float64) if reference is not None else None

    def store(lo: int, hi: int, drawn: _Batch) -> None:
        tokens, batch_log_p, batch_kl, batch_mask = drawn
        out[lo:hi] = tokens.cpu()
        mask[lo:hi] = batch_mask.cpu()
        if ref_log_p is not None and kl is not None and batch_log_p is not None and batch_kl is not None:
            ref_log_p[lo:hi] = batch_log_p.cpu()
            kl[lo:hi] = batch_kl.cpu()
        if progress is not None:
            progress(hi - lo)

    def run(lo: int, hi: int, uniforms: torch.Tensor | None) -> _Batch:
        return _sample_batch(
            model, primers[lo:hi].to(device), length, temperature, greedy, gen, reference, stop_token,
            pad_token, uniforms,
        )  # fmt: skip

    bounds = [(lo, min(lo + batch_size, n)) for lo in range(0, n, batch_size)]
    try:
        if workers > 1 and len(bounds) > 1 and stop_token is None and device.type == "cpu":
            _run_side_by_side(bounds, workers, run, store, None if greedy else (gen, length))
        else:
            for lo, hi in bounds:
                store(lo, hi, run(lo, hi, None))
    finally:
        for m, mode in zip(models, was_training, strict=True):
            m.train(mode)
    return ScoredSamples(
        melodies=out.numpy(),
        primers=primers.numpy(),
        ref_log_p=None if ref_log_p is None else ref_log_p.numpy(),
        kl=None if kl is None else kl.numpy(),
        mask=mask.numpy(),
    )


_Batch = tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor]
"""What :func:`_sample_batch` returns: tokens, log p and KL (or None), mask."""


def _run_side_by_side(
    bounds: Sequence[tuple[int, int]],
    workers: int,
    run: Callable[[int, int, torch.Tensor | None], _Batch],
    store: Callable[[int, int, _Batch], None],
    draws: tuple[torch.Generator, int] | None,
) -> None:
    """``store(lo, hi, run(lo, hi, uniforms))`` for each batch, ``workers`` batches at a time in threads.

    ``draws`` = (generator, length): each batch's (length, B, 1) uniforms are drawn here, in batch order,
    before the batch is handed out (None: greedy, no draws). At most ``2 * workers`` batches are in flight, so
    the numbers drawn ahead stay small; the results are stored in batch order, here in the calling thread.
    """

    def job(lo: int, hi: int, uniforms: torch.Tensor | None) -> _Batch:
        with torch.inference_mode():  # thread-local: the caller's mode does not reach a worker thread
            return run(lo, hi, uniforms)

    pending: deque[tuple[int, int, Future[_Batch]]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="rltuner-sample") as pool:
        try:
            for lo, hi in bounds:
                uniforms = None
                if draws is not None:
                    gen, length = draws
                    uniforms = torch.rand((length, hi - lo, 1), generator=gen, device=gen.device)
                pending.append((lo, hi, pool.submit(job, lo, hi, uniforms)))
                if len(pending) >= 2 * workers:
                    first, last, future = pending.popleft()
                    store(first, last, future.result())
            while pending:
                first, last, future = pending.popleft()
                store(first, last, future.result())
        except BaseException:  # an error or Ctrl-C: drop the batches not started, wait for the running ones
            for _, _, future in pending:
                future.cancel()
            raise


def kl_divergence(log_pi: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """``KL(pi || p)`` over the last dimension from log-probabilities: (..., V) -> (...).

    Classes the policy never plays contribute 0 (not ``0 * -inf = NaN``).
    """
    pi = log_pi.exp()
    # One fused dot product per distribution (~6x faster than masking every class first); only rows where a
    # class has probability 0 (a -inf logit) can give NaN there, and those are recomputed with the mask.
    kl = torch.linalg.vecdot(pi, log_pi - log_p)
    bad = kl.isnan()
    if bool(bad.any()):
        kl = torch.where(bad, torch.where(pi > 0, pi * (log_pi - log_p), 0.0).sum(-1), kl)
    return kl


def _stepper(model: Any, batch_size: int, device: torch.device, state: Any) -> Any:
    """``model.stepper`` from ``state`` (preallocated for the LSTM; the same logits as ``model.step``), or the
    same closure over ``model.step`` for a model that has only the step interface."""
    if hasattr(model, "stepper"):
        return model.stepper(batch_size, device, state)
    box = [state]

    def step(tokens: torch.Tensor) -> torch.Tensor:
        logits, box[0] = model.step(tokens, box[0])
        return logits

    return step


def _sample_batch(
    model: Any,
    primer: torch.Tensor,
    length: int,
    temperature: float,
    greedy: bool,
    gen: torch.Generator,
    reference: Any = None,
    stop_token: int | None = None,
    pad_token: int = 0,
    uniforms: torch.Tensor | None = None,
) -> _Batch:
    """primer (B, k) -> sampled tokens (B, length), with a reference its log p and the KL (B, length), and
    the mask of sampled positions (B, length); log p and KL are 0 after a stop token.

    ``uniforms``: (length, B, 1) the uniform numbers of every step, drawn beforehand from ``gen`` (the
    side-by-side path); None: each step draws its own from ``gen``. The same numbers either way.

    Only the model runs step by step. With a reference, the sampling logits of every step are kept (B, length,
    V) and scored once the batch is drawn (:func:`_score_batch`): the reference reads the sampled tokens in
    one forward pass (teacher forcing), the same maths as stepping it beside the model.
    """
    b = primer.shape[0]
    logits, state = model(primer, model.initial_state(b, primer.device))
    logits = logits[:, -1]  # (B, V): the distribution of the first sampled step
    step = _stepper(model, b, primer.device, state) if length > 1 else None
    out = torch.full((b, length), pad_token, dtype=torch.int64, device=primer.device)
    # without a stop token every position is sampled; with one, the mask is written step by step
    mask = torch.full((b, length), stop_token is None, dtype=torch.bool, device=primer.device)
    alive = torch.ones(b, dtype=torch.bool, device=primer.device)
    # the sampling logits of every step (what log pi and the KL are computed from)
    kept = None if reference is None else logits.new_zeros((b, length, logits.shape[-1]))
    inv_t = 1.0 / temperature
    for t in range(length):
        if greedy:
            token = logits.argmax(-1)
        else:
            # Inverse-CDF draw: the first class whose cumulative probability reaches u ~ U(0, total).
            cdf = torch.softmax(logits * inv_t if inv_t != 1.0 else logits, dim=-1).cumsum_(-1)  # (B, V)
            u = (
                uniforms[t]
                if uniforms is not None
                else torch.rand((b, 1), generator=gen, device=logits.device)
            )
            u = u.mul(cdf[:, -1:])
            # how many classes' cumulative probability is below u: a binary search in the (non-decreasing)
            # cdf, the same count as comparing every class and summing
            token = torch.searchsorted(cdf, u).squeeze_(-1).clamp_(max=logits.shape[-1] - 1)
        if stop_token is not None:
            token = torch.where(alive, token, pad_token)
            mask[:, t] = alive
        out[:, t] = token
        if kept is not None:
            kept[:, t] = logits  # a copy: the stepper reuses its logits buffer
        if stop_token is not None:
            alive &= token != stop_token
            if not bool(alive.any()):
                break
        if step is not None and t + 1 < length:
            logits = step(token)
    if reference is None or kept is None:
        return out, None, None, mask
    ref_log_p, kl = _score_batch(kept, out, mask, primer, inv_t, None if reference is model else reference)
    return out, ref_log_p, kl, mask


def _score_batch(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    primer: torch.Tensor,
    inv_t: float,
    reference: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p_ref of the sampled tokens and KL(pi || p_ref) per step, float64 (B, T), 0 where ``mask`` is false.

    Args:
        logits: (B, T, V) the model's sampling logits at each step (before the temperature).
        tokens: (B, T) the sampled tokens; mask: (B, T) bool, true where a token was sampled.
        primer: (B, k) what the sampling started from.
        inv_t: 1 / temperature.
        reference: the reference model, or None when it is the sampling model itself (log p_ref = log pi at
            the sampling temperature, KL = 0).
    """
    b, length = tokens.shape
    ref_log_p = torch.zeros((b, length), dtype=torch.float64, device=tokens.device)
    kl = torch.zeros_like(ref_log_p)
    k = primer.shape[1]
    inputs = torch.cat([primer, tokens[:, :-1]], dim=1)  # (B, k + T - 1): what each step read
    # In slices of _SCORE_BATCH sequences, each scored to the end before the next: the LSTM kernel's state and
    # the (slice, T, V) distributions then stay in cache. Every operation is row by row, so the slices give
    # the numbers of the whole batch at once.
    for lo in range(0, b, _SCORE_BATCH):
        hi = min(lo + _SCORE_BATCH, b)
        scaled = logits[lo:hi].float()
        log_pi = torch.log_softmax(scaled * inv_t if inv_t != 1.0 else scaled, dim=-1)  # the sampling policy
        if reference is None:
            log_ref = log_pi
        else:
            x = inputs[lo:hi]
            ref_logits = reference(x, reference.initial_state(hi - lo, x.device))[0]
            log_ref = torch.log_softmax(ref_logits.float(), -1)[:, k - 1 :]  # (slice, T, V)
        picked = log_ref.gather(-1, tokens[lo:hi].unsqueeze(-1)).squeeze(-1)  # (slice, T)
        # where(), not a product: positions after a stop token may hold anything
        ref_log_p[lo:hi] = torch.where(mask[lo:hi], picked, 0.0)
        if reference is not None:
            kl[lo:hi] = torch.where(mask[lo:hi], kl_divergence(log_pi, log_ref), 0.0)
    return ref_log_p, kl


@torch.inference_mode()
def score(
    model: Any,
    melodies: np.ndarray | Sequence[Sequence[int]],
    primers: Primer,
    *,
    batch_size: int = DEFAULT_BATCH,
) -> np.ndarray:
    """Log-probability the model gives each step of each melody, after its primer.

    Args:
        model: a Prior (outputs read as logits).
        melodies: int64 (n, length) classes.
        primers: the primer each melody was generated from (same forms as :func:`sample`; ``None`` is not
            allowed here because a random primer would not be the one used).

    Returns:
        float64 (n, length): ``log p(melodies[i, t] | primer_i, melodies[i, :t])``.
    """
    arr = validate_classes(melodies)
    if arr.ndim != 2:
        raise InvalidMelodyError(f"melodies must be a 2-D array (n, length), got shape {arr.shape}")
    if primers is None or isinstance(primers, str):
        raise InvalidMelodyError("score() needs the primers the melodies were sampled from (not random ones)")
    n, length = arr.shape
    prim = primer_tokens(primers, n, model.vocab_size)
    k = prim.shape[1]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = np.empty((n, length), dtype=np.float64)
    try:
        for lo in range(0, n, batch_size):
            hi = min(lo + batch_size, n)
            mel = torch.from_numpy(arr[lo:hi])
            tokens = torch.cat([prim[lo:hi], mel[:, :-1]], dim=1).to(device)  # (B, k + length - 1)
            logits, _ = model(tokens, model.initial_state(hi - lo, device))
            logp = torch.log_softmax(logits[:, k - 1 :].double(), dim=-1)  # (B, length, V)
            out[lo:hi] = logp.gather(-1, mel.to(device).unsqueeze(-1)).squeeze(-1).cpu().numpy()
    finally:
        model.train(was_training)
    return out
