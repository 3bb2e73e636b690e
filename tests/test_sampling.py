"""Batched sampling and scoring: shapes, seeding, primers, temperature and greedy decoding."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch

from rltuner.errors import ConfigError, InvalidMelodyError
from rltuner.models.prior import Prior, build_prior
from rltuner.models.sampling import primer_tokens, sample, sample_scored, score


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> Prior:
    torch.manual_seed(0)
    m = build_prior({"arch": "lstm", "hidden_size": 16})
    with torch.no_grad():
        m.out.weight.mul_(8.0)  # a peaky distribution, so different seeds differ and greedy is meaningful
    return m.eval()


class _Fixed(Prior):
    """A model that ignores its input and always outputs the same logits (exact distributions for tests)."""

    def __init__(self, logits: list[float]) -> None:
        super().__init__()
        self.vocab_size = len(logits)
        self.logits = torch.nn.Parameter(torch.tensor(logits))

    def initial_state(self, batch_size, device=None):
        return (torch.zeros(1, batch_size, 1),)

    def forward(self, tokens, state=None):
        b, t = tokens.shape
        return self.logits.expand(b, t, -1), (torch.zeros(1, b, 1),)

    def step(self, tokens, state):
        return self.logits.expand(tokens.shape[0], -1), state


@pytest.mark.parametrize("n, length, batch", [(1, 1, 8), (7, 5, 3), (20, 32, 64)])
def test_shape_and_dtype(model: Prior, n: int, length: int, batch: int) -> None:
    out = sample(model, n, length, seed=0, batch_size=batch)
    assert out.shape == (n, length) and out.dtype == np.int64
    assert out.min() >= 0 and out.max() < 38


def test_progress_is_told_each_batch_and_changes_no_result(model: Prior) -> None:
    told: list[int] = []
    drawn = sample_scored(model, 7, 5, seed=2, batch_size=3, reference=model, progress=told.append)
    assert told == [3, 3, 1]  # one call per batch, once it is drawn
    plain = sample_scored(model, 7, 5, seed=2, batch_size=3, reference=model)
    assert np.array_equal(drawn.melodies, plain.melodies) and np.array_equal(drawn.ref_log_p, plain.ref_log_p)


def test_seeding(model: Prior) -> None:
    a = sample(model, 50, 16, seed=3)
    assert np.array_equal(a, sample(model, 50, 16, seed=3))
    assert not np.array_equal(a, sample(model, 50, 16, seed=4))


def test_sampled_frequencies_follow_the_distribution() -> None:
    probs = torch.tensor([0.1, 0.6, 0.3])
    m = _Fixed(probs.log().tolist())
    out = sample(m, 4000, 5, seed=0, primer=0)
    freq = np.bincount(out.ravel(), minlength=3) / out.size
    assert np.allclose(freq, probs.numpy(), atol=0.02)


def test_temperature_and_greedy() -> None:
    m = _Fixed([0.0, 1.0, 0.5])
    assert (sample(m, 10, 4, greedy=True, primer=0) == 1).all()
    cold = sample(m, 500, 4, temperature=0.01, seed=1, primer=0)
    assert (cold == 1).all()
    hot = sample(m, 2000, 4, temperature=100.0, seed=1, primer=0)
    assert np.allclose(np.bincount(hot.ravel(), minlength=3) / hot.size, 1 / 3, atol=0.03)


def test_greedy_equals_a_manual_argmax_loop(model: Prior) -> None:
    primer = np.array([[14], [20], [2]])
    got = sample(model, 3, 10, greedy=True, primer=primer)
    with torch.no_grad():
        logits, state = model(torch.from_numpy(primer))
        tok = logits[:, -1].argmax(-1)
        manual = [tok]
        for _ in range(9):
            logits1, state = model.step(tok, state)
            tok = logits1.argmax(-1)
            manual.append(tok)
    assert np.array_equal(got, torch.stack(manual, 1).numpy())


def test_primers_are_input_not_output(model: Prior) -> None:
    # A fixed note, the same note per row as a 2-D primer, and a sequence all condition the first step.
    a = sample(model, 5, 6, greedy=True, primer=14)
    b = sample(model, 5, 6, greedy=True, primer=np.full((5, 1), 14))
    assert np.array_equal(a, b) and a.shape == (5, 6)
    seq = sample(model, 2, 6, greedy=True, primer=[14, 1, 16])
    with torch.no_grad():
        logits, _ = model(torch.tensor([[14, 1, 16]]))
    assert seq[0, 0] == int(logits[0, -1].argmax()) and np.array_equal(seq[0], seq[1])


def test_default_primer_is_a_random_note_on() -> None:
    tokens = primer_tokens(None, 2000, 38, torch.Generator().manual_seed(0))
    assert tokens.shape == (2000, 1) and tokens.min() == 2 and tokens.max() == 37
    assert len(torch.unique(tokens)) == 36


@pytest.mark.parametrize(
    "primer, words",
    [
        (40, "invalid class"),
        ("C4", "expected 'random'"),
        (np.zeros((3, 2), dtype=int), "one row per melody"),
        ([], "no melody"),
    ],
)
def test_bad_primers(model: Prior, primer: object, words: str) -> None:
    with pytest.raises(InvalidMelodyError, match=words):
        sample(model, 2, 4, primer=primer)


@pytest.mark.parametrize("kwargs, words", [({"temperature": 0.0}, "temperature"), ({"length": 0}, "length")])
def test_bad_arguments(model: Prior, kwargs: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        sample(model, 2, **{"length": 4, **kwargs})


def test_score_matches_the_models_log_probs(model: Prior) -> None:
    mel = sample(model, 4, 8, seed=0, primer=[3, 1])
    lp = score(model, mel, [3, 1])
    assert lp.shape == (4, 8) and (lp <= 0).all()
    with torch.no_grad():
        tokens = torch.cat([torch.tensor([[3, 1]] * 4), torch.from_numpy(mel[:, :-1])], 1)
        logp = torch.log_softmax(model(tokens)[0], -1)[:, 1:]
    expected = logp.gather(-1, torch.from_numpy(mel)[..., None])[..., 0].double().numpy()
    assert np.allclose(lp, expected, atol=1e-5)


def test_score_of_fixed_distribution_is_exact() -> None:
    m = _Fixed(torch.tensor([0.25, 0.25, 0.5]).log().tolist())
    lp = score(m, np.array([[2, 0, 1]]), 0)
    assert np.allclose(lp, np.log([[0.5, 0.25, 0.25]]))
    with pytest.raises(InvalidMelodyError, match="primers"):
        score(m, np.array([[2, 0]]), None)


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_other_architectures_sample(arch: str) -> None:
    m = build_prior({"arch": arch, "hidden_size": 8, "num_heads": 2}).eval()
    out = sample(m, 6, 12, seed=0, batch_size=4)
    assert out.shape == (6, 12)
    assert np.array_equal(out, sample(m, 6, 12, seed=0, batch_size=4))


def test_sample_scored_measures_the_reference_in_the_same_pass(model: Prior) -> None:
    torch.manual_seed(1)
    reference = build_prior({"arch": "lstm", "hidden_size": 16}).eval()
    primers = np.arange(2, 14).reshape(-1, 1)
    drawn = sample_scored(model, 12, 9, reference=reference, primer=primers, seed=3, batch_size=5)
    # the same melodies as plain sampling, and the log p a separate scoring pass gives
    assert np.array_equal(drawn.melodies, sample(model, 12, 9, primer=primers, seed=3, batch_size=5))
    expected = score(reference, drawn.melodies, primers)
    assert drawn.ref_log_p is not None and np.allclose(drawn.ref_log_p, expected, atol=1e-5)
    # KL(pi || p) per step, recomputed from both models' full distributions
    tokens = torch.from_numpy(np.concatenate([primers, drawn.melodies[:, :-1]], axis=1))
    with torch.no_grad():
        log_pi = torch.log_softmax(model(tokens)[0].double(), -1)
        log_p = torch.log_softmax(reference(tokens)[0].double(), -1)
    kl = (log_pi.exp() * (log_pi - log_p)).sum(-1).numpy()
    assert drawn.kl is not None and np.allclose(drawn.kl, kl, atol=1e-5)
    same = sample_scored(model, 12, 9, reference=model, primer=primers, seed=3)
    assert same.kl is not None and not same.kl.any()
    assert same.ref_log_p is not None and np.allclose(
        same.ref_log_p, score(model, same.melodies, primers), atol=1e-5
    )


def _stepwise_reference(
    model: Any,
    reference: Any,
    primers: np.ndarray,
    length: int,
    seed: int,
    batch_size: int,
    temperature: float = 1.0,
    stop_token: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slow path the sampler replaced: model and reference both advanced with ``step``, log p and KL taken
    at every step. Returns melodies (n, length), log p_ref and KL (n, length), float64."""
    gen = torch.Generator().manual_seed(seed)
    prim = torch.from_numpy(primers)
    n = len(primers)
    mel = np.zeros((n, length), dtype=np.int64)
    log_p, kl = np.zeros((n, length)), np.zeros((n, length))
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            p = prim[lo : lo + batch_size]
            b = p.shape[0]
            logits, state = model(p, model.initial_state(b))
            ref_logits, ref_state = reference(p, reference.initial_state(b))
            logits, ref_logits = logits[:, -1], ref_logits[:, -1]
            alive = torch.ones(b, dtype=torch.bool)
            for t in range(length):
                cdf = torch.softmax(logits / temperature, dim=-1).cumsum(-1)
                u = torch.rand((b, 1), generator=gen) * cdf[:, -1:]
                token = (cdf < u).sum(-1).clamp(max=logits.shape[-1] - 1)
                token = torch.where(alive, token, 0)
                log_pi = torch.log_softmax(logits / temperature, -1)
                log_ref = torch.log_softmax(ref_logits, -1)
                mel[lo : lo + b, t] = token.numpy()
                log_p[lo : lo + b, t] = (log_ref.gather(-1, token[:, None])[:, 0] * alive).numpy()
                if reference is not model:
                    kl[lo : lo + b, t] = ((log_pi.exp() * (log_pi - log_ref)).sum(-1) * alive).numpy()
                if stop_token is not None:
                    alive &= token != stop_token
                logits, state = model.step(token, state)
                ref_logits, ref_state = reference.step(token, ref_state)
    return mel, log_p, kl


def _tuned_g_policy(model: Prior) -> Any:
    from rltuner.rl.policy import TunedPolicy

    torch.manual_seed(4)
    q_net = build_prior({"arch": "lstm", "hidden_size": 16}).eval()
    return TunedPolicy(q_net, model, "g").eval()  # G's policy reads the prior's log p at every step


@pytest.mark.parametrize(
    "case",
    [
        "reference is the model",
        "separate reference",
        "tuned G policy",
        "temperature, 3-step primer",
        "stop token",
    ],
)
def test_scored_sampling_equals_the_stepwise_computation(model: Prior, case: str) -> None:
    """The fast path (the model's stepper, the reference afterwards in one forward pass) draws the same melodies
    from the same random numbers as stepping both models, and gives the same log p and KL up to float rounding."""
    torch.manual_seed(1)
    other = build_prior({"arch": "lstm", "hidden_size": 16}).eval()
    policy: Any = _tuned_g_policy(model) if case == "tuned G policy" else model
    reference = model if case == "reference is the model" else other
    temperature = 1.7 if case.startswith("temperature") else 1.0
    stop = 5 if case == "stop token" else None
    k = 3 if case.startswith("temperature") else 1
    primers = np.random.default_rng(0).integers(2, 38, size=(23, k))
    drawn = sample_scored(
        policy, 23, 11, reference=reference, primer=primers, seed=7, batch_size=8,
        temperature=temperature, stop_token=stop,
    )  # fmt: skip
    mel, log_p, kl = _stepwise_reference(policy, reference, primers, 11, 7, 8, temperature, stop)
    assert np.array_equal(drawn.melodies, mel)
    if stop is not None:
        assert (mel == stop).any() and not drawn.mask.all()  # type: ignore[union-attr]
    assert drawn.ref_log_p is not None and drawn.kl is not None
    np.testing.assert_allclose(drawn.ref_log_p, log_p, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(drawn.kl, kl, rtol=1e-5, atol=1e-6)
    if reference is not model:
        assert drawn.kl.sum() > 0.1  # two different models: a KL the check can see


def test_kl_divergence_of_distributions_with_impossible_classes() -> None:
    """KL(pi || p) is the masked sum over classes: classes pi never plays add 0, not NaN; p = 0 where pi > 0
    gives inf; a random batch agrees with the per-class sum."""
    from rltuner.models.sampling import kl_divergence

    log_pi = torch.log_softmax(torch.tensor([[0.0, 1.0, -math.inf], [2.0, 0.0, 1.0]]), -1)
    log_p = torch.log_softmax(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -math.inf]]), -1)
    kl = kl_divergence(log_pi, log_p)
    pi = log_pi[0].exp()
    assert kl[0].item() == pytest.approx(float((pi[:2] * (log_pi[0, :2] - log_p[0, :2])).sum()), rel=1e-6)
    assert kl[1].item() == math.inf
    z = torch.log_softmax(torch.randn(7, 5, 38, generator=torch.Generator().manual_seed(0)), -1)
    y = torch.log_softmax(torch.randn(7, 5, 38, generator=torch.Generator().manual_seed(1)), -1)
    expected = (z.double().exp() * (z.double() - y.double())).sum(-1)
    torch.testing.assert_close(kl_divergence(z, y).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case",
    ["separate reference", "reference is the model", "no reference", "greedy", "temperature, 3-step primer"],
)
@pytest.mark.parametrize("workers", [2, 3])
def test_batches_side_by_side_equal_one_after_another(model: Prior, case: str, workers: int) -> None:
    """Several workers sample and score batches in threads from uniforms drawn ahead in batch order: the same
    melodies, log p and KL, bit for bit, as one worker (a ragged last batch and a random primer included)."""
    torch.manual_seed(1)
    reference = {"separate reference": build_prior({"arch": "lstm", "hidden_size": 16}).eval(),
                 "reference is the model": model}.get(case)  # fmt: skip
    k = 3 if case.startswith("temperature") else 1
    primer = np.random.default_rng(0).integers(2, 38, size=(45, k)) if k > 1 else None
    kwargs: dict[str, Any] = dict(
        reference=reference, primer=primer, seed=11, batch_size=8, greedy=case == "greedy",
        temperature=1.7 if case.startswith("temperature") else 1.0,
    )  # fmt: skip
    one = sample_scored(model, 45, 13, workers=1, **kwargs)
    many = sample_scored(model, 45, 13, workers=workers, **kwargs)
    for name in ("melodies", "primers", "ref_log_p", "kl", "mask"):
        a, b = getattr(one, name), getattr(many, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), name
    if case != "greedy":  # the seed matters (so the test would see draws taken out of order)
        other = sample_scored(model, 45, 13, workers=workers, **{**kwargs, "seed": 12})
        assert not np.array_equal(other.melodies, many.melodies)


def test_side_by_side_ignores_workers_with_a_stop_token(model: Prior) -> None:
    """With a stop token a batch's draws depend on its tokens (it stops early): the batches run in order."""
    kwargs: dict[str, Any] = dict(seed=5, batch_size=4, stop_token=5)
    one = sample_scored(model, 17, 20, workers=1, **kwargs)
    assert (one.melodies == 5).any()
    many = sample_scored(model, 17, 20, workers=2, **kwargs)
    assert np.array_equal(one.melodies, many.melodies) and np.array_equal(one.mask, many.mask)


def test_side_by_side_passes_a_models_error_on(model: Prior) -> None:
    """A batch that fails in a worker thread raises its error in the caller (not a hang, not a lost error)."""

    class _Broken(Prior):
        def __init__(self) -> None:
            super().__init__()
            self.vocab_size = 38
            self.w = torch.nn.Parameter(torch.zeros(38))
            self.calls = 0

        def initial_state(self, batch_size, device=None):
            return (torch.zeros(1, batch_size, 1),)

        def forward(self, tokens, state=None):
            self.calls += 1
            if self.calls == 3:
                raise InvalidMelodyError("batch three is broken")
            return self.w.expand(tokens.shape[0], tokens.shape[1], -1), state

        def step(self, tokens, state):
            return self.w.expand(tokens.shape[0], -1), state

    with pytest.raises(InvalidMelodyError, match="batch three"):
        sample_scored(_Broken(), 40, 6, seed=0, batch_size=4, workers=2)


@pytest.mark.parametrize("workers", [0, -1, 1.5, True, "2"])
def test_bad_worker_counts(model: Prior, workers: object) -> None:
    with pytest.raises(ConfigError, match="workers"):
        sample_scored(model, 4, 3, seed=0, workers=workers)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["gru", "transformer"])
def test_side_by_side_equals_one_after_another_for_other_architectures(arch: str) -> None:
    torch.manual_seed(2)
    policy = build_prior({"arch": arch, "hidden_size": 16}).eval()
    reference = build_prior({"arch": "lstm", "hidden_size": 16}).eval()
    one = sample_scored(policy, 30, 7, reference=reference, seed=4, batch_size=8, workers=1)
    two = sample_scored(policy, 30, 7, reference=reference, seed=4, batch_size=8, workers=2)
    assert one.melodies.tobytes() == two.melodies.tobytes()
    assert (
        one.ref_log_p is not None and two.ref_log_p is not None and one.kl is not None and two.kl is not None
    )
    assert one.ref_log_p.tobytes() == two.ref_log_p.tobytes() and one.kl.tobytes() == two.kl.tobytes()
