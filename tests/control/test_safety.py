"""SafetyEnvelope: each clamp, rejection, workspace box, leash to the measured pose, hold semantics."""

import math

import numpy as np
import pytest

from mole_inference.config.control import SafetyConfig
from mole_inference.control.safety import SafetyEnvelope, SafetyFlag, Source, describe
from mole_inference.control.transforms import (
    Pose,
    quat_angle,
    quat_conjugate,
    quat_from_rpy,
    quat_multiply,
    quat_to_matrix,
    quat_to_rotvec,
)
from mole_inference.errors import ConfigError, InputError

DOWN = quat_from_rpy(math.pi, 0.0, 0.0)  # gripper pointing down, as on a tabletop


def pose(x=0.5, y=0.0, z=0.3, q=DOWN):
    return Pose.from_arrays([x, y, z], q)


def delta(dx=0.0, dy=0.0, dz=0.0, droll=0.0, dpitch=0.0, dyaw=0.0, gripper=1.0):
    return np.array([dx, dy, dz, droll, dpitch, dyaw, gripper])


def env(**kw):
    return SafetyEnvelope(SafetyConfig(**kw))


def test_small_delta_passes_untouched():
    measured = pose()
    cmd = env().apply(measured, delta(dx=0.001, dz=-0.002, dyaw=0.01, gripper=0.0), Source.POLICY)
    np.testing.assert_allclose(cmd.position, [0.501, 0.0, 0.298])
    np.testing.assert_allclose(cmd.delta, [0.001, 0.0, -0.002, 0.0, 0.0, 0.01, 0.0], atol=1e-12)
    assert cmd.flags == SafetyFlag.NONE and cmd.reason == "" and cmd.source is Source.POLICY
    assert cmd.gripper == 0.0 and not cmd.is_hold


def test_rotation_is_applied_in_base_frame_on_the_left():
    measured = pose(q=quat_from_rpy(0.4, -0.2, 1.0))
    cmd = env().apply(measured, delta(droll=0.01, dpitch=0.02, dyaw=-0.03), Source.POLICY)
    expected = quat_to_matrix(quat_from_rpy(0.01, 0.02, -0.03)) @ quat_to_matrix(measured.quaternion)
    np.testing.assert_allclose(quat_to_matrix(cmd.quaternion), expected, atol=1e-12)
    np.testing.assert_allclose(cmd.delta[3:6], [0.01, 0.02, -0.03], atol=1e-12)


def test_translation_clamp_keeps_direction():
    cmd = env(max_step_translation=0.005).apply(pose(), delta(dx=0.03, dy=-0.04), Source.POLICY)
    np.testing.assert_allclose(cmd.delta[:3], [0.003, -0.004, 0.0], atol=1e-12)
    np.testing.assert_allclose(cmd.position, [0.503, -0.004, 0.3], atol=1e-12)
    assert cmd.flags == SafetyFlag.TRANSLATION_CLAMPED
    assert "TRANSLATION_CLAMPED" in cmd.reason


def test_rotation_clamp():
    measured = pose()
    cmd = env(max_step_rotation=0.05).apply(measured, delta(dyaw=0.3), Source.POLICY)
    assert cmd.flags == SafetyFlag.ROTATION_CLAMPED
    np.testing.assert_allclose(cmd.delta[3:6], [0.0, 0.0, 0.05], atol=1e-12)
    expected = quat_multiply(quat_from_rpy(0.0, 0.0, 0.05), measured.quaternion)
    np.testing.assert_allclose(quat_to_matrix(cmd.quaternion), quat_to_matrix(expected), atol=1e-12)


def test_workspace_box_clamps_target():
    e = env(workspace_min=(0.2, -0.4, 0.02), workspace_max=(0.8, 0.4, 0.7))
    cmd = e.apply(pose(x=0.798, z=0.021), delta(dx=0.003, dz=-0.003), Source.POLICY)
    np.testing.assert_allclose(cmd.position, [0.8, 0.0, 0.02], atol=1e-12)
    assert cmd.flags == SafetyFlag.WORKSPACE_CLAMPED
    np.testing.assert_allclose(cmd.delta[:3], [0.002, 0.0, -0.001], atol=1e-12)


def test_outside_box_may_move_back_in_but_not_further_out():
    e = env(workspace_min=(0.2, -0.4, 0.02), workspace_max=(0.8, 0.4, 0.7))
    out = pose(z=0.01)  # below the table margin
    down = e.apply(out, delta(dz=-0.003), Source.POLICY)
    assert down.position[2] == pytest.approx(0.01) and down.flags & SafetyFlag.WORKSPACE_CLAMPED
    up = e.apply(out, delta(dz=0.003), Source.POLICY)
    assert up.position[2] == pytest.approx(0.013) and up.flags == SafetyFlag.NONE


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("index", [0, 4, 6])
def test_non_finite_delta_is_rejected_to_hold(bad, index):
    e = env()
    e.apply(pose(), delta(gripper=0.0), Source.POLICY)  # last gripper command: closed
    d = delta(dx=0.001)
    d[index] = bad
    measured = pose(x=0.51)
    cmd = e.apply(measured, d, Source.POLICY)
    assert cmd.is_hold and cmd.flags == SafetyFlag.REJECTED_NON_FINITE
    np.testing.assert_array_equal(cmd.position, measured.position)
    np.testing.assert_allclose(cmd.quaternion, measured.quaternion)
    assert cmd.gripper == 0.0  # hold keeps the gripper as it was
    np.testing.assert_array_equal(cmd.delta, [0, 0, 0, 0, 0, 0, 0.0])


def test_wrong_shape_and_missing_delta_hold():
    e = env()
    cmd = e.apply(pose(), np.zeros(6), Source.TELEOP)
    assert cmd.is_hold and cmd.flags == SafetyFlag.REJECTED_SHAPE and "shape" in cmd.reason
    cmd = e.apply(pose(), None, Source.POLICY)
    assert cmd.is_hold and cmd.flags == SafetyFlag.NONE and "no policy action" in cmd.reason
    assert cmd.gripper is None and math.isnan(cmd.delta[6])  # no gripper command was ever sent


def test_target_is_leashed_to_measured_position():
    e = env(integrate_from="target", max_step_translation=0.005, max_target_distance=0.03)
    measured = pose()  # the robot does not follow (e.g. blocked)
    distances = []
    for _ in range(10):
        cmd = e.apply(measured, delta(dx=0.005), Source.POLICY)
        distances.append(float(np.linalg.norm(cmd.position - measured.position)))
    np.testing.assert_allclose(distances[:6], [0.005, 0.01, 0.015, 0.02, 0.025, 0.03], atol=1e-12)
    assert max(distances) == pytest.approx(0.03)
    assert cmd.flags & SafetyFlag.DISTANCE_CLAMPED


def test_target_orientation_is_leashed_to_measured():
    e = env(integrate_from="target", max_step_rotation=0.05, max_target_angle=0.12)
    measured = pose()
    for _ in range(5):
        cmd = e.apply(measured, delta(dpitch=0.05), Source.POLICY)
    rel = quat_multiply(cmd.quaternion, quat_conjugate(measured.quaternion))
    assert quat_angle(rel) == pytest.approx(0.12)
    assert cmd.flags & SafetyFlag.ANGLE_CLAMPED


def test_measured_reference_never_accumulates_and_hold_restarts_integration():
    e = env(integrate_from="measured")
    for _ in range(3):
        cmd = e.apply(pose(), delta(dx=0.004), Source.POLICY)
    assert cmd.position[0] == pytest.approx(0.504)
    e2 = env(integrate_from="target")
    e2.apply(pose(), delta(dx=0.004), Source.POLICY)
    assert e2.apply(pose(), delta(dx=0.004), Source.POLICY).position[0] == pytest.approx(0.508)
    e2.hold(pose(), "test")
    assert e2.apply(pose(), delta(dx=0.004), Source.POLICY).position[0] == pytest.approx(0.504)


def test_gripper_binarized_and_clamped():
    e = env()
    assert e.apply(pose(), delta(gripper=0.7), Source.POLICY).gripper == 1.0
    assert e.apply(pose(), delta(gripper=0.2), Source.POLICY).gripper == 0.0
    cmd = e.apply(pose(), delta(gripper=1.5), Source.POLICY)
    assert cmd.gripper == 1.0 and cmd.flags == SafetyFlag.GRIPPER_CLAMPED
    assert env(gripper_binarize=False).apply(pose(), delta(gripper=0.3), Source.POLICY).gripper == 0.3


def test_gripper_binarized_with_hysteresis():
    """A command hovering around 0.5 keeps the hand's state; only crossing the band switches it."""
    e = env(gripper_close_below=0.4, gripper_open_above=0.6)
    sent = [e.apply(pose(), delta(gripper=g), Source.POLICY).gripper for g in
            (0.52, 0.45, 0.55, 0.41, 0.39, 0.5, 0.59, 0.45, 0.61, 0.5)]
    assert sent == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    e.reset()  # nothing sent yet: the first command is split at 0.5
    assert e.apply(pose(), delta(gripper=0.45), Source.POLICY).gripper == 0.0


def test_sticky_gripper_keeps_a_policy_switch_for_min_hold_ticks_but_never_delays_teleop():
    e = env(gripper_min_hold_ticks=3)
    sent = [e.apply(pose(), delta(gripper=g), Source.POLICY).gripper for g in (0.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0)]
    # the first command is not a switch; the open at tick 1 is kept 3 ticks (the closes at ticks 2-3 are ignored),
    # the close at tick 6 passes
    assert sent == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    e2 = env(gripper_min_hold_ticks=3)
    e2.apply(pose(), delta(gripper=1.0), Source.POLICY)
    assert e2.apply(pose(), delta(gripper=0.0), Source.POLICY).gripper == 0.0  # closes: a switch
    e2.hold(pose(), "test")
    assert e2.apply(pose(), delta(gripper=1.0), Source.POLICY).gripper == 0.0  # 2 ticks after: kept closed
    assert e2.apply(pose(), delta(gripper=1.0), Source.TELEOP).gripper == 1.0  # the operator: at once
    assert env().apply(pose(), delta(gripper=1.0), Source.POLICY).gripper == 1.0  # off by default


def test_gripper_confirm_sends_a_policy_switch_only_once_asked_for_long_enough_never_delaying_teleop():
    e = env(gripper_confirm_ticks=3)
    asked = (1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0)
    sent = [e.apply(pose(), delta(gripper=g), Source.POLICY).gripper for g in asked]
    # one-tick closes (ticks 1) are filtered; the close asked on ticks 3-5 is sent on tick 5; the open asked on
    # tick 7 alone is filtered, the one asked on ticks 9-11 is sent on tick 11
    assert sent == [1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    e.apply(pose(), delta(gripper=0.0), Source.POLICY)
    e.apply(pose(), delta(gripper=0.0), Source.POLICY)
    e.hold(pose(), "test")  # a hold breaks the run of asks
    assert e.apply(pose(), delta(gripper=0.0), Source.POLICY).gripper == 1.0
    assert e.apply(pose(), delta(gripper=0.0), Source.TELEOP).gripper == 0.0  # the operator: at once
    with pytest.raises(ConfigError, match="gripper_confirm_ticks"):
        env(gripper_confirm_ticks=0)


def test_forget_gripper_lets_the_next_policy_command_decide_at_once():
    """A new task (the node calls it on every instruction): the gripper command is forgotten, so the first policy
    command is binarized afresh and sent without being debounced against the state of the previous task (the
    scene reset between the demo's episodes opened the hand the node still thought closed)."""
    e = env(gripper_confirm_ticks=3)
    e.apply(pose(), delta(gripper=0.0), Source.POLICY)  # the first command decides: closed
    assert e.last_gripper == 0.0
    assert e.apply(pose(), delta(gripper=1.0), Source.POLICY).gripper == 0.0  # debounced
    e.forget_gripper()
    assert e.last_gripper == 0.0  # applied with the next command, on the control thread
    held = e.hold(pose(), "no chunk yet")
    assert held.gripper is None and e.last_gripper is None  # nothing sent until the policy asks
    assert e.apply(pose(), delta(gripper=1.0), Source.POLICY).gripper == 1.0  # at once
    assert e.apply(pose(), delta(gripper=0.0), Source.POLICY).gripper == 1.0  # debounced again from here


def test_invalid_measured_pose():
    with pytest.raises(InputError):
        env().apply(pose(x=math.nan), delta(), Source.POLICY)
    e = env()
    e.apply(pose(), delta(dx=0.001), Source.POLICY)
    cmd = e.apply(pose(x=math.nan), delta(dx=0.001), Source.POLICY)
    assert cmd.is_hold and cmd.flags & SafetyFlag.INVALID_POSE
    np.testing.assert_allclose(cmd.position, [0.5, 0.0, 0.3])


def test_unnormalized_quaternion_is_normalized():
    cmd = env().apply(pose(q=DOWN * 1.02), delta(), Source.POLICY)
    assert np.linalg.norm(cmd.quaternion) == pytest.approx(1.0)
    np.testing.assert_allclose(quat_to_matrix(cmd.quaternion), quat_to_matrix(DOWN), atol=1e-12)


def test_describe_lists_every_flag():
    flags = SafetyFlag.TRANSLATION_CLAMPED | SafetyFlag.WORKSPACE_CLAMPED
    assert describe(flags) == "TRANSLATION_CLAMPED|WORKSPACE_CLAMPED"
    assert describe(SafetyFlag.NONE) == ""


def test_hold_keeps_the_latched_pose_while_the_measured_pose_moves():
    # under an impedance controller a load or a push moves the arm; hold must keep pulling it back
    e = env()
    latched = pose()
    first = e.hold(latched, "test")
    np.testing.assert_array_equal(first.position, latched.position)
    for k in range(1, 21):  # the arm sags 2 cm and is pushed 2 cm sideways, 1 mm per tick
        moved = pose(y=0.001 * k, z=0.3 - 0.001 * k, q=quat_multiply(quat_from_rpy(0.0, 0.0, 0.005 * k), DOWN))
        cmd = e.hold(moved, "test")
        assert cmd.is_hold and cmd.source is Source.HOLD  # never silent: every tick a command
        assert np.linalg.norm(cmd.position - latched.position) < 1e-3
        assert quat_angle(quat_multiply(cmd.quaternion, quat_conjugate(latched.quaternion))) < 1e-9
    assert np.linalg.norm(moved.position - latched.position) > 0.02


def test_hold_latch_is_clamped_into_the_workspace_box():
    e = env(workspace_min=(0.2, -0.4, 0.02), workspace_max=(0.8, 0.4, 0.7), max_target_distance=0.03)
    cmd = e.hold(pose(z=0.01), "below the table margin")
    np.testing.assert_allclose(cmd.position, [0.5, 0.0, 0.02])
    assert cmd.flags & SafetyFlag.WORKSPACE_CLAMPED and cmd.is_hold
    e.hold(pose(z=0.0), "sagging further")  # the latch does not follow the measured pose out of the box
    np.testing.assert_allclose(e.latched.position, [0.5, 0.0, 0.02])
    far = env(workspace_min=(0.2, -0.4, 0.02), workspace_max=(0.8, 0.4, 0.7), max_target_distance=0.03)
    cmd = far.hold(pose(x=0.9), "guided far out of the box")  # back towards the box by at most the leash
    np.testing.assert_allclose(cmd.position, [0.87, 0.0, 0.3])
    assert cmd.flags & SafetyFlag.WORKSPACE_CLAMPED and cmd.flags & SafetyFlag.DISTANCE_CLAMPED


def test_hold_relatches_only_after_a_delta_or_an_explicit_relatch():
    e = env()
    e.hold(pose(), "start")
    assert e.hold(pose(x=0.52), "pushed").position[0] == pytest.approx(0.5)
    e.relatch_hold()  # explicit event (takeover, resume, engage)
    assert e.hold(pose(x=0.52), "re-latched").position[0] == pytest.approx(0.52)
    assert e.hold(pose(x=0.54), "pushed again").position[0] == pytest.approx(0.52)
    # a delta ends the hold: it integrates from the latched pose, and the next hold latches anew
    assert e.apply(pose(x=0.54), delta(dx=0.004), Source.POLICY).position[0] == pytest.approx(0.524)
    assert e.latched is None
    assert e.hold(pose(x=0.53), "no action").position[0] == pytest.approx(0.53)
    e.reset()
    assert e.latched is None and e.hold(pose(x=0.51), "after reset").position[0] == pytest.approx(0.51)


def test_default_integrates_from_the_previous_target():
    assert SafetyConfig().integrate_from == "target"


def test_lagging_measured_pose_target_advances_by_the_full_delta_and_the_leash_bounds_the_gap():
    # the measured pose closes 10 % of its gap to the target per tick (an impedance controller's lag)
    e = env(max_step_translation=0.005, max_target_distance=0.03)  # default integrate_from
    measured, previous, advances, gaps = pose(), None, [], []
    for _ in range(60):
        cmd = e.apply(measured, delta(dx=0.004), Source.POLICY)
        if previous is not None:
            advances.append(cmd.position[0] - previous)
        previous = cmd.position[0]
        gaps.append(float(np.linalg.norm(cmd.position - measured.position)))
        measured = pose(x=measured.position[0] + 0.1 * (cmd.position[0] - measured.position[0]))
    leashed = next(i for i, g in enumerate(gaps) if g >= 0.03 - 1e-12)
    # until the leash is reached the target moves the full commanded 4 mm per tick, not a fraction of it
    np.testing.assert_allclose(advances[:leashed - 1], 0.004, atol=1e-12)
    assert max(gaps) <= 0.03 + 1e-12
    # the leash bounds the gap; the arm still moves at the lag-limited 0.1 * 3 cm per tick, not 0.1 * 4 mm
    assert measured.position[0] - 0.5 > 0.1


# -- rotation deltas near 2*pi (issue #11): normalised before the clamp, which never reverses the direction -------
@pytest.mark.parametrize(("axis", "angle", "normalised"), [
    (5, 2 * math.pi - 0.3, -0.3),
    (5, -2 * math.pi + 0.3, 0.3),
    (5, 2 * math.pi - 0.01, -0.01),  # within the step limit: passes unclamped, as the small rotation it is
    (3, 2 * math.pi + 0.2, 0.2),
    (4, -4 * math.pi - 0.2, -0.2),
])
def test_rotation_delta_near_two_pi_is_normalised_then_clamped(axis, angle, normalised):
    d = delta()
    d[axis] = angle
    cmd = env(max_step_rotation=0.05).apply(pose(), d, Source.POLICY)
    expected = math.copysign(min(abs(normalised), 0.05), normalised)
    assert cmd.delta[axis] == pytest.approx(expected, abs=1e-9)
    assert np.abs(np.delete(cmd.delta[3:6], axis - 3)).max() < 1e-9
    assert d[axis] == angle  # the caller's array is not modified


def test_rotation_clamp_never_reverses_direction():
    rng = np.random.default_rng(0)
    e = env(max_step_rotation=0.05, max_target_angle=0.2)
    for raw in rng.uniform(-3 * math.pi, 3 * math.pi, size=(300, 3)):
        normalised = (raw + math.pi) % (2 * math.pi) - math.pi
        if abs(math.pi - np.abs(normalised).max()) < 0.05:
            continue  # a half turn has no direction to keep
        intended = quat_to_rotvec(quat_from_rpy(*normalised))
        e.reset()
        cmd = e.apply(pose(), delta(*np.zeros(3), *raw), Source.POLICY)
        applied = quat_to_rotvec(quat_multiply(cmd.quaternion, quat_conjugate(pose().quaternion)))
        assert np.linalg.norm(applied) <= 0.05 + 1e-9
        assert float(np.dot(applied, intended)) > 0.0  # shortened, never turned the other way
