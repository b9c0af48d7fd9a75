"""ament_python package of the MoLe-VLA ROS 2 nodes."""

from setuptools import find_packages, setup

setup(
    name="mole_ros",
    version="0.1.0",
    packages=find_packages(exclude=["test"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/mole_ros"]),
        ("share/mole_ros", ["package.xml"]),
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
