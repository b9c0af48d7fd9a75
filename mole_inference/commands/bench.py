"""`mole-vla bench`: the full model against MoLe, timed interleaved in one process."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `bench` subcommand."""
    b = sub.add_parser("bench", help="time the full model against MoLe in one process")
    b.add_argument("--preset", default="small")
    b.add_argument("--checkpoint", help="a checkpoint folder instead of a preset with random weights")
    b.add_argument("--device", default="cpu")
    b.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    b.add_argument("--iters", type=int, default=10)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--threads", type=int, default=0, help="CPU threads: torch, or onnxruntime intra-op (0: default)")
    b.add_argument("--backend", default="torch", choices=["torch", "onnxruntime"])
    b.add_argument("--int8", action="store_true", help="onnxruntime: the INT8 QDQ variant")
    b.add_argument("--export-dir", help="onnxruntime: an existing export folder (default: export to a temp folder)")
    b.add_argument("--calib-bags", help="onnxruntime --int8 without --export-dir: calibration episodes "
                   "(default: generated frames)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Full model vs MoLe, interleaved in one process."""
    from mole_inference.runtime.bench import bench, cuda_peak_memory
    from mole_inference.runtime.torch_backend import TorchPolicy

    if args.backend == "onnxruntime":
        from mole_inference.runtime.onnx_backend import bench_policy

        policy = bench_policy(args.export_dir, args.checkpoint, args.preset, args.int8, args.calib_bags,
                              args.device, args.threads)
        dtype = "int8" if args.int8 else "float32"
    elif args.checkpoint:
        policy = TorchPolicy.from_checkpoint(args.checkpoint, args.device, args.dtype)
    else:
        policy = TorchPolicy.from_preset(args.preset, args.device, args.dtype)
    if args.backend == "torch":
        dtype = args.dtype
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
    report = {"preset": policy.cfg.name, "backend": args.backend, "device": args.device, "dtype": dtype,
              **bench(policy, iters=args.iters, warmup=args.warmup)}
    if args.backend == "torch" and args.device.startswith("cuda"):  # same model: no second 7B build to read it
        report.update(cuda_peak_memory(policy))
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['preset']} {args.backend} on {args.device}/{dtype}: full {report['full_ms']:.1f} ms, "
              f"MoLe {report['mole_ms']:.1f} ms ({report['active_layers']}/{report['total_layers']} layers), "
              f"speedup {report['speedup']:.2f}x (ideal {report['full_ms'] / report['ideal_ms']:.2f}x); "
              f"LLM {report['llm_full_ms']:.1f} -> {report['llm_mole_ms']:.1f} ms")
    return 0
