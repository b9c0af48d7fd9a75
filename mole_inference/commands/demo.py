"""`mole-vla demo`: the MuJoCo FR3 + the whole ROS 2 control stack, with a narrated run and a strip.

Like `mole-vla stack`, this entry point imports the `mole_ros` package (and so rclpy) only when run; the
orchestration lives in `mole_ros.demo`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mole_inference.errors import BackendUnavailableError


def register(sub: argparse._SubParsersAction) -> None:
    """Add the `demo` subcommand."""
    p = sub.add_parser("demo", help="the simulated FR3 driven by the policy through the ROS 2 stack (start here)",
                       description="Start the MuJoCo FR3 sim bridge (in a child process of its own, as a robot is) "
                                   "and the nodes of launch/config/sim.yaml (policy, teleop, recorder), engage the "
                                   "policy, print what happens each second and save a filmstrip of the wrist camera. "
                                   "CPU only, no display needed.")
    p.add_argument("--task", default="touch",
                   help="touch | push_forward | pick | stack (default: touch, the shipped policy's best task)")
    p.add_argument("--episodes", type=int, default=2, help="episodes to run (default: 2)")
    p.add_argument("--seconds", type=float, default=None,
                   help="episode limit in simulated seconds (default: the task's own, 8 s for touch)")
    p.add_argument("--seed", type=int, default=0, help="layout seed of the first episode (episode i: seed + i)")
    p.add_argument("--checkpoint", metavar="PATH", default="",
                   help="checkpoint folder (default: models/mole-tiny if shipped, else the tiny preset, untrained)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="folder for strip.png and summary.json")
    p.add_argument("--config", type=Path, default=None, help="params file (default: launch/config/sim.yaml)")
    p.add_argument("--budget", type=float, default=0.0,
                   help="wall-clock seconds before stopping anyway (default: 30 + 2 x episodes x seconds)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate the numbers, import the ROS side lazily, run the demo."""
    from mole_inference.errors import ConfigError

    if args.episodes < 1:
        raise ConfigError(f"--episodes {args.episodes}: must be >= 1")
    if args.seconds is not None and args.seconds <= 0:
        raise ConfigError(f"--seconds {args.seconds}: must be > 0")
    try:
        from mole_ros.demo import DemoSettings, run_demo
    except ImportError as err:
        raise BackendUnavailableError(
            f"mole-vla demo needs rclpy and the mole_ros package ({err}); install the ROS 2 wheels "
            "(pip install -e '.[ros]') and pip install -e ros2_ws/src/mole_ros, or source a ROS 2 workspace"
        ) from None
    from mole_inference.sim.backend import select_gl_backend

    select_gl_backend()  # headless rendering (egl, else osmesa) before anything imports mujoco
    settings = DemoSettings(task=args.task, episodes=args.episodes, seconds=args.seconds, seed=args.seed,
                            checkpoint=args.checkpoint, out=args.out, config=args.config, verbose=args.verbose,
                            budget=args.budget)
    return run_demo(settings)
