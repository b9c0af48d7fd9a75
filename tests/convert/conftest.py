"""timm ViT keys at tiny sizes, as Prismatic-based checkpoints (OpenVLA, CogACT) hold their vision featurizers."""

from __future__ import annotations

import torch


def vit_stem(prefix: str, d: int, dino: bool) -> dict[str, torch.Tensor]:
    """Patch and position embeddings and the final norm at a 28 px image (2x2 patches of 14 px); DINOv2 adds
    its class and 4 register tokens (vit_large_patch14_reg4_dinov2: no class position, no_embed_class)."""
    sd = {f"{prefix}pos_embed": torch.randn(1, 4, d), f"{prefix}patch_embed.proj.weight": torch.randn(d, 3, 14, 14),
          f"{prefix}patch_embed.proj.bias": torch.randn(d), f"{prefix}norm.weight": torch.randn(d),
          f"{prefix}norm.bias": torch.randn(d)}
    if dino:
        sd |= {f"{prefix}cls_token": torch.randn(1, 1, d), f"{prefix}reg_token": torch.randn(1, 4, d)}
    return sd


def vit_blocks(prefix: str, d: int, blocks: int, layer_scale: str | None) -> dict[str, torch.Tensor]:
    """`blocks` pre-norm transformer blocks; `layer_scale` names DINOv2's LayerScale parameter (None: SigLIP)."""
    sd = {}
    for i in range(blocks):
        b = f"{prefix}blocks.{i}."
        sd |= {f"{b}norm1.weight": torch.randn(d), f"{b}norm1.bias": torch.randn(d),
               f"{b}attn.qkv.weight": torch.randn(3 * d, d), f"{b}attn.qkv.bias": torch.randn(3 * d),
               f"{b}attn.proj.weight": torch.randn(d, d), f"{b}attn.proj.bias": torch.randn(d),
               f"{b}norm2.weight": torch.randn(d), f"{b}norm2.bias": torch.randn(d),
               f"{b}mlp.fc1.weight": torch.randn(4 * d, d), f"{b}mlp.fc1.bias": torch.randn(4 * d),
               f"{b}mlp.fc2.weight": torch.randn(d, 4 * d), f"{b}mlp.fc2.bias": torch.randn(d)}
        if layer_scale:
            sd |= {f"{b}ls1.{layer_scale}": torch.randn(d), f"{b}ls2.{layer_scale}": torch.randn(d)}
    return sd
