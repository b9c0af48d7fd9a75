"""Static INT8 post-training quantization of an export (ONNX QDQ), its weight bytes and its action error.

Weights: symmetric per-channel int8; activations: symmetric per-tensor int8 from MinMax calibration. Symmetric
int8 everywhere is what TensorRT's explicit quantization accepts, so the same `int8/` graphs serve ONNX Runtime
(CPU) and `mole-vla build-engine --int8`. Only weight-bearing ops are quantized (MatMul/Gemm/Conv with a constant
weight, embedding Gather): attention score products, softmax and norms stay in float. The router's own matrices
stay fp32 (< 0.1 % of the weights, and its top-k is discrete, so quantization noise would flip which layers run);
the token embedding table in the router stage is int8 (1.7 % of CogACT's weights: fp32 there costs ~0.03 of the
INT8/FP16 ratio). The autoregressive family quantizes its prefill and decode layers and its token embedding; its
LM-head stage (the action-bin rows only) stays fp32 for the same reason as the router, and its held-out action
error counts whole bins wherever a greedy token flips. The flow family quantizes its prefill and expert layers and
its suffix embedding; its velocity stage (final norm + `action_out_proj`, W x A) stays fp32: its output is
integrated by every Euler step straight into the actions, and it holds < 0.1 % of the weights.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np

from mole_inference.export.calibration import CalibrationSet, calibration_state, record_stage_inputs
from mole_inference.export.manifest import Manifest, StageEntry, stage_files

log = logging.getLogger(__name__)

WEIGHT_OPS = ("MatMul", "Gemm", "Conv")
# Stages whose matrices stay fp32 (only an embedding lookup is quantized): both end in a discrete choice (top-k
# layers, the greedy action bin) that quantization noise would flip, and both are small (lm_head: num_bins x D).
EMBEDDING_ONLY = ("router", "lm_head")
# Stages copied in fp32: the flow family's velocity is added to the chunk at every Euler step (no discrete choice
# absorbs its noise), and it is tiny.
KEEP_FLOAT = ("velocity",)


def weight_nodes(path: Path, embedding_only: bool = False) -> list[str]:
    """Names of nodes that multiply by a constant weight or look up a constant embedding table."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    consts = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    out = []
    for n in g.node:
        matmul = n.op_type in WEIGHT_OPS and len(n.input) > 1 and n.input[1] in consts and not embedding_only
        if matmul or (n.op_type == "Gather" and n.input[0] in consts):
            out.append(n.name)
    return out


class _DropOrtAdvice(logging.Filter):
    """onnxruntime.quantization logs advice on the root logger for every graph; keep it out of our output."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname


class _FeedReader:
    """onnxruntime CalibrationDataReader over recorded feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_stage(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], embedding_only: bool = False) -> None:
    """QDQ-quantize one stage graph with its recorded inputs (a plain copy when it has nothing to quantize)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    nodes = weight_nodes(src, embedding_only)
    if not nodes or not feeds:
        shutil.copyfile(src, dst)
        if Path(f"{src}.data").is_file():
            shutil.copyfile(f"{src}.data", f"{dst}.data")
        return
    quiet = _DropOrtAdvice()
    logging.getLogger().addFilter(quiet)  # applies to records logged on the root logger itself only
    try:
        quantize_static(
            str(src), str(dst), _FeedReader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_quantize=nodes,
            op_types_to_quantize=[*WEIGHT_OPS, "Gather"], calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=(Path(f"{src}.data").is_file()),
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "MatMulConstBOnly": True},
        )
    finally:
        logging.getLogger().removeFilter(quiet)


def weight_bytes(path: Path, as_fp16: bool = False) -> int:
    """Bytes of a graph's constant tensors; `as_fp16` counts float32 tensors at 2 bytes per element."""
    import onnx
    from onnx import numpy_helper

    g = onnx.load(str(path), load_external_data=True).graph
    tensors = list(g.initializer) + [a.t for n in g.node if n.op_type == "Constant" for a in n.attribute
                                     if a.type == onnx.AttributeProto.TENSOR]
    total = 0
    for t in tensors:
        arr = numpy_helper.to_array(t, base_dir=str(path.parent))
        total += arr.size * 2 if as_fp16 and arr.dtype == np.float32 else arr.nbytes
    return total


def variant_bytes(man: Manifest, variant: str, as_fp16: bool = False) -> int:
    """Constant bytes over all stages of a variant."""
    return sum(weight_bytes(man.path(variant, s), as_fp16) for s in man.variants[variant])


def quantize_export(man: Manifest, data: CalibrationSet, seed: int = 0, threads: int = 0) -> dict:
    """Add the `int8` variant to an export: calibrate, quantize, measure bytes and held-out action error.

    Returns (and stores in the manifest as `reports["int8"]`) the weight-bytes ratios and the error figures.
    """
    from mole_inference.export.onnx_run import OnnxStages

    fp32 = OnnxStages(man, "fp32", threads=threads)
    feeds = record_stage_inputs(fp32, data.calib, seed)
    (man.root / "int8").mkdir(exist_ok=True)
    stages: dict[str, StageEntry] = {}
    for name, entry in man.variants["fp32"].items():
        rel = f"int8/{name}.onnx"
        stage_feeds = [] if name in KEEP_FLOAT else feeds.get(name, [])  # no feeds: a plain copy
        quantize_stage(man.root / entry.graph, man.root / rel, stage_feeds, name in EMBEDDING_ONLY)
        stages[name] = StageEntry(name, stage_files(man.root, rel), entry.inputs, entry.outputs)
        log.debug("quantized %s", name)
    man.variants["int8"] = stages
    fp32_b, fp16_b, int8_b = (variant_bytes(man, "fp32"), variant_bytes(man, "fp32", as_fp16=True),
                              variant_bytes(man, "int8"))
    report = {"calibration": data.source, "calib_frames": len(data.calib), "holdout_frames": len(data.holdout),
              "weight_bytes_fp32": fp32_b, "weight_bytes_fp16": fp16_b, "weight_bytes_int8": int8_b,
              "int8_over_fp32": int8_b / fp32_b, "int8_over_fp16": int8_b / fp16_b,
              **action_error(fp32, OnnxStages(man, "int8", threads=threads), data.holdout, seed)}
    man.reports["int8"] = report
    man.save()
    log.info("int8: weights %.3f of fp32, %.3f of fp16; held-out action error mean %.4f max %.4f",
             report["int8_over_fp32"], report["int8_over_fp16"], report["action_mae"], report["action_max_err"])
    return report


def action_error(ref, test, samples: list, seed: int = 0) -> dict[str, float]:
    """Normalized-action error of `test` against `ref` (two OnnxStages; same frames, same noise), and routing
    agreement.

    Errors are in the model's normalized action space ([-1, 1] per dimension), before de-normalization. A model
    with `vision.state_input` gets the calibration state (`calibration_state`) with every frame.
    """
    from mole_inference.policy.processing import initial_noise

    errs, same = [], 0
    state = calibration_state(ref.cfg)
    for i, (image, instruction) in enumerate(samples):
        pixels, ids, mask = ref.prepare(image, instruction)
        noise = initial_noise(seed + 10_000 + i, ref.chunk_size, ref.cfg.action_head.action_dim, ref._rng)
        a, layers_a, _ = ref.run(pixels, ids, mask, noise, state=state)
        b, layers_b, _ = test.run(pixels, ids, mask, noise, state=state)
        errs.append(np.abs(a - b))
        same += layers_a == layers_b
    e = np.stack(errs) if errs else np.zeros((1, 1))
    return {"action_mae": float(e.mean()), "action_max_err": float(e.max()),
            "routing_agreement": same / max(1, len(samples))}
