"""FR3 workstation: camera, policy, teleop and recorder next to franka_ros2 + a CRISP impedance controller.

    ros2 launch launch/robot.launch.py [config:=launch/config/robot.yaml]
    ros2 launch launch/robot.launch.py foxglove:=true   # + foxglove_bridge on ws://<host>:8765

Start the robot side first (franka_ros2 bringup with the cartesian_impedance_controller and the
franka_robot_state_broadcaster). Same nodes and parameters as `mole-vla stack --config launch/config/robot.yaml`.
Open launch/foxglove/mole.json in Foxglove as the layout (README, "Look at it").
"""

from pathlib import Path

from mole_ros.launch_description import describe

CONFIG = Path(__file__).resolve().parent / "config" / "robot.yaml"


def generate_launch_description():
    """The nodes listed in the params file, each with that file's parameters."""
    return describe(CONFIG)
