"""ONNX Runtime backend: one session per exported stage; each step runs only the router's k layer sessions.

All three exported families: diffusion (k layers, cognition, DDIM), autoregressive (k prefill layers, then each
action token through the same k decode layers) and flow (k prefill layers returning their keys/values, then each
Euler step through the same k expert layers); the other layers' sessions are never run. The manifest's `family`
picks the loop (export/onnx_run.py). A model with `vision.state_input` takes the robot state in its router stage,
which builds the prompt for every family.

CPU by default; `device="cuda"` uses the CUDA execution provider when this onnxruntime build has it. The fp32
and int8 (QDQ) variants of an export folder load the same way.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mole_inference.export.manifest import Manifest
from mole_inference.export.onnx_run import Observer, OnnxStages, import_ort, ort_providers
from mole_inference.policy.contract import RoutingDecision
from mole_inference.runtime.staged import StagedPolicy
from mole_inference.runtime.torch_backend import StageTimer

log = logging.getLogger(__name__)

__all__ = ["OnnxPolicy", "bench_policy", "ort_providers"]


class OnnxPolicy(StagedPolicy):
    """MoLe-VLA stages in ONNX Runtime behind the Policy contract; the sessions are `export.onnx_run.OnnxStages`.

    `session_runs` counts `session.run` calls per stage (tests check that exactly k layer sessions run per step,
    and, autoregressive, k decode sessions per fed-back token; flow, k expert sessions per Euler step);
    `observer(stage, feeds)`, when set, sees every stage's inputs.
    """

    def __init__(self, manifest: Manifest, variant: str = "fp32", device: str = "cpu", threads: int = 0,
                 observer: Observer | None = None) -> None:
        import_ort()
        super().__init__(manifest.model_config(), manifest.stats(), manifest.k)
        self.manifest, self.variant, self.device = manifest, variant, device
        self.stages = OnnxStages(manifest, variant, device, threads, observer)

    @property
    def sessions(self) -> dict:
        """Stage name -> onnxruntime InferenceSession."""
        return self.stages.sessions

    @property
    def session_runs(self) -> Counter[str]:
        """`session.run` calls per stage since construction (or the last `.clear()`)."""
        return self.stages.session_runs

    @property
    def observer(self) -> Observer | None:
        """Callback seeing every stage's inputs, or None."""
        return self.stages.observer

    @observer.setter
    def observer(self, fn: Observer | None) -> None:
        self.stages.observer = fn

    @classmethod
    def from_export(cls, path: str | Path, variant: str = "fp32", device: str = "cpu", threads: int = 0,
                    preset: str | None = None, verify: bool = True) -> OnnxPolicy:
        """Load an export folder; the manifest is validated first (hashes too unless `verify=False`)."""
        import_ort()
        return cls(Manifest.load(path, variant, preset=preset, verify=verify), variant, device, threads)

    def run(self, pixels: np.ndarray, ids: np.ndarray, mask: np.ndarray, noise: np.ndarray,
            layers: Sequence[int] | None = None, state: np.ndarray | None = None
            ) -> tuple[np.ndarray, RoutingDecision, dict[str, float]]:
        """See StagedPolicy.run: vision, router (with `state` when the model reads it), the chosen layer sessions
        only, then the family's loop (cognition and DDIM over denoise; greedy tokens through the chosen decode
        sessions, `noise` unused; or Euler steps from `noise` through the chosen expert sessions)."""
        timer = StageTimer(torch.device("cpu"))  # session.run returns host arrays: already synchronized
        actions, chosen, probs = self.stages.run(pixels, ids, mask, noise, layers, state=state, timer=timer)
        timer.ms["total"] = sum(timer.ms.values())
        return actions, self.routing(chosen, probs), timer.ms


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
