"""The FR3 tabletop scene: franky-sim's FR3 + hand attached to our table, coloured cubes, distractors, cameras.

Frames: the robot base frame is the world frame; the table top is z = 0. The end effector ("TCP") site sits
0.1034 m along the hand's z axis (between the fingertips), like franka_ros2's EE frame, so measured poses
here mean what `/franka_robot_state_broadcaster/current_pose` means on the robot.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mole_inference.control.transforms import matrix_to_quat
from mole_inference.sim.backend import fr3_mjcf_path, import_mujoco

log = logging.getLogger(__name__)

ASSETS = Path(__file__).parent / "assets"
ROBOT_PREFIX = "fr3/"
ARM_JOINTS = tuple(f"{ROBOT_PREFIX}fr3_joint{i}" for i in range(1, 8))
FINGER_JOINTS = (f"{ROBOT_PREFIX}finger_joint1", f"{ROBOT_PREFIX}finger_joint2")
GRIPPER_BODIES = (f"{ROBOT_PREFIX}hand", f"{ROBOT_PREFIX}left_finger", f"{ROBOT_PREFIX}right_finger")
EE_SITE = "tcp"
TCP_OFFSET = 0.1034  # m from the hand (flange + 0.107) to the fingertip centre, as in franka_description
GRIPPER_MAX_WIDTH = 0.08  # m between the fingers, fully open
GRIP_STIFFNESS_SCALE = 5.0
CUBE_HALF = 0.02  # m; 4 cm cubes fit the 8 cm gripper
CAMERAS = ("wrist", "front")
# A posture above the table, EE pointing down (q7 = +pi/4 puts the EE x axis along the base x axis).
SEED_QPOS = np.array([0.0, -0.3, 0.0, -2.2, 0.0, 1.9, np.pi / 4])


@dataclass(frozen=True)
class ObjectSpec:
    """A free rigid object on the table; `color` is the word instructions use for it."""

    name: str
    color: str
    shape: Literal["box", "cylinder"]
    size: tuple[float, ...]  # MuJoCo half sizes: box (x, y, z), cylinder (radius, half height)
    rgba: tuple[float, float, float, float]
    mass: float = 0.05

    @property
    def half_height(self) -> float:
        """Height of the object's centre above the table when it rests upright."""
        return self.size[2] if self.shape == "box" else self.size[1]


CUBES = (
    ObjectSpec("red_cube", "red", "box", (CUBE_HALF,) * 3, (0.85, 0.10, 0.10, 1.0)),
    ObjectSpec("green_cube", "green", "box", (CUBE_HALF,) * 3, (0.10, 0.65, 0.15, 1.0)),
    ObjectSpec("blue_cube", "blue", "box", (CUBE_HALF,) * 3, (0.10, 0.25, 0.85, 1.0)),
    ObjectSpec("yellow_cube", "yellow", "box", (CUBE_HALF,) * 3, (0.95, 0.80, 0.10, 1.0)),
)
DISTRACTORS = (
    ObjectSpec("purple_cylinder", "purple", "cylinder", (0.022, 0.03), (0.55, 0.20, 0.70, 1.0)),
    ObjectSpec("orange_cylinder", "orange", "cylinder", (0.018, 0.045), (0.95, 0.45, 0.05, 1.0)),
)
OBJECTS = CUBES + DISTRACTORS
COLORS = tuple(c.color for c in CUBES)


@dataclass(frozen=True)
class ObjectState:
    """Pose of one object in the base frame: position (m) and quaternion xyzw."""

    pos: np.ndarray
    quat: np.ndarray


@dataclass(frozen=True)
class SceneState:
    """Privileged snapshot for success predicates and the scripted expert."""

    time: float
    ee_pos: np.ndarray  # (3,) m, base frame
    ee_rot: np.ndarray  # (3, 3) EE orientation in the base frame
    gripper_width: float  # m between the fingers
    objects: dict[str, ObjectState]
    touching: frozenset[str] = frozenset()  # objects in contact with any part of the gripper
    left_touching: frozenset[str] = frozenset()  # objects in contact with the left finger
    right_touching: frozenset[str] = frozenset()
    resting_on: dict[str, frozenset[str]] = field(default_factory=dict)  # object -> objects/table it touches

    def held(self, name: str) -> bool:
        """True when both fingers touch object `name` (it is grasped)."""
        return name in self.left_touching and name in self.right_touching


def build_model(physics_dt: float = 0.002) -> Any:
    """Compile the scene: tabletop.xml + FR3 (gravity compensated) + objects + wrist camera/TCP site."""
    mujoco = import_mujoco()
    fr3_path = fr3_mjcf_path()
    robot = mujoco.MjSpec.from_file(str(fr3_path))
    robot.meshdir = str(fr3_path.parent / "meshes")
    for body in robot.bodies:
        if body.name != "world":
            # Gravity compensation must be in the model before compiling; the FR3 controller does the same.
            body.gravcomp = 1.0
    _tune_gripper(robot)
    world = mujoco.MjSpec.from_file(str(ASSETS / "tabletop.xml"))
    world.attach(robot, frame=world.frame("robot_mount"), prefix=ROBOT_PREFIX)
    world.option.timestep = physics_dt

    hand = world.body(f"{ROBOT_PREFIX}hand")
    hand.add_site(name=EE_SITE, pos=[0, 0, TCP_OFFSET], size=[0.004, 0, 0], group=4)
    _add_wrist_camera(hand)
    world.add_exclude(bodyname1="world", bodyname2=f"{ROBOT_PREFIX}fr3_link0")
    for spec in OBJECTS:
        _add_object(mujoco, world, spec)
    model = world.compile()
    log.debug("compiled FR3 scene: nq=%d nu=%d ngeom=%d", model.nq, model.nu, model.ngeom)
    return model


def _tune_gripper(robot: Any) -> None:
    """Make the hand grasp like a Franka Hand: the arm's joint friction/armature stall the light fingers."""
    for name in ("finger_joint1", "finger_joint2"):
        joint = robot.joint(name)
        joint.frictionloss, joint.armature = 0.0, 0.01
        joint.damping = [2.0, 0.0, 0.0]  # a 3-vector in MuJoCo 4 specs; [0] is linear
    # The tendon servo is width-proportional; 5x stiffer gives about 20 N of grip on a 4 cm cube.
    hand = robot.actuator("hand")
    hand.gainprm[0] *= GRIP_STIFFNESS_SCALE
    hand.biasprm[1] *= GRIP_STIFFNESS_SCALE
    hand.biasprm[2] *= GRIP_STIFFNESS_SCALE


def _add_wrist_camera(hand: Any) -> None:
    """A GoPro-like wrist camera: on the side of the hand, looking along the gripper at the fingertips."""
    # Mounted 9 cm off the gripper axis on the hand's -x side (towards the robot when pointing down),
    # tilted 25 degrees towards the axis so the fingertips sit in the lower part of the image.
    tilt = np.deg2rad(25.0)
    forward = np.array([np.sin(tilt), 0.0, np.cos(tilt)])  # viewing direction in the hand frame
    right = np.array([0.0, -1.0, 0.0])  # image x along the finger travel
    up = np.cross(-forward, right)  # image y = z_cam x x_cam: away from the gripper axis
    x, y, z, w = matrix_to_quat(np.column_stack([right, up, -forward]))
    hand.add_camera(name="wrist", pos=[-0.09, 0.0, 0.02], quat=[w, x, y, z], fovy=80.0)


def _add_object(mujoco: Any, world: Any, spec: ObjectSpec) -> None:
    """A free body with one geom, parked on the table until a task places it."""
    body = world.worldbody.add_body(name=spec.name, pos=[0.0, 0.0, spec.half_height])
    body.add_freejoint(name=f"{spec.name}_joint")
    geom_type = mujoco.mjtGeom.mjGEOM_BOX if spec.shape == "box" else mujoco.mjtGeom.mjGEOM_CYLINDER
    size = list(spec.size) + [0.0] * (3 - len(spec.size))
    body.add_geom(name=spec.name, type=geom_type, size=size, rgba=list(spec.rgba), mass=spec.mass,
                  friction=[1.0, 0.01, 0.001], condim=4, solref=[0.01, 1.0])


class FR3Scene:
    """Model, data and named handles of the FR3 tabletop; reading state and rendering, no control."""

    def __init__(self, physics_dt: float = 0.002, image_size: int = 224) -> None:
        self.mujoco = import_mujoco()
        self.model = build_model(physics_dt)
        self.data = self.mujoco.MjData(self.model)
        self.image_size = image_size
        m, name2id, obj = self.model, self.mujoco.mj_name2id, self.mujoco.mjtObj
        self.arm_qpos = np.array([m.jnt_qposadr[name2id(m, obj.mjOBJ_JOINT, j)] for j in ARM_JOINTS])
        self.arm_dof = np.array([m.jnt_dofadr[name2id(m, obj.mjOBJ_JOINT, j)] for j in ARM_JOINTS])
        self.finger_qpos = np.array([m.jnt_qposadr[name2id(m, obj.mjOBJ_JOINT, j)] for j in FINGER_JOINTS])
        self.arm_act = np.array([name2id(m, obj.mjOBJ_ACTUATOR, f"{ROBOT_PREFIX}{j[len(ROBOT_PREFIX):]}")
                                 for j in ARM_JOINTS])
        self.gripper_act = name2id(m, obj.mjOBJ_ACTUATOR, f"{ROBOT_PREFIX}hand")
        self.ee_site = name2id(m, obj.mjOBJ_SITE, EE_SITE)
        self.obj_body = {s.name: name2id(m, obj.mjOBJ_BODY, s.name) for s in OBJECTS}
        self.obj_qpos = {s.name: m.jnt_qposadr[name2id(m, obj.mjOBJ_JOINT, f"{s.name}_joint")] for s in OBJECTS}
        self.obj_dof = {s.name: m.jnt_dofadr[name2id(m, obj.mjOBJ_JOINT, f"{s.name}_joint")] for s in OBJECTS}
        self.gripper_body = {name2id(m, obj.mjOBJ_BODY, b): b for b in GRIPPER_BODIES}
        self.table_geom = name2id(m, obj.mjOBJ_GEOM, "table")
        self._renderer: Any = None

    # -- state ------------------------------------------------------------------------------------
    def ee_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured EE position (m) and quaternion xyzw in the base frame (franka_ros2 current_pose)."""
        pos, rot = self.ee_matrix()
        return pos, matrix_to_quat(rot)

    def ee_matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """Measured EE position (3,) and rotation matrix (3, 3) in the base frame."""
        return self.data.site_xpos[self.ee_site].copy(), self.data.site_xmat[self.ee_site].reshape(3, 3).copy()

    def gripper_width(self) -> float:
        """Distance between the fingers in metres (0 closed, 0.08 fully open)."""
        return float(np.sum(self.data.qpos[self.finger_qpos]))

    def object_pos(self, name: str) -> np.ndarray:
        """Position of object `name` in the base frame."""
        return self.data.xpos[self.obj_body[name]].copy()

    def state(self) -> SceneState:
        """Snapshot of everything the tasks and the expert may look at."""
        m, d = self.model, self.data
        objects = {}
        for name, body in self.obj_body.items():
            w, x, y, z = d.xquat[body]
            objects[name] = ObjectState(d.xpos[body].copy(), np.array([x, y, z, w]))
        body_to_obj = {b: n for n, b in self.obj_body.items()}
        touching: set[str] = set()
        per_finger: dict[str, set[str]] = {b: set() for b in GRIPPER_BODIES}
        resting: dict[str, set[str]] = {n: set() for n in self.obj_body}
        for i in range(d.ncon):
            g1, g2 = d.contact.geom1[i], d.contact.geom2[i]
            b1, b2 = m.geom_bodyid[g1], m.geom_bodyid[g2]
            for ba, bb, ga in ((b1, b2, g1), (b2, b1, g2)):
                if ba in body_to_obj and bb in self.gripper_body:
                    touching.add(body_to_obj[ba])
                    per_finger[self.gripper_body[bb]].add(body_to_obj[ba])
                elif ba in body_to_obj and bb in body_to_obj:
                    resting[body_to_obj[ba]].add(body_to_obj[bb])
                elif ba in body_to_obj and (g1 == self.table_geom or g2 == self.table_geom) and ga != self.table_geom:
                    resting[body_to_obj[ba]].add("table")
        pos, rot = self.ee_matrix()
        return SceneState(
            time=float(d.time), ee_pos=pos, ee_rot=rot, gripper_width=self.gripper_width(), objects=objects,
            touching=frozenset(touching),
            left_touching=frozenset(per_finger[GRIPPER_BODIES[1]]),
            right_touching=frozenset(per_finger[GRIPPER_BODIES[2]]),
            resting_on={k: frozenset(v) for k, v in resting.items()},
        )

    # -- placement --------------------------------------------------------------------------------
    def place_object(self, name: str, x: float, y: float, yaw: float = 0.0, z: float | None = None) -> None:
        """Put object `name` upright at (x, y) on the table (or at height z), rotated by yaw, at rest."""
        spec = next(s for s in OBJECTS if s.name == name)
        adr, dof = self.obj_qpos[name], self.obj_dof[name]
        height = spec.half_height if z is None else z
        self.data.qpos[adr:adr + 7] = [x, y, height, np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        self.data.qvel[dof:dof + 6] = 0.0

    def set_robot(self, arm_q: np.ndarray, gripper_cmd: float) -> None:
        """Teleport the arm to joint positions `arm_q` at rest, with matching servo targets."""
        self.data.qpos[self.arm_qpos] = arm_q
        self.data.qvel[self.arm_dof] = 0.0
        self.data.ctrl[self.arm_act] = arm_q
        width = float(np.clip(gripper_cmd, 0.0, 1.0)) * GRIPPER_MAX_WIDTH
        self.data.qpos[self.finger_qpos] = width / 2
        self.data.ctrl[self.gripper_act] = float(np.clip(gripper_cmd, 0.0, 1.0)) * 255.0

    def forward(self) -> None:
        """Recompute derived quantities (poses, contacts) after editing qpos."""
        self.mujoco.mj_forward(self.model, self.data)

    # -- rendering --------------------------------------------------------------------------------
    def render(self, camera: str = "wrist") -> np.ndarray:
        """RGB image (H, W, 3) uint8 from camera 'wrist' or 'front'; the GL context is made on first use."""
        if camera not in CAMERAS:
            raise ValueError(f"camera={camera!r}: expected one of {CAMERAS}")
        if self._renderer is None:
            self._renderer = self._make_renderer()
        self._renderer.update_scene(self.data, camera=camera)
        return self._renderer.render().copy()

    def _make_renderer(self) -> Any:
        mj = self.mujoco
        try:
            renderer = mj.Renderer(self.model, self.image_size, self.image_size)
        except Exception as exc:  # EGL/OSMesa failures surface as assorted error types
            from mole_inference.errors import BackendUnavailableError

            raise BackendUnavailableError(
                f"MuJoCo offscreen rendering failed ({type(exc).__name__}: {exc}); set MUJOCO_GL=egl or "
                "osmesa and install libegl1/libosmesa6"
            ) from exc
        for flag in (mj.mjtRndFlag.mjRND_SHADOW, mj.mjtRndFlag.mjRND_REFLECTION, mj.mjtRndFlag.mjRND_SKYBOX):
            renderer.scene.flags[flag] = False
        return renderer

    def close(self) -> None:
        """Free the GL context (safe to call twice)."""
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
