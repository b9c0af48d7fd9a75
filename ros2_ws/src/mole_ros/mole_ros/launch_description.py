"""Launch descriptions built from a params file's `mole_stack.nodes` list (used by launch/*.launch.py).

Each listed node runs as its own process (`ros2 run mole_ros <executable>`) with the same params file as
`mole-vla stack --config`; lifecycle nodes (policy, camera) are launch_ros LifecycleNodes and bring themselves
up through their `autostart` parameter (set `autostart: false` to drive them with a lifecycle manager).
`foxglove:=true` also starts foxglove_bridge (ros-<distro>-foxglove-bridge) on `foxglove_port` (default 8765), so
Foxglove can open ws://<host>:8765 with the layout launch/foxglove/mole.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mole_ros.stack import NODES, node_names

LIFECYCLE = {"mole_policy", "mole_camera"}
FOXGLOVE_PORT = "8765"  # foxglove_bridge's default


def describe(config: str | Path, extra_arguments: dict[str, str] | None = None) -> Any:
    """A LaunchDescription with a `config` argument (default `config`) and one node per listed name."""
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.conditions import IfCondition
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import LifecycleNode, Node

    from launch import LaunchDescription

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
    return LaunchDescription([*arguments, OpaqueFunction(function=nodes), bridge])
