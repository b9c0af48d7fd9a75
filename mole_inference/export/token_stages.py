"""Exported stages of the autoregressive (OpenVLA) family: prefill with keys/values, one-token decode, LM head.

    vision, router  as the diffusion family (export/stages.py)
    layer_XX     h (1, S, D), bias, cos, sin                   -> h_out (1, S, D), k, v (1, Hkv, S, Dh)
    lm_head      hidden (1, 1, D)                              -> bin_logits (1, num_bins)   final norm + bin rows
    token_embed  token (1, 1) i64                              -> x (1, 1, D)
    decode_XX    x (1, 1, D), position (1, 1) i64, key_mask (1, P + 1) bool, past_k, past_v (1, Hkv, P, Dh)
                                                               -> x_out (1, 1, D), k, v (1, Hkv, 1, Dh)

The prompt length S is static per preset. P = S + action_dim - 2 is every key a fed-back action token can see
before its own (the last of the action_dim tokens is never fed back): the host fills cache slot S + j with token
j's keys/values, and `key_mask` marks the valid slots, the last entry being the token itself (its keys are
appended after the P slots, as `LayerCache.update` appends). Each decode stage builds its attention bias from
`key_mask` with the model's `attention_bias` (finfo.min, never -inf) and its rotary tables from `position`.
The greedy loop and the bin decoding run on the host (export/token_loop.py).
"""

from __future__ import annotations

import torch
from torch import nn

from mole_inference.config.model import ModelConfig
from mole_inference.errors import ConfigError
from mole_inference.model.llm import LayerCache, attention_bias, cache_kwarg


def decode_stage(idx: int) -> str:
    """Stage name of decoder layer `idx`'s one-token decode graph."""
    return f"decode_{idx:02d}"


def past_len(cfg: ModelConfig) -> int:
    """P: cache slots a decode stage reads (the prompt, then every fed-back action token but the newest)."""
    return cfg.seq_len + cfg.action_head.action_dim - 2


def kv_shape(cfg: ModelConfig, n: int) -> tuple[int, int, int, int]:
    """(1, Hkv, n, Dh): the keys or values of `n` positions of one layer."""
    llm = cfg.llm
    return (1, llm.num_kv_heads or llm.num_heads, n, llm.hidden_size // llm.num_heads)


def token_stage_io(cfg: ModelConfig, shared: dict) -> dict:
    """(inputs, outputs) of every autoregressive stage after `shared` (vision, router), in run order."""
    from mole_inference.export.stages import TensorSpec, layer_stage

    if cfg.action_head.action_dim < 2:
        raise ConfigError(f"action_head.action_dim={cfg.action_head.action_dim}: the autoregressive export needs >= 2 "
                          "(one token from the prompt, the rest decoded); use the torch backend")
    f32, i64 = "float32", "int64"
    s, d, k, p = cfg.seq_len, cfg.llm.hidden_size, cfg.llm.num_layers, past_len(cfg)
    router_out = shared["router"][1]
    io = dict(shared)
    for i in range(k):
        io[layer_stage(i)] = (router_out[1:], [TensorSpec("h_out", (1, s, d), f32),
                                               TensorSpec("k", kv_shape(cfg, s), f32),
                                               TensorSpec("v", kv_shape(cfg, s), f32)])
    io["lm_head"] = ([TensorSpec("hidden", (1, 1, d), f32)],
                     [TensorSpec("bin_logits", (1, cfg.action_head.num_bins), f32)])
    x = TensorSpec("x", (1, 1, d), f32)
    io["token_embed"] = ([TensorSpec("token", (1, 1), i64)], [x])
    decode_in = [x, TensorSpec("position", (1, 1), i64), TensorSpec("key_mask", (1, p + 1), "bool"),
                 TensorSpec("past_k", kv_shape(cfg, p), f32), TensorSpec("past_v", kv_shape(cfg, p), f32)]
    decode_out = [TensorSpec("x_out", (1, 1, d), f32), TensorSpec("k", kv_shape(cfg, 1), f32),
                  TensorSpec("v", kv_shape(cfg, 1), f32)]
    for i in range(k):
        io[decode_stage(i)] = (decode_in, decode_out)
    return io


class PrefillLayerStage(nn.Module):
    """One decoder layer over the prompt that also returns the keys/values it computed (post-rotary)."""

    def __init__(self, model: nn.Module, idx: int) -> None:
        super().__init__()
        self.layer, self.idx = model.llm.layers[idx], idx

    def forward(self, h: torch.Tensor, bias: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
        cache = LayerCache()
        out = self.layer(h, attention_mask=bias, position_embeddings=(cos, sin), **{cache_kwarg(): cache})
        k, v = cache.kv[self.idx]
        return out, k, v  # (1, S, D), (1, Hkv, S, Dh) x 2


class DecodeLayerStage(nn.Module):
    """One decoder layer for one new token against that layer's cache of P slots (masked by `key_mask`)."""

    def __init__(self, model: nn.Module, idx: int) -> None:
        super().__init__()
        self.llm, self.idx = model.llm, idx

    def forward(self, x: torch.Tensor, position: torch.Tensor, key_mask: torch.Tensor, past_k: torch.Tensor,
                past_v: torch.Tensor):
        cache = LayerCache()
        cache.kv[self.idx] = (past_k, past_v)  # the layer appends this token's keys/values after the P slots
        bias = attention_bias(key_mask, x.dtype, past=key_mask.shape[1] - 1)  # (1, 1, 1, P + 1)
        rope = self.llm.rotary_emb(x, position_ids=position)  # (1, 1, Dh) each
        out = self.llm.layers[self.idx](x, attention_mask=bias, position_embeddings=rope, **{cache_kwarg(): cache})
        k, v = cache.kv[self.idx]
        return out, k[:, :, -1:], v[:, :, -1:]  # (1, 1, D), (1, Hkv, 1, Dh) x 2


class LMHeadStage(nn.Module):
    """Final RMSNorm and the LM head's action-bin rows: the logits the greedy step compares."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.norm, self.head = model.llm.norm, model.action_head

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.head.bin_logits(self.norm(hidden[:, -1]))  # (1, num_bins)


class TokenEmbedStage(nn.Module):
    """The LLM's input embedding of one decoded action token."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.embed = model.llm.embed_tokens

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        return self.embed(token)  # (1, 1, D)


def token_stage_modules(model: nn.Module, shared: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Torch module of every autoregressive stage, keyed like `token_stage_io`."""
    from mole_inference.export.stages import layer_stage

    k = model.cfg.llm.num_layers
    mods = dict(shared)
    mods.update({layer_stage(i): PrefillLayerStage(model, i) for i in range(k)})
    mods["lm_head"], mods["token_embed"] = LMHeadStage(model), TokenEmbedStage(model)
    mods.update({decode_stage(i): DecodeLayerStage(model, i) for i in range(k)})
    return mods


@torch.no_grad()
def prefill_example_inputs(model: nn.Module, mods: dict[str, nn.Module], ins: dict, router_out: tuple
                           ) -> tuple[dict, torch.Tensor, dict[int, tuple[torch.Tensor, torch.Tensor]]]:
    """Every `layer_XX` prefill stage's inputs after `ins`, chained through the torch modules (shared by the
    autoregressive and flow families): (inputs so far, last hidden state, {layer: (k, v)})."""
    from mole_inference.export.stages import layer_stage

    _, h, bias, cos, sin = router_out
    ins, kv = dict(ins), {}
    for i in range(model.cfg.llm.num_layers):
        ins[layer_stage(i)] = (h, bias, cos, sin)
        h, k, v = mods[layer_stage(i)](h, bias, cos, sin)
        kv[i] = (k, v)
    return ins, h, kv


@torch.no_grad()
def token_example_inputs(model: nn.Module, mods: dict[str, nn.Module], ins: dict, router_out: tuple,
                         gen: torch.Generator) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs of the autoregressive stages after `ins` (vision, router), chained through the torch modules.

    The decode example is the second fed-back token: the prompt's keys, slot S from the first token, and noise
    in the slots still masked (they must not matter).
    """
    cfg: ModelConfig = model.cfg
    s, p = cfg.seq_len, past_len(cfg)
    ins, h, kv = prefill_example_inputs(model, mods, ins, router_out)
    ins["lm_head"] = (h[:, -1:],)
    token = model.action_head.tokenizer.greedy(mods["lm_head"](h[:, -1:])).view(1, 1)
    ins["token_embed"] = (token,)
    x = mods["token_embed"](token)
    key_mask = torch.zeros((1, p + 1), dtype=torch.bool)
    key_mask[:, :s] = router_out[2][0, 0, -1] == 0  # the prompt's last query sees exactly its valid keys (causal)
    key_mask[:, -1] = True
    past = {i: tuple(torch.randn(kv_shape(cfg, p), generator=gen) for _ in range(2)) for i in kv}
    for i, (k, v) in kv.items():
        past[i][0][:, :, :s], past[i][1][:, :, :s] = k, v
    position = s
    if p > s:  # a second token is fed back: fill slot S with the first one's keys/values
        for i in kv:
            _, k1, v1 = mods[decode_stage(i)](x, torch.tensor([[s]]), key_mask, *past[i])
            past[i][0][:, :, s:s + 1], past[i][1][:, :, s:s + 1] = k1, v1
        key_mask[:, s], position = True, s + 1
    for i in kv:
        ins[decode_stage(i)] = (x, torch.tensor([[position]]), key_mask, *past[i])
    return ins
