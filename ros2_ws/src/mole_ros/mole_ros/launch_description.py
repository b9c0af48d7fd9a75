"""Launch descriptions built from a params file's `mole_stack.nodes` list (used by launch/*.launch.py).

Each listed node runs as its own process (`ros2 run mole_ros <executable>`) with the same params file as
`mole-vla stack --config`; lifecycle nodes (policy, camera) are launch_ros LifecycleNodes and bring themselves
up through their `autostart` parameter (set `autostart: false` to drive them with a lifecycle manager).
`foxglove:=true` also starts foxglove_bridge (ros-<distro>-foxglove-bridge) on `foxglove_port` (default 8765), so
Foxglove can open ws://<host>:8765 with the layout launch/foxglove/mole.json.

`describe_robot` adds the robot side for launch/robot.launch.py: franka_ros2's bringup (FR3 hardware, robot and
joint state broadcasters, gripper) with our controller_manager params, and the CRISP controllers it spawns.
Launch and params files are found through the ament index (`share/mole_ros/launch/`, installed by setup.py) and
fall back to this source checkout's `launch/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mole_ros.stack import NODES, config_dir, node_names

LIFECYCLE = {"mole_policy", "mole_camera"}
FOXGLOVE_PORT = "8765"  # foxglove_bridge's default


PACKAGE = "mole_ros"
# franka_bringup/launch/franka.launch.py (frankarobotics/franka_ros2, jazzy and humble branches): the launch
# arguments we set; both branches declare each of them
FRANKA_BRINGUP = ("franka_bringup", "launch", "franka.launch.py")
FRANKA_ROBOT_TYPE = "fr3"
# spawned here, in this order; franka.launch.py spawns joint_state_broadcaster and franka_robot_state_broadcaster.
# Names as in launch/config/controllers/fr3.yaml; the impedance controller activates holding the current pose
# (utiasDSL/crisp_controllers src/cartesian_controller.cpp, on_activate sets the target to the measured pose).
ROBOT_CONTROLLERS = ("pose_broadcaster", "cartesian_impedance_controller")


def launch_file(*parts: str) -> Path:
    """`share/mole_ros/launch/<parts>` of the installed package, else `launch/<parts>` of this source checkout."""
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    except ImportError:  # rclpy from PyPI without ament_index_python
        pass
    else:
        try:
            installed = Path(get_package_share_directory(PACKAGE), "launch", *parts)
        except (PackageNotFoundError, OSError, ValueError):  # pip-installed mole_ros, a bare checkout, or no
            pass  # AMENT_PREFIX_PATH at all (ament_index raises for that too): no ament index entry
        else:
            if installed.exists():
                return installed
    return config_dir().parent.joinpath(*parts)


def describe(config: str | Path, extra_arguments: dict[str, str] | None = None) -> Any:
    """A LaunchDescription with a `config` argument (default `config`) and one node per listed name."""
    from launch import LaunchDescription

    return LaunchDescription(_stack_entities(config, extra_arguments))


def describe_robot(config: str | Path, controllers: str | Path) -> Any:
    """The FR3 side (franka_ros2 bringup + CRISP controllers + SpaceMouse driver) and then our nodes.

    `robot:=false` leaves the robot side out (it runs elsewhere); `robot_ip` has no default on purpose.
    """
    from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
    from launch.conditions import IfCondition
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
    from launch_ros.actions import Node
    from launch_ros.substitutions import FindPackageShare

    from launch import LaunchDescription

    robot = IfCondition(LaunchConfiguration("robot"))
    arguments = [
        DeclareLaunchArgument("robot", default_value="true", choices=["true", "false"],
                              description="start the FR3 side: franka_ros2 bringup and the CRISP controllers"),
        DeclareLaunchArgument("robot_ip", description="hostname or IP of the FR3 control box (franka.launch.py)"),
        DeclareLaunchArgument("use_fake_hardware", default_value="false", choices=["true", "false"],
                              description="franka_ros2 mock hardware: the graph comes up, the arm does not move"),
        DeclareLaunchArgument("load_gripper", default_value="true", choices=["true", "false"],
                              description="Franka Hand: URDF hand frames and the franka_gripper node"),
        DeclareLaunchArgument("controllers_yaml", default_value=str(controllers),
                              description="controller_manager params (replaces franka_bringup's controllers.yaml)"),
        DeclareLaunchArgument("spacenav", default_value="true", choices=["true", "false"],
                              description="start the SpaceMouse driver (spacenav_node; needs spacenavd)"),
    ]
    bringup = IncludeLaunchDescription(
        PythonLaunchDescriptionSource([PathJoinSubstitution([FindPackageShare(FRANKA_BRINGUP[0]),
                                                             *FRANKA_BRINGUP[1:]])]),
        launch_arguments={"robot_type": FRANKA_ROBOT_TYPE,
                          "robot_ip": LaunchConfiguration("robot_ip"),
                          "use_fake_hardware": LaunchConfiguration("use_fake_hardware"),
                          "load_gripper": LaunchConfiguration("load_gripper"),
                          "controllers_yaml": LaunchConfiguration("controllers_yaml")}.items(),
        condition=robot)
    # controller_manager's spawner: default manager /controller_manager, as franka.launch.py uses it
    spawners = [Node(package="controller_manager", executable="spawner", arguments=[name], output="screen",
                     condition=robot) for name in ROBOT_CONTROLLERS]
    # ros-drivers/joystick_drivers spacenav/CMakeLists.txt registers the executable spacenav_node; node name
    # spacenav (spacenav/launch/classic-launch.py) gives /spacenav/twist and /spacenav/joy
    spacenav = Node(package="spacenav", executable="spacenav_node", name="spacenav", output="screen",
                    condition=IfCondition(LaunchConfiguration("spacenav")))
    return LaunchDescription([*arguments, bringup, *spawners, spacenav, *_stack_entities(config)])


def _stack_entities(config: str | Path, extra_arguments: dict[str, str] | None = None) -> list[Any]:
    """The `config`/foxglove arguments, our nodes (resolved at launch time) and the optional foxglove_bridge."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node

    def nodes(context: Any) -> list[Any]:
        path = LaunchConfiguration("config").perform(context)
        actions = []
        for name in node_names(Path(path)):
            _, _, executable = NODES[name]
            kind = LifecycleNode if name in LIFECYCLE else Node
            actions.append(kind(package="mole_ros", executable=executable, name=name, namespace="",
                                parameters=[path], output="screen", emulate_tty=True))
        return actions

    arguments = [DeclareLaunchArgument("config", default_value=str(config),
                                       description="ROS 2 params file (also lists the nodes: mole_stack.nodes)"),
                 DeclareLaunchArgument("foxglove", default_value="false", choices=["true", "false"],
                                       description="also start foxglove_bridge (layout: launch/foxglove/mole.json)"),
                 DeclareLaunchArgument("foxglove_port", default_value=FOXGLOVE_PORT,
                                       description="foxglove_bridge WebSocket port")]
    for key, default in (extra_arguments or {}).items():
        arguments.append(DeclareLaunchArgument(key, default_value=default))
    bridge = Node(package="foxglove_bridge", executable="foxglove_bridge", name="foxglove_bridge", output="screen",
                  parameters=[{"port": LaunchConfiguration("foxglove_port")}],
                  condition=IfCondition(LaunchConfiguration("foxglove")))
    return [*arguments, OpaqueFunction(function=nodes), bridge]
