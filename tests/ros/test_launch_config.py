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


class Recorded:
    """Stand-in for a launch / launch_ros class: keeps the arguments it was built with."""

    def __init__(self, *args, **kwargs) -> None:
        self.args, self.kwargs = args, kwargs


STAND_INS = {"launch": ["LaunchDescription"],
             "launch.actions": ["DeclareLaunchArgument", "OpaqueFunction", "IncludeLaunchDescription"],
             "launch.conditions": ["IfCondition"],
             "launch.launch_description_sources": ["PythonLaunchDescriptionSource"],
             "launch.substitutions": ["LaunchConfiguration", "PathJoinSubstitution"],
             "launch_ros": [], "launch_ros.actions": ["Node", "LifecycleNode"],
             "launch_ros.substitutions": ["FindPackageShare"]}


@pytest.fixture
def kinds(monkeypatch) -> dict[str, type]:
    """launch / launch_ros are not on PyPI: stand-in modules whose classes record what describe*() builds."""
    kinds = {attr: type(attr, (Recorded,), {}) for attrs in STAND_INS.values() for attr in attrs}
    for name, attrs in STAND_INS.items():
        module = types.ModuleType(name)
        for attr in attrs:
            setattr(module, attr, kinds[attr])
        monkeypatch.setitem(sys.modules, name, module)
    return kinds


def test_foxglove_argument_starts_foxglove_bridge(kinds):
    entities = describe(config_dir() / "robot.yaml").args[0]
    arguments = {e.args[0]: e.kwargs for e in entities if isinstance(e, kinds["DeclareLaunchArgument"])}
    assert arguments["foxglove"]["default_value"] == "false"
    assert arguments["foxglove_port"]["default_value"] == "8765"
    (bridge,) = [e for e in entities if isinstance(e, kinds["Node"])]
    assert (bridge.kwargs["package"], bridge.kwargs["executable"]) == ("foxglove_bridge", "foxglove_bridge")
    assert bridge.kwargs["condition"].args[0].args == ("foxglove",)
    assert bridge.kwargs["parameters"][0]["port"].args == ("foxglove_port",)


# ------------------------------------------------------------------ robot side (launch/robot.launch.py)
# Launch arguments declared by franka_bringup/launch/franka.launch.py on both the jazzy and the humble branch of
# frankarobotics/franka_ros2 (jazzy adds load_franka_robot_state_broadcaster).
FRANKA_LAUNCH_ARGUMENTS = {"robot_type", "arm_prefix", "namespace", "robot_ip", "load_gripper", "use_fake_hardware",
                           "fake_sensor_commands", "joint_state_rate", "controllers_yaml"}
# utiasDSL/crisp_controllers: crisp_controllers.xml (plugin types) and the generate_parameter_library files
# src/cartesian_impedance_controller.yaml, src/pose_broadcaster.yaml (`nullspace.weights.<joint>.value` aside)
CRISP_TYPES = {"crisp_controllers/CartesianController", "crisp_controllers/PoseBroadcaster",
               "crisp_controllers/TorqueFeedbackController"}
CRISP_POSE_BROADCASTER = {"joints", "end_effector_frame", "base_frame"}
CRISP_CARTESIAN = {
    "joints", "end_effector_frame", "base_frame", "use_operational_space",
    *(f"task.{kd}_{kind}_{axis}" for kd in "kd" for kind in ("pos", "rot") for axis in "xyz"),
    *(f"task.error_clip.{axis}" for axis in ("x", "y", "z", "rx", "ry", "rz")),
    "nullspace.stiffness", "nullspace.damping", "nullspace.regularization", "nullspace.projector_type",
    "nullspace.max_tau", "noise.add_random_noise", "noise.amplitude", "use_friction", "use_coriolis_compensation",
    "use_gravity_compensation", "use_local_jacobian", "log.enabled", "log.robot_state", "log.control_values",
    "log.limits", "log.controller_parameters", "log.computed_torques", "log.dynamic_params", "log.timing",
    "filter.target_pose", "filter.q", "filter.dq", "filter.output_torque", "limit_error", "limit_torques",
    "max_delta_tau", "stop_commands", "friction.fp1", "friction.fp2", "friction.fp3",
}
FR3_JOINTS = [f"fr3_joint{i}" for i in range(1, 8)]  # franka_description: <arm_id>_joint1..7


def controllers_yaml() -> dict:
    return yaml.safe_load((config_dir() / "controllers" / "fr3.yaml").read_text())["/**"]


def robot_launch(kinds) -> list:
    from mole_ros.launch_description import describe_robot

    return describe_robot(config_dir() / "robot.yaml", config_dir() / "controllers" / "fr3.yaml").args[0]


def test_robot_launch_includes_franka_bringup_with_its_own_arguments(kinds):
    entities = robot_launch(kinds)
    (bringup,) = [e for e in entities if isinstance(e, kinds["IncludeLaunchDescription"])]
    (path,) = bringup.args[0].args[0]
    package, *rest = path.args[0]
    assert (package.args, rest) == (("franka_bringup",), ["launch", "franka.launch.py"])
    passed = dict(bringup.kwargs["launch_arguments"])
    assert set(passed) <= FRANKA_LAUNCH_ARGUMENTS, set(passed) - FRANKA_LAUNCH_ARGUMENTS
    assert passed["robot_type"] == "fr3"
    assert passed["controllers_yaml"].args == ("controllers_yaml",)
    arguments = {e.args[0]: e.kwargs for e in entities if isinstance(e, kinds["DeclareLaunchArgument"])}
    assert "default_value" not in arguments["robot_ip"], "robot_ip has no default: the arm is named explicitly"
    assert arguments["controllers_yaml"]["default_value"].endswith("controllers/fr3.yaml")
    assert bringup.kwargs["condition"].args[0].args == ("robot",)


def test_robot_launch_spawns_the_crisp_controllers_the_policy_talks_to(kinds):
    entities = robot_launch(kinds)
    spawned = [e.kwargs["arguments"][0] for e in entities
               if isinstance(e, kinds["Node"]) and e.kwargs["executable"] == "spawner"]
    assert all(e.kwargs["package"] == "controller_manager" for e in entities
               if isinstance(e, kinds["Node"]) and e.kwargs["executable"] == "spawner")
    manager = controllers_yaml()["controller_manager"]["ros__parameters"]
    for name in spawned:
        assert manager[name]["type"] in CRISP_TYPES, name
    policy = yaml.safe_load((config_dir() / "robot.yaml").read_text())["mole_policy"]["ros__parameters"]
    # CRISP's CartesianController subscribes the relative topic `target_pose` (src/cartesian_controller.cpp)
    controller = policy["target_pose_topic"].strip("/").split("/")[0]
    assert policy["target_pose_topic"] == f"/{controller}/target_pose"
    assert controller in spawned and manager[controller]["type"] == "crisp_controllers/CartesianController"
    # the measured pose comes from a broadcaster that runs: franka.launch.py spawns franka_robot_state_broadcaster
    broadcaster = policy["pose_topic"].strip("/").split("/")[0]
    assert broadcaster in {*spawned, "franka_robot_state_broadcaster"} and broadcaster in manager
    # franka_gripper/launch/gripper.launch.py names the node franka_gripper; actions ~/grasp, ~/move
    assert policy["gripper_action_ns"] == "/franka_gripper"


def test_robot_launch_starts_the_spacemouse_driver_teleop_listens_to(kinds):
    entities = robot_launch(kinds)
    (spacenav,) = [e for e in entities if isinstance(e, kinds["Node"]) and e.kwargs["package"] == "spacenav"]
    assert spacenav.kwargs["executable"] == "spacenav_node"
    teleop = yaml.safe_load((config_dir() / "robot.yaml").read_text())["mole_teleop"]["ros__parameters"]
    assert teleop["twist_topic"].startswith(f"/{spacenav.kwargs['name']}/")


def test_controller_params_are_crisp_parameters_with_fr3_names():
    params = controllers_yaml()
    manager = params["controller_manager"]["ros__parameters"]
    assert manager["update_rate"] == 1000
    for name, known in (("cartesian_impedance_controller", CRISP_CARTESIAN), ("pose_broadcaster",
                                                                             CRISP_POSE_BROADCASTER)):
        section = params[name]["ros__parameters"]
        unknown = flatten(section) - known
        assert not unknown, f"controllers/fr3.yaml: {name} has no parameters {sorted(unknown)} in CRISP"
        assert section["joints"] == FR3_JOINTS
    controller = params["cartesian_impedance_controller"]["ros__parameters"]
    broadcaster = params["pose_broadcaster"]["ros__parameters"]
    # one end-effector frame for the target and the measured pose (issue 10, item 4)
    assert (controller["end_effector_frame"], controller["base_frame"]) == (
        broadcaster["end_effector_frame"], broadcaster["base_frame"])
    # bounds from src/cartesian_impedance_controller.yaml
    assert all(0.0 <= v <= 5000.0 for k, v in controller["task"].items() if k.startswith("k_"))
    assert 0.1 <= controller["filter"]["target_pose"] <= 1.0
    assert controller["use_gravity_compensation"] is False  # libfranka compensates gravity already


def test_launch_file_prefers_the_installed_share_then_the_checkout(tmp_path, monkeypatch):
    from mole_ros.launch_description import launch_file

    packages = pytest.importorskip("ament_index_python.packages")

    share = tmp_path / "share" / "mole_ros"
    (share / "launch" / "config").mkdir(parents=True)
    (share / "launch" / "config" / "robot.yaml").write_text("{}")
    monkeypatch.setattr(packages, "get_package_share_directory", lambda name: str(share))
    assert launch_file("config", "robot.yaml") == share / "launch" / "config" / "robot.yaml"

    def not_installed(name):
        raise packages.PackageNotFoundError(name)

    monkeypatch.setattr(packages, "get_package_share_directory", not_installed)
    assert launch_file("config", "robot.yaml") == config_dir() / "robot.yaml"


def test_robot_launch_file_builds_without_launch_ros(kinds, monkeypatch):
    if importlib.util.find_spec("ament_index_python") is not None:  # an installed mole_ros must not be found
        from ament_index_python import packages

        def not_installed(name):
            raise packages.PackageNotFoundError(name)

        monkeypatch.setattr(packages, "get_package_share_directory", not_installed)
    spec = importlib.util.spec_from_file_location("robot_launch", LAUNCH_DIR / "robot.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, kinds["LaunchDescription"])
    arguments = {e.args[0]: e.kwargs for e in description.args[0] if isinstance(e, kinds["DeclareLaunchArgument"])}
    assert arguments["config"]["default_value"] == str(config_dir() / "robot.yaml")
    assert arguments["controllers_yaml"]["default_value"] == str(config_dir() / "controllers" / "fr3.yaml")
