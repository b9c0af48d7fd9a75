"""An export folder's stage graphs run in ONNX Runtime, in pipeline order: vision, router, then the family's loop
(diffusion: k layers, cognition, DDIM over denoise; autoregressive: k prefill layers, then greedy action tokens
through the same k decode layers, export/token_loop.py; flow: k prefill layers, then Euler steps through the same
k expert layers, export/flow_loop.py). The manifest's `family` picks the loop.

Lives in `export` because export itself runs its graphs: INT8 calibration records every stage's inputs and the
INT8 report measures action error against fp32. `runtime.onnx_backend.OnnxPolicy` wraps `OnnxStages` behind the
Policy contract (runtime -> export, never the reverse; DESIGN.md). Host-side steps use the same functions as
`runtime.staged.StagedPolicy` (resize, tokenizer, top-k, DDIM, action bins), so numbers match the Policy's. Every
feed is checked against the manifest's shapes and dtypes first: a wrong one is an InputError naming the tensor.
A model with `vision.state_input` gets the robot state as the router stage's fourth input (export/stages.py).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from mole_inference.errors import BackendUnavailableError, ConfigError, InputError
from mole_inference.export.flow_loop import flow_actions, prefix_kv
from mole_inference.export.manifest import Manifest
from mole_inference.export.stages import layer_stage
from mole_inference.export.token_loop import greedy_actions
from mole_inference.model.diffusion import DDIMScheduler
from mole_inference.model.gripper_head import with_open_prob
from mole_inference.model.routers import topk_mask
from mole_inference.model.state_input import check_state
from mole_inference.model.tokenizer import load_tokenizer, tokenize_batch
from mole_inference.policy.processing import check_instruction, resize_image, to_chw_float

log = logging.getLogger(__name__)

Observer = Callable[[str, dict[str, np.ndarray]], None]
Timer = Callable[[str], AbstractContextManager]


def import_ort():
    """The onnxruntime module, or BackendUnavailableError saying which extra installs it."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("backend 'onnxruntime' needs onnxruntime; "
                                      "pip install 'mole-inference[export]'") from None
    return ort


def ort_providers(device: str) -> list:
    """Execution providers for `device` ("cpu", "cuda", "cuda:N"); BackendUnavailableError if CUDA is absent."""
    ort = import_ort()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(f"device={device!r}: this onnxruntime has no CUDAExecutionProvider "
                                          f"(has {ort.get_available_providers()}); pip install onnxruntime-gpu")
        idx = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
    raise ConfigError(f"device={device!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def _no_timer(name: str) -> AbstractContextManager:
    return nullcontext()


class OnnxStages:
    """One ONNX Runtime session per stage of one variant of an export; `run` executes a control step.

    `session_runs` counts `session.run` calls per stage; `observer(stage, feeds)`, when set, sees every stage's
    inputs (INT8 calibration records them). `last_tokens` holds the autoregressive family's last action ids (A,).
    """

    def __init__(self, manifest: Manifest, variant: str = "fp32", device: str = "cpu", threads: int = 0,
                 observer: Observer | None = None) -> None:
        ort = import_ort()
        self.manifest, self.variant, self.device = manifest, variant, device
        self.cfg, self.k, self.family = manifest.model_config(), manifest.k, manifest.family
        self.num_layers = self.cfg.llm.num_layers
        self.chunk_size = self.cfg.action_head.chunk_size
        self.tokenizer = load_tokenizer(self.cfg.llm.tokenizer, self.cfg.llm.vocab_size, self.cfg.llm.text_tokenizer)
        self.scheduler = DDIMScheduler(self.cfg.action_head)
        self._rng = np.random.default_rng()
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Each session owns a thread pool whose idle threads spin; with one session per stage run back to back,
        # the spinning pools of finished stages steal the cores of the next (measured 4-5x slower on `small`).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if threads:
            opts.intra_op_num_threads = threads
        providers = ort_providers(device)
        self.sessions = {name: ort.InferenceSession(str(manifest.path(variant, name)), opts, providers=providers)
                         for name in manifest.variants[variant]}
        self.session_runs: Counter[str] = Counter()
        self.observer = observer
        self.last_tokens: np.ndarray | None = None
        self._inputs = {name: {t.name: (t.shape, np.dtype(t.dtype)) for t in entry.inputs}
                        for name, entry in manifest.variants[variant].items()}
        log.info("onnxruntime stages: %s/%s, %d sessions on %s", manifest.root, variant, len(self.sessions),
                 self.sessions["vision"].get_providers()[0])

    def __call__(self, stage: str, **feeds: np.ndarray) -> list[np.ndarray]:
        """Run one stage graph on named numpy inputs (InputError unless they match the manifest)."""
        self.check_feeds(stage, feeds)
        if self.observer is not None:
            self.observer(stage, feeds)
        self.session_runs[stage] += 1
        return self.sessions[stage].run(None, feeds)

    def check_feeds(self, stage: str, feeds: dict[str, np.ndarray]) -> None:
        """Raise InputError unless `stage` exists and `feeds` are exactly its inputs, with their shapes and dtypes."""
        specs = self._inputs.get(stage)
        if specs is None:
            raise InputError(f"stage {stage!r} is not in this export; it has {sorted(self._inputs)}")
        if feeds.keys() != specs.keys():
            raise InputError(f"stage {stage!r} takes inputs {sorted(specs)}, got {sorted(feeds)}")
        for name, value in feeds.items():
            shape, dtype = specs[name]
            got = (tuple(getattr(value, "shape", ())), getattr(value, "dtype", type(value)))
            if got != (shape, dtype):
                raise InputError(f"stage {stage!r} input {name!r}: got shape {got[0]} {got[1]}, the export "
                                 f"needs {shape} {dtype}")

    def prepare(self, image: np.ndarray, instruction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Checked inputs -> pixels (1, 3, S, S) float32, ids (1, T) int64, text mask (1, T) bool (numpy)."""
        pixels = to_chw_float(resize_image(image, self.cfg.vision.image_size))
        ids, mask = tokenize_batch(self.tokenizer, [check_instruction(instruction)], self.cfg.llm.max_text_tokens)
        return pixels, ids.numpy(), mask.numpy()

    def select(self, probs: np.ndarray) -> list[int]:
        """The router's top-k layers, ascending, from probabilities (1, K) (same rule as MoLeVLA.select)."""
        mask = topk_mask(torch.from_numpy(np.asarray(probs, dtype=np.float32)), self.k)
        return torch.nonzero(mask[0]).flatten().tolist()

    def run(self, pixels: np.ndarray, ids: np.ndarray, mask: np.ndarray, noise: np.ndarray,
            layers: Sequence[int] | None = None, state: np.ndarray | None = None, timer: Timer = _no_timer
            ) -> tuple[np.ndarray, list[int], np.ndarray]:
        """Normalized actions (C, A) float64, the layers run (ascending) and router probabilities (1, K).

        `layers` overrides the router (None: top-k; `range(K)`: the full model); `state` (7,) the robot state,
        required (InputError) with `vision.state_input` and ignored without; `timer(name)` wraps each stage.
        The autoregressive family ignores `noise` and returns one action (1, A) at the greedy tokens' bin centres;
        the flow family times the prefix as `llm` and the Euler steps as `action_head` (as TorchPolicy does).
        """
        if layers is not None:
            layers = sorted(layers)
            if any(not 0 <= i < self.num_layers for i in layers):
                raise InputError(f"layers={layers}: layer indices must be in 0..{self.num_layers - 1}")
        state = check_state(state, self.cfg.vision.state_input)
        with_state = {} if state is None else {"state": state[None]}  # (1, 7) f32, into the prompt the router builds
        with timer("vision"):
            (img,) = self("vision", pixels=pixels)
        with timer("router"):
            probs, h, bias, cos, sin = self("router", img=img, ids=ids, text_mask=mask, **with_state)
            chosen = layers if layers is not None else self.select(probs)
        if self.family == "autoregressive":
            with timer("llm"):  # the LLM decodes the action tokens: its time is the llm stage (as in TorchPolicy)
                actions, self.last_tokens = greedy_actions(self, self.cfg, chosen, h, bias, cos, sin)
            actions = actions.astype(np.float32).astype(np.float64)  # float32 centres, as TorchPolicy returns
            with timer("action_head"):  # no head of its own; the key keeps the timings alike across families
                pass
            return actions, chosen, probs
        if self.family == "flow":
            with timer("llm"):
                kv = prefix_kv(self, chosen, h, bias, cos, sin)
            with timer("action_head"):
                actions = flow_actions(self, self.cfg, chosen, kv, bias, noise)
            return actions[0].astype(np.float64), chosen, probs
        with timer("llm"):
            for i in chosen:
                (h,) = self(layer_stage(i), h=h, bias=bias, cos=cos, sin=sin)
            (cog,) = self("cognition", h=h)
        with timer("action_head"):
            def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(self("denoise", x=x.numpy(), t=t.numpy(), cognition=cog)[0])

            actions = self.scheduler.sample(eps_fn, torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32)))
            if self.cfg.action_head.gripper_head:
                (grip,) = self("gripper", cognition=cog)
                actions = with_open_prob(actions, torch.from_numpy(grip))
        return actions[0].numpy().astype(np.float64), chosen, probs
