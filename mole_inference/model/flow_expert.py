"""pi0's action expert (the flow family's head): a smaller decoder whose layer j attends to LLM layer j's prefix.

Facts from openpi (`src/openpi/models/pi0.py`, `gemma.py`): the expert is a second set of transformer weights run
in the same attention as the VLM, layer by layer: at layer j its suffix tokens' queries read the prefix's layer-j
keys/values plus the suffix's own (the VLM must share head_dim and key/value heads with it). The suffix is one
state token (`state_proj`) then the chunk's noisy actions (`action_in_proj`) mixed with a sine-cosine embedding of
the flow time by `action_time_mlp_in` -> swish -> `action_time_mlp_out`; `action_out_proj` reads the velocity off
the action tokens after the final norm. Attention is blockwise causal: the prefix never sees the suffix, the state
token sees the prefix and itself, the action tokens the prefix, the state and each other.

MoLe decision, skipping pairs: expert layer j runs exactly when LLM layer j runs. A skipped layer costs nothing in
either model and the prefill's `LayerCache` holds only the run layers, so expert layer j never needs keys that were
not computed (reusing another layer's keys would feed layer j keys from a projection it was not trained with). In
training the expert's layer j is gated by the same straight-through gate as the LLM's (Eq. 7). The prefix runs once
per control step; all Euler steps read its cache through `PrefixKV`, which appends nothing.

Beyond openpi: the layers are LLaMA decoder layers (SwiGLU, RMSNorm) in Gemma-300M shapes, like our LLM; our
policy contract carries no robot state, so the state input is zeros and `state_proj`'s bias acts as a learned token.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mole_inference.config.model import ActionHeadConfig, LLMConfig
from mole_inference.model.flow_matching import time_embedding
from mole_inference.model.llm import LayerCache, cache_kwarg


def expert_llama_config(cfg: ActionHeadConfig, llm: LLMConfig):
    """The transformers LlamaConfig of the expert: Gemma-300M-like shapes, the LLM's norm eps, rotary base and MLP
    activation."""
    from transformers import LlamaConfig

    hf = LlamaConfig(
        vocab_size=1, hidden_size=cfg.hidden_size, intermediate_size=int(cfg.hidden_size * cfg.mlp_ratio),
        num_hidden_layers=cfg.depth, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads,
        head_dim=cfg.head_dim or cfg.hidden_size // cfg.num_heads, rms_norm_eps=llm.rms_norm_eps,
        rope_theta=llm.rope_theta, max_position_embeddings=4096, attention_bias=False, hidden_act=llm.hidden_act,
        bos_token_id=None, eos_token_id=None, pad_token_id=None,  # no vocabulary: the expert embeds actions
    )
    hf._attn_implementation = "sdpa"
    return hf


class PrefixKV:
    """The prefill's per-layer keys/values (B, H_kv, P, Dh) as the expert's attention reads them.

    Duck-types transformers' cache `update`: it returns the prefix's layer-j keys/values followed by the suffix's and
    stores nothing, so every Euler step reads the same prefill. `repeats` repeats each sample's prefix (training with
    several flow draws per sample). `reads` lists the layer indices read, in order (for tests and telemetry).
    """

    def __init__(self, cache: LayerCache, repeats: int = 1) -> None:
        self.kv = {j: (k.repeat_interleave(repeats, dim=0), v.repeat_interleave(repeats, dim=0)) if repeats > 1
                   else (k, v) for j, (k, v) in cache.kv.items()}
        self.reads: list[int] = []

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """LLM layer `layer_idx`'s prefix keys/values with this suffix's appended (B, H_kv, P + n, Dh)."""
        if layer_idx not in self.kv:
            raise KeyError(f"expert layer {layer_idx} runs but LLM layer {layer_idx} did not: pairs are skipped "
                           f"together (cached layers: {sorted(self.kv)})")
        self.reads.append(layer_idx)
        k, v = self.kv[layer_idx]
        return torch.cat([k, key], dim=2), torch.cat([v, value], dim=2)


def suffix_bias(key_mask: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (B, 1, n, P + n) of the suffix [state | n - 1 actions] over [prefix | suffix] keys.

    Prefix keys: valid ones (`key_mask` (B, P)); suffix keys: the state token sees itself, each action token sees
    the state and every action token (openpi's ar_mask [True, True, False, ...] over the suffix).
    """
    block = torch.ones(n, dtype=torch.long, device=key_mask.device)
    block[0] = 0
    own = block[None, :] <= block[:, None]  # (n, n): key block <= query block
    allowed = torch.cat([key_mask[:, None, :].expand(-1, n, -1), own[None].expand(key_mask.shape[0], -1, -1)],
                        dim=2)  # (B, n, P + n)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


class FlowExpert(nn.Module):
    """v(x_t, t | prefix): noisy chunk (B, C, A), flow times (B,) -> velocity (B, C, A), reading `PrefixKV`."""

    def __init__(self, cfg: ActionHeadConfig, llm: LLMConfig) -> None:
        super().__init__()
        from transformers.models.llama.modeling_llama import (
            LlamaDecoderLayer,
            LlamaRMSNorm,
            LlamaRotaryEmbedding,
        )

        self.cfg = cfg
        w = cfg.hidden_size
        hf = expert_llama_config(cfg, llm)
        self.state_proj = nn.Linear(cfg.action_dim, w)
        self.action_in_proj = nn.Linear(cfg.action_dim, w)
        self.action_time_mlp_in = nn.Linear(2 * w, w)
        self.action_time_mlp_out = nn.Linear(w, w)
        self.layers = nn.ModuleList(LlamaDecoderLayer(hf, layer_idx=j) for j in range(cfg.depth))
        self.norm = LlamaRMSNorm(w, eps=llm.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=hf)
        self.action_out_proj = nn.Linear(w, cfg.action_dim)

    def embed_suffix(self, x: torch.Tensor, t: torch.Tensor, state: torch.Tensor | None = None) -> torch.Tensor:
        """[state | actions mixed with the time] tokens (B, 1 + C, W)."""
        b, c = x.shape[:2]
        if state is None:
            state = x.new_zeros((b, self.cfg.action_dim))
        tokens = self.action_in_proj(x)  # (B, C, W)
        temb = time_embedding(t.float(), self.cfg.hidden_size).to(tokens.dtype)[:, None].expand(-1, c, -1)
        mixed = self.action_time_mlp_in(torch.cat([tokens, temb], dim=-1))  # (B, C, W)
        mixed = self.action_time_mlp_out(nn.functional.silu(mixed))
        return torch.cat([self.state_proj(state)[:, None], mixed], dim=1)  # (B, 1 + C, W)

    def attention_inputs(self, h: torch.Tensor, key_mask: torch.Tensor
                         ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """What every expert layer shares: the suffix bias (B, 1, n, P + n) over the prefix's valid keys `key_mask`
        (B, P), and the rotary tables (B, n, Dh) at positions P .. P + n - 1 (the suffix follows the prefix)."""
        p, n = key_mask.shape[1], h.shape[1]
        pos = torch.arange(p, p + n, device=h.device).unsqueeze(0)
        return suffix_bias(key_mask, n, h.dtype), self.rotary_emb(h, position_ids=pos)

    def run_layer(self, j: int, h: torch.Tensor, bias: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                  kv: PrefixKV) -> torch.Tensor:
        """Expert layer j over the suffix h (B, n, W), attending to LLM layer j's prefix in `kv` -> (B, n, W)."""
        return self.layers[j](h, attention_mask=bias, position_embeddings=rope, **{cache_kwarg(): kv})

    def velocity(self, h: torch.Tensor) -> torch.Tensor:
        """Velocity (B, C, A) of the action tokens from the last suffix states (B, 1 + C, W): final norm, out proj."""
        return self.action_out_proj(self.norm(h)[:, 1:])

    def forward(self, x: torch.Tensor, t: torch.Tensor, kv: PrefixKV, key_mask: torch.Tensor,
                layers: Sequence[int] | None = None, gate: torch.Tensor | None = None,
                state: torch.Tensor | None = None) -> torch.Tensor:
        """Velocity (B, C, A). `key_mask` (B, P): the prefix's valid keys. Inference: `layers` (the LLM's run
        layers; others never called). Training: `gate` (B, K) mixes every layer as Eq. 7 does the LLM's."""
        h = self.embed_suffix(x, t, state)  # (B, n, W)
        bias, rope = self.attention_inputs(h, key_mask)
        if gate is not None:
            for j in range(len(self.layers)):
                g = gate[:, j].view(-1, 1, 1).to(h.dtype)
                h = g * self.run_layer(j, h, bias, rope, kv) + (1.0 - g) * h
        else:
            for j in range(len(self.layers)) if layers is None else sorted(layers):
                h = self.run_layer(j, h, bias, rope, kv)
        return self.velocity(h)  # (B, C, A)
