"""Torch vs ONNX Runtime fp32 vs ONNX Runtime INT8, one model, one process, side by side.

    .venv/bin/python benchmarks/backends.py --preset small [--checkpoint DIR] [--calib-bags DIR] [--json]

Each backend is timed by `mole_inference.runtime.bench.bench` (full model and MoLe interleaved, medians), with the
same CPU thread count, in `--rounds` rounds that cycle through the backends, so load from other processes falls on
all of them alike; each field is the median over rounds. Ratios are against torch; no thresholds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile

FIELDS = ("full_ms", "mole_ms", "speedup", "llm_full_ms", "llm_mole_ms", "vision_ms", "router_ms", "action_head_ms")


def run_all(args: argparse.Namespace) -> dict:
    """Bench the three backends on one model; returns {backend: bench report} plus the INT8 export report."""
    import torch

    from mole_inference.export.pipeline import export_model, load_model
    from mole_inference.runtime.bench import bench
    from mole_inference.runtime.onnx_backend import OnnxPolicy
    from mole_inference.runtime.torch_backend import TorchPolicy

    torch.set_num_threads(args.threads)
    model, stats = load_model(args.checkpoint, None if args.checkpoint else args.preset)
    if not args.checkpoint:  # the head's output layer is zero-initialized: give it weights so INT8 error shows
        torch.nn.init.normal_(model.action_head.action_out.weight, std=0.02)
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="mole-bench-") as tmp:
        man = export_model(model, stats, tmp, int8=True, calib_bags=args.calib_bags,
                           synthetic_calibration=args.calib_bags is None, check=True)
        results["export"] = man.reports
        policies = {
            "torch fp32": TorchPolicy(model, model.cfg, stats),
            "onnxruntime fp32": OnnxPolicy(man, "fp32", threads=args.threads),
            "onnxruntime int8": OnnxPolicy(man, "int8", threads=args.threads),
        }
        rounds: dict[str, list[dict]] = {name: [] for name in policies}
        per_round = max(1, args.iters // args.rounds)
        for r in range(args.rounds):
            for name, policy in policies.items():
                logging.info("round %d/%d: %s", r + 1, args.rounds, name)
                rounds[name].append(bench(policy, iters=per_round, warmup=args.warmup if r == 0 else 0))
        for name, reports in rounds.items():
            results[name] = {k: statistics.median(rep[k] for rep in reports) for k in reports[0]}
            results[name]["iters"] = per_round * args.rounds
    return results


def table(results: dict, preset: str, threads: int) -> str:
    """Side-by-side text table with ratios against torch."""
    names = [n for n in results if n != "export"]
    ref = results["torch fp32"]
    lines = [f"{preset}, {threads} CPU threads, k={ref['active_layers']}/{ref['total_layers']} layers",
             f"{'':18}" + "".join(f"{n:>20}" for n in names)]
    for f in FIELDS:
        lines.append(f"{f:18}" + "".join(f"{results[n][f]:>20.2f}" for n in names))
    lines.append(f"{'mole_ms / torch':18}" + "".join(f"{results[n]['mole_ms'] / ref['mole_ms']:>20.2f}"
                                                      for n in names))
    q = results["export"].get("int8", {})
    if q:
        lines.append(f"int8 weights: {q['int8_over_fp32']:.3f} of fp32, {q['int8_over_fp16']:.3f} of fp16; "
                     f"held-out action error mean {q['action_mae']:.4f}, max {q['action_max_err']:.4f} "
                     f"({q['calibration']}, {q['holdout_frames']} frames)")
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, run, print."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--checkpoint")
    p.add_argument("--calib-bags", help="episode bags for INT8 calibration (default: generated frames)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="cycles through the backends (iters are split over them)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    results = run_all(args)
    print(json.dumps(results, indent=2) if args.json else table(results, args.checkpoint or args.preset, args.threads))


if __name__ == "__main__":
    main()
