"""FR3 workstation: franka_ros2 + CRISP impedance controller, then camera, policy, teleop and recorder.

    ros2 launch mole_ros robot.launch.py robot_ip:=<FR3 control box>        # installed workspace
    ros2 launch launch/robot.launch.py robot_ip:=<...>                      # source checkout
    ... robot:=false            # the robot side runs elsewhere: only our nodes
    ... use_fake_hardware:=true # franka_ros2 mock hardware: check the graph without an arm
    ... config:=<params.yaml> controllers_yaml:=<controller_manager.yaml> foxglove:=true spacenav:=false

The robot side is franka_bringup's franka.launch.py (FR3 hardware, robot state broadcasters, Franka Hand) with
launch/config/controllers/fr3.yaml as its controller_manager params, plus the CRISP pose_broadcaster and
cartesian_impedance_controller (active, holding the pose it starts in). Our nodes and their parameters come from
launch/config/robot.yaml, as for `mole-vla stack --config launch/config/robot.yaml`. Step by step: docs/robot.md.
"""

from mole_ros.launch_description import describe_robot, launch_file


def generate_launch_description():
    """Robot side, then the nodes listed in the params file; files from share/mole_ros or this checkout."""
    return describe_robot(launch_file("config", "robot.yaml"), launch_file("config", "controllers", "fr3.yaml"))
