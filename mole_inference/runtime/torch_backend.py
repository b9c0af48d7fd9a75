"""PyTorch backend (CPU or CUDA; float32, bfloat16, float16): stage-by-stage inference with timings."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from mole_inference.config import ModelConfig, preset
from mole_inference.errors import BackendUnavailableError, ConfigError
from mole_inference.model.action_stats import ActionStats
from mole_inference.policy.contract import RoutingDecision
from mole_inference.runtime.staged import StagedPolicy

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def config_overrides(router: str | None = None, active_layers: int | None = None,
                     cfg_scale: float | None = None) -> dict[str, dict[str, object]]:
    """ModelConfig sections and fields to change for `router` (type), `active_layers` (top-k) and `cfg_scale`
    (the diffusion head's classifier-free guidance); empty when all are None."""
    out: dict[str, dict[str, object]] = {}
    if router is not None:
        out.setdefault("router", {})["type"] = router
    if active_layers is not None:
        out.setdefault("router", {})["num_active_layers"] = active_layers
    if cfg_scale is not None:
        out.setdefault("action_head", {})["cfg_scale"] = cfg_scale
    return out


def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """Validate a device/dtype pair; CUDA requested where absent is a BackendUnavailableError."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: expected one of {sorted(DTYPES)}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device={device!r}: CUDA is not available in this torch build")
    if device == "cpu" and dtype == "float16":
        raise ConfigError("dtype='float16' on the CPU is unsupported by many kernels; use float32 or bfloat16")
    return torch.device(device), DTYPES[dtype]


class StageTimer:
    """Wall-clock per stage, synchronizing CUDA so times belong to the stage that queued the work."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        yield
        if self.cuda:
            torch.cuda.synchronize()
        self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3


class TorchPolicy(StagedPolicy):
    """MoLe-VLA in PyTorch behind the Policy contract (host-side steps shared with the exported backends)."""

    exported_stages = False  # runs the torch model: every router type, mod and dynamic_exit included

    def __init__(self, model: torch.nn.Module, cfg: ModelConfig, stats: ActionStats, device: str = "cpu",
                 dtype: str = "float32") -> None:
        self.device, self.dtype = resolve_device(device, dtype)
        super().__init__(cfg, stats, model.router.k)
        self.model = model.to(self.device, self.dtype).eval()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", dtype: str = "float32",
                        router: str | None = None, active_layers: int | None = None,
                        cfg_scale: float | None = None) -> TorchPolicy:
        """Load a checkpoint folder; `router` swaps the router type (ablations: random, early_exit, full, and
        mod / dynamic_exit, whose own settings come from the checkpoint's router section); `active_layers` runs
        the same weights at another top-k (the paper's Fig. 3 budget axis, at inference only); `cfg_scale` sets
        the diffusion head's classifier-free guidance (needs a model trained with `cond_dropout` > 0)."""
        from mole_inference.config import from_dict, to_dict
        from mole_inference.model.checkpoint import load_checkpoint, read_checkpoint_config

        cfg = None
        if overrides := config_overrides(router, active_layers, cfg_scale):
            data = to_dict(read_checkpoint_config(path)[0])
            for section, fields in overrides.items():
                data[section].update(fields)
            cfg = from_dict(ModelConfig, data)
        model, cfg, stats = load_checkpoint(path, cfg=cfg)
        return cls(model, cfg, stats, device, dtype)

    @classmethod
    def from_config(cls, cfg: ModelConfig, device: str = "cpu", dtype: str = "float32",
                    seed: int = 0) -> TorchPolicy:
        """Random weights (no checkpoint): for benchmarks and wiring tests; identity action stats. The weights are
        drawn on the target device (a 7B preset initialises in seconds on a GPU, not minutes on the host)."""
        from mole_inference.model.vla import MoLeVLA

        torch.manual_seed(seed)
        log.warning("building %s with random weights: actions are meaningless", cfg.name)
        with torch.device(resolve_device(device, dtype)[0]):
            model = MoLeVLA(cfg)
        return cls(model, cfg, ActionStats.identity(cfg.action_head.action_dim), device, dtype)

    @classmethod
    def from_preset(cls, name: str, device: str = "cpu", dtype: str = "float32", seed: int = 0) -> TorchPolicy:
        """`from_config` on a named preset."""
        return cls.from_config(preset(name), device, dtype, seed)

    def prepare(self, image: np.ndarray, instruction: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checked inputs -> pixels (1, 3, S, S), ids (1, T), text mask (1, T) as tensors on the device."""
        pixels, ids, mask = super().prepare(image, instruction)
        return (torch.from_numpy(pixels).to(self.device, self.dtype), torch.from_numpy(ids).to(self.device),
                torch.from_numpy(mask).to(self.device))

    @torch.inference_mode()
    def run(self, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, noise: np.ndarray,
            layers: Sequence[int] | None = None, state: np.ndarray | None = None
            ) -> tuple[np.ndarray, RoutingDecision, dict[str, float]]:
        """Staged forward pass: normalized actions (C, A), routing, per-stage ms.

        `layers` overrides the router (None: the router's top-k; `range(K)`: the full model). The autoregressive
        family ignores `noise` (greedy decoding) and times prompt and token decoding together as `llm`. The flow
        family times the prefill as `llm` and the Euler steps (expert layers paired with the run layers) as
        `action_head`.
        """
        m, timer = self.model, StageTimer(self.device)
        st = None if state is None else torch.from_numpy(np.asarray(state, np.float32)).to(self.device).unsqueeze(0)
        with timer("vision"):
            img = m.encode_image(pixels)
            text = m.embed_text(ids)
        with timer("router"):
            out = m.route(img, text, mask)
            chosen = list(layers) if layers is not None else m.select(out)[0]
        if m.family == "autoregressive":  # the LLM decodes the action tokens: its time is the llm stage
            with timer("llm"):
                h, key_mask = m.prompt(img, text, mask, st)
                actions = m.decode_actions(h, key_mask, chosen)
            timer.ms["action_head"] = 0.0
        elif m.family == "flow":  # one prefill per step; every Euler step reads its cache
            with timer("llm"):
                h, key_mask = m.prompt(img, text, mask, st)
                _, cache = m.prefill(h, key_mask, chosen)
            with timer("action_head"):
                x = torch.from_numpy(noise).to(self.device, self.dtype)
                actions = m.sample_flow(cache, key_mask, chosen, x)
        else:
            with timer("llm"):  # mod and dynamic_exit act inside the chosen layers; a forced set runs as given
                h, key_mask = m.prompt(img, text, mask, st)
                cognition, ran = m.run_layers(h, key_mask, [chosen], routed=layers is None)
                chosen = ran[0]
            with timer("action_head"):
                x = torch.from_numpy(noise).to(self.device, self.dtype)
                actions = m.sample_actions(cognition, x)
        timer.ms["total"] = sum(timer.ms.values())
        probs = out.probs[0].float().cpu().numpy()
        routing = RoutingDecision(layers=tuple(chosen), probs=probs, total_layers=self.num_layers)
        return actions[0].float().cpu().numpy().astype(np.float64), routing, timer.ms
