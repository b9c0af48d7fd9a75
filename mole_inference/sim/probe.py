"""Instruction probe (closed-loop ladder, rung 3): does the policy go where the instruction says?

Closed-loop success needs the colour word to steer the first motions, when every cube is in view. The probe
renders held-out first frames (random start poses, all four cubes on the table) and asks the policy, on the same
image, to touch each cube in turn. A query is a hit when the predicted horizontal motion (sum of the first
`horizon` actions of the chunk) points more towards the named cube than towards any other cube (cosine of the
xy directions from the TCP). Chance is about 1 / 4; a model that ignores the instruction scores the share of
frames where the named cube happens to be the one it drives to anyway, also about 1 / 4.

Also reported: `spread_m`, the mean distance between the motions predicted for different colours on one image
(near 0 when the model ignores the words), next to `motion_m`, the mean length of a predicted motion.

Order probe (`probe_order`): stack names two cubes, the one to pick first. On held-out first frames of `stack` the
policy is asked "stack the A cube on the B cube" and the swap "stack the B cube on the A cube" (same image and
noise). Reported: how often each motion points at its first-named cube, and how often both point at the same cube.
A policy that reads the instruction as a bag of words answers both alike (same cube ~1, the two hit rates summing
to at most 1); one that reads the order goes to A, then to B (same cube ~0, both hit rates ~1).

Grasp probe (`probe_grasp`): the last centimetres. The TCP is placed above the named cube of held-out `pick`
layouts, off its centre by 15 or 30 mm along x or y, at the heights where failed picks go wrong, and the policy
is asked once per placement. Reported per height and axis: the centring gain (the first step's motion towards the
centre divided by the offset; the scripted expert, speed-capped: 0.75-0.87, it centres before it descends), the
first step's descent while off-centre, and how often the first step closes the fingers there (the expert: never).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mole_inference.policy.contract import Policy, state_kwargs
from mole_inference.sim.scene import COLORS
from mole_inference.sim.tasks import StackTask, TouchTask, cube_name


@dataclass
class ProbeReport:
    """Hits per query and the motions behind them; `to_dict` is the JSON summary."""

    hits: list[bool] = field(default_factory=list)
    per_color: dict[str, list[bool]] = field(default_factory=dict)
    spreads: list[float] = field(default_factory=list)
    motions: list[float] = field(default_factory=list)

    @property
    def hit_rate(self) -> float:
        """Share of (frame, colour) queries whose motion points at the named cube."""
        return float(np.mean(self.hits)) if self.hits else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Summary numbers (JSON-ready)."""
        return {"queries": len(self.hits), "hit_rate": self.hit_rate, "chance": 1.0 / len(COLORS),
                "per_color": {c: float(np.mean(v)) for c, v in self.per_color.items() if v},
                "spread_m": float(np.mean(self.spreads)) if self.spreads else 0.0,
                "motion_m": float(np.mean(self.motions)) if self.motions else 0.0}


def pointed_cube(motion_xy: np.ndarray, ee_xy: np.ndarray, cubes_xy: dict[str, np.ndarray]) -> str:
    """The cube whose direction from the TCP has the largest cosine with `motion_xy` (ties: first listed)."""
    m = motion_xy / max(float(np.linalg.norm(motion_xy)), 1e-9)
    scores = {name: float(m @ ((p - ee_xy) / max(float(np.linalg.norm(p - ee_xy)), 1e-9)))
              for name, p in cubes_xy.items()}
    return max(scores, key=scores.get)


def probe_instructions(policy: Policy, frames: int = 20, seed: int = 700_000, horizon: int = 3,
                       start_offset: float = 0.06, start_yaw: float = 0.3) -> ProbeReport:
    """Run the probe on `frames` held-out first frames (layout seeds seed..seed+frames-1)."""
    from mole_inference.sim.env import make_env

    template = TouchTask.templates[0]
    report = ProbeReport(per_color={c: [] for c in COLORS})
    with make_env("touch", cameras=("wrist",), start_offset=start_offset, start_yaw=start_yaw) as env:
        for j in range(frames):
            obs = env.reset(seed + j)
            state = env.state()
            ee_xy = state.ee_pos[:2]
            cubes = {c: state.objects[cube_name(c)].pos[:2] for c in COLORS}
            motions = []
            for color in COLORS:
                # one noise seed per frame: the colours differ only by their words
                chunk = policy.infer(obs["wrist_rgb"], template.format(color=color), seed=seed + 97 * j,
                                     **state_kwargs(policy, obs["ee_pose"]))
                motion = chunk.actions[:horizon, :2].sum(axis=0)
                motions.append(motion)
                hit = pointed_cube(motion, ee_xy, cubes) == color
                report.hits.append(hit)
                report.per_color[color].append(hit)
                report.motions.append(float(np.linalg.norm(motion)))
            m = np.stack(motions)
            report.spreads.append(float(np.mean([np.linalg.norm(a - b) for i, a in enumerate(m) for b in m[i + 1:]])))
    return report


@dataclass
class OrderProbeReport:
    """Per held-out stack frame: did the motion for the instruction and for its colour swap point at the cube each
    names first, and at the same cube? `to_dict` is the JSON summary."""

    hits: list[bool] = field(default_factory=list)
    swapped_hits: list[bool] = field(default_factory=list)
    same: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Summary numbers (JSON-ready)."""
        def mean(v: list[bool]) -> float:
            return float(np.mean(v)) if v else 0.0

        return {"frames": len(self.hits), "first_named": mean(self.hits),
                "first_named_swapped": mean(self.swapped_hits), "same_cube": mean(self.same)}


def probe_order(policy: Policy, frames: int = 20, seed: int = 700_000, horizon: int = 3,
                start_offset: float = 0.06, start_yaw: float = 0.3) -> OrderProbeReport:
    """Run the order probe on `frames` held-out first frames of `stack` (layout seeds seed..seed+frames-1)."""
    from mole_inference.sim.env import make_env

    template = StackTask.templates[0]
    report = OrderProbeReport()
    with make_env("stack", cameras=("wrist",), start_offset=start_offset, start_yaw=start_yaw) as env:
        for j in range(frames):
            obs = env.reset(seed + j)
            state, task = env.state(), env.task
            cubes = {c: state.objects[cube_name(c)].pos[:2] for c in COLORS}
            first, second = task.target.split("_")[0], task.base.split("_")[0]
            pointed = []
            for a, b in ((first, second), (second, first)):
                chunk = policy.infer(obs["wrist_rgb"], template.format(color=a, base=b), seed=seed + 97 * j,
                                     **state_kwargs(policy, obs["ee_pose"]))
                pointed.append(pointed_cube(chunk.actions[:horizon, :2].sum(axis=0), state.ee_pos[:2], cubes))
            report.hits.append(pointed[0] == first)
            report.swapped_hits.append(pointed[1] == second)
            report.same.append(pointed[0] == pointed[1])
    return report


@dataclass
class YawProbeReport:
    """Needed vs predicted grasp rotation per held-out first frame of `pick`; `to_dict` is the JSON summary."""

    needed: list[float] = field(default_factory=list)  # rad: the expert's rotation to the grasp yaw
    predicted: list[float] = field(default_factory=list)  # rad: sum of the chunk's yaw deltas

    def to_dict(self) -> dict[str, Any]:
        """Mean absolute error of the predicted rotation next to that of not rotating at all, and the correlation."""
        need, pred = np.asarray(self.needed), np.asarray(self.predicted)
        corr = float(np.corrcoef(need, pred)[0, 1]) if len(need) > 2 and need.std() > 0 and pred.std() > 0 else 0.0
        return {"frames": len(need), "mae_rad": float(np.mean(np.abs(pred - need))) if len(need) else 0.0,
                "mae_no_turn_rad": float(np.mean(np.abs(need))) if len(need) else 0.0, "corr": corr}


def probe_yaw(policy: Policy, frames: int = 20, seed: int = 700_000, start_offset: float = 0.06,
              start_yaw: float = 0.3, max_ticks: int = 80) -> YawProbeReport:
    """Does the policy turn the gripper to the named cube's grasp yaw? On held-out `pick` episodes the scripted
    expert drives until it is above the cube and starts to turn; on that frame the summed yaw deltas of the
    policy's chunk are compared with the turn the expert makes (to the cube's yaw modulo 90 degrees nearest the
    EE's yaw). A policy that never turns scores mae = mae_no_turn."""
    from mole_inference.control.transforms import wrap_angle
    from mole_inference.sim.env import make_env
    from mole_inference.sim.expert import ScriptedExpert, ee_yaw, grasp_yaw

    report = YawProbeReport()
    with make_env("pick", cameras=("wrist",), start_offset=start_offset, start_yaw=start_yaw) as env:
        for j in range(frames):
            obs = env.reset(seed + j)
            expert = ScriptedExpert(env.task)
            for _ in range(max_ticks):
                state = env.state()
                action = expert.act(state)
                if abs(action[5]) > 1e-3:  # the expert starts its turn: ask the policy on this frame
                    break
                obs, _, _ = env.step(action)
            else:
                continue
            yaw = ee_yaw(state.ee_rot)
            need = wrap_angle(grasp_yaw(state, env.task.target, yaw) - yaw)
            chunk = policy.infer(obs["wrist_rgb"], obs["instruction"], seed=seed + 97 * j,
                                 **state_kwargs(policy, obs["ee_pose"]))
            report.needed.append(float(need))
            report.predicted.append(float(chunk.actions[:, 5].sum()))
    return report


GRASP_OFFSETS = (0.015, 0.03)  # m off the cube's centre, each along +-x and +-y
GRASP_HEIGHTS = (0.05, 0.08)  # m TCP heights: fingertips 1 and 4 cm above the cube's top; failed picks descend here


@dataclass
class GraspProbeReport:
    """One row per placement: (height, axis 0 = x / 1 = y, offset m, motion towards the centre m, dz m, closes)."""

    rows: list[tuple[float, int, float, float, float, bool]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Per height: centring gain along x and y (least squares of the motion on the offset), mean first-step dz
        (mm) and the share of first steps that close the fingers."""
        out: dict[str, Any] = {"queries": len(self.rows), "heights": {}}
        r = np.array(self.rows, dtype=float).reshape(-1, 6)
        for h in sorted(set(r[:, 0])):
            at = r[r[:, 0] == h]
            gains = {}
            for axis, name in ((0, "x"), (1, "y")):
                a = at[at[:, 1] == axis]
                gains[f"gain_{name}"] = float(a[:, 3] @ a[:, 2] / max(a[:, 2] @ a[:, 2], 1e-12)) if len(a) else 0.0
            out["heights"][f"{h * 100:.0f}cm"] = {**gains, "descent_mm": float(-at[:, 4].mean() * 1e3),
                                                  "close_rate": float(at[:, 5].mean())}
        return out


def probe_grasp(policy: Policy, layouts: int = 8, seed: int = 710_000,
                heights: tuple[float, ...] = GRASP_HEIGHTS, offsets: tuple[float, ...] = GRASP_OFFSETS
                ) -> GraspProbeReport:
    """Place the TCP off-centre above the named cube of `layouts` held-out pick layouts (see the module
    docstring) and record the policy's first step at each placement. A policy reading the sim (ExpertPolicy)
    gets the env and a fresh plan for every placement."""
    from mole_inference.sim.env import make_env
    from mole_inference.sim.expert import HOVER_Z, down_rot

    report = GraspProbeReport()
    rot = down_rot(0.0)
    with make_env("pick", cameras=("wrist",)) as env:
        for j in range(layouts):
            env.reset(seed + j, render=False)
            for h in heights:
                for axis in (0, 1):
                    for off in (*offsets, *(-o for o in offsets)):
                        cube = env.state().objects[env.task.target].pos
                        goal = np.array([cube[0], cube[1], h])
                        goal[axis] += off
                        _servo(env, np.array([goal[0], goal[1], HOVER_Z]), rot)  # over it first: no sweep at low z
                        obs = _servo(env, goal, rot)
                        state = env.state()
                        offset = (state.ee_pos - state.objects[env.task.target].pos)[axis]
                        if hasattr(policy, "env"):
                            policy.env = env
                        policy.reset()
                        chunk = policy.infer(obs["wrist_rgb"], obs["instruction"], seed=seed + len(report.rows),
                                             **state_kwargs(policy, obs["ee_pose"]))
                        first = chunk.actions[0]
                        report.rows.append((h, axis, float(offset), float(-first[axis]), float(first[2]),
                                            bool(first[6] < 0.5)))
    return report


def _servo(env: Any, position: np.ndarray, rotation: np.ndarray, ticks: int = 40) -> dict[str, Any]:
    """Servo the TCP to `position` with open fingers (at most `ticks` control ticks); the observation there."""
    for _ in range(ticks):
        env.step_to(position, rotation, 1.0, render=False)
        if np.linalg.norm(env.state().ee_pos - position) < 1e-3:
            break
    return env.observe(render=True)
