"""Key maps from Prismatic's timm ViT featurizers (DINOv2, SigLIP) onto transformers' Dinov2Model /
SiglipVisionModel, as `model/vision.py` builds them. Used by the CogACT and OpenVLA converters.

timm fuses q, k, v into `attn.qkv` (3D, D), rows in q, k, v order; transformers keeps three (D, D) matrices.
timm's DINOv2 with registers has no position embedding for its class token (`no_embed_class`); transformers'
Dinov2 adds one, which we set to zero. Prismatic's training checkpoints name DINOv2's LayerScale `ls{1,2}.gamma`
(timm); OpenVLA's Hugging Face export renames it `ls{1,2}.scale_factor` (transformers rewrites names holding
`gamma` on load; openvla `vla-scripts/extern/convert_openvla_weights_to_hf.py`).
"""

from __future__ import annotations

import math
import re

import torch

from mole_inference.convert.mapping import Conversion
from mole_inference.errors import CheckpointError

FEATURE_LAYER_GAP = (
    "feature layer: Prismatic reads each tower's patch tokens after block n-2 without the final norm; our vision "
    "tower reads last_hidden_state (all blocks + final LayerNorm)")


def count_blocks(src: dict[str, torch.Tensor], prefix: str) -> int:
    """Number of `prefix{i}.` blocks (indices must run 0..n-1)."""
    idx = {int(m.group(1)) for k in src if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    if idx != set(range(len(idx))):
        raise CheckpointError(f"{prefix}*: block indices {sorted(idx)} are not 0..n-1")
    return len(idx)


def grid_tokens(n_pos: int, where: str) -> tuple[int, bool]:
    """(patch tokens, has a class position) from a position table of `n_pos` rows (square grid)."""
    for n, cls in ((n_pos, False), (n_pos - 1, True)):
        if n > 0 and math.isqrt(n) ** 2 == n:
            return n, cls
    raise CheckpointError(f"{where}: {n_pos} positions is not a square patch grid (with or without a class token)")


def _split_qkv(conv: Conversion, src: dict, key: str, targets: tuple[str, str, str]) -> None:
    for part in ("weight", "bias"):
        q, k, v = src[f"{key}.{part}"].chunk(3, dim=0)
        for name, t in zip(targets, (q, k, v), strict=True):
            conv.put(f"{name}.{part}", t, f"{key}.{part}")


def _linear(conv: Conversion, src: dict, key: str, target: str) -> None:
    for part in ("weight", "bias"):
        conv.put(f"{target}.{part}", src[f"{key}.{part}"], f"{key}.{part}")


def map_dinov2(conv: Conversion, src: dict, s: str, t: str, targets: dict[str, tuple]) -> None:
    """timm DINOv2 under prefix `s` -> Dinov2Model under `t`. Register tokens become a gap (we have none)."""
    d = src[f"{s}cls_token"].shape[-1]
    conv.put(f"{t}embeddings.cls_token", src[f"{s}cls_token"], f"{s}cls_token")
    pos = src[f"{s}pos_embed"]
    _, has_cls = grid_tokens(pos.shape[1], f"{s}pos_embed")
    if not has_cls:  # no_embed_class: class token without position -> a zero row in transformers' layout
        pos = torch.cat([torch.zeros(1, 1, d, dtype=pos.dtype), pos], dim=1)
    conv.put(f"{t}embeddings.position_embeddings", pos, f"{s}pos_embed")
    conv.put(f"{t}embeddings.mask_token", torch.zeros(1, d, dtype=pos.dtype))  # read only with bool_masked_pos
    _linear(conv, src, f"{s}patch_embed.proj", f"{t}embeddings.patch_embeddings.projection")
    new_names = f"{t}encoder.layer.0.attention.q_proj.weight" in targets  # transformers >= 5 naming
    for i in range(count_blocks(src, f"{s}blocks.")):
        b, o = f"{s}blocks.{i}.", f"{t}encoder.layer.{i}."
        qkv = (f"{o}attention.q_proj", f"{o}attention.k_proj", f"{o}attention.v_proj") if new_names else (
            f"{o}attention.attention.query", f"{o}attention.attention.key", f"{o}attention.attention.value")
        _split_qkv(conv, src, f"{b}attn.qkv", qkv)
        _linear(conv, src, f"{b}attn.proj", f"{o}attention.o_proj" if new_names else f"{o}attention.output.dense")
        for a, c in (("norm1", "norm1"), ("norm2", "norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2")):
            _linear(conv, src, f"{b}{a}", f"{o}{c}")
        for a, c in (("ls1", "layer_scale1"), ("ls2", "layer_scale2")):
            ls = f"{b}{a}.scale_factor" if f"{b}{a}.scale_factor" in src else f"{b}{a}.gamma"
            conv.put(f"{o}{c}.lambda1", src[ls], ls)
    _linear(conv, src, f"{s}norm", f"{t}layernorm")
    if f"{s}reg_token" in src:
        regs = src[f"{s}reg_token"].shape[1]
        conv.ignore(f"{s}reg_token", "register tokens: our Dinov2Model has none (gap)")
        conv.gaps.append(f"DINOv2 registers: the source prepends {regs} register tokens; our DINOv2 has none, "
                         "so every patch attends to a different set of tokens")


def map_siglip(conv: Conversion, src: dict, s: str, t: str) -> None:
    """timm SigLIP ViT under prefix `s` -> SiglipVisionModel (no head) under `t`; the attention-pool head is
    dropped (Prismatic reads patch tokens, never the pooled output)."""
    pos = src[f"{s}pos_embed"]
    grid_tokens(pos.shape[1], f"{s}pos_embed")
    conv.put(f"{t}embeddings.position_embedding.weight", pos[0], f"{s}pos_embed")
    _linear(conv, src, f"{s}patch_embed.proj", f"{t}embeddings.patch_embedding")
    for i in range(count_blocks(src, f"{s}blocks.")):
        b, o = f"{s}blocks.{i}.", f"{t}encoder.layers.{i}."
        _split_qkv(conv, src, f"{b}attn.qkv", (f"{o}self_attn.q_proj", f"{o}self_attn.k_proj", f"{o}self_attn.v_proj"))
        _linear(conv, src, f"{b}attn.proj", f"{o}self_attn.out_proj")
        pairs = (("norm1", "layer_norm1"), ("norm2", "layer_norm2"), ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"))
        for a, c in pairs:
            _linear(conv, src, f"{b}{a}", f"{o}{c}")
    _linear(conv, src, f"{s}norm", f"{t}post_layernorm")
    for k in src:
        if k.startswith((f"{s}attn_pool.", f"{s}fc_norm.", f"{s}head.")):
            conv.ignore(k, "SigLIP pooling head: Prismatic reads patch tokens, never the pooled output")


def fused_vision_fields(src: dict[str, torch.Tensor], dino: str, siglip: str, vision: dict) -> dict:
    """`vision` (our VisionConfig as a dict) with every size read from the two towers' shapes: one patch grid,
    widths, depths and MLP sizes; head counts and eps stay as given (shapes do not tell them)."""
    dino_pos, sig_pos = src[f"{dino}pos_embed"], src[f"{siglip}pos_embed"]
    n_dino, _ = grid_tokens(dino_pos.shape[1], f"{dino}pos_embed")
    n_sig, _ = grid_tokens(sig_pos.shape[1], f"{siglip}pos_embed")
    patch = src[f"{dino}patch_embed.proj.weight"].shape[-1]
    if n_dino != n_sig or src[f"{siglip}patch_embed.proj.weight"].shape[-1] != patch:
        raise CheckpointError(f"DINOv2 has {n_dino} patches of {patch} px, SigLIP {n_sig}: our fused tower needs "
                              "one grid")
    return {**vision, "image_size": math.isqrt(n_dino) * patch, "patch_size": patch, "dinov2_weights": None,
            "siglip_weights": None,
            "dinov2": {**vision["dinov2"], "hidden_size": dino_pos.shape[-1],
                       "num_layers": count_blocks(src, f"{dino}blocks."),
                       "mlp_size": src[f"{dino}blocks.0.mlp.fc1.weight"].shape[0]},
            "siglip": {**vision["siglip"], "hidden_size": sig_pos.shape[-1],
                       "num_layers": count_blocks(src, f"{siglip}blocks."),
                       "mlp_size": src[f"{siglip}blocks.0.mlp.fc1.weight"].shape[0]}}
