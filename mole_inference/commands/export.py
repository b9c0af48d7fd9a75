"""`mole-vla export`: ONNX per stage + manifest, optionally an INT8 (QDQ) variant calibrated on episode bags."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `export` subcommand."""
    p = sub.add_parser("export", help="export ONNX per stage (+ INT8 QDQ calibrated on bags) with a manifest")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint folder (model.safetensors, config.yaml, action_stats.json)")
    src.add_argument("--preset", help="a preset with random weights (benchmarks and wiring only)")
    p.add_argument("--out", required=True, help="export folder (manifest.json, fp32/, int8/)")
    p.add_argument("--int8", action="store_true", help="add the INT8 QDQ variant (needs --calib-bags)")
    p.add_argument("--calib-bags", help="folder of recorded episode bags for INT8 calibration")
    p.add_argument("--calib-frames", type=int, default=64, help="frames used for calibration and held-out error")
    p.add_argument("--synthetic-calibration", action="store_true",
                   help="calibrate INT8 on generated frames (random-weight presets only)")
    p.add_argument("--no-check", dest="check", action="store_false", help="skip the per-stage fp32 parity check")
    p.add_argument("--dynamo", action="store_true", help="use torch.export + onnxscript instead of the tracer")
    p.add_argument("--json", action="store_true", help="print the manifest's reports as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check parity, optionally quantize; print a summary."""
    from mole_inference.export.onnx_export import require_onnx
    from mole_inference.export.pipeline import export_model, load_model

    require_onnx()
    model, stats = load_model(args.checkpoint, args.preset)
    man = export_model(model, stats, args.out, int8=args.int8, calib_bags=args.calib_bags,
                       calib_frames=args.calib_frames, synthetic_calibration=args.synthetic_calibration,
                       check=args.check, dynamo=args.dynamo)
    summary = {"out": str(man.root), "preset": man.preset, "k": man.k, "variants": sorted(man.variants),
               "stages": len(man.variants["fp32"]), **man.reports}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"exported {summary['stages']} stages of {man.preset} (k={man.k}) to {man.root}: {summary['variants']}")
    if "parity_fp32" in man.reports:
        par = man.reports["parity_fp32"]
        print(f"fp32 parity: max |onnx - torch| {par['max_abs']:.2e} ({par['worst_stage']})")
    if "int8" in man.reports:
        q = man.reports["int8"]
        print(f"int8 weights: {q['int8_over_fp32']:.3f} of fp32, {q['int8_over_fp16']:.3f} of fp16; held-out "
              f"action error mean {q['action_mae']:.4f}, max {q['action_max_err']:.4f} (normalized), routing "
              f"agreement {q['routing_agreement']:.2f}")
    return 0
