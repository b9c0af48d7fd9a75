"""`mole-vla stack [--config PATH]`: the ROS 2 control nodes in one process (no `ros2 launch` needed).

This entry point sits above both layers: it imports the `mole_ros` package (and so rclpy) only when run, and
says how to install it when missing; the library itself never imports ROS.
"""

from __future__ import annotations

import argparse

from mole_inference.errors import BackendUnavailableError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `stack` subcommand."""
    p = sub.add_parser("stack", help="run the ROS 2 nodes (policy, teleop, recorder, ...) in one process",
                       description="Start the nodes listed in a ROS 2 params file (mole_stack.nodes) with a "
                                   "multi-threaded executor. Default: launch/config/stack.yaml, which needs no "
                                   "camera and no checkpoint.")
    p.add_argument("--config", metavar="PATH", default=None,
                   help="ROS 2 params YAML, e.g. launch/config/sim.yaml (default: launch/config/stack.yaml)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Import the ROS package lazily and run the stack."""
    try:
        from mole_ros.stack import run as run_stack
    except ImportError as err:
        raise BackendUnavailableError(
            f"mole-vla stack needs rclpy and the mole_ros package ({err}); install the ROS 2 wheels "
            "(pip install -e '.[ros]') and pip install -e ros2_ws/src/mole_ros, or source a ROS 2 workspace"
        ) from None
    return run_stack(args.config)
