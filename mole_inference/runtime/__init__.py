"""Inference backends behind the Policy contract; heavy imports happen inside `load_policy`."""

from __future__ import annotations

from pathlib import Path

from mole_inference.errors import ConfigError
from mole_inference.policy.contract import Policy

BACKENDS = ("torch",)


def load_policy(checkpoint: str | Path | None = None, preset: str | None = None, backend: str = "torch",
                device: str = "cpu", dtype: str = "float32", router: str | None = None) -> Policy:
    """A Policy from a checkpoint folder, or from a preset with random weights."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend={backend!r}: expected one of {list(BACKENDS)}")
    if (checkpoint is None) == (preset is None):
        raise ConfigError("load_policy: pass exactly one of checkpoint= or preset=")
    from mole_inference.runtime.torch_backend import TorchPolicy

    if checkpoint is not None:
        return TorchPolicy.from_checkpoint(checkpoint, device, dtype, router=router)
    from mole_inference.config import preset as load_preset

    cfg = load_preset(preset, **({"router": {"type": router}} if router else {}))
    return TorchPolicy.from_config(cfg, device, dtype)
