"""Instruction-conditioned image tokens (FiLM, Perez et al. 2018), an option beyond the paper (`vision.text_film`).

    img' = img * (1 + gamma(t)) + beta(t),   t = mean of the instruction's token embeddings (padding excluded)

Language-conditioned visuomotor policies (RT-1, BC-Z) condition their image features on the instruction this
way. In the MoLe-VLA prompt [image | text | cognition], a causal LLM lets the image tokens see no text, so "which
cube is the red one" must be found by attention from the text to the patches, which a small model trained from
scratch learns slowly (on our CPU-scale runs the colour word moved the predicted motion by under 1 mm after
2000 steps). FiLM gives every patch the instruction directly. The projection is zero-initialized, so the module
starts as the identity and can be added to a trained model. The router sees the unmodulated image tokens.
"""

from __future__ import annotations

import torch
from torch import nn


class TextFiLM(nn.Module):
    """gamma, beta (B, D) from the pooled instruction; applied to image tokens (B, N, D)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.to_scale_shift = nn.Linear(width, 2 * width)
        nn.init.zeros_(self.to_scale_shift.weight)
        nn.init.zeros_(self.to_scale_shift.bias)

    def forward(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """Modulated image tokens (B, N, D)."""
        w = text_mask.to(text.dtype).unsqueeze(-1)  # (B, T, 1)
        pooled = (text * w).sum(1) / w.sum(1).clamp_min(1.0)  # (B, D)
        gamma, beta = self.to_scale_shift(self.norm(pooled)).chunk(2, dim=-1)  # (B, D) each
        return img * (1.0 + gamma.unsqueeze(1)) + beta.unsqueeze(1)
