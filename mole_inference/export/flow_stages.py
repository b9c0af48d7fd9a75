"""Exported stages of the flow (pi0) family: prefix layers with keys/values, suffix embedding, expert layers, velocity.

    vision, router  as the diffusion family (export/stages.py); the router's bias is bidirectional (pi0's prefix)
    layer_XX     h (1, S, D), bias, cos, sin                    -> h_out (1, S, D), k, v (1, Hkv, S, Dh)
    suffix       x (1, C, A) f32, t (1,) f32                    -> suffix (1, n, W)     n = 1 + C: [state | actions]
    expert_XX    suffix (1, n, W), key_mask (1, S) bool, k, v (1, Hkv, S, Dh)
                                                                -> suffix_out (1, n, W)
    velocity     suffix (1, n, W)                               -> velocity (1, C, A)  expert final norm + out proj

`layer_XX` is the autoregressive family's prefill stage (export/token_stages.py): one decoder layer under the
router's bias, which is built with the LLM's own `causal` flag, so the same graph serves pi0's bidirectional
prefix. Expert stage j reads LLM layer j's prefix keys/values (the pairing of model/flow_expert.py) and builds the
suffix bias (finfo.min, never -inf) and its rotary tables at positions S .. S + n - 1 from `key_mask` with the
expert's own `attention_inputs`. The state token is the torch model's: zeros through `state_proj`. The Euler loop
runs on the host (export/flow_loop.py).
"""

from __future__ import annotations

import torch
from torch import nn

from mole_inference.config.model import ModelConfig
from mole_inference.export.token_stages import PrefillLayerStage, kv_shape, prefill_example_inputs
from mole_inference.model.flow_expert import PrefixKV
from mole_inference.model.llm import LayerCache


def expert_stage(idx: int) -> str:
    """Stage name of action-expert layer `idx` (it reads LLM layer `idx`'s prefix keys/values)."""
    return f"expert_{idx:02d}"


def flow_stage_io(cfg: ModelConfig, shared: dict) -> dict:
    """(inputs, outputs) of every flow stage after `shared` (vision, router), in run order."""
    from mole_inference.export.stages import TensorSpec, layer_stage

    f32 = "float32"
    s, d, k = cfg.seq_len, cfg.llm.hidden_size, cfg.llm.num_layers
    c, a, w = cfg.action_head.chunk_size, cfg.action_head.action_dim, cfg.action_head.hidden_size
    kv = [TensorSpec("k", kv_shape(cfg, s), f32), TensorSpec("v", kv_shape(cfg, s), f32)]
    router_out = shared["router"][1]
    io = dict(shared)
    for i in range(k):
        io[layer_stage(i)] = (router_out[1:], [TensorSpec("h_out", (1, s, d), f32), *kv])
    suffix = TensorSpec("suffix", (1, 1 + c, w), f32)
    io["suffix"] = ([TensorSpec("x", (1, c, a), f32), TensorSpec("t", (1,), f32)], [suffix])
    expert_in = [suffix, TensorSpec("key_mask", (1, s), "bool"), *kv]
    for i in range(k):
        io[expert_stage(i)] = (expert_in, [TensorSpec("suffix_out", (1, 1 + c, w), f32)])
    io["velocity"] = ([suffix], [TensorSpec("velocity", (1, c, a), f32)])
    return io


class SuffixStage(nn.Module):
    """The expert's input tokens: the state token, then the noisy actions mixed with the flow time."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.expert = model.action_head

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.expert.embed_suffix(x, t)  # (1, 1 + C, W)


class ExpertLayerStage(nn.Module):
    """Expert layer `idx` over the suffix, attending to LLM layer `idx`'s prefix keys/values and to the suffix."""

    def __init__(self, model: nn.Module, idx: int) -> None:
        super().__init__()
        self.expert, self.idx = model.action_head, idx

    def forward(self, suffix: torch.Tensor, key_mask: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                ) -> torch.Tensor:
        cache = LayerCache()
        cache.kv[self.idx] = (k, v)
        bias, rope = self.expert.attention_inputs(suffix, key_mask)  # (1, 1, n, S + n), (1, n, Dh) x 2
        return self.expert.run_layer(self.idx, suffix, bias, rope, PrefixKV(cache))  # (1, n, W)


class VelocityStage(nn.Module):
    """The expert's final norm and `action_out_proj` over the action tokens."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.expert = model.action_head

    def forward(self, suffix: torch.Tensor) -> torch.Tensor:
        return self.expert.velocity(suffix)  # (1, C, A)


def flow_stage_modules(model: nn.Module, shared: dict[str, nn.Module]) -> dict[str, nn.Module]:
    """Torch module of every flow stage, keyed like `flow_stage_io`."""
    from mole_inference.export.stages import layer_stage

    k = model.cfg.llm.num_layers
    mods = dict(shared)
    mods.update({layer_stage(i): PrefillLayerStage(model, i) for i in range(k)})
    mods["suffix"] = SuffixStage(model)
    mods.update({expert_stage(i): ExpertLayerStage(model, i) for i in range(k)})
    mods["velocity"] = VelocityStage(model)
    return mods


@torch.no_grad()
def flow_example_inputs(model: nn.Module, mods: dict[str, nn.Module], ins: dict, router_out: tuple,
                        gen: torch.Generator) -> dict[str, tuple[torch.Tensor, ...]]:
    """Inputs of the flow stages after `ins` (vision, router), chained through the torch modules: every layer's
    prefix, then one Euler step's suffix at t = 0.7 through every expert layer."""
    cfg: ModelConfig = model.cfg
    bias = router_out[2]
    ins, _, kv = prefill_example_inputs(model, mods, ins, router_out)
    x = torch.randn((1, cfg.action_head.chunk_size, cfg.action_head.action_dim), generator=gen)
    ins["suffix"] = (x, torch.tensor([0.7]))
    suffix = mods["suffix"](*ins["suffix"])
    key_mask = bias[0, 0, -1:] == 0  # (1, S): the valid prefix keys (every query sees them: bidirectional)
    for i, (k, v) in kv.items():
        ins[expert_stage(i)] = (suffix, key_mask, k, v)
        suffix = mods[expert_stage(i)](suffix, key_mask, k, v)
    ins["velocity"] = (suffix,)
    return ins
