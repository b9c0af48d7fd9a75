"""mole_sim_bridge runs the impedance controller by default (issue #10): the robot's CRISP gains from fr3.yaml,
and a push on the hand shows up as a sag in the published (best-effort) measured pose, which recovers on release.
Durations are counted in simulated ticks (`env.steps`); wall-clock waits are only generous deadlines."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mole_inference.sim.backend import select_gl_backend

select_gl_backend()  # before anything imports mujoco

if importlib.util.find_spec("mujoco") is None or importlib.util.find_spec("franky_sim") is None:
    pytest.skip("mujoco / franky-sim not installed (pip install 'mole-inference[sim]')", allow_module_level=True)

from geometry_msgs.msg import PoseStamped  # noqa: E402
from mole_ros import qos  # noqa: E402
from mole_ros.sim_bridge_node import SimBridgeNode  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from mole_inference.data import schema  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.sim]

FR3_YAML = Path(__file__).resolve().parents[2] / "launch" / "config" / "controllers" / "fr3.yaml"


@pytest.fixture(scope="module")
def bridge(ros):
    """A bridge with default controller parameters, no camera load to speak of, one long episode."""
    node = SimBridgeNode(
        context=ros.context,
        parameter_overrides=[
            Parameter("camera_rate", value=2.0),
            Parameter("publish_instruction", value=False),
            Parameter("auto_reset", value=False),
            Parameter("episode_seconds", value=600.0),
        ],
    )
    return ros.add(node)


def test_bridge_defaults_to_impedance_with_the_robots_crisp_gains(bridge):
    from mole_inference.sim.impedance import CartesianImpedanceController, impedance_config_from_ros_params

    assert bridge.cfg.controller == "impedance"
    assert isinstance(bridge.env.controller, CartesianImpedanceController)
    assert bridge.env.controller.config == impedance_config_from_ros_params(FR3_YAML)


def test_a_push_sags_the_published_pose_and_the_arm_recovers_on_release(ros, bridge, wait):
    poses = ros.subscribe(PoseStamped, schema.MEASURED_POSE_TOPIC, qos.ROBOT_STATE)

    def z() -> float:
        return float(poses.items[-1][1].pose.position.z)

    def ticks_later(n: int) -> bool:
        start = bridge.env.steps
        return wait(lambda: bridge.env.steps >= start + n, 60)

    assert wait(lambda: len(poses) > 0, 10)
    assert ticks_later(25)  # 0.5 s sim: the arm at rest on its start target
    z0 = z()
    scene = bridge.env.scene
    hand = scene.mujoco.mj_name2id(scene.model, scene.mujoco.mjtObj.mjOBJ_BODY, "fr3/hand")
    scene.data.xfrc_applied[hand, 2] = -10.0  # N down, like a 1 kg load in the hand
    try:
        assert ticks_later(75)  # 1.5 s sim
        sag = z0 - z()
        # F / K = 25 mm at CRISP's k_pos_z = 400 N/m; the kinematic servo would give about 1 mm
        assert 0.012 < sag < 0.04, sag
    finally:
        scene.data.xfrc_applied[hand, 2] = 0.0
    assert ticks_later(100)
    assert abs(z() - z0) < 0.005


def test_unknown_controller_is_refused(ros):
    from mole_inference.errors import ConfigError

    with pytest.raises(ConfigError, match="controller"):
        SimBridgeNode(context=ros.context, parameter_overrides=[Parameter("controller", value="position")])
