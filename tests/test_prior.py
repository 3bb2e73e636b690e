"""The Prior interface: forward over a sequence and repeated step agree, for every architecture."""

from __future__ import annotations

import pytest
import torch

from rltuner.errors import ConfigError
from rltuner.models.prior import ModelConfig, Prior, build_prior, cat_states, select_state, where_state

ARCHS = [
    {"arch": "lstm", "hidden_size": 24},
    {"arch": "lstm", "hidden_size": 24, "num_layers": 2},
    {"arch": "gru", "hidden_size": 24},
    {"arch": "gru", "hidden_size": 24, "num_layers": 3},
    {"arch": "transformer", "hidden_size": 32, "num_layers": 2, "num_heads": 4},
    {"arch": "transformer", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "context": 5},
]


def _model(cfg: dict) -> Prior:
    torch.manual_seed(0)
    return build_prior(cfg).eval()


@pytest.mark.parametrize(
    "cfg", ARCHS, ids=lambda c: f"{c['arch']}-{c.get('num_layers', 1)}-{c.get('context', '')}"
)
@pytest.mark.parametrize("batch", [4, 40])  # 40: the LSTM's tanh through sigmoid (SIGMOID_TANH_MIN_BATCH)
def test_forward_equals_repeated_step(cfg: dict, batch: int) -> None:
    model = _model(cfg)
    tokens = torch.randint(0, 38, (batch, 17), generator=torch.Generator().manual_seed(1))
    logits, final = model(tokens)
    assert logits.shape == (batch, 17, 38)
    state = model.initial_state(batch)
    steps = []
    for t in range(tokens.shape[1]):
        out, state = model.step(tokens[:, t], state)
        steps.append(out)
    torch.testing.assert_close(torch.stack(steps, 1), logits, atol=2e-5, rtol=1e-5)
    for a, b in zip(state, final, strict=True):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "cfg", ARCHS, ids=lambda c: f"{c['arch']}-{c.get('num_layers', 1)}-{c.get('context', '')}"
)
@pytest.mark.parametrize("batch", [1, 3, 40])  # 40: the LSTM's tanh through sigmoid (SIGMOID_TANH_MIN_BATCH)
def test_stepper_equals_step_exactly(cfg: dict, batch: int) -> None:
    """The stepper (the RL environment's path: preallocated for the LSTM) gives step's logits to the bit."""
    model = _model(cfg)
    tokens = torch.randint(0, 38, (batch, 20), generator=torch.Generator().manual_seed(2))
    state = model.initial_state(batch)
    with torch.no_grad():
        step = model.stepper(batch)
        for t in range(tokens.shape[1]):
            expected, state = model.step(tokens[:, t], state)
            assert torch.equal(step(tokens[:, t]), expected), t


def test_stepper_rejects_a_sequence() -> None:
    step = _model(ARCHS[0]).stepper(2)
    with pytest.raises(ValueError, match="shape"):
        step(torch.zeros(2, 3, dtype=torch.int64))


@pytest.mark.parametrize("arch", ["lstm", "gru", "transformer"])
def test_forward_continues_from_a_state(arch: str) -> None:
    model = _model({"arch": arch, "hidden_size": 16, "num_heads": 2})
    tokens = torch.randint(0, 38, (3, 12), generator=torch.Generator().manual_seed(2))
    whole, _ = model(tokens)
    _, mid = model(tokens[:, :5])
    rest, _ = model(tokens[:, 5:], mid)
    torch.testing.assert_close(rest, whole[:, 5:], atol=2e-5, rtol=1e-5)


def test_lstm_step_is_the_one_hot_lstm_cell() -> None:
    # The lookup-table step must be exactly the maths of torch's LSTM cell on a one-hot input.
    model = _model({"arch": "lstm", "hidden_size": 8})
    cell = torch.nn.LSTMCell(38, 8)
    cell.load_state_dict({k[:-3]: v for k, v in model.rnn.state_dict().items()})
    tokens = torch.tensor([0, 1, 37, 14])
    h, c = torch.randn(4, 8), torch.randn(4, 8)
    logits, (h1, c1) = model.step(tokens, (h[None], c[None]))
    h_ref, c_ref = cell(torch.nn.functional.one_hot(tokens, 38).float(), (h, c))
    torch.testing.assert_close(h1[0], h_ref)
    torch.testing.assert_close(c1[0], c_ref)
    torch.testing.assert_close(logits, model.out(h_ref))


def test_step_gradients_reach_input_weights() -> None:
    model = build_prior({"arch": "lstm", "hidden_size": 8}).train()
    logits, _ = model.step(torch.tensor([3, 4]), model.initial_state(2))
    logits.sum().backward()
    grad = model.rnn.weight_ih_l0.grad
    assert grad is not None
    # Only the columns of the two input classes receive a gradient (one-hot input).
    assert set(torch.nonzero(grad.abs().sum(0)).flatten().tolist()) == {3, 4}


def test_state_helpers_index_the_batch_on_dimension_1() -> None:
    model = _model({"arch": "lstm", "hidden_size": 8, "num_layers": 2})
    tokens = torch.tensor([[2, 5, 9], [3, 3, 3], [37, 0, 1]])
    _, state = model(tokens)
    assert state[0].shape == (2, 3, 8)
    sub = select_state(state, torch.tensor([2, 0]))
    _, alone = model(tokens[[2, 0]])
    for a, b in zip(sub, alone, strict=True):
        torch.testing.assert_close(a, b)
    joined = cat_states([select_state(state, 0), select_state(state, slice(1, 3))])
    for a, b in zip(joined, state, strict=True):
        assert torch.equal(a, b)
    zero = model.initial_state(3)
    mixed = where_state(torch.tensor([True, False, True]), state, zero)
    assert torch.equal(mixed[1][:, 0], state[1][:, 0]) and torch.equal(mixed[1][:, 1], zero[1][:, 1])


def test_model_config_rebuilds_the_same_shapes() -> None:
    model = build_prior({"arch": "gru", "hidden_size": 12, "num_layers": 2})
    cfg = model.model_config()
    assert cfg["arch"] == "gru" and cfg["hidden_size"] == 12 and cfg["vocab_size"] == 38
    again = build_prior(cfg)
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_default_is_the_papers_note_rnn() -> None:
    model = build_prior(ModelConfig())
    assert model.rnn.hidden_size == 100 and model.rnn.num_layers == 1 and model.vocab_size == 38
    assert model.out.out_features == 38


@pytest.mark.parametrize(
    "cfg, words",
    [
        ({"arch": "mamba"}, "arch"),
        ({"hidden_size": 0}, "hidden_size"),
        ({"dropout": 1.5}, "dropout"),
        ({"arch": "transformer", "hidden_size": 10, "num_heads": 4}, "multiple"),
        ({"colour": "red"}, "unknown setting"),
    ],
)
def test_bad_model_configs_are_config_errors(cfg: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        build_prior(cfg)


def test_step_rejects_a_sequence() -> None:
    model = _model({"arch": "lstm", "hidden_size": 8})
    with pytest.raises(ValueError, match=r"\(B,\)"):
        model.step(torch.zeros(2, 3, dtype=torch.long), model.initial_state(2))


def test_benchmark_quick_runs() -> None:
    from rltuner.benchmarks.prior import measure

    results = measure(quick=True)
    assert [r["unit"] for r in results] == ["note-steps/s", "ms", "note-steps/s"]
    assert all(r["value"] > 0 for r in results)


@pytest.mark.parametrize(
    "cfg", ARCHS, ids=lambda c: f"{c['arch']}-{c.get('num_layers', 1)}-{c.get('context', '')}"
)
def test_stepper_continues_from_a_state_exactly(cfg: dict) -> None:
    """A stepper started from the state after a primer (the sampler's use) gives step's logits to the bit, and
    leaves the state it was given unchanged."""
    model = _model(cfg)
    tokens = torch.randint(0, 38, (3, 12), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        _, state = model(tokens[:, :4])
        kept = tuple(s.clone() for s in state)
        step = model.stepper(3, state=state)
        current = state
        for t in range(4, tokens.shape[1]):
            expected, current = model.step(tokens[:, t], current)
            assert torch.equal(step(tokens[:, t]), expected), t
    assert all(torch.equal(a, b) for a, b in zip(state, kept, strict=True))
