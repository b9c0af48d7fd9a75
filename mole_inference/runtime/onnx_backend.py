"""ONNX Runtime backend: one session per exported stage; each step runs only the router's k layer sessions.

CPU by default; `device="cuda"` uses the CUDA execution provider when this onnxruntime build has it. The fp32
and int8 (QDQ) variants of an export folder load the same way.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from mole_inference.errors import BackendUnavailableError, ConfigError
from mole_inference.export.manifest import Manifest
from mole_inference.export.stages import layer_stage
from mole_inference.policy.contract import RoutingDecision
from mole_inference.runtime.staged import StagedPolicy
from mole_inference.runtime.torch_backend import StageTimer

log = logging.getLogger(__name__)

Observer = Callable[[str, dict[str, np.ndarray]], None]


def ort_providers(device: str) -> list:
    """Execution providers for `device` ("cpu", "cuda", "cuda:N"); BackendUnavailableError if CUDA is absent."""
    import onnxruntime as ort

    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise BackendUnavailableError(f"device={device!r}: this onnxruntime has no CUDAExecutionProvider "
                                          f"(has {ort.get_available_providers()}); pip install onnxruntime-gpu")
        idx = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": idx}), "CPUExecutionProvider"]
    raise ConfigError(f"device={device!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError("backend 'onnxruntime' needs onnxruntime; "
                                      "pip install 'mole-inference[export]'") from None
    return ort


class OnnxPolicy(StagedPolicy):
    """MoLe-VLA stages in ONNX Runtime behind the Policy contract.

    `session_runs` counts `session.run` calls per stage (tests check that exactly k layer sessions run per step);
    `observer(stage, feeds)`, when set, sees every stage's inputs (INT8 calibration records them).
    """

    def __init__(self, manifest: Manifest, variant: str = "fp32", device: str = "cpu", threads: int = 0,
                 observer: Observer | None = None) -> None:
        ort = _import_ort()
        super().__init__(manifest.model_config(), manifest.stats(), manifest.k)
        self.manifest, self.variant, self.device = manifest, variant, device
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
        log.info("onnxruntime policy: %s/%s, %d sessions on %s", manifest.root, variant, len(self.sessions),
                 self.sessions["vision"].get_providers()[0])

    @classmethod
    def from_export(cls, path: str | Path, variant: str = "fp32", device: str = "cpu", threads: int = 0,
                    preset: str | None = None, verify: bool = True) -> OnnxPolicy:
        """Load an export folder; the manifest is validated first (hashes too unless `verify=False`)."""
        _import_ort()
        return cls(Manifest.load(path, variant, preset=preset, verify=verify), variant, device, threads)

    def _run(self, stage: str, **feeds: np.ndarray) -> list[np.ndarray]:
        if self.observer is not None:
            self.observer(stage, feeds)
        self.session_runs[stage] += 1
        return self.sessions[stage].run(None, feeds)

    def run(self, pixels: np.ndarray, ids: np.ndarray, mask: np.ndarray, noise: np.ndarray,
            layers: Sequence[int] | None = None) -> tuple[np.ndarray, RoutingDecision, dict[str, float]]:
        """See StagedPolicy.run: vision, router, the chosen layer sessions only, cognition, DDIM over denoise."""
        timer = StageTimer(torch.device("cpu"))  # session.run returns host arrays: already synchronized
        with timer("vision"):
            (img,) = self._run("vision", pixels=pixels)
        with timer("router"):
            probs, h, bias, cos, sin = self._run("router", img=img, ids=ids, text_mask=mask)
            chosen = sorted(layers) if layers is not None else self.select(probs)
        with timer("llm"):
            for i in chosen:
                (h,) = self._run(layer_stage(i), h=h, bias=bias, cos=cos, sin=sin)
            (cog,) = self._run("cognition", h=h)
        with timer("action_head"):
            def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(self._run("denoise", x=x.numpy(), t=t.numpy(), cognition=cog)[0])

            actions = self.sample(eps_fn, torch.from_numpy(np.ascontiguousarray(noise, dtype=np.float32)))
        timer.ms["total"] = sum(timer.ms.values())
        return actions[0].numpy().astype(np.float64), self.routing(chosen, probs), timer.ms


def bench_policy(export_dir: str | Path | None = None, checkpoint: str | Path | None = None,
                 preset: str | None = "small", int8: bool = False, calib_bags: str | Path | None = None,
                 device: str = "cpu", threads: int = 0) -> OnnxPolicy:
    """An OnnxPolicy for benchmarks: from `export_dir`, or exported now from a checkpoint / random preset.

    Exporting now with `int8` calibrates on `calib_bags`, or on generated frames when none are given.
    """
    variant = "int8" if int8 else "fp32"
    if export_dir is not None:
        return OnnxPolicy.from_export(export_dir, variant, device, threads)
    import tempfile

    from mole_inference.export.pipeline import export_model, load_model

    model, stats = load_model(checkpoint, None if checkpoint else preset)
    with tempfile.TemporaryDirectory(prefix="mole-export-") as tmp:  # sessions hold the weights once loaded
        export_model(model, stats, tmp, int8=int8, calib_bags=calib_bags, synthetic_calibration=calib_bags is None,
                     check=False)
        return OnnxPolicy.from_export(tmp, variant, device, threads, verify=False)
