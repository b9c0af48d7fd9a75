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

    h_img = v W_p, h_text = l W_p (Eq. 8); S from the image tokens (Eq. 9) with `spatial_order`: "pool_mlp"
    (default, what older checkpoints were trained with) S = W_s2 GELU(W_s1 pool(h_img) + b), one MLP call;
    "mlp_pool" (the paper's order) S = pool(W_s2 GELU(W_s1 h_img + b)), the MLP per token, then the average
    pool (computed as W_s2 pool(GELU(...)), equal since W_s2 is linear and bias-free); T = W_t avgpool(
    Transformer(h_text)) over the real (unpadded) text tokens (Eq. 10); alpha = sigmoid(w_tau . h_text[CLS]
    + b_tau) with h_text[CLS] the temporal encoder's output at the first (BOS) position (Eq. 11): it has attended
    to the whole instruction, whereas the raw BOS projection is the same for every instruction.

    Eq. 12 writes G = S + T while the text says alpha "blends and sharpens" with higher alpha favouring the
    spatial scores. We read it as the convex blend G = alpha * S + (1 - alpha) * T, softmax-normalised at
    `temperature`: alpha = 1/2 recovers Eq. 12 up to a factor of 2 (softmax sharpness), and a confident
    alpha concentrates G on one branch. `blend: sum` uses Eq. 12 literally; alpha is then unused and its
    parameters are frozen (DDP refuses trainable parameters without gradients) but kept, so checkpoints of
    either blend load into the other. "alpha" stays the dataclass default because checkpoints trained before
    the option existed were trained with it; the paper preset (cogact-7b) sets "sum".
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
        if cfg.blend == "sum":
            self.sharpness.requires_grad_(False)

    def spatial_scores(self, h_img: torch.Tensor) -> torch.Tensor:
        """S (B, K) from projected image tokens (B, N, d1) (Eq. 9), in the configured `spatial_order`."""
        if self.cfg.spatial_order == "mlp_pool":
            first, act, last = self.spatial
            return last(act(first(h_img)).mean(dim=1))  # (B, N, h) -> (B, h) -> (B, K)
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


class DynamicExitRouter(EarlyExitRouter):
    """DeeR-style dynamic early exit: layers in order, stopping once the cognition feature settles.

    The scores rank layers like `EarlyExitRouter` with k = K (training runs every layer); at inference
    `MoLeVLA` stops after layer j when the cognition feature's relative change falls below
    `exit_threshold` (model/dynamic_exit.py; `calibrate_exit_threshold` sets it for a mean depth).
    """

    def __init__(self, cfg: RouterConfig, num_layers: int, width: int) -> None:
        super().__init__(cfg, num_layers, width)
        self.k = num_layers


class MoDRouter(Router):
    """Mixture-of-Depths baseline (Raposo et al. 2024): token routing inside every layer, not layer routing.

    One linear scorer per layer (`scorer` row i scores the tokens entering layer i); the top
    `mod_capacity` share of the prompt goes through the block, the rest skip it, the cognition token always
    goes through (model/mod.py). Its layer scores are uniform with k = K: every layer runs, on c tokens.
    """

    def __init__(self, cfg: RouterConfig, num_layers: int, width: int) -> None:
        super().__init__(cfg, num_layers, width)
        self.k = num_layers
        self.scorer = nn.Linear(width, num_layers)

    def token_scores(self, idx: int, h: torch.Tensor) -> torch.Tensor:
        """Router logits r_i (B, S) of the tokens h (B, S, D) entering layer `idx`."""
        w, b = self.scorer.weight[idx], self.scorer.bias[idx]
        return h @ w.to(h.dtype) + b.to(h.dtype)

    def forward(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> RouterOutput:
        return self._out(img.new_zeros((img.shape[0], self.num_layers)))


ROUTERS: dict[str, type[Router]] = {
    "star": STARRouter, "linear": LinearRouter, "random": RandomRouter,
    "early_exit": EarlyExitRouter, "full": FullRouter, "mod": MoDRouter, "dynamic_exit": DynamicExitRouter,
}


def build_router(cfg: RouterConfig, num_layers: int, width: int) -> Router:
    """The router named by `cfg.type`."""
    return ROUTERS[cfg.type](cfg, num_layers, width)

