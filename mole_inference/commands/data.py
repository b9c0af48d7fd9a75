"""`mole-vla data`: dataset conversion; `data export-lerobot` writes episode bags as a LeRobot v3.0 dataset."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` subcommand and its actions."""
    p = sub.add_parser("data", help="dataset conversion (episode bags -> LeRobot v3.0)")
    actions = p.add_subparsers(dest="action", required=True)
    ex = actions.add_parser("export-lerobot", help="write a folder of episode bags as one LeRobot v3.0 dataset",
                            description="Episode bags -> LeRobot v3.0 (meta/, data/, videos/): wrist video, EE "
                                        "state, 7-DoF delta actions at --fps, task per episode, intervention "
                                        "source per frame. Train on it with `mole-vla train --data lerobot:DIR`.")
    ex.add_argument("bags", metavar="BAGS_DIR", help="folder of episode bags (searched recursively)")
    ex.add_argument("--out", required=True, help="new dataset folder (must not exist or be empty)")
    ex.add_argument("--fps", type=int, default=10, help="dataset frame rate; 1/action_dt to train MoLe on it")
    ex.add_argument("--image-size", type=int, default=224, help="square frame side in pixels (even)")
    ex.add_argument("--codec", choices=("av1", "h264"), default="av1",
                    help="video codec: av1 (SVT-AV1, LeRobot's default) or h264")
    ex.add_argument("--robot-type", default="franka_fr3", help="info.json robot_type")
    ex.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    ex.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    """Export and print what was written."""
    from mole_inference.data.lerobot.export import export_lerobot

    result = export_lerobot(args.bags, args.out, fps=args.fps, image_size=args.image_size, codec=args.codec,
                            progress=args.progress, robot_type=args.robot_type)
    skipped = f", skipped {len(result.skipped)} without frames" if result.skipped else ""
    print(f"LeRobot v3.0 dataset {result.root}: {result.episodes} episodes, {result.frames} frames, "
          f"{result.tasks} tasks at {args.fps} fps in {result.seconds:.1f} s{skipped}")
    return 0
