"""MoLe-wrapped LLaMA decoder (Eq. 7): we own the layer loop and call Hugging Face decoder layers from it.

Prompt layout (fixed length, so exported shapes are static): [image tokens | instruction padded to
`max_text_tokens` | cognition token]. Padding tokens are masked as keys; one prefill per control step, never a
KV cache across steps. Within one step the autoregressive family decodes its action tokens after the prompt with a
`LayerCache`: keys and values of the layers that ran, so a skipped layer holds nothing. The flow family reads the
same cache from its action expert and builds the LLM with `causal=False`: pi0's prefix attends bidirectionally.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from mole_inference.config.model import LLMConfig

log = logging.getLogger(__name__)


def hf_llama_config(cfg: LLMConfig):
    """The transformers LlamaConfig with our shapes (eager-free SDPA attention)."""
    from transformers import LlamaConfig

    hf = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads or cfg.num_heads, rms_norm_eps=cfg.rms_norm_eps,
        rope_theta=cfg.rope_theta, max_position_embeddings=4096, attention_bias=False, hidden_act=cfg.hidden_act,
    )
    hf._attn_implementation = "sdpa"
    return hf


def attention_bias(key_mask: torch.Tensor, dtype: torch.dtype, past: int = 0, causal: bool = True) -> torch.Tensor:
    """Additive causal mask (B, 1, S - past, S) from a key padding mask (B, S) bool; finfo.min, never -inf.

    The queries are the last S - past positions (`past` > 0: decoding after cached keys). ONNX Runtime returns
    NaN for rows whose every key is -inf; finfo.min keeps them finite. `causal=False`: every query sees every
    valid key (pi0's bidirectional prefix).
    """
    s = key_mask.shape[1]
    order = torch.ones((s, s), dtype=torch.bool, device=key_mask.device)
    order = (order.tril() if causal else order)[past:]
    allowed = order.unsqueeze(0) & key_mask.unsqueeze(1)  # (B, S - past, S)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min).unsqueeze(1)


class LayerCache:
    """Keys and values (B, H_kv, P, Dh) per decoder layer index, for the layers that ran; skipped: no entry.

    Duck-types the one method transformers' attention calls (`update`), so the HF layers fill it themselves.
    """

    def __init__(self) -> None:
        self.kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append this call's keys/values to layer `layer_idx`'s and return all of them."""
        if layer_idx in self.kv:
            k, v = self.kv[layer_idx]
            key, value = torch.cat([k, key], dim=2), torch.cat([v, value], dim=2)
        self.kv[layer_idx] = (key, value)
        return key, value

    @property
    def layers(self) -> list[int]:
        """Layer indices holding keys/values, ascending."""
        return sorted(self.kv)


def cache_kwarg() -> str:
    """Name of the decoder layer's cache argument (`cache` in newer transformers, `past_key_values` before)."""
    import inspect

    from transformers.models.llama.modeling_llama import LlamaAttention

    return "cache" if "cache" in inspect.signature(LlamaAttention.forward).parameters else "past_key_values"


class MoLeLLM(nn.Module):
    """LLaMA decoder whose layers run only where the gate says so.

    `forward(h, key_mask, layers=...)`: inference; unlisted layers are never called.
    `forward(h, key_mask, gate=...)`: training; every layer runs and mixes as Eq. 7 so the gate gets
    gradients (straight-through top-k values are exactly 0/1 in the forward pass).
    `causal=False` (the flow family): the prompt attends bidirectionally, as PaliGemma's prefix does.
    """

    def __init__(self, cfg: LLMConfig, causal: bool = True) -> None:
        super().__init__()
        from transformers.models.llama.modeling_llama import (
            LlamaDecoderLayer,
            LlamaRMSNorm,
            LlamaRotaryEmbedding,
        )

        self.cfg, self.causal = cfg, causal
        hf = hf_llama_config(cfg)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(hf, layer_idx=i) for i in range(cfg.num_layers))
        self.norm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=hf)
        if cfg.weights:
            self.load_hf_weights(cfg.weights)

    def load_hf_weights(self, path: str) -> None:
        """Load a local LLaMA checkpoint folder (`model.*` keys of LlamaForCausalLM / LlamaModel)."""
        from transformers import LlamaModel

        src = LlamaModel.from_pretrained(path, local_files_only=True).state_dict()
        missing, unexpected = self.load_state_dict(src, strict=False)
        log.info("loaded LLaMA weights from %s (missing %d, unexpected %d)", path, len(missing), len(unexpected))

    def rope(self, h: torch.Tensor, start: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary (cos, sin) for positions start..start+S-1."""
        pos = torch.arange(start, start + h.shape[1], device=h.device).unsqueeze(0)
        return self.rotary_emb(h, position_ids=pos)

    def run_layer(self, idx: int, h: torch.Tensor, bias: torch.Tensor,
                  rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """One decoder layer: (B, S, D) -> (B, S, D)."""
        return self.layers[idx](h, attention_mask=bias, position_embeddings=rope)

    def run_layer_on(self, idx: int, h: torch.Tensor, key_mask: torch.Tensor, positions: torch.Tensor
                     ) -> torch.Tensor:
        """One decoder layer over a subset of the prompt (Mixture-of-Depths): tokens h (B, c, D) taken at
        ascending `positions` (B, c) of the prompt, their key mask (B, c). They attend causally among themselves
        only and keep their rotary positions. Returns (B, c, D)."""
        bias = attention_bias(key_mask, h.dtype, causal=self.causal)  # ascending positions: causal order = index
        rope = self.rotary_emb(h, position_ids=positions)
        return self.layers[idx](h, attention_mask=bias, position_embeddings=rope)

    def forward(self, h: torch.Tensor, key_mask: torch.Tensor, layers: Sequence[int] | None = None,
                gate: torch.Tensor | None = None, cache: LayerCache | None = None) -> torch.Tensor:
        """Hidden states after the final norm (B, n, D); see the class docstring for `layers` / `gate`.

        With `cache`, `h` holds the n newest tokens, `key_mask` (B, P + n) every key so far; the layers that run
        read the cached P positions and append these n. A gated (training) pass may record into an empty cache
        (the flow expert reads every layer's keys/values from it), never read from one.
        """
        past = key_mask.shape[1] - h.shape[1]
        if gate is not None and past:
            raise ValueError("a gated (training) pass takes the whole sequence: pass layers= to decode after a cache")
        bias, rope = attention_bias(key_mask, h.dtype, past, self.causal), self.rope(h, past)
        kwargs = {cache_kwarg(): cache} if cache is not None else {}
        if gate is not None:
            for i in range(len(self.layers)):
                g = gate[:, i].view(-1, 1, 1).to(h.dtype)
                out = self.layers[i](h, attention_mask=bias, position_embeddings=rope, **kwargs)
                h = g * out + (1.0 - g) * h  # Eq. 7
        else:
            for i in range(len(self.layers)) if layers is None else sorted(layers):
                h = self.layers[i](h, attention_mask=bias, position_embeddings=rope, **kwargs)
        return self.norm(h)
