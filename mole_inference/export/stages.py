"""The exported stages of one control step, as small torch modules with fixed shapes (batch 1).

The diffusion family (CogACT) below; the autoregressive family (OpenVLA) shares vision and router and replaces
the rest with prefill, decode and LM-head stages (export/token_stages.py); the flow family (pi0) with the same
prefill stages, then suffix, expert-layer and velocity stages (export/flow_stages.py). `stage_io` and
`stage_modules` pick by `action_head.type`.

    vision     pixels (1, 3, R, R) f32                      -> img (1, N, D)
    router     img, ids (1, T) i64, text_mask (1, T) bool    -> probs (1, K), h (1, S, D), bias (1, 1, S, S),
               [, state (1, 7) f32]                             cos (1, S, Dh), sin (1, S, Dh)
    layer_XX   h, bias, cos, sin                             -> h_out (1, S, D)        one graph per decoder layer
    cognition  h (1, S, D)                                   -> cognition (1, D)      final norm, last token
    denoise    x (1, C, A) f32, t (1,) i64, cognition        -> eps (1, C, A)         one DDIM step's eps
    gripper    cognition                                     -> gripper (1, C)        P(open) per step, only with
                                                                                       action_head.gripper_head

The router stage also embeds the instruction and assembles the prompt, the attention bias and the rotary tables,
so the layers share them (and, under TensorRT, share their buffers). With `vision.state_input` it takes the robot
state too (model/state_input.py: added to the cognition token, so only `h` depends on it); without, its inputs are
exactly the three above. It builds the prompt for every family, so the state needs no other stage. The DDIM loop
and top-k stay on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mole_inference.config.model import ModelConfig
from mole_inference.errors import ConfigError
from mole_inference.model.llm import attention_bias
from mole_inference.model.state_input import STATE_DIM

EXPORTABLE_ROUTERS = ("star", "linear", "early_exit", "full")
_NOT_EXPORTABLE = {
    "random": "its draws happen on the host",
    "mod": "it routes tokens inside every layer, which the per-layer stages do not express",
    "dynamic_exit": "its exit test runs between layers, which the staged runtimes do not implement",
}


EXPORTABLE_FAMILIES = ("diffusion", "autoregressive", "flow")
# A plausible robot state (model/state_input.py layout) where a real one is not at hand (tracing, INT8 calibration,
# benchmarks): the hand 20 cm above the table centre, pointing down (x-axis half-turn, xyzw).
EXAMPLE_STATE = (0.5, 0.0, 0.2, 1.0, 0.0, 0.0, 0.0)


def check_exportable(router_type: str, what: str = "exported", family: str = "diffusion") -> None:
    """Raise ConfigError naming `router_type` or the action head `family` unless the exported stages can run it."""
    if family not in EXPORTABLE_FAMILIES:
        raise ConfigError(f"action_head.type={family!r} cannot be {what} (it has no exported form; the exported "
                          f"families are {list(EXPORTABLE_FAMILIES)}); use the torch backend")
    if router_type not in EXPORTABLE_ROUTERS:
        why = _NOT_EXPORTABLE.get(router_type, "it has no exported form")
        raise ConfigError(f"router.type={router_type!r} cannot be {what} ({why}); use one of "
                          f"{list(EXPORTABLE_ROUTERS)}, or the torch backend")


def layer_stage(idx: int) -> str:
    """Stage name of decoder layer `idx` (zero-padded so files sort in layer order)."""
    return f"layer_{idx:02d}"


@dataclass(frozen=True)
class TensorSpec:
    """Name, static shape and dtype (numpy name) of one stage input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        """Plain dict for the manifest."""
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_json(cls, data: dict) -> TensorSpec:
        """Inverse of `to_json`."""
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))


def stage_io(cfg: ModelConfig) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
    """(inputs, outputs) of every stage of the config's family, in run order, at the preset's fixed token count."""
    r, n, t = cfg.vision.image_size, cfg.vision.num_patches, cfg.llm.max_text_tokens
    d, k, s = cfg.llm.hidden_size, cfg.llm.num_layers, cfg.seq_len
    hd = d // cfg.llm.num_heads
    c, a = cfg.action_head.chunk_size, cfg.action_head.action_dim
    f32 = "float32"
    h, bias = TensorSpec("h", (1, s, d), f32), TensorSpec("bias", (1, 1, s, s), f32)
    cos, sin = TensorSpec("cos", (1, s, hd), f32), TensorSpec("sin", (1, s, hd), f32)
    cog = TensorSpec("cognition", (1, d), f32)
    io = {
        "vision": ([TensorSpec("pixels", (1, 3, r, r), f32)], [TensorSpec("img", (1, n, d), f32)]),
        "router": ([TensorSpec("img", (1, n, d), f32), TensorSpec("ids", (1, t), "int64"),
                    TensorSpec("text_mask", (1, t), "bool")],
                   [TensorSpec("probs", (1, k), f32), h, bias, cos, sin]),
    }
    if cfg.vision.state_input:
        io["router"][0].append(TensorSpec("state", (1, STATE_DIM), f32))
    if cfg.action_head.type == "autoregressive":
        from mole_inference.export.token_stages import token_stage_io  # imports this module

        return token_stage_io(cfg, io)
    if cfg.action_head.type == "flow":
        from mole_inference.export.flow_stages import flow_stage_io  # imports this module

        return flow_stage_io(cfg, io)
    for i in range(k):
        io[layer_stage(i)] = ([h, bias, cos, sin], [TensorSpec("h_out", (1, s, d), f32)])
    io["cognition"] = ([h], [cog])
    io["denoise"] = ([TensorSpec("x", (1, c, a), f32), TensorSpec("t", (1,), "int64"), cog],
                     [TensorSpec("eps", (1, c, a), f32)])
    if cfg.action_head.gripper_head:  # the host puts P(open) in the sampled chunk's gripper column
        io["gripper"] = ([cog], [TensorSpec("gripper", (1, c), f32)])
    return io


class VisionStage(nn.Module):
    """pixels -> projected image tokens."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)  # (1, N, D)


class RouterStage(nn.Module):
    """Router probabilities plus everything the layers share: prompt, attention bias, rotary tables.

    `state` (1, 7) is passed (and exported as an input) only with `vision.state_input`.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, img: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor,
                state: torch.Tensor | None = None):
        m = self.model
        text = m.embed_text(ids)  # (1, T, D)
        probs = m.route(img, text, text_mask).probs  # (1, K)
        h, key_mask = m.prompt(img, text, text_mask, state)  # (1, S, D), (1, S)
        cos, sin = m.llm.rope(h)  # (1, S, Dh) each
        return probs, h, attention_bias(key_mask, h.dtype, causal=m.llm.causal), cos, sin


class LayerStage(nn.Module):
    """One decoder layer with the shared bias and rotary tables as inputs."""

    def __init__(self, model: nn.Module, idx: int) -> None:
        super().__init__()
        self.llm, self.idx = model.llm, idx

    def forward(self, h: torch.Tensor, bias: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        return self.llm.run_layer(self.idx, h, bias, (cos, sin))  # (1, S, D)


class CognitionStage(nn.Module):
    """Final RMSNorm of the cognition (last) token; the norm is per token, so the others are skipped."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.norm = model.llm.norm

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h[:, -1])  # (1, D)


class DenoiseStage(nn.Module):
    """One eps prediction of the DiT head, classifier-free guidance included when cfg_scale > 1."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, t: torch.Tensor, cognition: torch.Tensor) -> torch.Tensor:
        return self.model.denoise(x, t, cognition)  # (1, C, A)


class GripperStage(nn.Module):
    """The gripper classifier's P(open) per chunk step (`action_head.gripper_head`, model/gripper_head.py)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.head = model.gripper_head

    def forward(self, cognition: torch.Tensor) -> torch.Tensor:
        return self.head.open_prob(cognition)  # (1, C)


def stage_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Torch module of every stage, keyed like `stage_io`."""
    cfg: ModelConfig = model.cfg
    check_exportable(cfg.router.type, family=cfg.action_head.type)
    mods: dict[str, nn.Module] = {"vision": VisionStage(model), "router": RouterStage(model)}
    if cfg.action_head.type == "autoregressive":
        from mole_inference.export.token_stages import token_stage_modules

        return token_stage_modules(model, mods)
    if cfg.action_head.type == "flow":
        from mole_inference.export.flow_stages import flow_stage_modules

        return flow_stage_modules(model, mods)
    mods.update({layer_stage(i): LayerStage(model, i) for i in range(cfg.llm.num_layers)})
    mods["cognition"] = CognitionStage(model)
    mods["denoise"] = DenoiseStage(model)
    if cfg.action_head.gripper_head:
        mods["gripper"] = GripperStage(model)
    return mods


def example_state(gen: torch.Generator) -> torch.Tensor:
    """(1, 7) `EXAMPLE_STATE` moved a few cm and tilted at random: every state feature is exercised."""
    jitter = torch.tensor([0.05, 0.05, 0.05, 0.2, 0.2, 0.2, 0.2]) * torch.randn((1, STATE_DIM), generator=gen)
    return torch.tensor([EXAMPLE_STATE]) + jitter


@torch.no_grad()
def example_inputs(model: nn.Module, seed: int = 0) -> dict[str, tuple[torch.Tensor, ...]]:
    """Realistic inputs for every stage (tracing and parity checks), chained through the torch model."""
    cfg: ModelConfig = model.cfg
    gen = torch.Generator().manual_seed(seed)
    r, t = cfg.vision.image_size, cfg.llm.max_text_tokens
    pixels = torch.rand((1, 3, r, r), generator=gen)
    ids = torch.randint(4, cfg.llm.vocab_size, (1, t), generator=gen)
    text_mask = torch.zeros((1, t), dtype=torch.bool)
    text_mask[:, : max(1, t // 2)] = True  # padded instruction: exercises masked keys
    mods = stage_modules(model)
    img = mods["vision"](pixels)
    router_in: tuple[torch.Tensor, ...] = (img, ids, text_mask)
    if cfg.vision.state_input:
        router_in += (example_state(gen),)
    router_out = mods["router"](*router_in)
    _, h, bias, cos, sin = router_out
    ins: dict[str, tuple[torch.Tensor, ...]] = {"vision": (pixels,), "router": router_in}
    if cfg.action_head.type == "autoregressive":
        from mole_inference.export.token_stages import token_example_inputs

        return token_example_inputs(model, mods, ins, router_out, gen)
    if cfg.action_head.type == "flow":
        from mole_inference.export.flow_stages import flow_example_inputs

        return flow_example_inputs(model, mods, ins, router_out, gen)
    for i in range(cfg.llm.num_layers):
        ins[layer_stage(i)] = (h, bias, cos, sin)
        h = mods[layer_stage(i)](h, bias, cos, sin)
    ins["cognition"] = (h,)
    cog = mods["cognition"](h)
    x = torch.randn((1, cfg.action_head.chunk_size, cfg.action_head.action_dim), generator=gen)
    ins["denoise"] = (x, torch.tensor([cfg.action_head.train_timesteps // 2]), cog)
    if cfg.action_head.gripper_head:
        ins["gripper"] = (cog,)
    return ins
