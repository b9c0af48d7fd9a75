"""ament_python package of the MoLe-VLA ROS 2 nodes.

The launch files and their params live in the repository's `launch/` (shared with `mole-vla stack`); they are
installed to `share/mole_ros/launch/` with the same layout (`launch/config/`, `launch/foxglove/`), so
`ros2 launch mole_ros robot.launch.py` works from an installed workspace. data_files must be relative to the
working directory setup.py runs in: colcon runs it in the package directory, and with `--symlink-install` in
`build/mole_ros` (colcon_core/task/python/build.py), so the paths are computed from this file's real location.
"""

import os
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "mole_ros"
HERE = Path(__file__).resolve().parent  # resolve(): under --symlink-install this file is a link in build/
LAUNCH = HERE.parents[2] / "launch"  # <repo>/launch; this package is <repo>/ros2_ws/src/mole_ros


def shared(pattern: str) -> list[str]:
    """Files of <repo>/launch matching `pattern`, relative to the working directory (sorted)."""
    return sorted(os.path.relpath(path, os.getcwd()) for path in LAUNCH.glob(pattern) if path.is_file())


setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", shared("*.launch.py")),
        (f"share/{PACKAGE}/launch/config", shared("config/*.yaml")),
        (f"share/{PACKAGE}/launch/config/controllers", shared("config/controllers/*.yaml")),
        (f"share/{PACKAGE}/launch/foxglove", shared("foxglove/*.json")),
    ],
    install_requires=["setuptools"],
    entry_points={
        "console_scripts": [
            "policy_node = mole_ros.policy_node:main",
            "teleop_node = mole_ros.teleop_node:main",
            "camera_node = mole_ros.camera_node:main",
            "recorder_node = mole_ros.recorder_node:main",
            "sim_bridge_node = mole_ros.sim_bridge_node:main",
        ],
    },
)
