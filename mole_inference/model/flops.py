"""Analytic parameter and FLOP counts (multiply-add = 2 FLOPs) per stage, from the config alone."""

from __future__ import annotations

from mole_inference.config.model import EncoderConfig, ModelConfig


def vit_flops(enc: EncoderConfig, tokens: int, patch_dim: int) -> int:
    """One ViT forward over `tokens` tokens: patch embedding + attention + MLP of every layer."""
    d, m = enc.hidden_size, enc.mlp_size
    per_layer = 2 * tokens * 4 * d * d + 4 * tokens * tokens * d + 4 * tokens * d * m
    return 2 * tokens * patch_dim * d + enc.num_layers * per_layer


def llm_layer_flops(cfg: ModelConfig, tokens: int | None = None) -> int:
    """One LLaMA decoder layer over the whole prompt (S tokens), or over `tokens` of them (MoD).

    The autoregressive family adds the layer's share of decoding: A - 1 more tokens, one at a time against the
    cached keys (token j attends to S + j keys); the router picks the layers once for the prompt and them. The flow
    family counts the pair: LLM layer j over the prefix once plus expert layer j at every Euler step (a skipped
    layer skips both).
    """
    llm, s = cfg.llm, cfg.seq_len if tokens is None else tokens
    d = llm.hidden_size
    d_kv = d // llm.num_heads * (llm.num_kv_heads or llm.num_heads)
    per_token = 2 * (2 * d * d + 2 * d * d_kv) + 2 * 3 * d * llm.intermediate_size
    prompt = s * per_token + 4 * s * s * d
    if cfg.action_head.type == "flow" and tokens is None:
        return prompt + cfg.action_head.flow_steps * expert_layer_flops(cfg)
    if cfg.action_head.type != "autoregressive" or tokens is not None:
        return prompt
    return prompt + sum(per_token + 4 * (s + j) * d for j in range(1, cfg.action_head.action_dim))


def expert_layer_flops(cfg: ModelConfig) -> int:
    """One flow-expert layer over the suffix (1 state + C action tokens) against the S prefix keys and its own."""
    a = cfg.action_head
    w, n, s = a.hidden_size, a.chunk_size + 1, cfg.seq_len
    hd = a.head_dim or w // a.num_heads
    q, kv = a.num_heads * hd, (a.num_kv_heads or a.num_heads) * hd
    per_token = 2 * (2 * w * q + 2 * w * kv) + 2 * 3 * w * int(w * a.mlp_ratio)
    return n * per_token + 4 * n * (s + n) * q


def stage_flops(cfg: ModelConfig) -> dict[str, int]:
    """FLOPs of each stage for one control step with the preset's router (LLM stage: all K layers)."""
    v, llm, r, a = cfg.vision, cfg.llm, cfg.router, cfg.action_head
    n, t, d, k = v.num_patches, llm.max_text_tokens, llm.hidden_size, llm.num_layers
    patch_dim = 3 * v.patch_size**2
    if v.backbones == "siglip":  # PaliGemma: SigLIP and one linear projection
        vision = vit_flops(v.siglip, n, patch_dim) + 2 * n * v.siglip.hidden_size * d
    else:
        fused = v.dinov2.hidden_size + v.siglip.hidden_size
        vision = (vit_flops(v.dinov2, n + 1, patch_dim) + vit_flops(v.siglip, n, patch_dim)
                  + 2 * n * (fused * 4 * fused + 4 * fused * d + d * d))
    if r.type == "star":
        d1 = r.proj_dim
        enc = r.encoder_layers * (2 * t * (4 * d1 * d1 + 2 * d1 * r.encoder_ffn) + 4 * t * t * d1)
        per_token = n if r.spatial_order == "mlp_pool" else 1  # Eq. 9's first MLP layer: per image token or pooled
        spatial = 2 * (per_token * d1 * r.spatial_hidden + r.spatial_hidden * k)
        router = 2 * (n + t) * d * d1 + spatial + enc + 2 * d1 * (k + 1)
    elif r.type == "linear":
        router = 2 * d * k
    elif r.type == "mod":  # one token scorer per layer over the whole prompt
        router = k * 2 * cfg.seq_len * d
    elif r.type == "dynamic_exit":  # per layer run: RMSNorm of the cognition token and the relative change
        router = k * 10 * d
    else:
        router = 0
    if a.type == "autoregressive":  # the greedy pick reads the LM head's num_bins action rows, once per token
        head = a.action_dim * 2 * d * a.num_bins
    elif a.type == "flow":  # per Euler step: suffix embedding, action-time MLP, velocity read-out (layers: llm_layer)
        w, c = a.hidden_size, a.chunk_size
        head = a.flow_steps * (2 * a.action_dim * w + 2 * c * (a.action_dim * w + 3 * w * w + w * a.action_dim))
    else:
        w, c = a.hidden_size, a.chunk_size + 1
        block = 2 * c * 4 * w * w + 4 * c * c * w + 4 * c * w * int(w * a.mlp_ratio)
        per_eval = a.depth * block + 2 * c * w * a.action_dim * 2 + 2 * d * w + 4 * w * w
        head = per_eval * a.ddim_steps * (2 if a.cfg_scale > 1.0 else 1)
    return {"vision": vision, "router": router, "llm_layer": llm_layer_flops(cfg), "llm_layers": k,
            "action_head": head}


def step_flops(cfg: ModelConfig, active_layers: int | None = None) -> int:
    """Total FLOPs of one step running `active_layers` decoder layers (default: all, no router)."""
    f = stage_flops(cfg)
    if active_layers is None:
        return f["vision"] + f["llm_layer"] * f["llm_layers"] + f["action_head"]
    return f["vision"] + f["router"] + f["llm_layer"] * active_layers + f["action_head"]


def routed_step_flops(cfg: ModelConfig) -> int:
    """FLOPs of one step as `cfg.router` runs it: k layers for the layer routers, K for `full`, K layers over
    c = mod_capacity * S tokens for `mod`; for `dynamic_exit`, whose depth depends on the input, k layers
    (num_active_layers, the mean its threshold is calibrated to)."""
    from mole_inference.model.mod import mod_capacity

    r, f = cfg.router, stage_flops(cfg)
    if r.type == "full":
        return step_flops(cfg)
    if r.type == "mod":
        c = mod_capacity(cfg.seq_len, r.mod_capacity)
        return f["vision"] + f["router"] + f["llm_layers"] * llm_layer_flops(cfg, c) + f["action_head"]
    return step_flops(cfg, r.num_active_layers)


def parameter_counts(model) -> dict[str, int]:
    """Parameters per component of a MoLeVLA (works on the meta device)."""

    def count(module) -> int:
        return sum(p.numel() for p in module.parameters())

    counts = {"vision": count(model.vision), "llm": count(model.llm) + model.cognition_token.numel(),
              "router": count(model.router), "action_head": count(model.action_head)}
    counts["total"] = sum(counts.values())
    return counts
