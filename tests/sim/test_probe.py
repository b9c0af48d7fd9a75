"""Instruction probe: the geometry of a hit, and a policy that ignores the words scores no spread."""

from __future__ import annotations

import numpy as np
import pytest

from mole_inference.policy.contract import ActionChunk, Policy, RoutingDecision
from tests.sim.conftest import missing_sim_reason


def test_pointed_cube_is_the_best_aligned_direction():
    from mole_inference.sim.probe import pointed_cube

    cubes = {"red": np.array([1.0, 0.0]), "blue": np.array([0.0, 1.0]), "green": np.array([-1.0, 0.2])}
    assert pointed_cube(np.array([0.9, 0.1]), np.zeros(2), cubes) == "red"
    assert pointed_cube(np.array([0.1, 0.5]), np.zeros(2), cubes) == "blue"
    assert pointed_cube(np.array([0.0, -1.0]), np.array([0.0, 2.0]), cubes) == "blue"  # relative to the TCP


class ConstantPolicy(Policy):
    """Always moves +x: ignores image and instruction."""

    action_dt, chunk_size, num_layers = 0.1, 4, 0

    def infer(self, image, instruction, *, seed=None):
        actions = np.zeros((4, 7))
        actions[:, 0] = 0.01
        return ActionChunk(actions, RoutingDecision((), np.zeros(0), 0))


@pytest.mark.sim
@pytest.mark.skipif(missing_sim_reason() is not None, reason=str(missing_sim_reason()))
def test_a_policy_deaf_to_the_instruction_has_no_spread():
    from mole_inference.sim.probe import probe_instructions

    report = probe_instructions(ConstantPolicy(), frames=3, seed=5).to_dict()
    assert report["queries"] == 12 and report["spread_m"] == 0.0
    assert report["motion_m"] == pytest.approx(0.03)
    # the same cube is hit whatever the colour: exactly one of the four queries per frame
    assert report["hit_rate"] == pytest.approx(0.25)


@pytest.mark.sim
@pytest.mark.skipif(missing_sim_reason() is not None, reason=str(missing_sim_reason()))
def test_yaw_probe_scores_a_policy_that_never_turns_as_not_turning():
    from mole_inference.sim.probe import probe_yaw

    report = probe_yaw(ConstantPolicy(), frames=3, seed=5)
    data = report.to_dict()
    assert data["frames"] == 3 and data["mae_rad"] == pytest.approx(data["mae_no_turn_rad"])
    # the expert turns to the grasp yaw nearest its own: never more than 45 degrees, and not always 0
    assert np.all(np.abs(report.needed) <= np.pi / 4 + 1e-9) and data["mae_no_turn_rad"] > 0.0


def test_yaw_probe_summary_rewards_the_right_turn():
    from mole_inference.sim.probe import YawProbeReport

    need = [0.3, -0.2, 0.5, -0.6]
    right, wrong = YawProbeReport(need, list(need)).to_dict(), YawProbeReport(need, [-x for x in need]).to_dict()
    assert right["mae_rad"] == 0.0 and right["corr"] == pytest.approx(1.0)
    assert wrong["mae_rad"] == pytest.approx(2 * right["mae_no_turn_rad"]) and wrong["corr"] == pytest.approx(-1.0)


class DescendAndClose(Policy):
    """Goes straight down with the fingers closing, wherever the cube is (the failure the grasp probe names)."""

    action_dt, chunk_size, num_layers = 0.1, 4, 0

    def infer(self, image, instruction, *, seed=None):
        actions = np.zeros((4, 7))
        actions[:, 2] = -0.01
        return ActionChunk(actions, RoutingDecision((), np.zeros(0), 0))


@pytest.mark.sim
@pytest.mark.skipif(missing_sim_reason() is not None, reason=str(missing_sim_reason()))
def test_grasp_probe_tells_centring_before_descending_from_descending_off_centre():
    from mole_inference.sim.expert_policy import ExpertPolicy
    from mole_inference.sim.probe import probe_grasp

    expert = probe_grasp(ExpertPolicy(), layouts=1, seed=3)
    assert len(expert.rows) == 16  # 2 heights x 2 axes x 4 offsets
    assert all(abs(abs(offset) - want) < 3e-3 for (_, _, offset, *_), want in
               zip(expert.rows, [0.015, 0.03, 0.015, 0.03] * 4, strict=True))  # placed where asked
    for g in expert.to_dict()["heights"].values():  # centres (speed-capped at 25 mm per step), never closes there
        assert g["gain_x"] > 0.7 and g["gain_y"] > 0.7 and g["close_rate"] == 0.0
    assert expert.to_dict()["heights"]["8cm"]["descent_mm"] == pytest.approx(0.0, abs=1.0)
    blind = probe_grasp(DescendAndClose(), layouts=1, seed=3).to_dict()["heights"]
    for g in blind.values():
        assert g["gain_x"] == 0.0 and g["gain_y"] == 0.0 and g["descent_mm"] == pytest.approx(10.0)
        assert g["close_rate"] == 1.0


class FirstColourPolicy(Policy):
    """Moves along a fixed direction per colour, chosen by the first colour word of the instruction."""

    action_dt, chunk_size, num_layers = 0.1, 4, 0

    def infer(self, image, instruction, *, seed=None):
        directions = {"red": (1.0, 0.0), "blue": (-1.0, 0.0), "green": (0.0, 1.0), "yellow": (0.0, -1.0)}
        colour = next(w for w in instruction.split() if w in directions)
        actions = np.zeros((4, 7))
        actions[:, :2] = 0.01 * np.array(directions[colour])
        return ActionChunk(actions, RoutingDecision((), np.zeros(0), 0))


@pytest.mark.sim
@pytest.mark.skipif(missing_sim_reason() is not None, reason=str(missing_sim_reason()))
def test_order_probe_tells_a_deaf_policy_from_one_that_reads_the_first_colour():
    from mole_inference.sim.probe import probe_order

    deaf = probe_order(ConstantPolicy(), frames=4, seed=5).to_dict()
    assert deaf["frames"] == 4 and deaf["same_cube"] == 1.0  # one answer whatever the order
    assert deaf["first_named"] + deaf["first_named_swapped"] <= 1.0
    reader = probe_order(FirstColourPolicy(), frames=4, seed=5).to_dict()
    assert reader["same_cube"] < 1.0  # the swap changes where it goes
