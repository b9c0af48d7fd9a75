"""The `mole-vla` command: model info, benchmarks, and (as they land) stack, sim, train, export."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from mole_inference.errors import MoleError

log = logging.getLogger("mole_vla")


def cmd_info(args: argparse.Namespace) -> int:
    """Parameter counts and FLOPs per step, built on the meta device (no weights allocated)."""
    import torch

    from mole_inference.config import preset
    from mole_inference.model.flops import parameter_counts, stage_flops, step_flops
    from mole_inference.model.vla import MoLeVLA

    cfg = preset(args.preset)
    with torch.device("meta"):
        model = MoLeVLA(cfg)
    params = parameter_counts(model)
    k = cfg.router.num_active_layers
    report = {
        "preset": cfg.name, "parameters": params,
        "router_fraction_of_llm": params["router"] / params["llm"],
        "total_layers": cfg.llm.num_layers, "active_layers": k, "seq_len": cfg.seq_len,
        "flops_full": step_flops(cfg), "flops_mole": step_flops(cfg, k),
        "flops_stages": stage_flops(cfg),
    }
    report["flops_ratio"] = report["flops_mole"] / report["flops_full"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{cfg.name}: {params['total'] / 1e6:.1f} M parameters "
              + ", ".join(f"{k_}={v / 1e6:.2f} M" for k_, v in params.items() if k_ != "total"))
        print(f"router = {100 * report['router_fraction_of_llm']:.3f} % of the LLM; "
              f"GFLOPs/step full {report['flops_full'] / 1e9:.1f}, MoLe (k={k}) {report['flops_mole'] / 1e9:.1f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    """All subcommands."""
    p = argparse.ArgumentParser(prog="mole-vla", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="parameters and FLOPs of a preset (meta device, no weights)")
    info.add_argument("--preset", default="cogact-7b")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="time the full model against MoLe in one process")
    b.add_argument("--preset", default="small")
    b.add_argument("--checkpoint", help="a checkpoint folder instead of a preset with random weights")
    b.add_argument("--device", default="cpu")
    b.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    b.add_argument("--iters", type=int, default=10)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point; user-fixable errors print one line and exit 2."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except MoleError as exc:
        print(f"mole-vla: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
