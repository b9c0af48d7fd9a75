"""TensorRT backend: one engine per stage; the routed layers are chained on one CUDA stream over shared buffers.

Buffers are torch CUDA tensors allocated once. The router stage writes the prompt, bias and rotary tables; every
layer engine reads bias/cos/sin from those same buffers, and `h` ping-pongs between two buffers, so a step moves
no activations between engines and only the selected layers' engines are enqueued. With `vision.state_input` the
router engine also reads the robot state from a `state` buffer (1, 7). Diffusion family only: an autoregressive or
flow export is refused by name (`export.engine.check_engine_family`); ONNX Runtime runs both.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mole_inference.export.engine import check_engine_family, load_engine_index, require_tensorrt
from mole_inference.export.stages import layer_stage
from mole_inference.model.gripper_head import with_open_prob
from mole_inference.model.state_input import check_state
from mole_inference.policy.contract import RoutingDecision
from mole_inference.runtime.staged import StagedPolicy
from mole_inference.runtime.torch_backend import StageTimer

log = logging.getLogger(__name__)

H_BUFFERS = ("h_a", "h_b")  # ping-pong pair for the residual stream
# stage tensor -> shared buffer; layer `h`/`h_out` and cognition `h` are bound per step by `chain_plan`
STATIC_BINDINGS = {
    "vision": {"pixels": "pixels", "img": "img"},
    "router": {"img": "img", "ids": "ids", "text_mask": "text_mask", "state": "state", "probs": "probs",
               "h": "h_a", "bias": "bias", "cos": "cos", "sin": "sin"},
    "layer": {"bias": "bias", "cos": "cos", "sin": "sin"},
    "cognition": {"cognition": "cognition"},
    "denoise": {"x": "x", "t": "t", "cognition": "cognition", "eps": "eps"},
    "gripper": {"cognition": "cognition", "gripper": "gripper"},
}


def chain_plan(layers: Sequence[int]) -> tuple[list[tuple[int, str, str]], str]:
    """[(layer, input buffer, output buffer)] for the selected layers in ascending order, and the final buffer.

    The router writes `h_a`; each layer reads one of the pair and writes the other.
    """
    plan, src = [], H_BUFFERS[0]
    for i in sorted(layers):
        dst = H_BUFFERS[1] if src == H_BUFFERS[0] else H_BUFFERS[0]
        plan.append((i, src, dst))
        src = dst
    return plan, src


def stage_kind(name: str) -> str:
    """`layer` for decoder-layer stages, else the stage name."""
    return "layer" if name.startswith("layer_") else name


class TensorRTPolicy(StagedPolicy):
    """MoLe-VLA engines behind the Policy contract (built by `mole-vla build-engine`)."""

    def __init__(self, engine_dir: str | Path, device: str = "cuda", verify: bool = True) -> None:
        trt = require_tensorrt()
        from mole_inference.config import ModelConfig, from_dict
        from mole_inference.model.action_stats import ActionStats

        info = load_engine_index(engine_dir, verify)
        check_engine_family(info["config"].get("action_head", {}).get("type", "diffusion"))
        super().__init__(from_dict(ModelConfig, info["config"]), ActionStats.from_json(info["action_stats"]),
                         int(info["k"]))
        self.device = torch.device(device)
        self.precision = info["precision"]
        self._trt_dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                            trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64,
                            trt.DataType.BOOL: torch.bool, trt.DataType.INT8: torch.int8}
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        root = Path(engine_dir)
        self.engines = {n: runtime.deserialize_cuda_engine((root / s["file"]).read_bytes())
                        for n, s in info["stages"].items()}
        self.contexts = {n: e.create_execution_context() for n, e in self.engines.items()}
        self.stream = torch.cuda.Stream(self.device)
        self.buffers: dict[str, torch.Tensor] = {}
        self.session_runs: Counter[str] = Counter()
        for name, engine in self.engines.items():
            binds = STATIC_BINDINGS[stage_kind(name)]
            for j in range(engine.num_io_tensors):
                tensor = engine.get_tensor_name(j)
                buf = binds.get(tensor) or ("h_a" if tensor in ("h", "h_out") else None)
                if buf is None:
                    continue
                want = (tuple(engine.get_tensor_shape(tensor)), self._trt_dtypes[engine.get_tensor_dtype(tensor)])
                self._buffer(buf, *want)
                if tensor in binds:
                    self.contexts[name].set_tensor_address(tensor, self.buffers[buf].data_ptr())
        self._buffer("h_b", tuple(self.buffers["h_a"].shape), self.buffers["h_a"].dtype)
        log.info("tensorrt policy: %d engines (%s) from %s", len(self.engines), self.precision, root)

    def _buffer(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        have = self.buffers.get(name)
        if have is None:
            self.buffers[name] = torch.empty(shape, dtype=dtype, device=self.device)
        elif tuple(have.shape) != shape or have.dtype != dtype:
            raise RuntimeError(f"engines disagree on buffer {name}: {tuple(have.shape)}/{have.dtype} "
                               f"vs {shape}/{dtype}")

    def _execute(self, stage: str) -> None:
        self.session_runs[stage] += 1
        if not self.contexts[stage].execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"TensorRT failed to enqueue stage {stage}")

    def _put(self, name: str, value: np.ndarray | torch.Tensor) -> None:
        src = torch.as_tensor(value)
        self.buffers[name].copy_(src.to(self.buffers[name].dtype), non_blocking=True)

    def run(self, pixels: np.ndarray, ids: np.ndarray, mask: np.ndarray, noise: np.ndarray,
            layers: Sequence[int] | None = None, state: np.ndarray | None = None
            ) -> tuple[np.ndarray, RoutingDecision, dict[str, float]]:
        """See StagedPolicy.run; only the selected layers' engines are enqueued. `state` (7,) is required
        (InputError) when the model reads it, ignored otherwise."""
        state = check_state(state, self.cfg.vision.state_input)
        timer, b = StageTimer(self.device), self.buffers
        with torch.cuda.stream(self.stream):
            with timer("vision"):
                self._put("pixels", pixels)
                self._execute("vision")
            with timer("router"):
                self._put("ids", ids)
                self._put("text_mask", mask)
                if state is not None:
                    self._put("state", state[None])  # (1, 7)
                self._execute("router")
                probs = b["probs"].float().cpu().numpy()  # top-k is decided on the host
                chosen = sorted(layers) if layers is not None else self.select(probs)
            with timer("llm"):
                plan, final = chain_plan(chosen)
                for i, src, dst in plan:
                    ctx = self.contexts[layer_stage(i)]
                    ctx.set_tensor_address("h", b[src].data_ptr())
                    ctx.set_tensor_address("h_out", b[dst].data_ptr())
                    self._execute(layer_stage(i))
                self.contexts["cognition"].set_tensor_address("h", b[final].data_ptr())
                self._execute("cognition")
            with timer("action_head"):
                def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                    self._put("x", x)
                    self._put("t", t)
                    self._execute("denoise")
                    return b["eps"].float().clone()

                x0 = torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32)).to(self.device)
                actions = self.sample(eps_fn, x0)
                if self.cfg.action_head.gripper_head:
                    self._execute("gripper")
                    actions = with_open_prob(actions, b["gripper"].float())
        timer.ms["total"] = sum(timer.ms.values())
        return actions[0].float().cpu().numpy().astype(np.float64), self.routing(chosen, probs), timer.ms
