"""`mole-vla info`: parameters per component and FLOPs per step, on the meta device."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `info` subcommand."""
    p = sub.add_parser("info", help="parameters and FLOPs of a preset (meta device, no weights)")
    p.add_argument("--preset", default="cogact-7b")
    p.add_argument("--router", help="router.type to account for (default: the preset's): star, mod, dynamic_exit, ...")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Parameter counts and FLOPs per step, built on the meta device (no weights allocated)."""
    import torch

    from mole_inference.config import preset
    from mole_inference.model.flops import parameter_counts, routed_step_flops, stage_flops, step_flops
    from mole_inference.model.vla import MoLeVLA

    cfg = preset(args.preset, router={"type": args.router}) if args.router else preset(args.preset)
    with torch.device("meta"):
        model = MoLeVLA(cfg)
    params = parameter_counts(model)
    k = cfg.router.num_active_layers
    report = {
        "preset": cfg.name, "parameters": params,
        "router_fraction_of_llm": params["router"] / params["llm"],
        "router": cfg.router.type, "total_layers": cfg.llm.num_layers, "active_layers": k, "seq_len": cfg.seq_len,
        "flops_full": step_flops(cfg), "flops_mole": routed_step_flops(cfg),
        "flops_stages": stage_flops(cfg),
    }
    report["flops_ratio"] = report["flops_mole"] / report["flops_full"]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{cfg.name}: {params['total'] / 1e6:.1f} M parameters "
              + ", ".join(f"{k_}={v / 1e6:.2f} M" for k_, v in params.items() if k_ != "total"))
        print(f"router = {100 * report['router_fraction_of_llm']:.3f} % of the LLM; "
              f"GFLOPs/step full {report['flops_full'] / 1e9:.1f}, {_budget(cfg)} {report['flops_mole'] / 1e9:.1f}")
    return 0


def _budget(cfg) -> str:
    """What the routed FLOPs count, in words."""
    r, total = cfg.router, cfg.llm.num_layers
    if r.type == "mod":
        return f"mod ({100 * r.mod_capacity:g} % of tokens in all {total} layers)"
    if r.type == "dynamic_exit":
        return f"dynamic_exit (mean {r.num_active_layers} of {total} layers, as calibrated)"
    if r.type == "full":
        return f"full ({total} layers)"
    return f"{r.type} (k={r.num_active_layers})"
