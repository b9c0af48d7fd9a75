"""One call from a checkpoint (or a random-weight preset) to a checked export folder, optionally with INT8."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from mole_inference.errors import ConfigError
from mole_inference.export.manifest import Manifest

log = logging.getLogger(__name__)


def load_model(checkpoint: str | Path | None = None, preset: str | None = None, seed: int = 0):
    """(MoLeVLA fp32 on CPU, ActionStats) from a checkpoint folder or, with random weights, a preset."""
    if (checkpoint is None) == (preset is None):
        raise ConfigError("export: pass exactly one of checkpoint= or preset=")
    if checkpoint is not None:
        from mole_inference.model.checkpoint import load_checkpoint

        model, _, stats = load_checkpoint(checkpoint)
        return model.float().eval(), stats
    from mole_inference.config import preset as load_preset
    from mole_inference.model.action_stats import ActionStats
    from mole_inference.model.vla import MoLeVLA

    cfg = load_preset(preset)
    torch.manual_seed(seed)
    log.warning("exporting preset %s with random weights: actions are meaningless", cfg.name)
    return MoLeVLA(cfg).float().eval(), ActionStats.identity(cfg.action_head.action_dim)


def export_model(model: torch.nn.Module, stats, out: str | Path, int8: bool = False,
                 calib_bags: str | Path | None = None, calib_frames: int = 64, synthetic_calibration: bool = False,
                 check: bool = True, seed: int = 0, dynamo: bool = False) -> Manifest:
    """Export `model` to `out` (fp32 stages + manifest); with `int8`, add the calibrated QDQ variant.

    INT8 calibrates on frames from `calib_bags`; `synthetic_calibration=True` uses generated frames instead
    (benchmarks of random-weight presets only). `check` records per-stage fp32 parity in the manifest.
    """
    from mole_inference.export.onnx_export import export_onnx

    if int8 and calib_bags is None and not synthetic_calibration:
        raise ConfigError("int8 export needs calibration frames: pass calib_bags (`--calib-bags DIR` of episodes)")
    man = export_onnx(model, stats, out, dynamo=dynamo)
    if check:
        from mole_inference.export.parity import FP32_TOL, stage_errors

        errors = stage_errors(model, man)
        worst = max(errors, key=errors.get)
        man.reports["parity_fp32"] = {"max_abs": errors[worst], "worst_stage": worst, "per_stage": errors}
        man.save()
        (log.info if errors[worst] <= FP32_TOL else log.warning)(
            "fp32 parity: max |onnx - torch| = %.2e (%s), tolerance %.0e", errors[worst], worst, FP32_TOL)
    if int8:
        from mole_inference.export.calibration import bag_samples, synthetic_samples
        from mole_inference.export.quantize import quantize_export

        data = bag_samples(calib_bags, calib_frames) if calib_bags is not None else synthetic_samples(
            max(4, calib_frames // 4), seed=seed)
        quantize_export(man, data, seed)
    return man
