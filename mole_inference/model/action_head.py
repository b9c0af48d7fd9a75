"""CogACT-style DiT action head: denoises a (chunk, 7) action block conditioned on the cognition token."""

from __future__ import annotations

import math

import torch
from torch import nn

from mole_inference.config.model import ActionHeadConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer diffusion steps (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return emb if dim % 2 == 0 else nn.functional.pad(emb, (0, 1))


class DiTBlock(nn.Module):
    """Pre-norm self-attention + MLP block over [condition | action] tokens."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=1e-6)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class DiTActionHead(nn.Module):
    """eps_theta(x_t, t, c): noisy actions (B, C, A), steps (B,), cognition (B, D_llm) -> noise (B, C, A).

    Conditioning is in-context as in CogACT: one token = proj(cognition) + embed(t) prepended to the
    action tokens. A learned `null_condition` replaces the cognition token for classifier-free guidance.
    """

    def __init__(self, cfg: ActionHeadConfig, cond_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.hidden_size
        self.action_in = nn.Linear(cfg.action_dim, w)
        self.cond_in = nn.Linear(cond_width, w)
        self.time_mlp = nn.Sequential(nn.Linear(w, w), nn.SiLU(), nn.Linear(w, w))
        self.pos = nn.Parameter(torch.zeros(1, cfg.chunk_size + 1, w))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(DiTBlock(w, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(w, eps=1e-6)
        self.action_out = nn.Linear(w, cfg.action_dim)
        nn.init.zeros_(self.action_out.weight)
        nn.init.zeros_(self.action_out.bias)
        self.null_condition = nn.Parameter(torch.zeros(1, cond_width))
        nn.init.normal_(self.null_condition, std=0.02)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        c = self.cond_in(cond) + self.time_mlp(timestep_embedding(t, self.cfg.hidden_size))  # (B, W)
        tokens = torch.cat([c.unsqueeze(1), self.action_in(x)], dim=1) + self.pos  # (B, 1 + C, W)
        for block in self.blocks:
            tokens = block(tokens)
        return self.action_out(self.norm_out(tokens[:, 1:]))  # (B, C, A)
