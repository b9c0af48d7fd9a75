"""Layering rules from DESIGN.md: the library never imports ROS, and `import mole_inference` stays light."""

import ast
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[1] / "mole_inference"


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_library_never_imports_ros():
    offenders = {}
    for path in LIB.rglob("*.py"):
        bad = {m for m in imported_modules(path)
               if m.split(".")[0] in {"rclpy", "rosidl_runtime_py", "launch", "launch_ros"}
               or m.split(".")[0].endswith("_msgs") or m.split(".")[0].endswith("_srvs")}
        if bad:
            offenders[str(path.relative_to(LIB))] = sorted(bad)
    assert not offenders, f"mole_inference must not import ROS: {offenders}"


def test_import_is_light():
    code = ("import sys, mole_inference, mole_inference.config, mole_inference.policy, mole_inference.runtime;"
            "heavy = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'mujoco', 'transformers', 'rclpy')"
            " if m in sys.modules]; print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
