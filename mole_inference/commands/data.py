"""`mole-vla data`: dataset conversion; `data export-lerobot` writes episode bags as a LeRobot v3.0 dataset,
`data cache` a training set as one file that `train --data cache:FILE` loads in seconds."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `data` subcommand and its actions."""
    p = sub.add_parser("data", help="dataset conversion (episode bags -> LeRobot v3.0, or one training cache file)")
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
    c = actions.add_parser("cache", help="write a training set as one .npz file (`train --data cache:FILE`)",
                           description="Read a training data source (episode bags or lerobot:DIR) for a model "
                                       "config, as `mole-vla train` would, and write its samples (frames resized "
                                       "to the model's input) as one file. Loading it takes seconds instead of "
                                       "about 0.2 s per episode; it only fits configs with the same image size, "
                                       "chunk size, action_dt and kept sources.")
    c.add_argument("--data", required=True, action="append",
                   help="episode bags folder, lerobot:DIR or cache:FILE; repeat to write the union (a cache of "
                   "the data so far plus new recordings)")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--config", help="model config YAML the samples are built for")
    src.add_argument("--preset", help="preset name instead of --config (default: tiny)")
    c.add_argument("--out", required=True, help="cache file to write (.npz)")
    c.add_argument("--image-codec", default="png",
                   help="png (lossless, default), raw, or webp:Q (lossy, Q 1..100, about 5x smaller than png)")
    c.set_defaults(func=run_cache)


def run_export(args: argparse.Namespace) -> int:
    """Export and print what was written."""
    from mole_inference.data.lerobot.export import export_lerobot

    result = export_lerobot(args.bags, args.out, fps=args.fps, image_size=args.image_size, codec=args.codec,
                            progress=args.progress, robot_type=args.robot_type)
    skipped = f", skipped {len(result.skipped)} without frames" if result.skipped else ""
    print(f"LeRobot v3.0 dataset {result.root}: {result.episodes} episodes, {result.frames} frames, "
          f"{result.tasks} tasks at {args.fps} fps in {result.seconds:.1f} s{skipped}")
    return 0


def run_cache(args: argparse.Namespace) -> int:
    """Build the table as `train` would and write it."""
    from mole_inference.config import config_or_preset
    from mole_inference.training.sources import load_source_table
    from mole_inference.training.table_cache import parse_codec, save_table

    parse_codec(args.image_codec)  # a usage error before minutes of reading
    cfg = config_or_preset(args.config, args.preset)
    table = load_source_table(args.data, cfg)
    path = save_table(table, args.out, cfg, args.image_codec)
    print(f"cache {path}: {len(table)} samples of {len(table.episodes)} episodes, {len(table.tasks)} tasks, "
          f"{path.stat().st_size / 1e6:.1f} MB ({args.image_codec}); train with --data cache:{path}")
    return 0
