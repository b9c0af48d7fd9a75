"""`mole-vla convert --from {cogact,openvla,pi0} SRC --out DIR`: a public checkpoint -> our checkpoint folder
(docs/convert.md)."""

from __future__ import annotations

import argparse

SOURCES = ("cogact", "openvla", "pi0")
DEFAULT_PRESET = {"cogact": "cogact-7b", "openvla": "openvla-7b", "pi0": "pi0"}


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `convert` subcommand."""
    p = sub.add_parser("convert",
                       help="convert a public VLA checkpoint (CogACT, OpenVLA, π0) to a MoLe checkpoint folder")
    p.add_argument("--from", dest="source", required=True, choices=SOURCES, help="the source's layout")
    p.add_argument("src", help="source weights: CogACT's checkpoints/*.pt (or a .safetensors with the same keys); "
                   "OpenVLA's Hugging Face folder (shards + model.safetensors.index.json + config.json); LeRobot's π0 "
                   "folder (model.safetensors + config.json)")
    p.add_argument("--out", required=True, help="checkpoint folder to write (model.safetensors, config.yaml, ...)")
    p.add_argument("--preset", help="our preset giving what shapes do not tell (head counts, router, k); default "
                   + ", ".join(f"{k}: {v}" for k, v in DEFAULT_PRESET.items()))
    p.add_argument("--tokenizer", help="local tokenizer folder recorded in the config (LLaMA-2's; π0: PaliGemma's)")
    p.add_argument("--stats", help="dataset_statistics.json or our action_stats.json (default: the source's own)")
    p.add_argument("--unnorm-key", help="dataset whose action statistics to keep, when the file has several")
    p.add_argument("--identity-stats", action="store_true",
                   help="no statistics available: keep actions in normalized [-1, 1] units")
    p.add_argument("--ema", action="store_true", help="cogact: convert the EMA copy of the DiT (ema_diffusion)")
    p.add_argument("--cognition-id", type=int,
                   help="openvla, pi0: token whose embedding becomes the cognition token (openvla: 29871, the "
                   "empty token its prompt ends with; pi0: 2, the BOS its prompt starts with)")
    p.add_argument("--accept-gaps", action="store_true",
                   help="write even though our modules cannot yet express all the source assumes (listed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Convert, or refuse with the unmatched keys / gaps listed; print what was written."""
    from mole_inference.config import preset
    from mole_inference.errors import ConfigError

    base = preset(args.preset or DEFAULT_PRESET[args.source])
    if args.source == "cogact":
        from mole_inference.convert.cogact import convert_cogact

        if args.cognition_id is not None:
            raise ConfigError("--cognition-id is for --from openvla (CogACT's cognition token is its EOS token)")
        path, conv = convert_cogact(args.src, args.out, base, tokenizer=args.tokenizer, stats_path=args.stats,
                                    unnorm_key=args.unnorm_key, ema=args.ema, identity_stats=args.identity_stats,
                                    accept_gaps=args.accept_gaps)
    elif args.source == "pi0":
        from mole_inference.convert.pi0 import BOS_ID, convert_pi0

        if args.ema:
            raise ConfigError("--ema is for --from cogact (π0 has no EMA copy)")
        cog = BOS_ID if args.cognition_id is None else args.cognition_id
        path, conv = convert_pi0(args.src, args.out, base, tokenizer=args.tokenizer, stats_path=args.stats,
                                 unnorm_key=args.unnorm_key, identity_stats=args.identity_stats, cognition_id=cog,
                                 accept_gaps=args.accept_gaps)
    else:
        from mole_inference.convert.openvla import PROMPT_END_ID, convert_openvla

        if args.ema:
            raise ConfigError("--ema is for --from cogact (OpenVLA has no EMA copy)")
        cog = PROMPT_END_ID if args.cognition_id is None else args.cognition_id
        path, conv = convert_openvla(args.src, args.out, base, tokenizer=args.tokenizer, stats_path=args.stats,
                                     unnorm_key=args.unnorm_key, identity_stats=args.identity_stats,
                                     cognition_id=cog, accept_gaps=args.accept_gaps)
    print(f"wrote {path}: {conv.summary()}")
    for gap in conv.gaps:
        print(f"  gap: {gap}")
    return 0
