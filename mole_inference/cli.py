"""The `mole-vla` command. Each subcommand lives in `mole_inference/commands/<name>.py`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from mole_inference.errors import MoleError

# One line per subcommand module; each defines `register(subparsers)` and imports heavy things only when run.
COMMANDS = [
    "info",
    "bench",
    "stack",
    "demo",
    "train",
    "analyze",
    "data",
    "sim",
    "export",
    "build_engine",
    "convert",
]


def build_parser() -> argparse.ArgumentParser:
    """All subcommands."""
    p = argparse.ArgumentParser(prog="mole-vla", description="MoLe-VLA: model, robot stack, simulation, training")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mole_inference.commands.{name}").register(sub)
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
