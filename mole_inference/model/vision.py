"""Fused vision tower: DINOv2 + SigLIP patch features concatenated per patch, projected to the LLM width."""

from __future__ import annotations

import logging

import torch
from torch import nn

from mole_inference.config.model import EncoderConfig, VisionConfig

log = logging.getLogger(__name__)

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _dinov2(enc: EncoderConfig, cfg: VisionConfig, weights: str | None) -> nn.Module:
    from transformers import Dinov2Config, Dinov2Model

    if weights:
        log.info("loading DINOv2 weights from %s", weights)
        return Dinov2Model.from_pretrained(weights, local_files_only=True)
    hf = Dinov2Config(hidden_size=enc.hidden_size, num_hidden_layers=enc.num_layers,
                      num_attention_heads=enc.num_heads, mlp_ratio=enc.mlp_size // enc.hidden_size,
                      image_size=cfg.image_size, patch_size=cfg.patch_size, layer_norm_eps=enc.layer_norm_eps)
    return Dinov2Model(hf)


def _siglip(enc: EncoderConfig, cfg: VisionConfig, weights: str | None) -> nn.Module:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    if weights:
        log.info("loading SigLIP weights from %s", weights)
        return SiglipVisionModel.from_pretrained(weights, local_files_only=True)
    hf = SiglipVisionConfig(hidden_size=enc.hidden_size, num_hidden_layers=enc.num_layers,
                            num_attention_heads=enc.num_heads, intermediate_size=enc.mlp_size,
                            image_size=cfg.image_size, patch_size=cfg.patch_size,
                            layer_norm_eps=enc.layer_norm_eps, vision_use_head=False)
    return SiglipVisionModel(hf)


class FusedVisionEncoder(nn.Module):
    """Image (B, 3, H, W) float in [0, 1] -> image tokens (B, N_patches, D_llm).

    `cfg.backbones == "siglip"` (PaliGemma, pi0): SigLIP alone and one linear projection, no DINOv2.
    """

    def __init__(self, cfg: VisionConfig, llm_width: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.siglip_only = cfg.backbones == "siglip"
        self.dinov2 = None if self.siglip_only else _dinov2(cfg.dinov2, cfg, cfg.dinov2_weights)
        self.siglip = _siglip(cfg.siglip, cfg, cfg.siglip_weights)
        if self.siglip_only:  # PaliGemma's multi-modal projector: one linear layer with bias
            self.projector = nn.Linear(cfg.siglip.hidden_size, llm_width)
        else:  # Prismatic's fused-backbone projector: fc -> GELU -> fc -> GELU -> fc.
            fused = cfg.dinov2.hidden_size + cfg.siglip.hidden_size
            self.projector = nn.Sequential(
                nn.Linear(fused, 4 * fused), nn.GELU(), nn.Linear(4 * fused, llm_width), nn.GELU(),
                nn.Linear(llm_width, llm_width),
            )
        self.register_buffer("dino_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("dino_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Each backbone sees its own normalization; patch features are concatenated channel-wise."""
        sig_in = (pixels - 0.5) / 0.5
        if self.dinov2 is None:
            return self.projector(self.siglip(pixel_values=sig_in).last_hidden_state)  # (B, N, D)
        dino_in = (pixels - self.dino_mean) / self.dino_std
        dino = self.dinov2(pixel_values=dino_in).last_hidden_state[:, 1:]  # (B, N, Dd): drop CLS
        sig = self.siglip(pixel_values=sig_in).last_hidden_state  # (B, N, Ds)
        return self.projector(torch.cat([dino, sig], dim=-1))  # (B, N, D)
