"""HG-DAgger collection: a good policy is left alone, a bad one is taken over, both sources land in the bag."""

from __future__ import annotations

import numpy as np
import pytest

from mole_inference.policy.contract import ActionChunk, Policy, RoutingDecision
from tests.sim.conftest import missing_sim_reason

pytestmark = [pytest.mark.sim, pytest.mark.skipif(missing_sim_reason() is not None,
                                                  reason=str(missing_sim_reason()))]


class SidewaysPolicy(Policy):
    """Drives +y at full speed whatever it sees: the operator must take over."""

    action_dt, chunk_size, num_layers = 0.1, 4, 0

    def infer(self, image, instruction, *, seed=None):
        actions = np.zeros((4, 7))
        actions[:, 1], actions[:, 6] = 0.025, 1.0
        return ActionChunk(actions, RoutingDecision((), np.zeros(0), 0))


def collect(tmp_path, policy, task="touch", rule=None, **settings):
    from mole_inference.sim.demos import DemoConfig
    from mole_inference.sim.interventions import collect_interventions

    cfg = DemoConfig(tasks=(task,), episodes=1, seed=11, noise_trans=0.0, dart=False, **settings)
    summary, stats = collect_interventions(policy, str(tmp_path), cfg, rule)
    return summary.results[-1], stats[task]


def closed_gripper_expert():
    """Goes exactly where the expert goes, but with the fingers closed: only the gripper rule can fire."""
    from mole_inference.sim.expert_policy import ExpertPolicy

    class ClosedGripper(ExpertPolicy):
        def infer(self, image, instruction, *, seed=None):
            chunk = super().infer(image, instruction, seed=seed)
            chunk.actions[:, 6] = 0.0
            return chunk

    return ClosedGripper()


def test_a_drifting_policy_is_taken_over_and_both_sources_are_recorded(tmp_path):
    from mole_inference.data.bag_reader import read_episode

    result, stats = collect(tmp_path, SidewaysPolicy())
    assert stats.takeovers == 1 and stats.policy_successes == 0
    assert result.success and stats.rescued == 1  # the operator finished the task
    ep = read_episode(result.path, decode_images=False)
    sources = list(ep.delta_sources)
    first_teleop = sources.index("teleop")
    assert first_teleop > 0 and set(sources[:first_teleop]) == {"policy"} and set(sources[first_teleop:]) == {"teleop"}
    np.testing.assert_allclose(ep.deltas[:first_teleop, 1], 0.005, atol=1e-9)  # 25 mm / 0.1 s split over 5 ticks
    assert first_teleop <= 0.6 / 0.02  # the rule fires within about one window of drifting


def test_a_policy_that_does_what_the_expert_would_is_left_alone(tmp_path):
    from mole_inference.sim.expert_policy import ExpertPolicy

    result, stats = collect(tmp_path, ExpertPolicy())
    assert stats.takeovers == 0 and result.success and stats.policy_successes == 1


def test_a_gripper_closed_near_the_cube_where_the_expert_keeps_it_open_is_taken_over(tmp_path):
    """Closed fingers in free space are left alone; over the cube (TCP within `gripper_near`) the rule fires after
    `gripper_s`, before the closed fingers reach the cube (which is when the translation rule alone would fire)."""
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.sim.interventions import TakeoverRule

    def first_teleop(name, rule):
        result, stats = collect(tmp_path / name, closed_gripper_expert(), "pick", rule)
        assert stats.takeovers == 1 and result.success  # the operator finishes the pick
        sources = list(read_episode(result.path, decode_images=False).delta_sources)
        return sources.index("teleop")

    everywhere = first_teleop("everywhere", TakeoverRule(gripper_s=0.3, gripper_near=10.0))
    over_cube = first_teleop("over", TakeoverRule(gripper_s=0.3, gripper_near=0.12))  # hovering 11 cm above it
    no_rule = first_teleop("off", TakeoverRule(gripper_s=0.0))
    assert 0.3 / 0.02 - 1 <= everywhere <= 0.3 / 0.02 + 6  # 15 ticks of disagreement (+ the first frame's wait)
    assert everywhere + 20 < over_cube < no_rule - 10


def drift_rule_on(path, waypoint, rule=None):
    """Feed `_drift` a TCP path (one position per 20 ms tick) towards a fixed waypoint: (first firing tick, kind)."""
    from collections import deque

    from mole_inference.sim.interventions import InterventionActor, TakeoverRule

    actor = InterventionActor(policy=None, control_dt=0.02, rule=rule or TakeoverRule())
    actor._distances = deque(maxlen=1 + round(1.0 / 0.02))
    for tick, tcp in enumerate(path):
        kind = actor._drift(np.asarray(tcp, float), np.asarray(waypoint, float))
        if kind is not None:
            return tick, kind
    return None, None


def test_the_drift_rule_tells_a_wrong_turn_and_a_stall_from_another_path_shape():
    waypoint = [0.45, 0.0, 0.13]
    steps = np.linspace(0, 1, 60)[:, None]
    dive_then_level = np.concatenate([[0.35, 0.0, 0.30] + steps * [0.0, 0.0, -0.17],  # straight down first
                                      [0.35, 0.0, 0.13] + steps * [0.10, 0.0, 0.0]])
    assert drift_rule_on(dive_then_level, waypoint) == (None, None)  # approaches all along: not stopped
    wrong_cube = [0.35, 0.0, 0.30] + steps * [-0.10, 0.10, 0.0]
    assert drift_rule_on(wrong_cube, waypoint)[1] == "away"
    beside_and_down = [0.45, 0.03, 0.13] + steps * [0.0, 0.0, -0.10]  # xy stays 3 cm off while descending
    tick, kind = drift_rule_on(beside_and_down, waypoint)
    assert kind == "stall" and tick == 50  # one stall_s of no progress
    parked = np.tile([0.40, 0.0, 0.13], (60, 1))
    assert drift_rule_on(parked, waypoint)[1] == "stall"
    assert drift_rule_on(parked, [0.41, 0.0, 0.13]) == (None, None)  # within stall_far: holding is fine


class BesideDescender(Policy):
    """Descends 3 cm beside the target cube with open fingers (reads the sim, like ExpertPolicy)."""

    action_dt, chunk_size, num_layers = 0.1, 4, 0

    def __init__(self):
        self.env = None

    def infer(self, image, instruction, *, seed=None):
        state = self.env.state()
        goal = state.objects[self.env.task.target].pos + np.array([0.0, 0.03, 0.01])
        step = goal - state.ee_pos
        step *= min(1.0, 0.02 / max(np.linalg.norm(step), 1e-9))
        actions = np.zeros((4, 7))
        actions[:, :3], actions[:, 6] = step, 1.0
        return ActionChunk(actions, RoutingDecision((), np.zeros(0), 0))


def test_the_expert_corrects_a_low_miss_where_it_is_instead_of_climbing_back(tmp_path):
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.sim.expert import HOVER_Z

    result, stats = collect(tmp_path, BesideDescender(), "pick")
    assert stats.takeovers == 1 and result.success
    ep = read_episode(result.path, decode_images=False)
    takeover_ns = ep.delta_t_ns[list(ep.delta_sources).index("teleop")]
    poses = ep.measured_poses
    z_then = poses.position[np.searchsorted(poses.t_ns, takeover_ns), 2]
    grasp_ns = ep.delta_t_ns[np.flatnonzero(ep.deltas[:, 6] < 0.5)[0]]  # the expert's first close
    z_until_grasp = poses.position[(poses.t_ns >= takeover_ns) & (poses.t_ns <= grasp_ns), 2]
    assert z_then < HOVER_Z - 0.04  # taken over low, beside the cube
    assert z_until_grasp.max() < HOVER_Z - 0.03  # re-centred there: no climb back to the hover height


def test_takeovers_are_counted_by_the_rule_that_fired(tmp_path):
    from mole_inference.sim.expert_policy import ExpertPolicy

    _, drifting = collect(tmp_path / "drift", SidewaysPolicy())
    # centred grasps: the expert that drives and the one that watches draw different grasp offsets otherwise
    _, closed = collect(tmp_path / "closed", closed_gripper_expert(), "pick", grasp_offset=0.0)
    _, fine = collect(tmp_path / "fine", ExpertPolicy())
    assert drifting.reasons == {"away": 1} and closed.reasons == {"gripper": 1} and fine.reasons == {}


def test_the_policy_drives_the_gripper_as_the_robot_does_when_asked(tmp_path):
    """A stray gripper draw on every other chunk: sent as is, the fingers flap; with the robot's vote and 0.3 s
    confirmation (collect-interventions --gripper-vote --gripper-confirm 0.3) they stay as they were."""
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.sim.demos import DemoConfig
    from mole_inference.sim.expert_policy import ExpertPolicy
    from mole_inference.sim.interventions import TakeoverRule, collect_interventions

    class Flicker(ExpertPolicy):
        calls = 0

        def infer(self, image, instruction, *, seed=None):
            chunk = super().infer(image, instruction, seed=seed)
            self.calls += 1
            if self.calls % 2:
                chunk.actions[:, 6] = 1.0 - chunk.actions[:, 6]
            return chunk

    switches = {}
    for name, options in (("raw", {}), ("robot", {"gripper_vote": True, "gripper_confirm": 0.3})):
        cfg = DemoConfig(tasks=("pick",), episodes=1, seed=11, noise_trans=0.0, dart=False)
        summary, _ = collect_interventions(Flicker(), str(tmp_path / name), cfg, TakeoverRule(gripper_s=0.0),
                                           **options)
        ep = read_episode(summary.results[-1].path, decode_images=False)
        closed = ep.deltas[np.asarray(ep.delta_sources) == "policy", 6] < 0.5
        switches[name] = int(np.count_nonzero(np.diff(closed)))
    assert switches["raw"] >= 6 and switches["robot"] <= 1
