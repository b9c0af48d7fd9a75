"""ONNX export of every stage of a MoLeVLA (see `stages`), one graph per stage, plus the manifest."""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

from mole_inference.config import to_dict
from mole_inference.config.model import ModelConfig
from mole_inference.errors import BackendUnavailableError
from mole_inference.export.manifest import Manifest, StageEntry, stage_files
from mole_inference.export.stages import check_exportable, example_inputs, stage_io, stage_modules
from mole_inference.model.action_stats import ActionStats

log = logging.getLogger(__name__)

OPSET = 18
SPILL_BYTES = 1 << 30  # graphs above this keep their weights in one `<stage>.onnx.data` sidecar (protobuf: 2 GiB)


def require_onnx() -> None:
    """Raise BackendUnavailableError naming the extra to install when onnx/onnxruntime are missing."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailableError(f"ONNX export needs onnx and onnxruntime ({exc}); "
                                      "pip install 'mole-inference[export]'") from None


def export_onnx(model: torch.nn.Module, stats: ActionStats, out: str | Path, opset: int = OPSET,
                dynamo: bool = False) -> Manifest:
    """Export every stage of `model` (fp32, CPU) into `out/fp32/` and write `out/manifest.json`.

    `dynamo=False` uses the TorchScript tracer: 5-10x faster than torch.export here and exact for these fixed
    shapes; `dynamo=True` uses torch.export + onnxscript.
    """
    require_onnx()
    cfg: ModelConfig = model.cfg
    check_exportable(cfg.router.type, family=cfg.action_head.type)  # before anything is written
    out = Path(out)
    (out / "fp32").mkdir(parents=True, exist_ok=True)
    model = model.float().cpu().eval()
    io, mods, ins = stage_io(cfg), stage_modules(model), example_inputs(model)
    stages: dict[str, StageEntry] = {}
    for name, mod in mods.items():
        rel = f"fp32/{name}.onnx"
        _export_one(mod, ins[name], out / rel, [s.name for s in io[name][0]], [s.name for s in io[name][1]],
                    opset, dynamo)
        stages[name] = StageEntry(name, stage_files(out, rel), *io[name])
        log.debug("exported %s", rel)
    k = int(model.router.k)
    man = Manifest(out, cfg.name, k, to_dict(cfg), stats.to_json(), opset, {"fp32": stages},
                   family=cfg.action_head.type)
    man.save()
    log.info("exported %d stages of %s (k=%d of %d layers) to %s", len(stages), cfg.name, k, cfg.llm.num_layers, out)
    return man


def _export_one(mod: torch.nn.Module, args: tuple[torch.Tensor, ...], dest: Path, inputs: list[str],
                outputs: list[str], opset: int, dynamo: bool) -> None:
    import onnx

    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        path = Path(tmp) / dest.name
        # Grad stays on: with it off, nn.TransformerEncoderLayer / MultiheadAttention take fused fast paths
        # (`_transformer_encoder_layer_fwd`) that have no ONNX symbolic.
        with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
            warnings.simplefilter("ignore")  # tracer and deprecation chatter
            torch.onnx.export(mod, args, str(path), input_names=inputs, output_names=outputs, opset_version=opset,
                              dynamo=dynamo, do_constant_folding=True, **({"verbose": False} if dynamo else {}))
        spilled = len(list(Path(tmp).iterdir())) > 1
        if spilled or path.stat().st_size > SPILL_BYTES:  # one sidecar instead of a file per tensor
            proto = onnx.load(str(path))
            onnx.save_model(proto, str(dest), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=f"{dest.name}.data", size_threshold=1024)
        else:
            shutil.move(str(path), dest)
