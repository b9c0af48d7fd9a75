"""Mixture-of-Depths token routing (Raposo et al. 2024), the MoD baseline of the paper's Table 1.

In every layer the MoD router scores the tokens; the top c = round(mod_capacity * S) of them, the cognition
token always among them, go through the block (attending causally among themselves at their own rotary
positions), the others pass unchanged on the residual stream. Choices where our setting differs from
language-model pretraining, each for a reason:

- The top-c is taken over the whole prompt at once. MoD's non-causal top-c needs a predictor when decoding
  token by token; we run one prefill per control step, so it is exact here.
- Processed tokens get x + w (block(x) - x) with w a straight-through weight: value exactly 1, gradient
  sigmoid(r). MoD multiplies by the raw router logit r; a weight of exactly 1 keeps the function of the
  all-layers model MoD is fine-tuned from (like MoLe's 0/1 gate, Eq. 7) while the router still learns.
- Padding tokens rank last (they are masked keys), so real tokens fill the capacity first.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mole_inference.model.llm import MoLeLLM
from mole_inference.model.routers import MoDRouter


def mod_capacity(seq_len: int, fraction: float) -> int:
    """Tokens c each layer processes out of `seq_len` (at least 1: the cognition token)."""
    return max(1, min(seq_len, round(fraction * seq_len)))


def select_tokens(scores: torch.Tensor, key_mask: torch.Tensor, c: int) -> torch.Tensor:
    """Positions (B, c), ascending, of the top-c tokens by `scores` (B, S); the last (cognition) token always."""
    s = scores.shape[1]
    ranked = scores[:, :-1].masked_fill(~key_mask[:, :-1], torch.finfo(scores.dtype).min)
    top = torch.topk(ranked, c - 1, dim=-1).indices  # (B, c - 1)
    last = torch.full_like(top[:, :1], s - 1)
    return torch.cat([top, last], dim=1).sort(dim=-1).values


def mod_layer(llm: MoLeLLM, router: MoDRouter, idx: int, h: torch.Tensor, key_mask: torch.Tensor, c: int,
              train: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer `idx` run on the router's top-c tokens of h (B, S, D); returns (h (B, S, D), positions (B, c))."""
    scores = router.token_scores(idx, h)  # (B, S)
    pos = select_tokens(scores.detach(), key_mask, c)  # (B, c)
    gather = pos.unsqueeze(-1).expand(-1, -1, h.shape[-1])  # (B, c, D)
    sel = h.gather(1, gather)
    out = llm.run_layer_on(idx, sel, key_mask.gather(1, pos), pos)  # (B, c, D)
    if train:
        w = torch.sigmoid(scores.gather(1, pos)).unsqueeze(-1)  # (B, c, 1)
        out = sel + (1.0 + (w - w.detach())) * (out - sel)  # value: out; gradient reaches the router
    return h.scatter(1, gather, out), pos


def mod_forward(llm: MoLeLLM, router: MoDRouter, h: torch.Tensor, key_mask: torch.Tensor, fraction: float,
                layers: Sequence[int] | None = None, train: bool = False) -> torch.Tensor:
    """Final-norm hidden states (B, S, D) with every layer (or `layers`) run on its top-c tokens."""
    c = mod_capacity(h.shape[1], fraction)
    for i in range(len(llm.layers)) if layers is None else sorted(layers):
        h, _ = mod_layer(llm, router, i, h, key_mask, c, train)
    return llm.norm(h)
