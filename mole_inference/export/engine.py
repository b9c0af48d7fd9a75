"""TensorRT engines, one per stage, built from an export's ONNX graphs (TensorRT 10 Python API).

fp16: the fp32 graphs with BuilderFlag.FP16; int8: the `int8/` QDQ graphs (explicit quantization; TensorRT's
implicit-calibration path is deprecated since 10.1) with FP16 + INT8 so non-quantized layers run in half.
`engines.json` ties every plan to the ONNX file it came from (hashes), the TensorRT version and the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mole_inference.errors import BackendUnavailableError, ConfigError
from mole_inference.export.manifest import Manifest, ManifestError, sha256

log = logging.getLogger(__name__)

ENGINES = "engines.json"
PRECISIONS = ("fp32", "fp16", "int8")
ENGINE_FAMILIES = ("diffusion",)  # runtime/tensorrt_backend.py's buffer plan: no KV cache, token or Euler loop


def check_engine_family(family: str) -> None:
    """Raise ConfigError unless the TensorRT backend can run the action head `family`."""
    if family not in ENGINE_FAMILIES:
        raise ConfigError(f"action_head.type={family!r} has no TensorRT engines (the TensorRT backend runs "
                          f"{list(ENGINE_FAMILIES)} only: it has no KV-cache buffers, token loop or Euler loop); run "
                          "the same export with --backend onnxruntime")


def require_tensorrt():
    """The `tensorrt` module and a CUDA device, or a BackendUnavailableError naming what is missing."""
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendUnavailableError(
            "TensorRT is not installed: `pip install tensorrt` (10.x, with an NVIDIA driver), or use the "
            "docker/ workstation image; the ONNX export and `--backend onnxruntime` work without it") from None
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT needs a CUDA GPU, and this torch build sees none "
                                      f"(torch {torch.__version__}); install a CUDA torch on the GPU machine")
    return trt


def build_engines(export_dir: str | Path, engine_dir: str | Path, precision: str = "fp16",
                  workspace_gb: float = 4.0, timing_cache: str | Path | None = None) -> dict:
    """Build `<engine_dir>/<stage>.plan` for every stage and write `engines.json`; returns its content."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: expected one of {list(PRECISIONS)}")
    if workspace_gb <= 0:
        raise ConfigError(f"workspace_gb={workspace_gb}: must be > 0")
    trt = require_tensorrt()
    variant = "int8" if precision == "int8" else "fp32"
    man = Manifest.load(export_dir, variant)
    check_engine_family(man.family)
    out = Path(engine_dir)
    out.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    cache_path = Path(timing_cache) if timing_cache else None
    cache_blob = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    stages: dict[str, dict[str, str]] = {}
    for name, entry in man.variants[variant].items():
        network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(man.root / entry.graph)):
            errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise ManifestError(f"TensorRT cannot parse {entry.graph}: {errs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        if precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # honours the graph's Q/DQ scales; no calibrator
        cache = config.create_timing_cache(cache_blob)
        config.set_timing_cache(cache, ignore_mismatch=False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendUnavailableError(f"TensorRT failed to build {name} (see its log above; a larger "
                                          f"--workspace-gb than {workspace_gb} may help)")
        (out / f"{name}.plan").write_bytes(bytes(plan))
        cache_blob = bytes(config.get_timing_cache().serialize())
        stages[name] = {"file": f"{name}.plan", "sha256": sha256(out / f"{name}.plan"),
                        "onnx_sha256": entry.files[entry.graph]}
        log.info("built %s (%s)", name, precision)
    if cache_path:
        cache_path.write_bytes(cache_blob)
    info = {"export": str(man.root.resolve()), "variant": variant, "precision": precision,
            "tensorrt": trt.__version__, "preset": man.preset, "k": man.k, "config": man.config,
            "action_stats": man.action_stats, "stages": stages}
    (out / ENGINES).write_text(json.dumps(info, indent=2))
    return info


def load_engine_index(engine_dir: str | Path, verify: bool = True) -> dict:
    """Read `engines.json`, checking every stage the config needs has a plan with the recorded hash."""
    from mole_inference.config import ModelConfig, from_dict
    from mole_inference.export.stages import stage_io

    root = Path(engine_dir)
    path = root / ENGINES
    if not path.is_file():
        raise ManifestError(f"{root}: no {ENGINES}; build engines with `mole-vla build-engine --engine-dir {root}`")
    try:
        info = json.loads(path.read_text())
        cfg = from_dict(ModelConfig, info["config"])
        stages = info["stages"]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: malformed ({exc!r})") from None
    for name in stage_io(cfg):
        if name not in stages:
            raise ManifestError(f"{path}: stage {name!r} has no engine")
        plan = root / stages[name]["file"]
        if not plan.is_file():
            raise ManifestError(f"{path}: engine {plan.name} of stage {name!r} is missing")
        if verify and sha256(plan) != stages[name]["sha256"]:
            raise ManifestError(f"{path}: engine {plan.name} does not match its recorded sha256")
    return info
