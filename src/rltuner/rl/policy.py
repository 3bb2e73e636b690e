"""A tuned model as a samplable Prior: its logits are the logits of the algorithm's stochastic policy.

Q and RL-only: softmax(Q); Psi: softmax(Psi); G: softmax(log p(a|s) + G(s, a)). So the generic sampler
(``rltuner.models.sampling.sample``) and everything else that takes a Prior works on a tuned model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import torch

from rltuner.domains.base import State
from rltuner.errors import CheckpointError
from rltuner.models.checkpoint import prior_from_tensors, read_checkpoint
from rltuner.models.prior import Stepper
from rltuner.rl.targets import get_algorithm

TUNED_KIND = "tuned"


class TunedPolicy(torch.nn.Module):
    """The stochastic policy of a tuned Q-network, behind the Prior interface.

    Args:
        q_net: the trained network (Prior interface; its outputs are Q, Psi or G values).
        prior: the frozen Reward RNN; only G-learning's policy reads it.
        algorithm: a key of :data:`rltuner.rl.targets.ALGORITHMS`.
    """

    def __init__(self, q_net: torch.nn.Module, prior: torch.nn.Module | None, algorithm: str) -> None:
        super().__init__()
        self.algo = get_algorithm(algorithm)
        if self.algo.needs_prior_values and prior is None:
            raise CheckpointError(f"a {algorithm} policy needs the prior (Reward RNN) weights")
        self.q_net = q_net
        self.prior = prior if self.algo.needs_prior_values else None
        self.algorithm = algorithm
        self.vocab_size = int(q_net.vocab_size)  # type: ignore[arg-type]
        self._n_q_state = len(q_net.initial_state(1))  # type: ignore[operator]

    def initial_state(self, batch_size: int, device: Any = None) -> State:
        q_state = tuple(self.q_net.initial_state(batch_size, device=device))  # type: ignore[operator]
        if self.prior is None:
            return q_state
        return q_state + tuple(self.prior.initial_state(batch_size, device=device))  # type: ignore[operator]

    def _split(self, state: State | None) -> tuple[State | None, State | None]:
        if state is None:
            return None, None
        return tuple(state[: self._n_q_state]), tuple(state[self._n_q_state :])

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """Policy logits (B, T, V) for tokens (B, T), and the state after them."""
        q_state, p_state = self._split(state)
        outputs, q_state = self.q_net(tokens, q_state)
        prior_log_p = None
        if self.prior is not None:
            prior_logits, p_state = self.prior(tokens, p_state)
            prior_log_p = torch.log_softmax(prior_logits, dim=-1)
        logits = self.algo.policy_logits(outputs, prior_log_p)
        return logits, tuple(q_state) + (tuple(p_state) if self.prior is not None else ())  # type: ignore[arg-type]

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Policy logits (B, V) for one token per sequence (B,)."""
        q_state, p_state = self._split(state)
        outputs, q_state = self.q_net.step(tokens, q_state)  # type: ignore[operator]
        prior_log_p = None
        if self.prior is not None:
            prior_logits, p_state = self.prior.step(tokens, p_state)  # type: ignore[operator]
            prior_log_p = torch.log_softmax(prior_logits, dim=-1)
        logits = self.algo.policy_logits(outputs, prior_log_p)
        return logits, tuple(q_state) + (tuple(p_state) if self.prior is not None else ())  # type: ignore[arg-type]

    @torch.no_grad()
    def stepper(self, batch_size: int, device: Any = None, state: State | None = None) -> Stepper:
        """:meth:`step` through the networks' own steppers (``Prior.stepper``: preallocated for the LSTM),
        from ``state`` (default :meth:`initial_state`); the same logits to the bit as :meth:`step`."""
        q_state, p_state = self._split(state)
        q_step = self.q_net.stepper(batch_size, device, q_state)  # type: ignore[operator]
        if self.prior is None:
            return cast(Stepper, q_step)
        p_step = self.prior.stepper(batch_size, device, p_state)  # type: ignore[operator]

        def step(tokens: torch.Tensor) -> torch.Tensor:
            outputs = q_step(tokens)
            prior_log_p = torch.log_softmax(p_step(tokens), dim=-1)
            return self.algo.policy_logits(outputs, prior_log_p)

        return step

    def model_config(self) -> dict[str, Any]:
        return {
            "arch": "tuned",
            "algorithm": self.algorithm,
            "q_network": self.q_net.model_config(),  # type: ignore[operator]
            "prior": self.prior.model_config() if self.prior is not None else None,  # type: ignore[operator]
        }


def policy_checkpoint(
    q_net: torch.nn.Module, prior: torch.nn.Module, algorithm: str, extra_meta: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and meta of a self-describing tuned checkpoint (kind "tuned").

    The tensors are the Q-network's weights under ``q_network.`` and the prior's under ``prior.`` (G-learning's
    policy needs the prior; the others keep it for evaluation against the Reward RNN).
    """
    tensors = {f"q_network.{k}": v.detach().cpu().contiguous() for k, v in q_net.state_dict().items()}
    tensors.update({f"prior.{k}": v.detach().cpu().contiguous() for k, v in prior.state_dict().items()})
    meta = {
        "kind": TUNED_KIND,
        "algorithm": algorithm,
        "q_network_config": q_net.model_config(),  # type: ignore[operator]
        "prior_config": prior.model_config(),  # type: ignore[operator]
        **extra_meta,
    }
    return tensors, meta


def policy_from_checkpoint(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> TunedPolicy:
    """Rebuild a :class:`TunedPolicy` from what :func:`policy_checkpoint` produced."""
    if meta.get("kind") != TUNED_KIND:
        raise CheckpointError(f"not a tuned model (kind {meta.get('kind')!r})")
    try:
        q_config, p_config = _as_dict(meta["q_network_config"]), _as_dict(meta["prior_config"])
        algorithm = str(meta["algorithm"])
    except (KeyError, TypeError, ValueError):
        raise CheckpointError("tuned checkpoint lacks its algorithm or model configs") from None
    q_net = prior_from_tensors(_strip(tensors, "q_network."), q_config, "tuned checkpoint (Q-network)")
    prior = prior_from_tensors(_strip(tensors, "prior."), p_config, "tuned checkpoint (prior)")
    q_net.eval()
    prior.eval()
    for p in prior.parameters():
        p.requires_grad_(False)
    return TunedPolicy(q_net, prior, algorithm)


def load_policy(path: str | Path) -> TunedPolicy:
    """Load a tuned model (``RUN_DIR/model.safetensors``) as a samplable Prior.

    Raises:
        CheckpointError: the file is missing, corrupt or not a tuned model.
    """
    tensors, meta = read_checkpoint(path)
    return policy_from_checkpoint(tensors, meta)


def _as_dict(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
