"""A small causal Transformer behind the Prior interface (an alternative to the Note RNN).

Positions are encoded by ALiBi (a per-head linear penalty on the distance between query and key) instead of
absolute position embeddings, and each token attends to at most ``context`` tokens (itself included). With
both, a step only depends on the last ``context`` keys/values, so the step path keeps a bounded key/value
cache and melodies of any length can be scored and sampled; ``forward`` and repeated ``step`` agree exactly
as for the RNNs.

State: ``(k, v)``, each (num_layers, B, num_heads, t, head_dim) with t <= context: the cached keys and values
of the last t tokens (batch on dimension 1, as for every rltuner prior).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rltuner.models.prior import ModelConfig, Prior, State


def _alibi_slopes(num_heads: int) -> Tensor:
    """Geometric slopes 2^(-8 h / H), h = 1..H (the ALiBi paper's choice)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)])


class _Block(torch.nn.Module):
    """Pre-norm block: x + attn(ln(x)); x + ff(ln(x))."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.hidden_size
        self.num_heads = cfg.num_heads
        self.ln1 = torch.nn.LayerNorm(d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.proj = torch.nn.Linear(d, d)
        self.ln2 = torch.nn.LayerNorm(d)
        self.ff = torch.nn.Sequential(
            torch.nn.Linear(d, cfg.ff_mult * d), torch.nn.GELU(), torch.nn.Linear(cfg.ff_mult * d, d)
        )
        self.drop = torch.nn.Dropout(cfg.dropout)

    def forward(
        self, x: Tensor, k_cache: Tensor, v_cache: Tensor, bias: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, T, D); caches (B, H, t0, d); bias (H, T, t0 + T) -> x, all keys, all values (B, H, t0+T, d)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, self.num_heads, -1).transpose(1, 2) for z in (q, k, v))  # (B, H, T, d)
        k = torch.cat([k_cache, k], dim=2)
        v = torch.cat([v_cache, v], dim=2)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # (B, H, T, d)
        x = x + self.drop(self.proj(att.transpose(1, 2).reshape(b, t, d)))
        x = x + self.drop(self.ff(self.ln2(x)))
        return x, k, v


class TransformerPrior(Prior):
    """Causal Transformer: embedding, ``num_layers`` pre-norm blocks with ALiBi attention, linear to V logits."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.vocab_size = config.vocab_size
        self.context = config.context
        self.num_heads = config.num_heads
        self.head_dim = config.hidden_size // config.num_heads
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.blocks = torch.nn.ModuleList(_Block(config) for _ in range(config.num_layers))
        self.ln_f = torch.nn.LayerNorm(config.hidden_size)
        self.out = torch.nn.Linear(config.hidden_size, config.vocab_size)
        self.register_buffer("slopes", _alibi_slopes(config.num_heads), persistent=False)

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> State:
        dev = self.device if device is None else torch.device(device)
        shape = (len(self.blocks), batch_size, self.num_heads, 0, self.head_dim)
        empty = torch.zeros(shape, device=dev, dtype=self.out.weight.dtype)
        return empty, empty.clone()

    def _bias(self, t0: int, t: int, device: torch.device) -> Tensor:
        """(H, T, t0 + T): -slope * distance inside the window, -inf outside (future or too far back)."""
        q_pos = torch.arange(t0, t0 + t, device=device).view(-1, 1)
        k_pos = torch.arange(t0 + t, device=device).view(1, -1)
        slopes: Tensor = self.slopes  # type: ignore[assignment]
        dist = (q_pos - k_pos).to(slopes.dtype)  # (T, t0 + T)
        bias = -slopes.view(-1, 1, 1) * dist
        outside = (dist < 0) | (dist >= self.context)
        return bias.masked_fill(outside, float("-inf")).to(self.out.weight.dtype)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        if tokens.dim() != 2:
            raise ValueError(f"tokens must have shape (B, T), got {tuple(tokens.shape)}")
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        k_all, v_all = state
        t0 = k_all.shape[3]
        bias = self._bias(t0, tokens.shape[1], tokens.device)
        x = self.embed(tokens)  # (B, T, D)
        ks, vs = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, k_all[i], v_all[i], bias)
            # Only the last `context` - 1 keys can be seen by the next token (with itself: `context`).
            keep = max(self.context - 1, 0)
            ks.append(k[:, :, k.shape[2] - min(keep, k.shape[2]) :])
            vs.append(v[:, :, v.shape[2] - min(keep, v.shape[2]) :])
        logits = self.out(self.ln_f(x))
        return logits, (torch.stack(ks), torch.stack(vs))

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        if tokens.dim() != 1:
            raise ValueError(f"tokens must have shape (B,), got {tuple(tokens.shape)}")
        logits, state = self.forward(tokens.unsqueeze(1), state)
        return logits[:, 0], state
