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
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Full model vs MoLe, interleaved in one process."""
    from mole_inference.runtime.bench import bench
    from mole_inference.runtime.torch_backend import TorchPolicy

    if args.checkpoint:
        policy = TorchPolicy.from_checkpoint(args.checkpoint, args.device, args.dtype)
    else:
        policy = TorchPolicy.from_preset(args.preset, args.device, args.dtype)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = {"preset": policy.cfg.name, "backend": "torch", "device": args.device, "dtype": args.dtype,
              **bench(policy, iters=args.iters, warmup=args.warmup)}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['preset']} on {args.device}/{args.dtype}: full {report['full_ms']:.1f} ms, "
              f"MoLe {report['mole_ms']:.1f} ms ({report['active_layers']}/{report['total_layers']} layers), "
              f"speedup {report['speedup']:.2f}x (ideal {report['full_ms'] / report['ideal_ms']:.2f}x); "
              f"LLM {report['llm_full_ms']:.1f} -> {report['llm_mole_ms']:.1f} ms")
    return 0
