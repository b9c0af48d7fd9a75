"""MoLe-VLA: vision -> router -> selected LLM layers -> cognition token -> action head of the family.

`action_head.type` picks the family (paper Table 1): `diffusion` (CogACT: the cognition token conditions a DiT),
`autoregressive` (OpenVLA: the selected layers go on to decode the action tokens, with a KV cache of those
layers only; the router runs once per control step, on the prompt) or `flow` (pi0: the prompt is a bidirectional
prefix whose run layers' keys/values an action expert reads, layer j from layer j, at every Euler step; skipped
layers are skipped in both, model/flow_expert.py). Each stage is a method with fixed shapes so runtimes can time it
and exporters can trace it alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mole_inference.config.model import ModelConfig
from mole_inference.model.action_head import DiTActionHead
from mole_inference.model.diffusion import DDIMScheduler
from mole_inference.model.dynamic_exit import exit_depth_gate, run_with_exit
from mole_inference.model.film import TextFiLM
from mole_inference.model.flow_expert import FlowExpert, PrefixKV
from mole_inference.model.flow_matching import euler_sample
from mole_inference.model.gripper_head import GripperHead, with_open_prob
from mole_inference.model.llm import LayerCache, MoLeLLM
from mole_inference.model.mod import mod_forward
from mole_inference.model.routers import RouterOutput, build_router, straight_through_gate, topk_mask
from mole_inference.model.state_input import StateInput
from mole_inference.model.token_head import TokenActionHead


class MoLeVLA(nn.Module):
    """The whole network; `cfg.router.type` picks the router, `cfg.router.num_active_layers` is k."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from mole_inference.model.vision import FusedVisionEncoder

        self.cfg = cfg
        d = cfg.llm.hidden_size
        self.vision = FusedVisionEncoder(cfg.vision, d)
        self.llm = MoLeLLM(cfg.llm, causal=cfg.action_head.type != "flow")  # pi0's prefix is bidirectional
        self.router = build_router(cfg.router, cfg.llm.num_layers, d)
        film = TextFiLM(d, cfg.vision.text_film_order, cfg.llm.max_text_tokens) if cfg.vision.text_film else None
        self.text_film = film  # beyond the paper, off by default
        # beyond the paper, off by default
        self.state_input = StateInput(d, cfg.vision.state_height_bands) if cfg.vision.state_input else None
        self.cognition_token = nn.Parameter(torch.zeros(1, 1, d))
        nn.init.normal_(self.cognition_token, std=0.02)
        self.action_head: DiTActionHead | TokenActionHead | FlowExpert
        self.scheduler: DDIMScheduler | None
        if cfg.action_head.type == "autoregressive":
            self.action_head = TokenActionHead(cfg.action_head, d, cfg.llm.vocab_size)
            self.scheduler = None
        elif cfg.action_head.type == "flow":
            self.action_head = FlowExpert(cfg.action_head, cfg.llm)
            self.scheduler = None
        else:
            self.action_head = DiTActionHead(cfg.action_head, d)
            self.scheduler = DDIMScheduler(cfg.action_head)
        # beyond the paper, off by default: P(open) per chunk step replaces the DiT's gripper column
        self.gripper_head = GripperHead(d, cfg.action_head.chunk_size) if cfg.action_head.gripper_head else None

    @property
    def num_layers(self) -> int:
        """K, the LLM depth."""
        return self.cfg.llm.num_layers

    @property
    def family(self) -> str:
        """The action head family: "diffusion", "autoregressive" or "flow"."""
        return self.cfg.action_head.type

    # --- stages -----------------------------------------------------------------------------------------
    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> image tokens (B, N, D)."""
        return self.vision(pixels)

    def embed_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Instruction ids (B, T) -> token embeddings (B, T, D)."""
        return self.llm.embed_tokens(ids)

    def route(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> RouterOutput:
        """Layer scores from the LLM's input embeddings."""
        return self.router(img, text, text_mask)

    def prompt(self, img: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor,
               state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """[image | text | cognition] embeddings (B, S, D) and the key mask (B, S).

        With `vision.text_film` the image tokens are modulated by the instruction first (model/film.py); with
        `vision.state_input` the robot state (B, 7) is added to the cognition token (model/state_input.py).
        """
        b = img.shape[0]
        if self.text_film is not None:
            img = self.text_film(img, text, text_mask)  # (B, N, D)
        cog = self.cognition_token.expand(b, -1, -1).to(img.dtype)  # (B, 1, D)
        if self.state_input is not None:
            if state is None:
                raise ValueError("vision.state_input is on: prompt() needs the robot state (B, 7)")
            cog = cog + self.state_input(state.to(img.dtype))
        h = torch.cat([img, text, cog], dim=1)
        ones = torch.ones((b, img.shape[1]), dtype=torch.bool, device=img.device)
        key_mask = torch.cat([ones, text_mask, ones[:, :1]], dim=1)
        return h, key_mask

    def select(self, out: RouterOutput) -> list[list[int]]:
        """Top-k layer indices per sample, ascending (the layers that run, Eq. 7)."""
        mask = topk_mask(out.probs, self.router.k)
        return [torch.nonzero(row).flatten().tolist() for row in mask]

    def hidden_states(self, h: torch.Tensor, key_mask: torch.Tensor, layers: Sequence[int] | None = None,
                      gate: torch.Tensor | None = None, cache: LayerCache | None = None) -> torch.Tensor:
        """Final-norm hidden states (B, S, D); the cognition feature is the last token."""
        return self.llm(h, key_mask, layers=layers, gate=gate, cache=cache)

    def run_layers(self, h: torch.Tensor, key_mask: torch.Tensor, chosen: list[list[int]], routed: bool = True
                   ) -> tuple[torch.Tensor, list[list[int]]]:
        """Cognition features (B, D) after running each sample's `chosen` layers; returns the layers that ran.

        With `routed`, the token-routing (mod) and dynamic-exit routers act inside the chosen layers; without,
        the chosen layers run on every token (a forced layer set, e.g. the full model).
        """
        kind = self.cfg.router.type
        if routed and kind == "dynamic_exit":
            r = self.cfg.router
            hidden, ran = run_with_exit(self.llm, h, key_mask, r.exit_threshold, r.exit_min_layers)
            return hidden[:, -1], [list(range(int(n))) for n in ran]
        if routed and kind == "mod":
            return mod_forward(self.llm, self.router, h, key_mask, self.cfg.router.mod_capacity)[:, -1], chosen
        if all(c == chosen[0] for c in chosen):
            return self.hidden_states(h, key_mask, layers=chosen[0])[:, -1], chosen
        # different layers per sample: run each on its own
        return torch.cat([self.hidden_states(h[i : i + 1], key_mask[i : i + 1], layers=c)[:, -1]
                          for i, c in enumerate(chosen)]), chosen

    def denoise(self, x: torch.Tensor, t: torch.Tensor, cognition: torch.Tensor) -> torch.Tensor:
        """One eps prediction (B, C, A); with cfg_scale > 1 it mixes conditional and null predictions."""
        s = self.cfg.action_head.cfg_scale
        if s <= 1.0:
            return self.action_head(x, t, cognition)
        null = self.action_head.null_condition.expand_as(cognition).to(cognition.dtype)
        eps = self.action_head(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cognition, null]))
        cond, uncond = eps.chunk(2)
        return uncond + s * (cond - uncond)

    def sample_actions(self, cognition: torch.Tensor, noise: torch.Tensor,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """DDIM from `noise` (B, C, A) to normalized actions in [-1, 1]; with `action_head.gripper_head` the gripper
        column is the classifier's P(open) instead of the sampled value."""
        actions = self.scheduler.sample(lambda x, t: self.denoise(x, t, cognition), noise, generator)
        return actions if self.gripper_head is None else with_open_prob(actions, self.gripper_head.open_prob(cognition))

    def decode_actions(self, h: torch.Tensor, key_mask: torch.Tensor, layers: Sequence[int],
                       use_cache: bool = True) -> torch.Tensor:
        """Autoregressive family: greedy action tokens after the prompt h (B, S, D) through `layers` only ->
        normalized actions (B, 1, A) float64. One routing decision serves every token of the step.

        `use_cache=False` recomputes the whole sequence for every token (the reference the cache is tested
        against); with the cache each new token runs through the same layers once, against their cached keys.
        """
        head, embed = self.action_head, self.llm.embed_tokens
        cache = LayerCache() if use_cache else None
        hidden = self.llm(h, key_mask, layers=layers, cache=cache)[:, -1]  # (B, D)
        ones = key_mask.new_ones((key_mask.shape[0], 1))
        ids: list[torch.Tensor] = []
        for j in range(self.cfg.action_head.action_dim):
            ids.append(head.next_token(hidden))  # (B,)
            if j + 1 == self.cfg.action_head.action_dim:
                break
            x = embed(ids[-1]).unsqueeze(1).to(h.dtype)  # (B, 1, D)
            key_mask = torch.cat([key_mask, ones], dim=1)
            if cache is not None:
                hidden = self.llm(x, key_mask, layers=layers, cache=cache)[:, -1]
            else:
                h = torch.cat([h, x], dim=1)
                hidden = self.llm(h, key_mask, layers=layers)[:, -1]
        return head.tokenizer.decode(torch.stack(ids, dim=1)).unsqueeze(1)  # (B, 1, A)

    def prefill(self, h: torch.Tensor, key_mask: torch.Tensor, layers: Sequence[int]
                ) -> tuple[torch.Tensor, LayerCache]:
        """Flow family: the prefix (B, S, D) through `layers` once -> cognition features (B, D) and the cache of
        those layers' keys/values (skipped layers: no entry), which every Euler step of the step reads."""
        cache = LayerCache()
        return self.llm(h, key_mask, layers=layers, cache=cache)[:, -1], cache

    def sample_flow(self, cache: LayerCache, key_mask: torch.Tensor, layers: Sequence[int], noise: torch.Tensor
                    ) -> torch.Tensor:
        """Flow family: `flow_steps` Euler steps from `noise` (B, C, A) at t=1 to the normalized chunk at t=0; expert
        layer j runs for each run LLM layer j, reading its cached prefix (model/flow_matching.py)."""
        kv = PrefixKV(cache)
        return euler_sample(lambda x, t: self.action_head(x, t, kv, key_mask, layers=layers), noise,
                            self.cfg.action_head.flow_steps)

    # --- whole passes --------------------------------------------------------------------------------------
    def cognition(self, pixels: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor,
                  layers: Sequence[int] | None = None, state: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, RouterOutput, list[list[int]]]:
        """Inference up to the cognition token: (B, D), router output, layers run per sample.

        `layers` overrides the router's choice (e.g. all layers for the full model).
        """
        img, text = self.encode_image(pixels), self.embed_text(ids)
        out = self.route(img, text, text_mask)
        chosen = [list(layers)] * img.shape[0] if layers is not None else self.select(out)
        h, key_mask = self.prompt(img, text, text_mask, state)
        cog, chosen = self.run_layers(h, key_mask, chosen, routed=layers is None)
        return cog, out, chosen

    def forward_train(self, pixels: torch.Tensor, ids: torch.Tensor, text_mask: torch.Tensor,
                      full: bool = False, suffix: torch.Tensor | None = None, cache: LayerCache | None = None,
                      state: torch.Tensor | None = None) -> tuple[torch.Tensor, RouterOutput, torch.Tensor]:
        """Training pass: hidden states (B, S, D), router output and the straight-through gate (B, K).

        `full=True` runs every layer on every token (the CogKD teacher). With the mod router every layer runs
        on its top-c tokens (the gate is all ones); dynamic_exit trains every layer (it exits at inference only), or
        with `exit_training: random_depth` each sample through its first j layers (model/dynamic_exit.py).
        `suffix` (B, n) token ids appended after the prompt (teacher forcing of the autoregressive family): the
        hidden states are then (B, S + n, D), the first S those of the prompt alone (causal attention).
        `cache` (flow family, routed pass): an empty LayerCache that records every layer's prefix keys/values.
        `state` (B, 7): the measured EE pose, with `vision.state_input`.
        """
        img, text = self.encode_image(pixels), self.embed_text(ids)
        out = self.route(img, text, text_mask)  # routed on the prompt only
        h, key_mask = self.prompt(img, text, text_mask, state)
        if suffix is not None:
            h = torch.cat([h, self.llm.embed_tokens(suffix).to(h.dtype)], dim=1)  # (B, S + n, D)
            key_mask = torch.cat([key_mask, torch.ones_like(suffix, dtype=torch.bool)], dim=1)
        if full:
            return self.hidden_states(h, key_mask), out, torch.ones_like(out.probs)
        if self.cfg.router.type == "mod":
            hidden = mod_forward(self.llm, self.router, h, key_mask, self.cfg.router.mod_capacity, train=True)
            return hidden, out, torch.ones_like(out.probs)
        r = self.cfg.router
        if r.type == "dynamic_exit" and r.exit_training == "random_depth":
            gate = exit_depth_gate(out.probs.shape[0], self.num_layers, r.exit_min_layers, out.probs.device)
            return self.hidden_states(h, key_mask, gate=gate.to(h.dtype), cache=cache), out, gate
        gate = straight_through_gate(out.probs, self.router.k)
        return self.hidden_states(h, key_mask, gate=gate, cache=cache), out, gate
