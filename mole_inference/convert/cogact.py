"""CogACT (microsoft/CogACT, `CogACT/CogACT-Base`) -> our checkpoint folder.

Source layout: `torch.load(f)["model"]` holds `vision_backbone` (Prismatic's `dino_featurizer` /
`siglip_featurizer`, timm ViTs), `projector` (`projector.{0,2,4}`, Prismatic's fused GELU MLP), `llm_backbone`
(`llm.` + transformers' LlamaForCausalLM keys) and `action_model` (`net.` + the DiT), optionally `ema_diffusion`;
a `.safetensors` file with the same keys flattened is read alike. `dataset_statistics.json` next to the run
holds the action q01/q99/mask per dataset.

Exact: the LLM, the projector, the DiT (its non-affine LayerNorms become ones/zeros; its 256-d timestep
frequencies are placed on the matching columns of our `hidden_size`-d embedding, exact when hidden_size is a
multiple of 256) and the cognition token (CogACT appends the EOS token, id 2: we copy its embedding row).
Not expressible yet (`gaps`, listed in docs/convert.md; writing them needs `accept_gaps=True`): DINOv2
registers, Prismatic's feature layer, CogACT's prompt layout and its DDIM timestep spacing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mole_inference.config import ModelConfig, from_dict, to_dict
from mole_inference.convert.mapping import Conversion, flatten, read_state_dict
from mole_inference.convert.prismatic import (
    FEATURE_LAYER_GAP,
    count_blocks,
    fused_vision_fields,
    map_dinov2,
    map_siglip,
)
from mole_inference.convert.stats import StatsChoice, dataset_action_stats, read_json
from mole_inference.errors import CheckpointError
from mole_inference.model.action_stats import ActionStats

log = logging.getLogger(__name__)

EOS_ID = 2  # CogACT's cognition token: the EOS token appended after "Out: " (and the empty token 29871)
DINO, SIGLIP = "vision_backbone.dino_featurizer.", "vision_backbone.siglip_featurizer."
LLM, DIT, EMA = "llm_backbone.llm.model.", "action_model.net.", "ema_diffusion.net."
STATIC_GAPS = (
    FEATURE_LAYER_GAP,
    "prompt layout: CogACT feeds [BOS | image | 'In: What action should the robot take to {x}?\\nOut: ' | 29871 | "
    "EOS] and reads the EOS position; ours is [image | instruction padded to max_text_tokens | cognition]",
    "DDIM timesteps: CogACT's 'ddim10' respacing of 100 steps runs t = 99, 88, ..., 0; ours runs 90, 80, ..., 0",
)


def source_tensors(path: str | Path, ema: bool = False) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors with dotted keys; `ema` swaps `ema_diffusion` in for `action_model`."""
    raw = read_state_dict(path)
    if isinstance(raw.get("model"), dict):
        raw = raw["model"]
    src = flatten(raw)
    if not any(k.startswith("llm_backbone.") for k in src):
        raise CheckpointError(f"{path}: no llm_backbone.* keys: not a CogACT/Prismatic checkpoint")
    if ema:
        if not any(k.startswith(EMA) for k in src):
            raise CheckpointError(f"{path}: ema=True but the checkpoint has no ema_diffusion.* keys")
        src = {(DIT + k[len(EMA):] if k.startswith(EMA) else f"unused_action_model.{k}" if k.startswith(DIT)
                else k): v for k, v in src.items()}
    return src


def infer_config(src: dict[str, torch.Tensor], base: ModelConfig, tokenizer: str | None = None) -> ModelConfig:
    """`base` (head counts, eps, router: what shapes do not tell) with every size read from the source."""
    vocab, width = src[f"{LLM}embed_tokens.weight"].shape
    heads = base.llm.num_heads
    head_dim = width // heads
    w = src[f"{DIT}x_embedder.linear.weight"].shape[0]
    data = to_dict(base)
    data["name"] = f"{base.name}-from-cogact"
    data["vision"] = fused_vision_fields(src, DINO, SIGLIP, data["vision"])
    data["llm"].update(
        hidden_size=width, vocab_size=vocab, num_layers=count_blocks(src, f"{LLM}layers."), weights=None,
        intermediate_size=src[f"{LLM}layers.0.mlp.gate_proj.weight"].shape[0],
        num_kv_heads=src[f"{LLM}layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
        tokenizer=tokenizer if tokenizer is not None else data["llm"]["tokenizer"])
    data["action_head"].update(
        hidden_size=w, action_dim=src[f"{DIT}x_embedder.linear.weight"].shape[1],
        depth=count_blocks(src, f"{DIT}blocks."), chunk_size=src[f"{DIT}positional_embedding"].shape[0] - 1,
        mlp_ratio=src[f"{DIT}blocks.0.mlp.fc1.weight"].shape[0] / w)
    if data["router"].get("num_active_layers", 0) > data["llm"]["num_layers"]:
        data["router"]["num_active_layers"] = data["llm"]["num_layers"]
    return from_dict(ModelConfig, data)


def map_llm(conv: Conversion, src: dict[str, torch.Tensor]) -> None:
    """transformers LlamaForCausalLM keys (under `llm_backbone.llm.`) -> MoLeLLM; EOS row -> cognition token."""
    for k, v in src.items():
        if k.startswith(LLM):
            if k.endswith("rotary_emb.inv_freq"):
                conv.ignore(k, "rotary frequencies are recomputed from rope_theta")
            else:
                conv.put("llm." + k[len(LLM):], v, k)
    conv.ignore("llm_backbone.llm.lm_head.weight", "CogACT reads the cognition hidden state, never the logits")
    table = src[f"{LLM}embed_tokens.weight"]
    conv.put("cognition_token", table[EOS_ID].view(1, 1, -1), f"{LLM}embed_tokens.weight")


def time_columns(w0: torch.Tensor, width: int) -> torch.Tensor:
    """CogACT's first timestep layer (W, F) over [cos | sin] of F/2 frequencies -> ours (W, width).

    Frequency i of F/2 equals ours j = i * width / F (both 10000^(-i/half)); other columns get zero weight.
    """
    f = w0.shape[1]
    if f % 2 or width % f:
        raise CheckpointError(f"DiT timestep embedding: {f} frequencies cannot be placed in our {width}-d "
                              "embedding exactly (needs action_head.hidden_size to be a multiple of it)")
    r, half = width // f, f // 2
    out = torch.zeros(w0.shape[0], width, dtype=w0.dtype)
    cols = torch.arange(half) * r
    out[:, cols] = w0[:, :half]
    out[:, width // 2 + cols] = w0[:, half:]
    return out


def map_dit(conv: Conversion, src: dict[str, torch.Tensor], cfg: ModelConfig) -> None:
    """CogACT's DiT (`action_model.net.`) -> DiTActionHead."""
    w, a = cfg.action_head.hidden_size, cfg.action_head.action_dim
    ones, zeros = torch.ones(w), torch.zeros(w)
    if src[f"{DIT}final_layer.linear.weight"].shape[0] != a:
        raise CheckpointError(f"DiT final layer predicts {src[f'{DIT}final_layer.linear.weight'].shape[0]} "
                              f"channels for {a} action dims (learn_sigma): our head predicts eps only")

    def lin(s: str, t: str) -> None:
        for p in ("weight", "bias"):
            conv.put(f"action_head.{t}.{p}", src[f"{DIT}{s}.{p}"], f"{DIT}{s}.{p}")

    lin("x_embedder.linear", "action_in")
    lin("z_embedder.linear", "cond_in")
    conv.put("action_head.null_condition", src[f"{DIT}z_embedder.uncondition"].reshape(1, -1),
             f"{DIT}z_embedder.uncondition")
    w0 = src[f"{DIT}t_embedder.mlp.0.weight"]
    conv.put("action_head.time_mlp.0.weight", time_columns(w0, w), f"{DIT}t_embedder.mlp.0.weight")
    conv.put("action_head.time_mlp.0.bias", src[f"{DIT}t_embedder.mlp.0.bias"], f"{DIT}t_embedder.mlp.0.bias")
    lin("t_embedder.mlp.2", "time_mlp.2")
    conv.put("action_head.pos", src[f"{DIT}positional_embedding"].unsqueeze(0), f"{DIT}positional_embedding")
    for i in range(cfg.action_head.depth):
        s, t = f"{DIT}blocks.{i}.", f"action_head.blocks.{i}."
        conv.put(f"{t}attn.in_proj_weight", src[f"{s}attn.qkv.weight"], f"{s}attn.qkv.weight")
        conv.put(f"{t}attn.in_proj_bias", src[f"{s}attn.qkv.bias"], f"{s}attn.qkv.bias")
        lin(f"blocks.{i}.attn.proj", f"blocks.{i}.attn.out_proj")
        lin(f"blocks.{i}.mlp.fc1", f"blocks.{i}.mlp.0")
        lin(f"blocks.{i}.mlp.fc2", f"blocks.{i}.mlp.2")
        for n in ("norm1", "norm2"):  # CogACT: LayerNorm(elementwise_affine=False) == weight 1, bias 0
            conv.put(f"{t}{n}.weight", ones)
            conv.put(f"{t}{n}.bias", zeros)
    conv.put("action_head.norm_out.weight", ones)
    conv.put("action_head.norm_out.bias", zeros)
    lin("final_layer.linear", "action_out")
    for k in src:
        if k.startswith(f"{DIT}history_embedder."):
            conv.ignore(k, "CogACT's action-history embedder is unused in its forward")
        elif k.startswith(("unused_action_model.", EMA)):
            conv.ignore(k, "the other DiT copy (ema=True picks ema_diffusion, else action_model)")


def convert_state(src: dict[str, torch.Tensor], cfg: ModelConfig, shapes: dict[str, tuple[int, ...]]
                  ) -> Conversion:
    """Every source key mapped, ignored or left unmatched (checked by `Conversion.check`)."""
    conv = Conversion()
    if not any(k.startswith(DINO) for k in src):
        raise CheckpointError("the checkpoint has no vision_backbone.* keys (CogACT saved a frozen backbone "
                              "separately): our checkpoint needs the vision weights in the same file")
    map_dinov2(conv, src, DINO, "vision.dinov2.", shapes)
    map_siglip(conv, src, SIGLIP, "vision.siglip.")
    for k, v in src.items():
        if k.startswith("projector.projector."):
            conv.put("vision.projector." + k[len("projector.projector."):], v, k)
    map_llm(conv, src)
    map_dit(conv, src, cfg)
    conv.gaps.extend(STATIC_GAPS)
    if cfg.llm.tokenizer is None:
        conv.gaps.append(f"tokenizer: none given; the built-in {cfg.llm.text_tokenizer!r} tokenizer's ids do not "
                         "index LLaMA-2's vocabulary (pass a local LLaMA-2 tokenizer folder)")
    return conv


def find_stats(src_path: Path, stats_path: str | Path | None, unnorm_key: str | None, action_dim: int
               ) -> StatsChoice | None:
    """CogACT's dataset_statistics.json (given, or next to the run: SRC/.., SRC/../..) -> ActionStats, or None."""
    path = Path(stats_path) if stats_path else next(
        (p / "dataset_statistics.json" for p in (src_path.parent, src_path.parent.parent)
         if (p / "dataset_statistics.json").is_file()), None)
    if path is None:
        return None
    return dataset_action_stats(read_json(path, "dataset statistics"), str(path), unnorm_key, action_dim)


def convert_cogact(src_path: str | Path, out: str | Path, base: ModelConfig, *, tokenizer: str | None = None,
                   stats_path: str | Path | None = None, unnorm_key: str | None = None, ema: bool = False,
                   identity_stats: bool = False, accept_gaps: bool = False) -> tuple[Path, Conversion]:
    """Convert a CogACT checkpoint file to our folder `out`; refuses (CheckpointError) before writing anything
    when keys are unmatched, stats are missing, or gaps remain without `accept_gaps`."""
    from mole_inference.convert.mapping import fill_fresh, save_converted, target_model

    src_path = Path(src_path)
    src = source_tensors(src_path, ema)
    cfg = infer_config(src, base, tokenizer)
    shapes = {k: tuple(v.shape) for k, v in target_model(cfg).state_dict().items()}
    conv = convert_state(src, cfg, shapes)
    fresh = fill_fresh(conv, cfg, shapes)
    conv.check(src, shapes)
    choice = find_stats(src_path, stats_path, unnorm_key, cfg.action_head.action_dim)
    if choice is None:
        if not identity_stats:
            raise CheckpointError(f"no dataset_statistics.json next to {src_path} (looked in {src_path.parent} and "
                                  f"{src_path.parent.parent}): pass --stats FILE, or --identity-stats to write "
                                  "stats that leave actions in the model's normalized [-1, 1] units")
        log.warning("no dataset statistics: writing identity stats (actions stay normalized)")
        choice = StatsChoice(ActionStats.identity(cfg.action_head.action_dim), "identity")
    if not accept_gaps:
        conv.refuse_gaps("CogACT")
    meta = {"converted_from": "cogact", "source": str(src_path), "stats": choice.source,
            "fresh": ",".join(sorted({k.split(".")[0] for k in fresh})), "gaps": json.dumps(conv.gaps)}
    path = save_converted(conv, cfg, choice.stats, out, meta)
    log.info("cogact -> %s: %s; fresh: %s; %d gaps", path, conv.summary(), meta["fresh"] or "none", len(conv.gaps))
    return path, conv
