"""Simulated FR3: the same nodes against the MuJoCo sim bridge instead of the robot.

    ros2 launch launch/sim.launch.py [config:=launch/config/sim.yaml]
    ros2 launch launch/sim.launch.py foxglove:=true     # + foxglove_bridge on ws://<host>:8765

The sim bridge node (`mole_sim_bridge`, registered in `mole_ros.stack.NODES`) is in the node list of
launch/config/sim.yaml. Same as `mole-vla stack --config launch/config/sim.yaml`; `mole-vla demo` runs the same
nodes (the sim bridge in a process of its own, as a robot is) and narrates the episodes.
Open launch/foxglove/mole.json in Foxglove as the layout (README, "Look at it").
"""

from pathlib import Path

from mole_ros.launch_description import describe

CONFIG = Path(__file__).resolve().parent / "config" / "sim.yaml"


def generate_launch_description():
    """The nodes listed in the params file (sim bridge included once it exists), each with its parameters."""
    return describe(CONFIG)
