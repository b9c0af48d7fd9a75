"""π0 in LeRobot's PyTorch layout (`lerobot/pi0`, `lerobot/pi0_base`, fine-tunes) -> our checkpoint folder.

Source layout: `model.safetensors` (or shards + index) and `config.json` (LeRobot's PI0Config, `"type": "pi0"`).
`PI0Policy.model` holds `paligemma_with_expert` (PaliGemma: SigLIP `vision_tower`, `multi_modal_projector.linear`,
Gemma-2B `language_model`; the Gemma-300M `gemma_expert`) and the expert's projections `state_proj`,
`action_in_proj`, `action_out_proj`, `action_time_mlp_in/out` (lerobot `src/lerobot/policies/pi0/modeling_pi0.py`,
`paligemma_with_expert.py`). Checkpoints saved with transformers >= 4.52 name the PaliGemma parts
`paligemma.model.{language_model,vision_tower,multi_modal_projector}` and `paligemma.lm_head` (lerobot's own
`_transform_state_dict_keys` maps between the two); both are read, and a tied embedding stored only as `lm_head`
is read as the embedding table. Action statistics: LeRobot's `unnormalize_outputs.buffer_action.*` tensors (older
checkpoints) or the `policy_postprocessor.json` unnormalizer step and its safetensors file (newer ones).

Exact: SigLIP and the projector (π0 feeds the projector's output unscaled: LeRobot multiplies by sqrt(width) what
transformers' PaliGemma `get_image_features` divided by it); the LLM and the expert, Gemma layers in LLaMA layers:
same projection names, Gemma's RMSNorm scale `1 + w` written as LLaMA's `w`, Gemma's GeGLU via `hidden_act`, and
the text embedding table times sqrt(width) (Gemma scales token embeddings, LLaMA does not); the flow time
embedding, suffix attention and Euler steps (model/flow_expert.py). Gaps are listed by `convert_state`.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from mole_inference.config import ModelConfig, from_dict, to_dict
from mole_inference.convert.mapping import Conversion, read_hf_weights
from mole_inference.convert.prismatic import count_blocks
from mole_inference.convert.stats import StatsChoice, dataset_action_stats, read_json
from mole_inference.errors import CheckpointError
from mole_inference.model.action_stats import ActionStats

log = logging.getLogger(__name__)

BOS_ID = 2  # PaliGemma's BOS (bos_token_id=2): every π0 prompt starts with it; its embedding fills our cognition slot
P = "model.paligemma_with_expert."
VISION, PROJ = f"{P}paligemma.vision_tower.vision_model.", f"{P}paligemma.multi_modal_projector.linear."
LLM, LLM_HEAD = f"{P}paligemma.language_model.model.", f"{P}paligemma.language_model.lm_head.weight"
EXPERT, EXPERT_HEAD = f"{P}gemma_expert.model.", f"{P}gemma_expert.lm_head.weight"
NEWER = ((f"{P}paligemma.model.language_model.", LLM), (f"{P}paligemma.lm_head.", LLM_HEAD[:-len("weight")]),
         (f"{P}paligemma.model.vision_tower.", f"{P}paligemma.vision_tower."),
         (f"{P}paligemma.model.multi_modal_projector.", f"{P}paligemma.multi_modal_projector."))
STATS_BUFFERS = ("normalize_inputs.", "normalize_targets.", "unnormalize_outputs.")
ACTION_STATS = "unnormalize_outputs.buffer_action."
BOUNDS = {"MEAN_STD": ("mean", "std"), "MIN_MAX": ("min", "max"), "QUANTILES": ("q01", "q99"),
          "QUANTILE10": ("q10", "q90")}  # LeRobot's NormalizationMode -> the stats that un-normalize actions
PROMPT_GAP = (
    "prompt layout: π0 feeds [{cams} camera image(s) | BOS instruction '\\n' | padding] with rotary positions "
    "counting valid tokens only; ours is [one image | instruction padded to max_text_tokens | cognition (BOS's "
    "embedding)] with positions counted over the padding")
STATE_GAP = ("state input: π0 projects the robot state (padded to {dim} dims) into its first suffix token; our "
             "policy contract carries none, so that token is state_proj's bias (a zero state)")
MEAN_STD_GAP = ("action normalization: π0's actions are mean/std-normalized; our stats are q01/q99, written as "
                "mean -/+ std, which un-normalize exactly but clip the model's output to one std around the mean")


def read_source(folder: str | Path) -> tuple[dict[str, torch.Tensor], dict, str]:
    """(tensors with the older PaliGemma key names, config.json, "older"/"newer" layout) of a LeRobot π0 folder."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder}: no config.json (pass LeRobot's π0 folder, e.g. a download of "
                              "lerobot/pi0: model.safetensors + config.json)")
    hf = read_json(folder / "config.json", "LeRobot's PI0Config")
    if hf.get("type", "pi0") != "pi0":
        raise CheckpointError(f"{folder}/config.json: type={hf['type']!r}; this converter reads LeRobot's pi0 "
                              "(pi05's adaptive norms and discrete state have no counterpart here)")
    raw = read_hf_weights(folder)
    if not any(k.startswith(P) for k in raw):
        raise CheckpointError(f"{folder}: no {P}* keys: not LeRobot's π0 layout")
    src, layout = {}, "older"
    for k, v in raw.items():
        for new, old in NEWER:
            if k.startswith(new):
                k, layout = old + k[len(new):], "newer"
        src[k] = v
    return src, hf, layout


def embedding_table(src: dict[str, torch.Tensor]) -> tuple[torch.Tensor, str]:
    """PaliGemma's token table and its key: `embed_tokens`, else the tied `lm_head` saved in its place."""
    for key in (f"{LLM}embed_tokens.weight", LLM_HEAD):
        if key in src:
            return src[key], key
    raise CheckpointError(f"neither {LLM}embed_tokens.weight nor the tied {LLM_HEAD} is in the checkpoint")


def infer_config(src: dict[str, torch.Tensor], hf: dict, base: ModelConfig, action_dim: int,
                 tokenizer: str | None = None) -> ModelConfig:
    """`base` (head counts, eps, router: what shapes do not tell) with sizes from the shapes and config.json."""
    table, _ = embedding_table(src)
    vocab, width = table.shape
    heads = base.llm.num_heads
    head_dim = width // heads
    q_rows = src[f"{LLM}layers.0.self_attn.q_proj.weight"].shape[0]
    if q_rows != width or width % heads:
        raise CheckpointError(f"LLM: {heads} heads (--preset) x head_dim over width {width} give {q_rows} query rows "
                              "only if heads x head_dim == width, which our LLaMA layer requires")
    pos = src[f"{VISION}embeddings.position_embedding.weight"]
    n = pos.shape[0]  # SigLIP has no class token: one position per patch of a square grid
    if math.isqrt(n) ** 2 != n:
        raise CheckpointError(f"{VISION}embeddings.position_embedding.weight: {n} positions is not a square grid")
    patch = src[f"{VISION}embeddings.patch_embedding.weight"].shape[-1]
    w = src["model.action_in_proj.weight"].shape[0]
    ffn = src[f"{EXPERT}layers.0.mlp.gate_proj.weight"].shape[0]
    max_action = src["model.action_in_proj.weight"].shape[1]
    if action_dim > max_action:
        raise CheckpointError(f"{action_dim} action dims, but π0's action_in_proj reads {max_action}")
    data = to_dict(base)
    data["name"] = f"{base.name}-from-pi0"
    data["vision"].update(
        image_size=math.isqrt(n) * patch, patch_size=patch, backbones="siglip", dinov2_weights=None,
        siglip_weights=None, siglip={**data["vision"]["siglip"], "hidden_size": pos.shape[1],
                                     "num_layers": count_blocks(src, f"{VISION}encoder.layers."),
                                     "mlp_size": src[f"{VISION}encoder.layers.0.mlp.fc1.weight"].shape[0]})
    data["llm"].update(
        hidden_size=width, vocab_size=vocab, num_layers=count_blocks(src, f"{LLM}layers."), weights=None,
        intermediate_size=src[f"{LLM}layers.0.mlp.gate_proj.weight"].shape[0], hidden_act="gelu_pytorch_tanh",
        num_kv_heads=src[f"{LLM}layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
        max_text_tokens=int(hf.get("tokenizer_max_length", data["llm"]["max_text_tokens"])),
        tokenizer=tokenizer if tokenizer is not None else data["llm"]["tokenizer"])
    if int(w * (ffn / w)) != ffn:
        raise CheckpointError(f"expert MLP size {ffn} is not expressible as width {w} x mlp_ratio")
    data["action_head"].update(
        type="flow", hidden_size=w, depth=count_blocks(src, f"{EXPERT}layers."), head_dim=head_dim,
        num_heads=src[f"{EXPERT}layers.0.self_attn.q_proj.weight"].shape[0] // head_dim,
        num_kv_heads=src[f"{EXPERT}layers.0.self_attn.k_proj.weight"].shape[0] // head_dim, mlp_ratio=ffn / w,
        chunk_size=int(hf.get("chunk_size", data["action_head"]["chunk_size"])), action_dim=action_dim,
        flow_steps=int(hf.get("num_inference_steps", hf.get("num_steps", data["action_head"]["flow_steps"]))))
    if data["router"].get("num_active_layers", 0) > data["llm"]["num_layers"]:
        data["router"]["num_active_layers"] = data["llm"]["num_layers"]
    return from_dict(ModelConfig, data)


def map_gemma(conv: Conversion, src: dict[str, torch.Tensor], prefix: str, target: str) -> None:
    """Gemma decoder layers and final norm under `prefix` -> our LLaMA layers under `target`; norms become 1 + w
    (in float32, so a bfloat16 source loses nothing)."""
    for k, v in src.items():
        if not k.startswith(prefix) or k.endswith("embed_tokens.weight"):
            continue
        name = k[len(prefix):]
        if name.endswith("rotary_emb.inv_freq"):
            conv.ignore(k, "rotary frequencies are recomputed from rope_theta")
        elif name.endswith(("input_layernorm.weight", "post_attention_layernorm.weight")) or name == "norm.weight":
            conv.put(target + name, 1.0 + v.float(), k)  # Gemma's RMSNorm scales by (1 + w)
        else:
            conv.put(target + name, v, k)


def map_expert_io(conv: Conversion, src: dict[str, torch.Tensor], action_dim: int) -> None:
    """state/action projections and the time MLP; the padded dims beyond `action_dim` are dropped."""
    a = action_dim
    for name in ("action_time_mlp_in", "action_time_mlp_out"):
        for p in ("weight", "bias"):
            conv.put(f"action_head.{name}.{p}", src[f"model.{name}.{p}"], f"model.{name}.{p}")
    for name in ("state_proj", "action_in_proj"):  # (W, max_dim): keep the first columns
        conv.put(f"action_head.{name}.weight", src[f"model.{name}.weight"][:, :a], f"model.{name}.weight")
        conv.put(f"action_head.{name}.bias", src[f"model.{name}.bias"], f"model.{name}.bias")
    for p in ("weight", "bias"):  # (max_dim, W): keep the first rows
        conv.put(f"action_head.action_out_proj.{p}", src[f"model.action_out_proj.{p}"][:a],
                 f"model.action_out_proj.{p}")


def convert_state(src: dict[str, torch.Tensor], hf: dict, cfg: ModelConfig, shapes: dict[str, tuple[int, ...]],
                  cognition_id: int = BOS_ID, mean_std: bool = True) -> Conversion:
    """Every source key mapped, ignored or left unmatched (checked by `Conversion.check`), and the gaps."""
    conv = Conversion()
    vis = "vision.siglip.vision_model." if "vision.siglip.vision_model.post_layernorm.weight" in shapes \
        else "vision.siglip."  # transformers < 5 nests SiglipVisionModel's modules under vision_model
    for k, v in src.items():
        if k.startswith(VISION):
            name = k[len(VISION):]
            if name == "embeddings.position_ids":
                conv.ignore(k, "position ids are recomputed")
            elif name.startswith("head."):
                conv.ignore(k, "SigLIP pooling head: PaliGemma reads patch tokens, never the pooled output")
            else:
                conv.put(vis + name, v, k)
        elif k.startswith(PROJ):
            conv.put("vision.projector." + k[len(PROJ):], v, k)
        elif k.startswith(STATS_BUFFERS):
            conv.ignore(k, "normalization statistics: actions' go to action_stats.json, the state's are unused")
    map_gemma(conv, src, LLM, "llm.")
    map_gemma(conv, src, EXPERT, "action_head.")
    table, table_key = embedding_table(src)
    if not 0 <= cognition_id < table.shape[0]:
        raise CheckpointError(f"cognition id {cognition_id} is not among the {table.shape[0]} token ids")
    scale = math.sqrt(table.shape[1])  # Gemma multiplies token embeddings by sqrt(width); LLaMA does not
    conv.put("llm.embed_tokens.weight", table.float() * scale, table_key)
    conv.put("cognition_token", (table[cognition_id].float() * scale).view(1, 1, -1), table_key)
    for key, why in ((LLM_HEAD, "tied to embed_tokens; π0 never reads PaliGemma's logits"),
                     (EXPERT_HEAD, "the expert's output goes through action_out_proj, never an LM head"),
                     (f"{EXPERT}embed_tokens.weight", "the expert embeds actions, not tokens (LeRobot sets it None)")):
        if key in src and key != table_key:
            conv.ignore(key, why)
    map_expert_io(conv, src, cfg.action_head.action_dim)
    cams = sum(1 for f in (hf.get("input_features") or {}).values() if isinstance(f, dict) and f.get("type") ==
               "VISUAL") or "up to 3"
    conv.gaps += [STATE_GAP.format(dim=src["model.state_proj.weight"].shape[1]), PROMPT_GAP.format(cams=cams)]
    max_action = src["model.action_in_proj.weight"].shape[1]
    if (a := cfg.action_head.action_dim) < max_action:
        conv.gaps.append(f"padded action dims: π0 integrates all {max_action} dims (the padded ones from noise "
                         f"towards zero, read by action_in_proj); ours integrates the first {a}")
    if mean_std:
        conv.gaps.append(MEAN_STD_GAP)
    for flag in ("adapt_to_pi_aloha", "use_delta_joint_actions_aloha", "use_relative_actions"):
        if hf.get(flag):
            conv.gaps.append(f"config.json {flag}=true: LeRobot transforms states/actions around the model; we do not")
    if cfg.llm.tokenizer is None:
        conv.gaps.append(f"tokenizer: none given; the built-in {cfg.llm.text_tokenizer!r} tokenizer's ids do not "
                         "index PaliGemma's vocabulary (pass google/paligemma-3b-pt-224's tokenizer folder)")
    return conv


def action_mode(folder: Path, hf: dict) -> str:
    """LeRobot's NormalizationMode for actions: the postprocessor's unnormalizer, else config.json; MEAN_STD default."""
    for step in postprocessor_steps(folder):
        norm_map = (step.get("config") or {}).get("norm_map") or {}
        if "ACTION" in norm_map:
            return str(norm_map["ACTION"])
    return str((hf.get("normalization_mapping") or {}).get("ACTION", "MEAN_STD"))


def postprocessor_steps(folder: Path) -> list[dict]:
    """The unnormalizer steps of `policy_postprocessor.json` (newer LeRobot), or none."""
    path = folder / "policy_postprocessor.json"
    if not path.is_file():
        return []
    steps = read_json(path, "LeRobot's postprocessor pipeline").get("steps") or []
    return [s for s in steps if isinstance(s, dict) and s.get("registry_name") == "unnormalizer_processor"]


def action_tensors(folder: Path, src: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str] | None:
    """Action statistics tensors by name (mean, std, min, ...) and where they were read, or None."""
    found = {k[len(ACTION_STATS):]: v for k, v in src.items() if k.startswith(ACTION_STATS)}
    if found:
        return found, f"{folder}/model.safetensors:{ACTION_STATS}*"
    for step in postprocessor_steps(folder):
        if step.get("state_file") and (folder / step["state_file"]).is_file():
            from safetensors.torch import load_file

            state = load_file(str(folder / step["state_file"]))
            found = {k[len("action."):]: v for k, v in state.items() if k.startswith("action.")}
            if found:
                return found, f"{folder / step['state_file']}:action.*"
    return None


def find_stats(folder: Path, src: dict[str, torch.Tensor], mode: str, stats_path: str | Path | None,
               unnorm_key: str | None) -> StatsChoice | None:
    """`stats_path` (dataset_statistics.json or our action_stats.json), else LeRobot's action statistics as
    q01/q99 (MEAN_STD: mean -/+ std); None when there are none (LeRobot's untrained buffers are inf)."""
    if stats_path is not None:
        return dataset_action_stats(read_json(stats_path, "dataset statistics"), str(stats_path), unnorm_key, None)
    if mode not in BOUNDS:
        if mode != "IDENTITY":
            raise CheckpointError(f"action normalization {mode!r}: expected one of {sorted(BOUNDS)} or IDENTITY")
        return None
    read = action_tensors(folder, src)
    if read is None:
        return None
    tensors, where = read
    lo_name, hi_name = BOUNDS[mode]
    if lo_name not in tensors or hi_name not in tensors:
        raise CheckpointError(f"{where}: {mode} needs action {lo_name} and {hi_name}, found {sorted(tensors)}")
    lo, hi = tensors[lo_name].double().flatten(), tensors[hi_name].double().flatten()
    if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
        log.warning("%s: action statistics are not finite (LeRobot's placeholder before training)", where)
        return None
    if mode == "MEAN_STD":
        lo, hi = lo - hi, lo + hi
    data = {"q01": lo.tolist(), "q99": hi.tolist(), "mask": [True] * lo.numel()}  # π0 normalizes every dim
    return StatsChoice(ActionStats.from_json(data, where), f"{where} ({mode})")


def action_dim_of(hf: dict, choice: StatsChoice | None, base: ModelConfig) -> int:
    """config.json's `output_features.action.shape`, else the statistics' length, else the preset's."""
    shape = ((hf.get("output_features") or {}).get("action") or {}).get("shape")
    if shape:
        return int(shape[0])
    return int(choice.stats.q01.shape[0]) if choice is not None else base.action_head.action_dim


def convert_pi0(src_path: str | Path, out: str | Path, base: ModelConfig, *, tokenizer: str | None = None,
                stats_path: str | Path | None = None, unnorm_key: str | None = None, identity_stats: bool = False,
                cognition_id: int = BOS_ID, accept_gaps: bool = False) -> tuple[Path, Conversion]:
    """Convert LeRobot's π0 folder to our folder `out`; refuses (CheckpointError) before writing anything when
    keys are unmatched, statistics are missing, or gaps remain without `accept_gaps`."""
    from mole_inference.convert.mapping import fill_fresh, save_converted, target_model

    folder = Path(src_path)
    folder = folder.parent if folder.is_file() else folder
    src, hf, layout = read_source(folder)
    mode = action_mode(folder, hf)
    choice = find_stats(folder, src, mode, stats_path, unnorm_key)
    action_dim = action_dim_of(hf, choice, base)
    if choice is None:
        if not identity_stats:
            raise CheckpointError(f"{folder}: no action statistics (no finite {ACTION_STATS}* tensors, no "
                                  "policy_postprocessor.json unnormalizer; the base model carries none): pass "
                                  "--stats FILE, or --identity-stats to leave actions in normalized units")
        log.warning("no action statistics: writing identity stats (actions stay normalized)")
        choice = StatsChoice(ActionStats.identity(action_dim), "identity")
    elif choice.stats.q01.shape[0] != action_dim:
        raise CheckpointError(f"{choice.source}: {choice.stats.q01.shape[0]} action dims, config.json's "
                              f"output_features.action has {action_dim}")
    if float(hf.get("min_period", 4e-3)) != 4e-3 or float(hf.get("max_period", 4.0)) != 4.0:
        raise CheckpointError("config.json min_period/max_period differ from π0's 4e-3/4.0, which our flow time "
                              "embedding uses")
    cfg = infer_config(src, hf, base, action_dim, tokenizer)
    shapes = {k: tuple(v.shape) for k, v in target_model(cfg).state_dict().items()}
    conv = convert_state(src, hf, cfg, shapes, cognition_id, mean_std=mode == "MEAN_STD")
    fresh = fill_fresh(conv, cfg, shapes)
    conv.check(src, shapes)
    if not accept_gaps:
        conv.refuse_gaps("π0")
    meta = {"converted_from": "pi0", "source": str(folder), "layout": layout, "stats": choice.source,
            "fresh": ",".join(sorted({k.split(".")[0] for k in fresh})), "gaps": json.dumps(conv.gaps)}
    path = save_converted(conv, cfg, choice.stats, out, meta)
    log.info("pi0 -> %s: %s; fresh: %s; %d gaps", path, conv.summary(), meta["fresh"] or "none", len(conv.gaps))
    return path, conv
