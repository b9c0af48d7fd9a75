"""`mole-vla build-engine`: TensorRT engines (one per stage) from an export folder."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `build-engine` subcommand."""
    p = sub.add_parser("build-engine", help="build TensorRT engines (one per stage) from `mole-vla export` output")
    p.add_argument("--export", required=True, dest="export_dir", help="export folder with manifest.json")
    p.add_argument("--engine-dir", required=True, help="where the .plan files and engines.json go")
    prec = p.add_mutually_exclusive_group()
    prec.add_argument("--fp16", dest="precision", action="store_const", const="fp16", help="FP16 (default)")
    prec.add_argument("--int8", dest="precision", action="store_const", const="int8",
                      help="INT8 from the export's QDQ graphs (explicit quantization) with FP16 elsewhere")
    prec.add_argument("--fp32", dest="precision", action="store_const", const="fp32", help="FP32 (TF32 allowed)")
    p.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace memory pool limit (GiB)")
    p.add_argument("--timing-cache", help="timing cache file, read if present and updated (speeds up rebuilds)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run, precision="fp16")


def run(args: argparse.Namespace) -> int:
    """Build every stage's engine; a missing TensorRT or CUDA is a one-line error naming it."""
    from mole_inference.export.engine import build_engines

    info = build_engines(args.export_dir, args.engine_dir, args.precision, args.workspace_gb, args.timing_cache)
    if args.json:
        print(json.dumps({k: v for k, v in info.items() if k not in ("config", "action_stats")}, indent=2))
    else:
        print(f"built {len(info['stages'])} {info['precision']} engines (TensorRT {info['tensorrt']}) "
              f"for {info['preset']} into {args.engine_dir}")
    return 0
