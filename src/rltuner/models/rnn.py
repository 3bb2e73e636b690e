"""LSTM and GRU Note RNNs (the paper's Note RNN: one LSTM layer of 100 cells, a linear layer to 38 logits).

The weights are those of ``torch.nn.LSTM`` / ``torch.nn.GRU`` over a one-hot input, so a checkpoint holds the
usual parameter names. Two paths compute the same maths:

* ``forward`` runs the fused ``torch.nn.LSTM`` kernel over the one-hot sequence (fast for training);
* ``step`` is a hand-written cell: a one-hot input times ``W_ih`` is just a column of ``W_ih``, so the input
  projection (plus both biases) is one row lookup in a (V, 4H) table instead of a matmul, followed by one
  ``addmm`` for the recurrent part and a few element-wise kernels. This is the RL environment's hot path.

From :data:`SIGMOID_TANH_MIN_BATCH` sequences on, the LSTM cell computes its two tanh as ``2 sigmoid(2x) - 1``:
torch 2.13's CPU ``tanh`` is not vectorised (65 us for 256 x 100 floats, the same with
``ATEN_CPU_CAPABILITY=default``, against 11 us for ``sigmoid``; 2-core AMD EPYC), and it was a fifth of an
acting step at 256 melodies. The cell gate's pre-activation is doubled (exact: a power of two; the stepper
doubles those weight rows once, ``step`` the pre-activations), so the one sigmoid over all four gates gives
it. The identity is exact in real numbers; in fp32 its absolute error is at most ~2e-7 (cancellation near 0),
the size of the matmuls' own rounding. Below that batch size the step is dispatch-bound and keeps
``torch.tanh`` (fewer kernels); so do GPUs (their tanh is vectorised) and bf16 autocast (whose rounding of
``2 sigmoid(2x) - 1`` near 0 would be 2^-8).
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor

from rltuner.models.prior import ModelConfig, Prior, State, StatefulStepper, Stepper

SIGMOID_TANH_MIN_BATCH = 16
"""Sequences per LSTM step from which tanh is computed through sigmoid on the CPU (the module's docstring)."""


def _tanh_via_sigmoid(batch: int, like: Tensor) -> bool:
    """Whether an LSTM step of ``batch`` sequences on ``like``'s device takes tanh through sigmoid: on the
    CPU (whose torch tanh is not vectorised; a GPU's is) from :data:`SIGMOID_TANH_MIN_BATCH` sequences."""
    return like.device.type == "cpu" and batch >= SIGMOID_TANH_MIN_BATCH


class _RNNPrior(Prior):
    """Shared parts of the LSTM and GRU priors: config, output layer, input lookup table."""

    _gates: int  # 4 for the LSTM, 3 for the GRU
    rnn: torch.nn.LSTM | torch.nn.GRU

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.hidden_size = config.hidden_size
        self.num_layers = config.num_layers
        self.out = torch.nn.Linear(config.hidden_size, config.vocab_size)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        dev = self.device if device is None else torch.device(device)
        dtype = self.out.weight.dtype
        zeros = torch.zeros(self.num_layers, batch_size, self.hidden_size, device=dev, dtype=dtype)
        return (zeros,) if self._gates == 3 else (zeros, zeros.clone())

    @property
    def state_size(self) -> int:
        """Floats per sequence in :meth:`flatten_state`'s rows: every state tensor's layers side by side."""
        return (2 if self._gates == 4 else 1) * self.num_layers * self.hidden_size

    def flatten_state(self, state: State, out: Tensor | None = None) -> Tensor:
        """(B, :attr:`state_size`) rows of a state ((h, c) or (h,), each (num_layers, B, H)): for each tensor,
        its layers in order. A replay memory keeps recurrent states in this form (``TuneConfig.stored_states``).
        ``out``: (B, state_size) to write them to (the RL environment's record: for one layer, one copy per
        tensor)."""
        batch = state[0].shape[1]
        if out is None:
            return torch.cat([s.transpose(0, 1).reshape(batch, -1) for s in state], dim=1)
        width = self.num_layers * self.hidden_size
        for i, s in enumerate(state):
            out[:, i * width : (i + 1) * width].copy_(s.transpose(0, 1).reshape(batch, width))
        return out

    def unflatten_state(self, rows: Tensor) -> State:
        """The state whose :meth:`flatten_state` is ``rows`` (views of ``rows``, not copies)."""
        parts = rows.view(rows.shape[0], -1, self.num_layers, self.hidden_size).permute(1, 2, 0, 3)
        return tuple(parts.unbind(0))

    def _time_major_inputs(self, tokens: Tensor) -> Tensor:
        """(T, B, V) one-hot inputs of (B, T) tokens, laid out time-major as the RNN kernels want them.

        The RNN runs time-major (``batch_first=False``) and :meth:`_logits` hands back a (B, T, V) view: with
        ``batch_first=True`` torch copies the inputs and the outputs between the layouts on every call, and a
        linear layer over the (non-contiguous) batch-first view becomes a batched matmul over an expanded copy
        of its weight (in bf16 autocast). The rows are gathered from an identity matrix (``F.one_hot`` zero-fills,
        scatters and scans the tokens' range: 74 against 22 us at the fast preset's 32 x 33 tokens). The same
        values as before in fp32.
        """
        eye = torch.eye(self.vocab_size, dtype=self.out.weight.dtype, device=tokens.device)
        rows = eye.index_select(0, tokens.t().reshape(-1))  # (T * B, V)
        return rows.view(tokens.shape[1], tokens.shape[0], self.vocab_size)

    def _logits(self, h: Tensor) -> Tensor:
        """(B, T, V) logits (a transposed view) of the RNN's time-major outputs ``h`` (T, B, H)."""
        return self.out(h).transpose(0, 1)

    def _input_table(self, with_hh_bias: bool) -> Tensor:
        """(V, G*H): row v = W_ih[:, v] + b_ih (+ b_hh), the layer-0 input projection of one-hot class v.

        Rebuilt on every call (one small kernel, V x G*H): caching it would go stale when a caller updates
        the weights in place through ``.data`` (which bypasses the version counters), e.g. a soft target update.
        Row-major: ``w_ih.t() + bias`` keeps the transposed (column-major) layout, and gathering 1,024 rows
        from that took ~0.45 ms a step in the sampler against ~0.04 ms from a row-major table (the same values).
        """
        w_ih = cast(Tensor, self.rnn.weight_ih_l0)
        bias = cast(Tensor, self.rnn.bias_ih_l0)
        if with_hh_bias:
            bias = bias + cast(Tensor, self.rnn.bias_hh_l0)
        return (w_ih.t() + bias).contiguous()

    def _check_tokens(self, tokens: Tensor, ndim: int) -> None:
        if tokens.dim() != ndim:
            shape = "(B, T)" if ndim == 2 else "(B,)"
            raise ValueError(f"tokens must have shape {shape}, got {tuple(tokens.shape)}")


class LSTMPrior(_RNNPrior):
    """The Note RNN: ``num_layers`` LSTM layers of ``hidden_size`` cells, then a linear layer to V logits.

    State: ``(h, c)``, each (num_layers, B, hidden_size).
    """

    _gates = 4

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.rnn = torch.nn.LSTM(
            config.vocab_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self._check_tokens(tokens, 2)
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        h, (h_n, c_n) = self.rnn(self._time_major_inputs(tokens), (state[0], state[1]))  # h: (T, B, H)
        return self._logits(h), (h_n, c_n)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        self._check_tokens(tokens, 1)
        h_prev, c_prev = state
        rnn = self.rnn
        via_sigmoid = _tanh_via_sigmoid(tokens.shape[0], h_prev)
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        x: Tensor | None = None
        for layer in range(self.num_layers):
            w_hh = getattr(rnn, f"weight_hh_l{layer}")
            if layer == 0:
                table = self._input_table(with_hh_bias=True)
                gates = torch.addmm(table[tokens], h_prev[0], w_hh.t())  # (B, 4H)
            else:
                bias = getattr(rnn, f"bias_ih_l{layer}") + getattr(rnn, f"bias_hh_l{layer}")
                w_ih = getattr(rnn, f"weight_ih_l{layer}")
                assert x is not None
                gates = torch.addmm(bias, x, w_ih.t()).addmm_(h_prev[layer], w_hh.t())
            # PyTorch's gate order: input, forget, cell (g), output.
            hsz = self.hidden_size
            fast = (
                via_sigmoid and gates.dtype == torch.float32
            )  # not under bf16 autocast: fp32's accuracy only
            if fast:  # tanh(x) = 2 sigmoid(2x) - 1; the cell gate doubled in place (exact, as the stepper's)
                gates[:, 2 * hsz : 3 * hsz].mul_(2)
            sig = torch.sigmoid(gates)
            g = sig[:, 2 * hsz : 3 * hsz] * 2 - 1 if fast else torch.tanh(gates[:, 2 * hsz : 3 * hsz])
            c = torch.addcmul(sig[:, hsz : 2 * hsz] * c_prev[layer], sig[:, :hsz], g)
            x = sig[:, 3 * hsz :] * (torch.sigmoid(c * 2) * 2 - 1 if fast else torch.tanh(c))
            hs.append(x)
            cs.append(c)
        assert x is not None
        logits = torch.addmm(self.out.bias, x, self.out.weight.t())  # (B, V)
        return logits, (_stack(hs), _stack(cs))

    @torch.no_grad()
    def stepper(
        self, batch_size: int, device: torch.device | str | None = None, state: State | None = None
    ) -> Stepper:
        """:meth:`step` with its state, input table and every intermediate preallocated (one layer).

        The same kernels on the same operands as :meth:`step` (so the same logits to the bit), but no
        allocation and no table rebuild per call: at one melody (the paper's schedule) the step is a dozen
        small kernels whose cost is mostly allocation and dispatch; at the sampler's 1,024 melodies it is
        ~1.5x faster than :meth:`step`. Multi-layer LSTMs use the generic wrapper.
        """
        if self.num_layers != 1:
            return super().stepper(batch_size, device, state)
        if state is None:
            state = self.initial_state(batch_size, device)
        h, c = state[0][0].clone(), state[1][0].clone()  # (B, H), updated in place (the caller's stay)
        hsz = self.hidden_size
        table = self._input_table(with_hh_bias=True)  # (V, 4H), fixed while the weights are
        # Detached views (no autograd, no copy): the same operands, hence the same kernels, as step's.
        w_hh = cast(Tensor, self.rnn.weight_hh_l0).detach()
        via_sigmoid = _tanh_via_sigmoid(batch_size, table) and table.dtype == torch.float32
        if via_sigmoid:  # the cell gate's rows doubled once (exact), so the gates' sigmoid gives sigmoid(2x)
            table, w_hh = table.clone(), w_hh.clone()
            table[:, 2 * hsz : 3 * hsz].mul_(2)
            w_hh[2 * hsz : 3 * hsz].mul_(2)
        w_hh_t = w_hh.t()
        w_out_t, b_out = self.out.weight.detach().t(), self.out.bias.detach()
        gates = table.new_empty(batch_size, 4 * hsz)
        sig = torch.empty_like(gates)
        g = table.new_empty(batch_size, hsz)
        tanh_c = torch.empty_like(g)
        logits = table.new_empty(batch_size, self.vocab_size)

        def step(tokens: Tensor) -> Tensor:
            self._check_tokens(tokens, 1)
            torch.index_select(table, 0, tokens, out=gates)
            gates.addmm_(h, w_hh_t)
            torch.sigmoid(gates, out=sig)
            if via_sigmoid:
                torch.mul(sig[:, 2 * hsz : 3 * hsz], 2, out=g).sub_(1)
            else:
                torch.tanh(gates[:, 2 * hsz : 3 * hsz], out=g)
            c.mul_(sig[:, hsz : 2 * hsz]).addcmul_(sig[:, :hsz], g)
            if via_sigmoid:
                torch.sigmoid(torch.mul(c, 2, out=tanh_c), out=tanh_c).mul_(2).sub_(1)
            else:
                torch.tanh(c, out=tanh_c)
            torch.mul(sig[:, 3 * hsz :], tanh_c, out=h)
            return torch.addmm(b_out, h, w_out_t, out=logits)

        return StatefulStepper(step, lambda: (h[None], c[None]))


class GRUPrior(_RNNPrior):
    """A GRU variant of the Note RNN. State: ``(h,)`` of shape (num_layers, B, hidden_size)."""

    _gates = 3

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.rnn = torch.nn.GRU(
            config.vocab_size,
            config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        self._check_tokens(tokens, 2)
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        h, h_n = self.rnn(self._time_major_inputs(tokens), state[0])  # h: (T, B, H)
        return self._logits(h), (h_n,)

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        self._check_tokens(tokens, 1)
        (h_prev,) = state
        rnn = self.rnn
        hsz = self.hidden_size
        hs: list[Tensor] = []
        x: Tensor | None = None
        for layer in range(self.num_layers):
            w_hh = getattr(rnn, f"weight_hh_l{layer}")
            b_hh = getattr(rnn, f"bias_hh_l{layer}")
            if layer == 0:
                gi = self._input_table(with_hh_bias=False)[tokens]  # (B, 3H)
            else:
                assert x is not None
                gi = torch.addmm(
                    getattr(rnn, f"bias_ih_l{layer}"), x, getattr(rnn, f"weight_ih_l{layer}").t()
                )
            gh = torch.addmm(b_hh, h_prev[layer], w_hh.t())  # (B, 3H)
            # PyTorch's gate order: reset, update, new; the reset gate scales only the recurrent part of "new".
            rz = torch.sigmoid(gi[:, : 2 * hsz] + gh[:, : 2 * hsz])
            n = torch.tanh(torch.addcmul(gi[:, 2 * hsz :], rz[:, :hsz], gh[:, 2 * hsz :]))
            z = rz[:, hsz:]
            x = torch.lerp(n, h_prev[layer], z)  # (1 - z) * n + z * h
            hs.append(x)
        assert x is not None
        logits = torch.addmm(self.out.bias, x, self.out.weight.t())
        return logits, (_stack(hs),)


def _stack(layers: list[Tensor]) -> Tensor:
    """(L, B, H) from L tensors (B, H); a view, not a copy, for the usual single layer."""
    return layers[0].unsqueeze(0) if len(layers) == 1 else torch.stack(layers)
