"""MoLe layer routers behind one interface (Eq. 2, 8-12) and top-k gating (Eq. 7).

A router maps the LLM's input embeddings to one score per decoder layer. `gate()` turns scores into
the binary G of Eq. 7: top-k at inference; straight-through top-k in training so the router learns.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mole_inference.config.model import RouterConfig


@dataclass
class RouterOutput:
    """Scores per layer: `logits` (B, K) and `probs` = softmax(logits) (B, K)."""

    logits: torch.Tensor
    probs: torch.Tensor


class Router(nn.Module):
    """Interface: `forward(img, text, text_mask) -> RouterOutput` over image tokens (B, N, D) and text (B, T, D)."""

    def __init__(self, cfg: RouterConfig, num_layers: int, width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_layers = num_layers
        self.k = cfg.num_active_layers

    def forward(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> RouterOutput:
        raise NotImplementedError

    @staticmethod
    def _out(logits: torch.Tensor, temperature: float = 1.0) -> RouterOutput:
        return RouterOutput(logits=logits, probs=torch.softmax(logits / temperature, dim=-1))


def topk_mask(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Binary (B, K) mask with ones at the k largest entries of each row."""
    idx = torch.topk(probs, k, dim=-1, sorted=False).indices
    return torch.zeros_like(probs).scatter_(-1, idx, 1.0)


def straight_through_gate(probs: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 7's G in training: forward value is the hard top-k mask, gradient flows to `probs`."""
    hard = topk_mask(probs, k)
    return hard + (probs - probs.detach())  # the bracket is exactly 0, so the value is exactly 0/1


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average (B, T, D) over the tokens where mask (B, T) is True -> (B, D)."""
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class STARRouter(Router):
    """Spatial-Temporal Aware Router (Eq. 8-12).

    h_img = v W_p, h_text = l W_p (Eq. 8); S = W_s2 GELU(W_s1 pool(h_img) + b) (Eq. 9), the image tokens
    average-pooled first, which keeps translation invariance and costs one MLP call; T = W_t avgpool(
    Transformer(h_text)) over the real (unpadded) text tokens (Eq. 10); alpha = sigmoid(w_tau . h_text[CLS]
    + b_tau) with h_text[CLS] the temporal encoder's output at the first (BOS) position (Eq. 11): it has attended
    to the whole instruction, whereas the raw BOS projection is the same for every instruction.

    Eq. 12 writes G = S + T while the text says alpha "blends and sharpens" with higher alpha favouring the
    spatial scores. We read it as the convex blend G = alpha * S + (1 - alpha) * T, softmax-normalised at
    `temperature`: alpha = 1/2 recovers Eq. 12 up to a factor of 2 (softmax sharpness), and a confident
    alpha concentrates G on one branch. `blend: sum` uses Eq. 12 literally (alpha unused).
    """

    def __init__(self, cfg: RouterConfig, num_layers: int, width: int) -> None:
        super().__init__(cfg, num_layers, width)
        d1 = cfg.proj_dim
        self.proj = nn.Linear(width, d1, bias=False)  # W_p, shared (Eq. 8)
        self.spatial = nn.Sequential(nn.Linear(d1, cfg.spatial_hidden), nn.GELU(),
                                     nn.Linear(cfg.spatial_hidden, num_layers, bias=False))  # Eq. 9
        layer = nn.TransformerEncoderLayer(d1, cfg.encoder_heads, cfg.encoder_ffn, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.temporal_encoder = nn.TransformerEncoder(layer, cfg.encoder_layers, enable_nested_tensor=False)
        self.temporal_head = nn.Linear(d1, num_layers, bias=False)  # W_t (Eq. 10)
        self.sharpness = nn.Linear(d1, 1)  # w_tau, b_tau (Eq. 11)

    def spatial_scores(self, h_img: torch.Tensor) -> torch.Tensor:
        """S (B, K) from projected image tokens (B, N, d1) (Eq. 9)."""
        return self.spatial(h_img.mean(dim=1))

    def encode_text(self, h_text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """The temporal Transformer over projected text tokens (B, T, d1), padding masked (Eq. 10)."""
        return self.temporal_encoder(h_text, src_key_padding_mask=~text_mask)

    def temporal_scores(self, enc: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """T (B, K) from the encoded text tokens (B, T, d1), average-pooled over real tokens (Eq. 10)."""
        return self.temporal_head(masked_mean(enc, text_mask))

    def alpha(self, enc: torch.Tensor) -> torch.Tensor:
        """Sharpness alpha (B, 1) in (0, 1) from the encoded [CLS] (first) text token (Eq. 11)."""
        return torch.sigmoid(self.sharpness(enc[:, 0]))

    def blend(self, s: torch.Tensor, t: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """G logits from S, T and alpha (Eq. 12, read as documented on the class)."""
        if self.cfg.blend == "sum":
            return s + t
        return alpha * s + (1.0 - alpha) * t

    def forward(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> RouterOutput:
        h_img, h_text = self.proj(img), self.proj(text)  # (B, N, d1), (B, T, d1)
        s = self.spatial_scores(h_img)
        enc = self.encode_text(h_text, text_mask)  # (B, T, d1)
        t = self.temporal_scores(enc, text_mask)
        return self._out(self.blend(s, t, self.alpha(enc)), self.cfg.temperature)


class LinearRouter(Router):
    """Ex1-1 baseline: one linear gate (Eq. 2) over the mean of all input tokens."""

    def __init__(self, cfg: RouterConfig, num_layers: int, width: int) -> None:
        super().__init__(cfg, num_layers, width)
        self.gate = nn.Linear(width, num_layers)

    def forward(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> RouterOutput:
        tokens = torch.cat([img, text], dim=1)
        mask = torch.cat([torch.ones(img.shape[:2], dtype=torch.bool, device=img.device), text_mask], dim=1)
        return self._out(self.gate(masked_mean(tokens, mask)), self.cfg.temperature)


class RandomRouter(Router):
    """Random-skip baseline: k layers drawn uniformly per input from a seeded generator."""

    def __init__(self, cfg: RouterConfig, num_layers: int, width: int) -> None:
        super().__init__(cfg, num_layers, width)
        self._gen = torch.Generator().manual_seed(cfg.seed)

    def forward(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> RouterOutput:
        logits = torch.rand((img.shape[0], self.num_layers), generator=self._gen).to(img.device, img.dtype)
        return self._out(logits)


class _FixedRouter(Router):
    """Scores that prefer a fixed set of layers regardless of the input."""

    def _preferred(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> RouterOutput:
        logits = self._preferred().to(img.device, img.dtype).expand(img.shape[0], -1)
        return self._out(logits)


class EarlyExitRouter(_FixedRouter):
    """Early-exit baseline: the first k layers run, the rest are skipped."""

    def _preferred(self) -> torch.Tensor:
        return -torch.arange(self.num_layers, dtype=torch.float32)


class FullRouter(_FixedRouter):
    """The full model: every layer runs (k is ignored)."""

    def __init__(self, cfg: RouterConfig, num_layers: int, width: int) -> None:
        super().__init__(cfg, num_layers, width)
        self.k = num_layers

    def _preferred(self) -> torch.Tensor:
        return torch.zeros(self.num_layers)


ROUTERS: dict[str, type[Router]] = {
    "star": STARRouter, "linear": LinearRouter, "random": RandomRouter,
    "early_exit": EarlyExitRouter, "full": FullRouter,
}


def build_router(cfg: RouterConfig, num_layers: int, width: int) -> Router:
    """The router named by `cfg.type`."""
    return ROUTERS[cfg.type](cfg, num_layers, width)

