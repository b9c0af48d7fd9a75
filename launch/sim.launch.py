"""Simulated FR3: the same nodes against the MuJoCo sim bridge instead of the robot.

    ros2 launch launch/sim.launch.py [config:=launch/config/sim.yaml]

The sim bridge node goes in the node list of launch/config/sim.yaml (`mole_sim_bridge`, registered in
`mole_ros.stack.NODES`); nothing here needs to change when it lands. Same as
`mole-vla stack --config launch/config/sim.yaml`.
"""

from pathlib import Path

from mole_ros.launch_description import describe

CONFIG = Path(__file__).resolve().parent / "config" / "sim.yaml"


def generate_launch_description():
    """The nodes listed in the params file (sim bridge included once it exists), each with its parameters."""
    return describe(CONFIG)
