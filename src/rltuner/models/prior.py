"""The Prior interface: every melody model the tuner can work with, and the registry that builds them.

A prior is a ``torch.nn.Module`` with two views of the same distribution (they agree to float tolerance):

* ``forward(tokens (B, T), state)`` scores a batch of whole sequences: logits at every step (training,
  evaluation, Figure 4 of the paper);
* ``step(tokens (B,), state)`` advances B sequences by one step with an explicit state (the RL environment's
  hot path).

Outputs are unnormalised logits over the vocabulary (for a tuned Q-network the same outputs are read as action
values). ``logits[:, t]`` is the distribution of the token *after* ``tokens[:, t]``.

States are tuples of tensors. In every rltuner prior each state tensor has the batch on dimension 1 (as
``torch.nn.LSTM``'s ``(h, c)``); code outside a model never looks inside a state, it only uses
:func:`select_state`, :func:`cat_states` and :func:`where_state`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from rltuner.config import check_types, field, from_dict, to_dict
from rltuner.encoding import NUM_CLASSES
from rltuner.errors import ConfigError

State = tuple[Tensor, ...]
Stepper = Callable[[Tensor], Tensor]
"""``stepper(tokens (B,)) -> logits (B, V)``: :meth:`Prior.stepper`, one step with the state kept inside."""


class StatefulStepper:
    """A :data:`Stepper` that also shows the state it keeps: ``stepper(tokens) -> logits`` as any stepper, and
    ``stepper.state()`` the state after the last call (before the first: the starting state).

    The tensors ``state()`` returns may be the stepper's live buffers, overwritten by the next call: copy what
    must be kept (the RL environment copies the acting network's state at every step when the replay stores
    states: ``TuneConfig.stored_states``).
    """

    __slots__ = ("_step", "state")

    def __init__(self, step: Stepper, state: Callable[[], State]) -> None:
        self._step = step
        self.state = state

    def __call__(self, tokens: Tensor) -> Tensor:
        return self._step(tokens)


Arch = Literal["lstm", "gru", "transformer"]

# arch name -> "module:class"; imported lazily so a GRU user never imports the Transformer module.
_REGISTRY: dict[str, str] = {
    "lstm": "rltuner.models.rnn:LSTMPrior",
    "gru": "rltuner.models.rnn:GRUPrior",
    "transformer": "rltuner.models.transformer:TransformerPrior",
}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a prior. The defaults are the paper's Note RNN (one LSTM layer of 100 cells)."""

    arch: Arch = field("lstm", "Model kind: lstm (the paper's Note RNN), gru, or transformer.")  # noqa: RUF009
    vocab_size: int = field(NUM_CLASSES, "Number of classes in and out (38 for the melody grid).")
    hidden_size: int = field(100, "LSTM/GRU cells per layer, or the Transformer's model width.")
    num_layers: int = field(1, "Recurrent layers, or Transformer blocks.")
    dropout: float = field(0.0, "Dropout between layers during training (0 = none, as in the paper).")
    num_heads: int = field(4, "Transformer only: attention heads (must divide hidden_size).")
    context: int = field(256, "Transformer only: how many past tokens each step attends to.")
    ff_mult: int = field(4, "Transformer only: width of the feed-forward layer as a multiple of hidden_size.")

    def validate(self) -> None:
        """Raise :class:`ConfigError` if a value is out of range."""
        check_types(self)
        if self.arch not in _REGISTRY:
            raise ConfigError(f"arch: unknown model kind {self.arch!r}; known: {', '.join(_REGISTRY)}")
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "context", "ff_mult"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.vocab_size < 2:
            raise ConfigError(f"vocab_size must be at least 2, got {self.vocab_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        from rltuner.limits import check_model_size

        check_model_size(
            self.arch, self.vocab_size, self.hidden_size, self.num_layers, self.ff_mult, self.context
        )  # before anything of that size is allocated
        if self.arch == "transformer" and self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_heads ({self.num_heads})"
            )

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


class Prior(torch.nn.Module):
    """Base class of every melody model (see the module docstring for the contract).

    Subclasses set ``vocab_size`` and ``config`` and implement the four methods below.
    """

    vocab_size: int
    config: ModelConfig

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        """The state before the first token: a tuple of tensors with the batch on dimension 1."""
        raise NotImplementedError

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Score whole sequences.

        Args:
            tokens: int64 (B, T) classes fed as input.
            state: the state before ``tokens[:, 0]`` (``None``: :meth:`initial_state`).

        Returns:
            logits (B, T, V) (``logits[:, t]`` predicts the token after ``tokens[:, t]``) and the state after
            the last token.
        """
        raise NotImplementedError

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """Advance B sequences by one token: int64 (B,) -> logits (B, V) and the new state."""
        raise NotImplementedError

    def stepper(
        self, batch_size: int, device: torch.device | str | None = None, state: State | None = None
    ) -> Stepper:
        """A closure that steps B sequences from ``state`` (default :meth:`initial_state`), keeping the state
        itself.

        ``stepper(tokens (B,)) -> logits (B, V)`` equals :meth:`step` on the state so far. It may precompute
        from the weights and reuse its buffers, so it is only valid while the weights do not change, and the
        logits it returns only until its next call (the RL environment builds one per rollout, under
        ``torch.no_grad``; the sampler one per batch, from the state after the primer). ``state`` itself is
        never changed. This default wraps :meth:`step`; the LSTM overrides it with a preallocated path. Both
        return a :class:`StatefulStepper` (its ``state()``: the state so far).
        """
        box = [self.initial_state(batch_size, device) if state is None else state]

        def step(tokens: Tensor) -> Tensor:
            logits, box[0] = self.step(tokens, box[0])
            return logits

        return StatefulStepper(step, lambda: box[0])

    def model_config(self) -> dict[str, Any]:
        """Everything needed to rebuild this model with :func:`build_prior` (weights aside)."""
        return self.config.to_dict()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def log_probs(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Like :meth:`forward`, but log-probabilities (B, T, V) instead of logits."""
        logits, state = self(tokens, state)
        return torch.log_softmax(logits, dim=-1), state


def model_config_from(config: ModelConfig | dict[str, Any]) -> ModelConfig:
    """Parse and validate a model config given as a dict (e.g. from a checkpoint) or a ModelConfig."""
    if isinstance(config, ModelConfig):
        config.validate()
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"a model config must be a mapping, got {type(config).__name__}")
    return from_dict(ModelConfig, config)


def build_prior(config: ModelConfig | dict[str, Any]) -> Prior:
    """Build an untrained prior from its config (``arch`` picks the class).

    Raises:
        ConfigError: unknown ``arch`` or invalid sizes.
    """
    cfg = model_config_from(config)
    module_name, cls_name = _REGISTRY[cfg.arch].split(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    prior: Prior = cls(cfg)
    return prior


def select_state(state: State, index: Tensor | slice | int) -> State:
    """The state of a subset of the batch (``index`` applied to dimension 1 of every tensor)."""
    if isinstance(index, int):
        index = slice(index, index + 1)
    return tuple(s[:, index] for s in state)


def cat_states(states: list[State]) -> State:
    """Concatenate states of several batches (along the batch dimension 1)."""
    return tuple(torch.cat(parts, dim=1) for parts in zip(*states, strict=True))


def where_state(mask: Tensor, a: State, b: State) -> State:
    """Per-sequence choice between two states of equal shape: ``a`` where ``mask`` (B,) is true, else ``b``."""
    out = []
    for sa, sb in zip(a, b, strict=True):
        m = mask.view(1, -1, *([1] * (sa.dim() - 2)))
        out.append(torch.where(m, sa, sb))
    return tuple(out)
