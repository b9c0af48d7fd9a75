"""Host side shared by the exported backends (onnxruntime, tensorrt): pre-processing, top-k, DDIM, `infer`.

The autoregressive family's greedy token loop and the flow family's Euler loop live with their stages
(export/token_loop.py, export/flow_loop.py), like the stages the engines run; the autoregressive `run` returns one
action (1, A) and ignores the noise `infer` draws (as TorchPolicy does), the flow `run` integrates from it.

A backend subclasses `StagedPolicy` and implements `run`; `mole_inference.runtime.bench.bench` and the ROS node
use it unchanged. Numbers match `TorchPolicy`: same resize, tokenizer, numpy noise, scheduler and stats.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from mole_inference.config.model import ModelConfig
from mole_inference.export.stages import check_exportable
from mole_inference.model.action_stats import ActionStats
from mole_inference.model.diffusion import DDIMScheduler
from mole_inference.model.routers import topk_mask
from mole_inference.model.state_input import check_state
from mole_inference.model.tokenizer import load_tokenizer, tokenize_batch
from mole_inference.policy.contract import ActionChunk, Policy, RoutingDecision
from mole_inference.policy.processing import check_instruction, initial_noise, resize_image, to_chw_float

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StagedPolicy(Policy):
    """A Policy whose stages run in an engine; subclasses implement `run` (see TorchPolicy.run for its contract)."""

    exported_stages = True  # runs the exported stages: only router types those can express (see export.stages)

    def __init__(self, cfg: ModelConfig, stats: ActionStats, k: int) -> None:
        if self.exported_stages:
            check_exportable(cfg.router.type, f"run by {type(self).__name__}", cfg.action_head.type)
        self.cfg, self.stats, self.k = cfg, stats, k
        self.tokenizer = load_tokenizer(cfg.llm.tokenizer, cfg.llm.vocab_size, cfg.llm.text_tokenizer)
        self.scheduler = DDIMScheduler(cfg.action_head)
        self.action_dt = cfg.action_dt
        self.chunk_size = cfg.action_head.chunk_size
        self.num_layers = cfg.llm.num_layers
        self._rng = np.random.default_rng()

    def prepare(self, image: np.ndarray, instruction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked inputs -> pixels (1, 3, S, S) float32, ids (1, T) int64, text mask (1, T) bool (numpy)."""
        text = check_instruction(instruction)
        pixels = to_chw_float(resize_image(image, self.cfg.vision.image_size))
        ids, mask = tokenize_batch(self.tokenizer, [text], self.cfg.llm.max_text_tokens)
        return pixels, ids.numpy(), mask.numpy()

    def select(self, probs: np.ndarray) -> list[int]:
        """The router's top-k layers, ascending, from probabilities (1, K) (same rule as MoLeVLA.select)."""
        mask = topk_mask(torch.from_numpy(np.asarray(probs, dtype=np.float32)), self.k)
        return torch.nonzero(mask[0]).flatten().tolist()

    def routing(self, chosen: Sequence[int], probs: np.ndarray) -> RoutingDecision:
        """The RoutingDecision of one step."""
        return RoutingDecision(layers=tuple(chosen), probs=np.asarray(probs, dtype=np.float32)[0],
                               total_layers=self.num_layers)

    def sample(self, eps_fn: EpsFn, noise: torch.Tensor) -> torch.Tensor:
        """DDIM from `noise` (1, C, A) with the model's scheduler; `eps_fn(x_t, t)` runs the denoise stage."""
        return self.scheduler.sample(eps_fn, noise)

    @abc.abstractmethod
    def run(self, pixels: np.ndarray, ids: np.ndarray, mask: np.ndarray, noise: np.ndarray,
            layers: Sequence[int] | None = None, state: np.ndarray | None = None
            ) -> tuple[np.ndarray, RoutingDecision, dict[str, float]]:
        """Normalized actions (C, A) float64, routing, per-stage ms (`vision`, `router`, `llm`, `action_head`,
        `total`); `layers` overrides the router (None: top-k; `range(K)`: the full model); `state` (7,) float32
        the checked robot state for models with `vision.state_input` (None otherwise)."""

    def infer(self, image: np.ndarray, instruction: str, *, seed: int | None = None,
              state: np.ndarray | None = None, layers: Sequence[int] | None = None) -> ActionChunk:
        """See Policy.infer; `layers` forces a layer set (ablations, benchmarks)."""
        t0 = time.perf_counter()
        checked_state = check_state(state, self.cfg.vision.state_input)
        pixels, ids, mask = self.prepare(image, instruction)
        prep_ms = (time.perf_counter() - t0) * 1e3
        noise = initial_noise(seed, self.chunk_size, self.cfg.action_head.action_dim, self._rng)
        norm, routing, ms = self.run(pixels, ids, mask, noise, layers, state=checked_state)
        ms = {"preprocess": prep_ms, **ms}
        ms["total"] += prep_ms
        return ActionChunk(self.stats.denormalize(norm), routing, ms, self.action_dt)
