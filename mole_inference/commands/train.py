"""`mole-vla train`: STAR + CogKD training on episode bags; the same command runs under `torchrun`."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `train` subcommand."""
    p = sub.add_parser("train", help="train MoLe-VLA (STAR router + CogKD) on episode bags",
                       description="Train on episode bags. Multi-process: torchrun --nproc_per_node N -m "
                                   "mole_inference.cli train ... (FSDP on GPUs, DDP/gloo on CPU).")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="model config YAML (a preset's format, with a `training:` section)")
    src.add_argument("--preset", help="preset name instead of --config (default: tiny)")
    p.add_argument("--data", required=True, action="append",
                   help="folder of episode bags (searched recursively), lerobot:DIR for a LeRobot v3 dataset, or "
                   "cache:FILE (`mole-vla data cache`); repeat to train on the union, e.g. the data so far and "
                   "the new intervention recordings")
    p.add_argument("--image-key", help="LeRobot camera feature (default observation.images.wrist, or the only one)")
    p.add_argument("--action-key", help="LeRobot 7-D EE delta action feature (default action)")
    p.add_argument("--state-key", help="LeRobot state feature to check for (not used by the model)")
    p.add_argument("--out", required=True, help="output folder: checkpoints/, metrics.csv, tensorboard/")
    p.add_argument("--steps", type=int, help="total optimizer steps (training.max_steps)")
    p.add_argument("--batch-size", type=int, help="global batch (training.batch_size)")
    p.add_argument("--lr", type=float, help="constant learning rate (training.learning_rate)")
    p.add_argument("--seed", type=int, help="training.seed")
    p.add_argument("--router", help="router.type: star, linear, full, mod, dynamic_exit, ... (Tab. 1, 3 ablations)")
    p.add_argument("--distill", help="training.distill: none, mse, kl, reverse_kl, mse+reverse_kl")
    p.add_argument("--workers", type=int, help="data loader workers (training.num_workers)")
    p.add_argument("--init", help="checkpoint folder whose weights start the student")
    p.add_argument("--init-fresh", default="", help="comma-separated modules not taken from --init (e.g. "
                   "action_head: a new family's head on a trained vision tower and LLM)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    p.add_argument("--strategy", choices=("auto", "fsdp", "ddp"), default="auto",
                   help="under torchrun: auto = FSDP on GPUs, DDP on CPU")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --out")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default, every core; two runs sharing a CPU: 1 each, or "
                   "they oversubscribe it and both run several times slower)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace):
    """The ModelConfig from --config/--preset with the command-line overrides applied."""
    from mole_inference.config import ModelConfig, config_or_preset, to_dict
    from mole_inference.config.base import from_dict

    cfg = config_or_preset(args.config, args.preset)
    data = to_dict(cfg)
    overrides = {"max_steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
                 "seed": args.seed, "distill": args.distill, "num_workers": args.workers}
    data["training"].update({k: v for k, v in overrides.items() if v is not None})
    if args.router:
        data["router"]["type"] = args.router
    return from_dict(ModelConfig, data)


def run(args: argparse.Namespace) -> int:
    """Train and print where the final checkpoint is."""
    import yaml

    from mole_inference.config import to_dict
    from mole_inference.training.dataset import BagDataset
    from mole_inference.training.distributed import init_distributed, shutdown
    from mole_inference.training.sources import load_source_table
    from mole_inference.training.trainer import Trainer

    cfg = resolve_config(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ctx = init_distributed(args.device, args.strategy)
    try:
        if ctx.is_main:
            log.info("resolved config:\n%s", yaml.safe_dump(to_dict(cfg), sort_keys=False))
        table = load_source_table(args.data, cfg, args.image_key, args.action_key, args.state_key)
        trainer = Trainer(cfg, BagDataset(table, cfg), args.out, resume=args.resume, init=args.init,
                          init_fresh=tuple(p for p in args.init_fresh.split(",") if p),
                          progress=args.progress, ctx=ctx)
        result = trainer.fit()
        if ctx.is_main:
            print(f"trained to step {result.step} ({result.steps_run} steps, {result.steps_per_s:.2f} steps/s); "
                  f"checkpoint: {result.checkpoint}")
    finally:
        shutdown(ctx)
    return 0
