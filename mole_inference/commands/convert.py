"""`mole-vla convert --from cogact SRC --out DIR`: a public checkpoint -> our checkpoint folder (docs/convert.md)."""

from __future__ import annotations

import argparse

SOURCES = ("cogact",)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `convert` subcommand."""
    p = sub.add_parser("convert", help="convert a public VLA checkpoint (CogACT) to a MoLe checkpoint folder")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the source's layout")
    p.add_argument("src", help="source weights: CogACT's checkpoints/*.pt or a .safetensors with the same keys")
    p.add_argument("--out", required=True, help="checkpoint folder to write (model.safetensors, config.yaml, ...)")
    p.add_argument("--preset", default="cogact-7b",
                   help="our preset giving what shapes do not tell (head counts, eps, router, k)")
    p.add_argument("--tokenizer", help="local LLaMA-2 tokenizer folder recorded in the config")
    p.add_argument("--stats", help="dataset_statistics.json (default: next to the run) or our action_stats.json")
    p.add_argument("--unnorm-key", help="dataset whose action statistics to keep, when the file has several")
    p.add_argument("--identity-stats", action="store_true",
                   help="no statistics available: keep actions in normalized [-1, 1] units")
    p.add_argument("--ema", action="store_true", help="convert the EMA copy of the DiT (ema_diffusion)")
    p.add_argument("--accept-gaps", action="store_true",
                   help="write even though our modules cannot yet express all the source assumes (listed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert, or refuse with the unmatched keys / gaps listed; print what was written."""
    from mole_inference.config import preset
    from mole_inference.convert.cogact import convert_cogact

    path, conv = convert_cogact(args.src, args.out, preset(args.preset), tokenizer=args.tokenizer,
                                stats_path=args.stats, unnorm_key=args.unnorm_key, ema=args.ema,
                                identity_stats=args.identity_stats, accept_gaps=args.accept_gaps)
    print(f"wrote {path}: {conv.summary()}")
    for gap in conv.gaps:
        print(f"  gap: {gap}")
    return 0
