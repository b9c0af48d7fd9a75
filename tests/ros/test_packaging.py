"""Packaging of mole_ros, checked by reading files (no ROS runtime, no colcon, no rosdep database).

- package.xml: every dependency resolves for `rosdep install --from-paths src` (a rosdep key, or a package of the
  workspace), and every module the code imports and every package the launch files start is a dependency;
- setup.py: the launch files and their params are installed to share/mole_ros/launch with the source layout,
  from whatever directory setup.py runs in (colcon's --symlink-install runs it in build/mole_ros);
- docker/Dockerfile: no symlink install whose build/ is deleted; mole_inference is in the workspace before rosdep
  runs for mole_ros; the image launches the installed package.
"""

from __future__ import annotations

import ast
import os
import re
import runpy
import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import setuptools
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "ros2_ws" / "src" / "mole_ros"
LAUNCH = ROOT / "launch"
DOCKERFILE = ROOT / "docker" / "Dockerfile"

# rosdep keys mole_ros may use, read from ros/rosdistro (2026-08): humble/ and jazzy/distribution.yaml release
# these ROS packages on both distros; rosdep/python.yaml defines the python3-* keys.
ROSDEP_KEYS = {
    "rclpy", "rcl_interfaces", "builtin_interfaces", "action_msgs", "lifecycle_msgs", "std_msgs", "std_srvs",
    "sensor_msgs",
    "geometry_msgs", "diagnostic_msgs", "tf2_msgs", "launch", "launch_ros", "ament_index_python", "controller_manager",
    "controller_manager_msgs",
    "foxglove_bridge", "spacenav", "joy", "robot_state_publisher", "xacro",
    "python3-numpy", "python3-opencv", "python3-yaml", "python3-tqdm", "python3-pytest",
}
# packages of the repositories in ros2_ws/mole.repos (package.xml names on their jazzy and humble branches);
# franka_ros2 is not released for jazzy, crisp_controllers on no distro: both come from source
REPO_PACKAGES = {
    "franka_ros2": {"franka_bringup", "franka_description", "franka_example_controllers", "franka_gripper",
                    "franka_hardware", "franka_msgs", "franka_robot_state_broadcaster",
                    "franka_semantic_components"},
    "crisp_controllers": {"crisp_controllers"},
}
# import name -> rosdep key where they differ
IMPORT_KEYS = {"cv2": "python3-opencv", "yaml": "python3-yaml", "numpy": "python3-numpy"}


def package_xml(path: Path) -> ET.Element:
    return ET.parse(path).getroot()


def exec_depends(root: ET.Element) -> set[str]:
    tags = ("depend", "exec_depend", "run_depend")
    return {e.text.strip() for tag in tags for e in root.findall(tag)}


def all_depends(root: ET.Element) -> set[str]:
    tags = ("depend", "exec_depend", "build_depend", "build_export_depend", "buildtool_depend", "test_depend")
    return {e.text.strip() for tag in tags for e in root.findall(tag)}


def dockerfile_runs() -> list[str]:
    """The RUN instructions of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [line[4:] for line in text.splitlines() if line.startswith("RUN ")]


def linked_workspace_packages() -> set[str]:
    """Root packages the Dockerfile links into ros2_ws/src before it runs rosdep for mole_ros."""
    names = set()
    for run in dockerfile_runs():
        if "mole_ros" not in run or "rosdep install" not in run:
            continue
        before = run[: run.index("rosdep install")]
        for target, link in re.findall(r"ln -s (\S+) (ros2_ws/src/\S+)", before):  # relative to WORKDIR
            if ((ROOT / link).parent / target).resolve() == ROOT:  # ../.. from ros2_ws/src: the root
                names.add(package_xml(ROOT / "package.xml").findtext("name"))
    return names


def workspace_packages() -> set[str]:
    repos = yaml.safe_load((ROOT / "ros2_ws" / "mole.repos").read_text())["repositories"]
    names = {package_xml(p).findtext("name") for p in (ROOT / "ros2_ws" / "src").glob("*/package.xml")}
    for repo in repos:
        names |= REPO_PACKAGES[repo]
    return names | linked_workspace_packages()


def imported_modules(paths: list[Path]) -> set[str]:
    """Top-level names of every module imported anywhere in `paths` (function-level imports included)."""
    names = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "mole_ros"}


def code_files() -> list[Path]:
    return sorted((PACKAGE_DIR / "mole_ros").glob("*.py")) + sorted(LAUNCH.glob("*.launch.py"))


def test_every_dependency_resolves_for_rosdep_from_the_workspace():
    depends = all_depends(package_xml(PACKAGE_DIR / "package.xml"))
    unknown = depends - ROSDEP_KEYS - workspace_packages()
    assert not unknown, (f"mole_ros/package.xml: {sorted(unknown)} are neither rosdep keys nor packages of the "
                         "workspace (ros2_ws/src, ros2_ws/mole.repos, linked in by docker/Dockerfile)")


def test_the_library_package_uses_only_rosdep_keys():
    # mole_inference joins the workspace, so rosdep resolves its dependencies too
    unknown = all_depends(package_xml(ROOT / "package.xml")) - ROSDEP_KEYS
    assert not unknown, f"package.xml (mole_inference): {sorted(unknown)} are not rosdep keys"


def test_every_import_is_an_exec_depend():
    keys = {IMPORT_KEYS.get(name, name) for name in imported_modules(code_files())}
    missing = keys - exec_depends(package_xml(PACKAGE_DIR / "package.xml"))
    assert not missing, f"mole_ros imports these but package.xml has no <exec_depend> for them: {sorted(missing)}"


def test_every_package_the_launch_files_start_is_an_exec_depend():
    sources = [PACKAGE_DIR / "mole_ros" / "launch_description.py", *LAUNCH.glob("*.launch.py")]
    started = set()
    for path in sources:
        text = path.read_text()
        started |= set(re.findall(r"""package=["']([a-z0-9_]+)["']""", text))
        started |= set(re.findall(r"""FindPackageShare\(["']([a-z0-9_]+)["']\)""", text))
    from mole_ros.launch_description import FRANKA_BRINGUP

    started |= {FRANKA_BRINGUP[0]}
    missing = started - exec_depends(package_xml(PACKAGE_DIR / "package.xml")) - {"mole_ros"}
    assert not missing, f"the launch files start {sorted(missing)}, not <exec_depend>s of mole_ros"


def setup_data_files(cwd: Path, monkeypatch) -> dict[str, list[str]]:
    """data_files of mole_ros/setup.py as setup() receives them when setup.py runs in `cwd`."""
    captured: dict = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(cwd)
    runpy.run_path(str(PACKAGE_DIR / "setup.py"), run_name="__main__")
    return {dest: list(sources) for dest, sources in captured["data_files"]}


@pytest.mark.parametrize("where", ["package", "symlink_build"])
def test_setup_installs_the_launch_files_and_params_to_share(where, tmp_path, monkeypatch):
    # colcon runs setup.py in the package directory, or (--symlink-install) in build/mole_ros
    # (colcon_core/task/python/build.py); data_files must be relative (colcon asserts it) and resolve in both
    cwd = PACKAGE_DIR if where == "package" else tmp_path / "build" / "mole_ros"
    cwd.mkdir(parents=True, exist_ok=True)
    data = setup_data_files(cwd, monkeypatch)
    installed = {}
    for dest, sources in data.items():
        for source in sources:
            assert not os.path.isabs(source), f"data_files source {source} is absolute (colcon refuses it)"
            path = (cwd / source).resolve()
            if LAUNCH in path.parents:
                assert path.is_file(), f"{source} does not exist from {cwd}"
                installed[path.relative_to(LAUNCH)] = Path(dest)
    expected = [*LAUNCH.glob("*.launch.py"), *LAUNCH.glob("config/*.yaml"), *LAUNCH.glob("config/controllers/*.yaml"),
                *LAUNCH.glob("foxglove/*.json")]
    assert expected
    for path in expected:
        relative = path.relative_to(LAUNCH)
        assert relative in installed, f"setup.py does not install launch/{relative}"
        # same layout as the source, so `Path(__file__).parent / "config"` also holds in share/
        assert installed[relative] == Path("share/mole_ros/launch") / relative.parent


def test_setup_installs_the_ament_index_marker_and_manifest(monkeypatch):
    data = setup_data_files(PACKAGE_DIR, monkeypatch)
    assert data["share/ament_index/resource_index/packages"] == ["resource/mole_ros"]
    assert "package.xml" in data["share/mole_ros"]


def colcon_builds() -> list[tuple[int, list[str]]]:
    """(RUN index, argv) of every `colcon build` in the Dockerfile."""
    builds = []
    for i, run in enumerate(dockerfile_runs()):
        for command in re.split(r"&&|;", run):
            argv = shlex.split(command)
            if argv[:2] == ["colcon", "build"]:
                builds.append((i, argv))
    return builds


def removes_build_dir(run: str) -> bool:
    for command in re.split(r"&&|;", run):
        argv = shlex.split(command)
        if argv[:1] == ["rm"] and any(arg.rstrip("/") in ("build", "./build") for arg in argv[1:]):
            return True
    return False


def test_dockerfile_keeps_build_dir_of_a_symlink_install():
    runs = dockerfile_runs()
    builds = colcon_builds()
    assert any("mole_ros" in argv for _, argv in builds), "the Dockerfile builds mole_ros with colcon"
    for i, argv in builds:
        if "--symlink-install" in argv:
            later = [run for run in runs[i:] if removes_build_dir(run)]
            assert not later, (f"`{' '.join(argv)}` links the install into build/, which `rm` deletes later: "
                               "build without --symlink-install or keep build/")


def test_dockerfile_puts_mole_inference_in_the_workspace_before_rosdep():
    assert "mole_inference" in linked_workspace_packages(), (
        "docker/Dockerfile must link the repository root (package mole_inference) into ros2_ws/src before "
        "`rosdep install --from-paths src` for mole_ros")


def test_dockerfile_launches_the_installed_package():
    cmd = [line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD ")]
    assert cmd and "ros2 launch mole_ros robot.launch.py" in cmd[-1], (
        "the image's command must be `ros2 launch mole_ros robot.launch.py` (the installed launch file), "
        f"not a path into the source tree: {cmd}")
