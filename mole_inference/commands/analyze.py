"""`mole-vla analyze`: routing figures for a trained checkpoint on real frames (episode bags)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `analyze` subcommand."""
    p = sub.add_parser("analyze", help="routing figures of a checkpoint on episode bags (PNG + report.md)",
                       description="Layer usage per task, router entropy, cosine similarity of consecutive layer "
                                   "outputs with and without MoLe (paper Fig. 1B) and the routing raster of one "
                                   "episode, on the frames of the bags; writes PNGs, analysis.json and report.md.")
    p.add_argument("checkpoint", help="checkpoint folder (model.safetensors, config.yaml, action_stats.json)")
    p.add_argument("--data", required=True, help="folder of episode bags (searched recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--episode", type=int, help="episode index (sorted bag order) for the raster (default: first)")
    p.add_argument("--max-frames", type=int, help="analyze only the first N frames")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, route every frame, write the report and print where it is."""
    from mole_inference.analysis.report import write_report
    from mole_inference.analysis.routing import analyze_routing
    from mole_inference.model.checkpoint import load_checkpoint
    from mole_inference.training.dataset import load_table

    model, cfg, _ = load_checkpoint(args.checkpoint, device=args.device)
    table = load_table(args.data, cfg)
    analysis = analyze_routing(model, table, batch_size=args.batch_size, device=args.device,
                               max_frames=args.max_frames)
    report = write_report(analysis, args.out, checkpoint=str(args.checkpoint), episode=args.episode)
    print(f"analyzed {len(analysis.layers)} frames of {len(analysis.tasks)} tasks; report: {report}")
    return 0
