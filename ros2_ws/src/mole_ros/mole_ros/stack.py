"""The whole control stack in one process (`mole-vla stack`): the nodes a params file lists, one executor.

The params file is the same standard ROS 2 params YAML the launch files pass to each node
(`<node_name>: ros__parameters: ...`). One extra entry, `mole_stack: ros__parameters: nodes: [...]`, lists the
nodes to start, by node name (see NODES); launch files read the same list. With no file, DEFAULT_NODES run
with their built-in defaults, which need no camera device and no checkpoint.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

import yaml
from rclpy.node import Node

from mole_inference.errors import ConfigError

STACK_KEY = "mole_stack"
# node name -> (module, class, console script); the sim bridge is added by the simulation package
NODES: dict[str, tuple[str, str, str]] = {
    "mole_policy": ("mole_ros.policy_node", "PolicyNode", "policy_node"),
    "mole_teleop": ("mole_ros.teleop_node", "TeleopNode", "teleop_node"),
    "mole_camera": ("mole_ros.camera_node", "CameraNode", "camera_node"),
    "mole_recorder": ("mole_ros.recorder_node", "RecorderNode", "recorder_node"),
    "mole_sim_bridge": ("mole_ros.sim_bridge_node", "SimBridgeNode", "sim_bridge_node"),
}
DEFAULT_NODES = ["mole_policy", "mole_teleop", "mole_recorder"]


def config_dir() -> Path:
    """`launch/config/` of this checkout (shared with the launch files)."""
    return Path(__file__).resolve().parents[4] / "launch" / "config"


def default_config() -> Path | None:
    """`launch/config/stack.yaml` when this is a source checkout, else None (built-in defaults)."""
    path = config_dir() / "stack.yaml"
    return path if path.is_file() else None


def node_names(config: Path | None) -> list[str]:
    """The node list of a params file (`mole_stack.ros__parameters.nodes`), DEFAULT_NODES without one."""
    if config is None:
        return list(DEFAULT_NODES)
    try:
        data = yaml.safe_load(Path(config).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"--config {config}: cannot read params YAML: {err}") from None
    names = ((data.get(STACK_KEY) or {}).get("ros__parameters") or {}).get("nodes", DEFAULT_NODES)
    unknown = [n for n in names if n not in NODES]
    if unknown:
        raise ConfigError(f"{config}: {STACK_KEY}.nodes has unknown nodes {unknown}; known: {sorted(NODES)}")
    return list(names)


def node_factory(name: str) -> Callable[[], Node]:
    """The class registered for node `name` (ConfigError if its module is not installed yet)."""
    module, cls, _ = NODES[name]
    try:
        return getattr(importlib.import_module(module), cls)
    except ImportError as err:
        raise ConfigError(f"node {name}: cannot import {module}.{cls}: {err}") from None


def run(config: str | Path | None = None) -> int:
    """Start the listed nodes with the params file (or the default one) until Ctrl-C."""
    from mole_ros.runner import run_nodes

    path = Path(config) if config is not None else default_config()
    if path is not None and not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    names = node_names(path)
    factories = [node_factory(n) for n in names]
    args = ["--ros-args", "--params-file", str(path)] if path is not None else None
    print(f"mole-vla stack: {', '.join(names)} (params: {path or 'built-in defaults'})", flush=True)
    return run_nodes(factories, args)
