"""Params files in launch/config/: valid node lists, and every parameter they set is declared by its node
(rclpy silently ignores overrides of undeclared parameters, so a typo would otherwise go unnoticed)."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml
from mole_ros.launch_description import describe
from mole_ros.stack import NODES, config_dir, default_config, node_factory, node_names

pytestmark = pytest.mark.ros

CONFIGS = sorted(config_dir().glob("*.yaml"))
LAUNCH_DIR = config_dir().parent


def flatten(params: dict, prefix: str = "") -> set[str]:
    out: set[str] = set()
    for key, value in params.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out.add(f"{prefix}{key}")
    return out


def test_default_config_exists_and_needs_no_camera():
    assert default_config() is not None
    names = node_names(default_config())
    assert "mole_policy" in names and "mole_camera" not in names


@pytest.mark.parametrize("config", CONFIGS, ids=[p.name for p in CONFIGS])
def test_params_files_match_declared_parameters(ros, config):
    data = yaml.safe_load(config.read_text())
    names = node_names(config)
    for name, section in data.items():
        if name == "mole_stack":
            continue
        assert name in NODES, f"{config.name}: unknown node {name}"
        if name not in names:
            continue
        node = node_factory(name)(context=ros.context)
        try:
            declared = set(node.list_parameters([], 0).names) | {"autostart"}
            unknown = flatten(section["ros__parameters"]) - declared
            assert not unknown, f"{config.name}: {name} does not declare {sorted(unknown)}"
        finally:
            node.destroy_node()


@pytest.mark.parametrize("launch_file", ["robot.launch.py", "sim.launch.py"])
def test_launch_files(launch_file):
    path = LAUNCH_DIR / launch_file
    compile(path.read_text(), str(path), "exec")  # always: at least syntactically valid
    if importlib.util.find_spec("launch_ros") is None:
        pytest.skip("launch_ros not installed (ros2 launch is not available from PyPI)")
    spec = importlib.util.spec_from_file_location(Path(launch_file).stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities


@pytest.mark.parametrize("name", ["robot.yaml", "sim.yaml"])
def test_robot_and_sim_integrate_deltas_onto_the_previous_target(name):
    # under the impedance controller the measured pose lags: integrating from it makes the arm crawl
    data = yaml.safe_load((config_dir() / name).read_text())
    assert data["mole_policy"]["ros__parameters"]["control"]["safety"]["integrate_from"] == "target"


def test_foxglove_argument_starts_foxglove_bridge(monkeypatch):
    # launch / launch_ros are not on PyPI: stand-ins record what describe() builds
    class Recorded:
        def __init__(self, *args, **kwargs) -> None:
            self.args, self.kwargs = args, kwargs

    kinds = {n: type(n, (Recorded,), {}) for n in ("LaunchDescription", "DeclareLaunchArgument", "OpaqueFunction",
                                                    "IfCondition", "LaunchConfiguration", "Node", "LifecycleNode")}
    for name, attrs in {"launch": ["LaunchDescription"], "launch.actions": ["DeclareLaunchArgument", "OpaqueFunction"],
                        "launch.conditions": ["IfCondition"], "launch.substitutions": ["LaunchConfiguration"],
                        "launch_ros": [], "launch_ros.actions": ["Node", "LifecycleNode"]}.items():
        module = types.ModuleType(name)
        for attr in attrs:
            setattr(module, attr, kinds[attr])
        monkeypatch.setitem(sys.modules, name, module)
    entities = describe(config_dir() / "robot.yaml").args[0]
    arguments = {e.args[0]: e.kwargs for e in entities if isinstance(e, kinds["DeclareLaunchArgument"])}
    assert arguments["foxglove"]["default_value"] == "false"
    assert arguments["foxglove_port"]["default_value"] == "8765"
    (bridge,) = [e for e in entities if isinstance(e, kinds["Node"])]
    assert (bridge.kwargs["package"], bridge.kwargs["executable"]) == ("foxglove_bridge", "foxglove_bridge")
    assert bridge.kwargs["condition"].args[0].args == ("foxglove",)
    assert bridge.kwargs["parameters"][0]["port"].args == ("foxglove_port",)
