"""Subcommands of `mole-vla`, one module each with `register(subparsers)`; heavy imports inside `run`."""
