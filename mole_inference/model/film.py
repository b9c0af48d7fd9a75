"""Instruction-conditioned image tokens (FiLM, Perez et al. 2018), an option beyond the paper (`vision.text_film`).

    img' = img * (1 + gamma(t)) + beta(t),   t = mean of the instruction's token embeddings (padding excluded)

Language-conditioned visuomotor policies (RT-1, BC-Z) condition their image features on the instruction this
way. In the MoLe-VLA prompt [image | text | cognition], a causal LLM lets the image tokens see no text, so "which
cube is the red one" must be found by attention from the text to the patches, which a small model trained from
scratch learns slowly (on our CPU-scale runs the colour word moved the predicted motion by under 1 mm after
2000 steps). FiLM gives every patch the instruction directly. The projection is zero-initialized, so the module
starts as the identity and can be added to a trained model. The router sees the unmodulated image tokens.

The mean of the embeddings is a bag of words: "stack the red cube on the blue cube" and "stack the blue cube on
the red cube" pool to the same vector, and policies trained with it went to either named cube (a swapped-order
probe moved the first motion to another cube in 0-12 % of frames). `vision.text_film_order` adds an ordered term:

    mlp:    t = mean_i e_i + mean_i MLP(e_i + p_i),   p_i a learned embedding of position i
    slots:  t = mean_i e_i + sum_i W_i e_i,            W_i a (D, D) map of its own for each position i

Both keep "red at 2, blue at 6" apart from "blue at 2, red at 6": `mlp` through the nonlinearity (few parameters,
but position and word must first learn to interact), `slots` linearly (T x D x D parameters; "the colour in slot
2" is one gradient step away). The last layer of either is zero-initialized, so a trained FiLM model gains it
unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class TextFiLM(nn.Module):
    """gamma, beta (B, D) from the pooled instruction; applied to image tokens (B, N, D). `order` ("mlp" or
    "slots", `vision.text_film_order`) adds the ordered term over `order_tokens` positions (llm.max_text_tokens)."""

    def __init__(self, width: int, order: str = "off", order_tokens: int = 0) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.to_scale_shift = nn.Linear(width, 2 * width)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)
        self.order_pos: nn.Parameter | None = None
        self.order_mlp: nn.Sequential | None = None
        self.order_slots: nn.Parameter | None = None
        if order == "mlp":
            self.order_pos = nn.Parameter(torch.zeros(1, order_tokens, width))
            nn.init.normal_(self.order_pos, std=0.02)
            self.order_mlp = nn.Sequential(nn.Linear(width, width), nn.GELU(approximate="tanh"),
                                           nn.Linear(width, width))
            nn.init.zeros_(self.order_mlp[-1].weight)
            nn.init.zeros_(self.order_mlp[-1].bias)
        elif order == "slots":
            self.order_slots = nn.Parameter(torch.zeros(order_tokens, width, width))  # (T, D_in, D_out)

    def forward(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Modulated image tokens (B, N, D)."""
        w = text_mask.to(text.dtype).unsqueeze(-1)  # (B, T, 1)
        n = w.sum(1).clamp_min(1.0)  # (B, 1)
        pooled = (text * w).sum(1) / n  # (B, D)
        if self.order_mlp is not None:  # the ordered terms (T <= llm.max_text_tokens, the tables' length)
            ordered = self.order_mlp(text + self.order_pos[:, : text.shape[1]].to(text.dtype))  # (B, T, D)
            pooled = pooled + (ordered * w).sum(1) / n
        elif self.order_slots is not None:
            slots = self.order_slots[: text.shape[1]].to(text.dtype)  # (T, D, D)
            pooled = pooled + torch.einsum("btd,tde->be", text * w, slots)
        gamma, beta = self.to_scale_shift(self.norm(pooled)).chunk(2, dim=-1)  # (B, D) each
        return img * (1.0 + gamma.unsqueeze(1)) + beta.unsqueeze(1)
