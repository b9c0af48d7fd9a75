"""Stage-by-stage parity: each exported graph in ONNX Runtime against the torch module it came from."""

from __future__ import annotations

import numpy as np
import torch

from mole_inference.export.manifest import Manifest
from mole_inference.export.stages import example_inputs, stage_modules

FP32_TOL = 1e-4  # max abs difference per stage output, float32


@torch.no_grad()
def stage_errors(model: torch.nn.Module, manifest: Manifest, variant: str = "fp32", seed: int = 0
                 ) -> dict[str, float]:
    """Max abs difference (over all outputs) between torch and ONNX Runtime (CPU), per stage."""
    import onnxruntime as ort

    model = model.float().cpu().eval()
    mods, ins = stage_modules(model), example_inputs(model, seed)
    errors: dict[str, float] = {}
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    for name, entry in manifest.variants[variant].items():
        sess = ort.InferenceSession(str(manifest.root / entry.graph), opts, providers=["CPUExecutionProvider"])
        feeds = {s.name: t.numpy() for s, t in zip(entry.inputs, ins[name], strict=True)}
        got = sess.run(None, feeds)
        want = mods[name](*ins[name])
        want = want if isinstance(want, tuple) else (want,)
        errors[name] = max(float(np.max(np.abs(g - w.numpy()))) for g, w in zip(got, want, strict=True))
    return errors
