"""colcon/ament_python entry: metadata lives in pyproject.toml; this adds the ament index marker."""

from setuptools import setup

setup(
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/mole_inference"]),
        ("share/mole_inference", ["package.xml"]),
    ],
)
