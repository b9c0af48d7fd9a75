"""Inference backends behind the Policy contract; heavy imports happen inside `load_policy`."""

from __future__ import annotations

from pathlib import Path

from mole_inference.errors import ConfigError
from mole_inference.policy.contract import Policy

BACKENDS = ("torch", "onnxruntime", "tensorrt")


def load_policy(checkpoint: str | Path | None = None, preset: str | None = None, backend: str = "torch",
                device: str = "cpu", dtype: str = "float32", router: str | None = None,
                active_layers: int | None = None, cfg_scale: float | None = None) -> Policy:
    """A Policy from a checkpoint folder, or from a preset with random weights.

    `router` swaps the router type, `active_layers` its top-k and `cfg_scale` the diffusion head's classifier-free
    guidance (torch backend: routing and guidance are part of the graph in exported folders and engines).

    `onnxruntime`: `checkpoint` is a `mole-vla export` folder and `dtype` picks its variant ("float32" or "int8");
    `tensorrt`: `checkpoint` is a `mole-vla build-engine` folder (precision fixed at build time).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: expected one of {list(BACKENDS)}")
    if backend != "torch":
        if checkpoint is None or preset is not None or any(v is not None for v in (router, active_layers, cfg_scale)):
            raise ConfigError(f"backend={backend!r}: pass checkpoint= (an export or engine folder), no preset, "
                              "router, active_layers or cfg_scale (the exported graph fixes them)")
        if backend == "onnxruntime":
            from mole_inference.runtime.onnx_backend import OnnxPolicy

            if dtype not in ("float32", "int8"):
                raise ConfigError(f"dtype={dtype!r}: the onnxruntime backend runs 'float32' or 'int8'")
            return OnnxPolicy.from_export(checkpoint, "int8" if dtype == "int8" else "fp32", device)
        from mole_inference.runtime.tensorrt_backend import TensorRTPolicy

        return TensorRTPolicy(checkpoint, device if device.startswith("cuda") else "cuda")
    if (checkpoint is None) == (preset is None):
        raise ConfigError("load_policy: pass exactly one of checkpoint= or preset=")
    from mole_inference.runtime.torch_backend import TorchPolicy, config_overrides

    if checkpoint is not None:
        return TorchPolicy.from_checkpoint(checkpoint, device, dtype, router=router, active_layers=active_layers,
                                           cfg_scale=cfg_scale)
    from mole_inference.config import preset as load_preset

    cfg = load_preset(preset, **config_overrides(router, active_layers, cfg_scale))
    return TorchPolicy.from_config(cfg, device, dtype)
