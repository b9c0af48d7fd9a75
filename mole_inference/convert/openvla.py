"""OpenVLA (openvla/openvla; `openvla/openvla-7b` on the Hugging Face Hub) -> our checkpoint folder.

Source layout, the Hugging Face export (openvla `vla-scripts/extern/convert_openvla_weights_to_hf.py`, modules in
`prismatic/extern/hf/modeling_prismatic.py`): `model-0000X-of-0000N.safetensors` with `model.safetensors.index.json`,
`config.json` (OpenVLAConfig: `text_config`, `pad_to_multiple_of`, `n_action_bins`, `timm_model_ids`, `norm_stats`)
and `dataset_statistics.json`. Keys: `vision_backbone.featurizer.*` (timm DINOv2-L/14 with 4 registers, LayerScale
renamed `ls{1,2}.scale_factor`), `vision_backbone.fused_featurizer.*` (timm SigLIP so400m/14),
`projector.fc{1,2,3}.*`, `language_model.model.*` + `language_model.lm_head.weight` (LlamaForCausalLM, its
vocabulary padded from LLaMA-2's 32000 ids + `<PAD>` to 32064 rows).

Exact: the LLM and LM head over the real ids (OpenVLA's own `vocab_size - pad_to_multiple_of` = 32000, whose last
256 are the action bins; the `<PAD>` and padding rows are dropped), the projector, the action bins, and the
cognition token (OpenVLA's prompt ends with the empty token 29871, whose position predicts the first action token:
its embedding row becomes our cognition token). Not expressible yet (`gaps`, docs/convert.md): DINOv2 registers,
Prismatic's feature layer, OpenVLA's prompt layout.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from mole_inference.config import ModelConfig, from_dict, to_dict
from mole_inference.convert.mapping import Conversion, read_hf_weights
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

PROMPT_END_ID = 29871  # LLaMA-2's empty token "▁": predict_action appends it after "Out:"; it predicts action 1
DINO, SIGLIP = "vision_backbone.featurizer.", "vision_backbone.fused_featurizer."
LLM, LM_HEAD = "language_model.model.", "language_model.lm_head.weight"
PROJECTOR = {"projector.fc1.": "vision.projector.0.", "projector.fc2.": "vision.projector.2.",
             "projector.fc3.": "vision.projector.4."}  # Prismatic's fused GELU MLP: fc1 -> GELU -> fc2 -> GELU -> fc3
STATIC_GAPS = (
    FEATURE_LAYER_GAP,
    "prompt layout: OpenVLA feeds [BOS | image | 'In: What action should the robot take to {x}?\\nOut:' | 29871] "
    "and decodes from the 29871 position; ours is [image | instruction padded to max_text_tokens | cognition "
    "(29871's embedding)]",
)


def read_source(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, config.json) of an OpenVLA Hugging Face folder; CheckpointError for another layout."""
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json (pass the Hugging Face folder of openvla/openvla-7b: its "
                              "safetensors shards, index, config.json and dataset_statistics.json)")
    hf = read_json(folder / "config.json", "OpenVLA's model config")
    src = read_hf_weights(folder)
    if not any(k.startswith("language_model.") for k in src):
        raise CheckpointError(f"{folder}: no language_model.* keys: not OpenVLA's Hugging Face export (CogACT and "
                              "Prismatic training checkpoints: --from cogact)")
    if hf.get("use_fused_vision_backbone") is False or not any(k.startswith(SIGLIP) for k in src):
        raise CheckpointError(f"{folder}: a single vision backbone ({hf.get('vision_backbone_id', '?')}); our "
                              "vision tower is Prismatic's fused DINOv2 + SigLIP (dinosiglip-*) only")
    ids = hf.get("timm_model_ids", [])
    if ids and not ("dinov2" in ids[0] and "siglip" in ids[-1]):
        raise CheckpointError(f"{folder}: timm_model_ids {ids}: our fused tower is DINOv2 + SigLIP")
    return src, hf


def llama_config(hf: dict):
    """The LLM's transformers LlamaConfig as OpenVLA builds it: `text_config` over LlamaConfig's defaults.

    OpenVLA's export stores only what differs from the defaults, so fields it omits (rms_norm_eps: 1e-6, not
    LLaMA-2's 1e-5) are what its model runs with; we read them the same way.
    """
    from transformers import LlamaConfig

    text = dict(hf.get("text_config") or {})
    kind = text.pop("model_type", "llama")
    if kind != "llama":
        raise CheckpointError(f"config.json text_config.model_type={kind!r}: our LLM is LLaMA only")
    tc = LlamaConfig(**text)
    rope = getattr(tc, "rope_parameters", None) or getattr(tc, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise CheckpointError(f"config.json text_config: rope scaling {rope} is not supported (plain RoPE only)")
    return tc


def rope_theta(tc) -> float:
    """RoPE base of a LlamaConfig (`rope_theta`, or `rope_parameters["rope_theta"]` in transformers >= 5)."""
    theta = getattr(tc, "rope_theta", None)
    return float(theta if theta is not None else (tc.rope_parameters or {}).get("rope_theta", 10000.0))


def real_vocab(src: dict[str, torch.Tensor], hf: dict, tc) -> int:
    """Ids the tokenizer can produce before the `<PAD>` token: rows - pad_to_multiple_of, as OpenVLA decodes."""
    rows = src[f"{LLM}embed_tokens.weight"].shape[0]
    if rows != tc.vocab_size:
        raise CheckpointError(f"embed_tokens has {rows} rows, config.json text_config.vocab_size={tc.vocab_size}")
    pad = int(hf.get("pad_to_multiple_of", 64))
    vocab = rows - pad
    bins = int(hf.get("n_action_bins", 256))
    if vocab <= bins:
        raise CheckpointError(f"{rows} embedding rows - pad_to_multiple_of {pad} leaves {vocab} ids, not more than "
                              f"the {bins} action bins")
    return vocab


def infer_config(src: dict[str, torch.Tensor], hf: dict, base: ModelConfig, action_dim: int,
                 tokenizer: str | None = None) -> ModelConfig:
    """`base` (vision head counts, router, max_text_tokens) with sizes from the shapes and LLM settings from
    config.json; the action head becomes OpenVLA's: autoregressive, `n_action_bins` bins, one action per step."""
    tc = llama_config(hf)
    width = src[f"{LLM}embed_tokens.weight"].shape[1]
    layers = count_blocks(src, f"{LLM}layers.")
    ffn = src[f"{LLM}layers.0.mlp.gate_proj.weight"].shape[0]
    for name, ours, theirs in (("hidden_size", width, tc.hidden_size), ("num_hidden_layers", layers,
                               tc.num_hidden_layers), ("intermediate_size", ffn, tc.intermediate_size)):
        if ours != theirs:
            raise CheckpointError(f"config.json text_config.{name}={theirs} but the weights have {ours}")
    data = to_dict(base)
    data["name"] = f"{base.name}-from-openvla"
    data["vision"] = fused_vision_fields(src, DINO, SIGLIP, data["vision"])
    data["llm"].update(
        hidden_size=width, vocab_size=real_vocab(src, hf, tc), num_layers=layers, weights=None,
        intermediate_size=ffn, num_heads=tc.num_attention_heads,
        num_kv_heads=src[f"{LLM}layers.0.self_attn.k_proj.weight"].shape[0] // (width // tc.num_attention_heads),
        rms_norm_eps=tc.rms_norm_eps, rope_theta=rope_theta(tc),
        tokenizer=tokenizer if tokenizer is not None else data["llm"]["tokenizer"])
    data["action_head"].update(type="autoregressive", num_bins=int(hf.get("n_action_bins", 256)), chunk_size=1,
                               action_dim=action_dim)
    if data["router"].get("num_active_layers", 0) > layers:
        data["router"]["num_active_layers"] = layers
    return from_dict(ModelConfig, data)


def map_llm(conv: Conversion, src: dict[str, torch.Tensor], vocab: int, cognition_id: int) -> None:
    """`language_model.*` -> MoLeLLM and the token head, over the first `vocab` rows; `cognition_id`'s embedding
    row -> the cognition token."""
    for k, v in src.items():
        if not k.startswith(LLM):
            continue
        if k.endswith("rotary_emb.inv_freq"):
            conv.ignore(k, "rotary frequencies are recomputed from rope_theta")
        elif k != f"{LLM}embed_tokens.weight":
            conv.put("llm." + k[len(LLM):], v, k)
    table = src[f"{LLM}embed_tokens.weight"]
    conv.put("llm.embed_tokens.weight", table[:vocab], f"{LLM}embed_tokens.weight")
    if LM_HEAD in src:  # absent: check() reports action_head.lm_head.weight unfilled
        conv.put("action_head.lm_head.weight", src[LM_HEAD][:vocab], LM_HEAD)
    if not 0 <= cognition_id < vocab:
        raise CheckpointError(f"cognition id {cognition_id} is not among the {vocab} token ids (OpenVLA: "
                              f"{PROMPT_END_ID}, the empty token its prompt ends with)")
    conv.put("cognition_token", table[cognition_id].view(1, 1, -1), f"{LLM}embed_tokens.weight")


def convert_state(src: dict[str, torch.Tensor], cfg: ModelConfig, shapes: dict[str, tuple[int, ...]],
                  cognition_id: int = PROMPT_END_ID) -> Conversion:
    """Every source key mapped, ignored or left unmatched (checked by `Conversion.check`)."""
    conv = Conversion()
    map_dinov2(conv, src, DINO, "vision.dinov2.", shapes)
    map_siglip(conv, src, SIGLIP, "vision.siglip.")
    for k, v in src.items():
        for s, t in PROJECTOR.items():
            if k.startswith(s):
                conv.put(t + k[len(s):], v, k)
    map_llm(conv, src, cfg.llm.vocab_size, cognition_id)
    conv.gaps.extend(STATIC_GAPS)
    if cfg.llm.tokenizer is None:
        conv.gaps.append(f"tokenizer: none given; the built-in {cfg.llm.text_tokenizer!r} tokenizer's ids do not "
                         "index LLaMA-2's vocabulary (pass a local LLaMA-2 tokenizer folder)")
    return conv


def find_stats(folder: Path, hf: dict, stats_path: str | Path | None, unnorm_key: str | None
               ) -> StatsChoice | None:
    """`stats_path`, else the folder's dataset_statistics.json, else config.json's `norm_stats`; None if none."""
    if stats_path is not None:
        return dataset_action_stats(read_json(stats_path, "dataset statistics"), str(stats_path), unnorm_key, None)
    if (folder / "dataset_statistics.json").is_file():
        path = folder / "dataset_statistics.json"
        return dataset_action_stats(read_json(path, "dataset statistics"), str(path), unnorm_key, None)
    if isinstance(hf.get("norm_stats"), dict) and hf["norm_stats"]:
        return dataset_action_stats(hf["norm_stats"], f"{folder / 'config.json'}:norm_stats", unnorm_key, None)
    return None


def convert_openvla(src_path: str | Path, out: str | Path, base: ModelConfig, *, tokenizer: str | None = None,
                    stats_path: str | Path | None = None, unnorm_key: str | None = None,
                    identity_stats: bool = False, cognition_id: int = PROMPT_END_ID,
                    accept_gaps: bool = False) -> tuple[Path, Conversion]:
    """Convert OpenVLA's Hugging Face folder to our folder `out`; refuses (CheckpointError) before writing
    anything when keys are unmatched, stats are missing or ambiguous, or gaps remain without `accept_gaps`."""
    from mole_inference.convert.mapping import fill_fresh, save_converted, target_model

    folder = Path(src_path)
    folder = folder.parent if folder.is_file() else folder
    src, hf = read_source(folder)
    choice = find_stats(folder, hf, stats_path, unnorm_key)
    if choice is None:
        if not identity_stats:
            raise CheckpointError(f"{folder}: no dataset_statistics.json and no norm_stats in config.json: pass "
                                  "--stats FILE, or --identity-stats to write stats that leave actions in the "
                                  "model's normalized [-1, 1] units")
        log.warning("no dataset statistics: writing identity stats (actions stay normalized)")
        choice = StatsChoice(ActionStats.identity(base.action_head.action_dim), "identity")
    cfg = infer_config(src, hf, base, int(choice.stats.q01.shape[0]), tokenizer)
    shapes = {k: tuple(v.shape) for k, v in target_model(cfg).state_dict().items()}
    conv = convert_state(src, cfg, shapes, cognition_id)
    fresh = fill_fresh(conv, cfg, shapes)
    conv.check(src, shapes)
    if not accept_gaps:
        conv.refuse_gaps("OpenVLA")
    rows = src[f"{LLM}embed_tokens.weight"].shape[0]
    meta = {"converted_from": "openvla", "source": str(folder), "stats": choice.source,
            "fresh": ",".join(sorted({k.split(".")[0] for k in fresh})), "gaps": json.dumps(conv.gaps),
            "dropped_rows": f"embed_tokens and lm_head rows {cfg.llm.vocab_size}..{rows - 1} (<PAD> and padding)"}
    path = save_converted(conv, cfg, choice.stats, out, meta)
    log.info("openvla -> %s: %s; fresh: %s; %d gaps; %s", path, conv.summary(), meta["fresh"] or "none",
             len(conv.gaps), meta["dropped_rows"])
    return path, conv
