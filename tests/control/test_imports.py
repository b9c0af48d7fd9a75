"""The control package stays ROS-free and torch-free: it runs inside a real-time node on the robot PC."""

import ast
from pathlib import Path

import pytest

import mole_inference.control

ROOT = Path(mole_inference.control.__file__).parent
FILES = [*sorted(ROOT.glob("*.py")), ROOT.parent / "config" / "control.py"]
FORBIDDEN = ("torch", "rclpy", "scipy", "onnxruntime", "tensorrt", "mujoco", "cv2")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_heavy_or_ros_imports(path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            assert top not in FORBIDDEN and not top.endswith("_msgs"), f"{path.name} imports {name}"


def test_files_stay_small():
    for path in FILES:
        assert len(path.read_text().splitlines()) < 400, path.name
