"""Tasks and scripted expert: instructions name colours, predicates need the named object, expert succeeds."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.sim.conftest import missing_sim_reason

pytestmark = [pytest.mark.sim, pytest.mark.skipif(missing_sim_reason() is not None,
                                                  reason=str(missing_sim_reason()))]

TASK_NAMES = ("touch", "push_forward", "pick", "stack")


@pytest.fixture(scope="module")
def envs():
    from mole_inference.sim.env import make_env

    made = {name: make_env(name, seed=0, cameras=()) for name in TASK_NAMES}
    yield made
    for env in made.values():
        env.close()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_expert_succeeds_on_a_few_seeds(envs, name):
    from mole_inference.sim.env import run_expert_episode

    results = [run_expert_episode(envs[name], seed) for seed in (100, 101, 102)]
    assert all(results), f"{name}: expert succeeded on {sum(results)}/3 seeds"


def test_expert_at_50hz(envs):
    from mole_inference.sim.env import make_env, run_expert_episode

    with make_env("pick", seed=0, cameras=(), control_dt=0.02) as env:
        assert env.controller.substeps == 10
        assert run_expert_episode(env, seed=7)


def test_noisy_expert_still_succeeds():
    from mole_inference.sim.env import make_env, run_expert_episode

    with make_env("push_forward", cameras=(), expert_noise_trans=0.005, expert_noise_rot=0.02) as env:
        assert run_expert_episode(env, seed=11)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_instruction_names_a_colour_and_is_not_done_at_reset(envs, name):
    from mole_inference.sim.scene import COLORS

    env = envs[name]
    obs = env.reset(seed=3, render=False)
    assert any(color in obs["instruction"] for color in COLORS)
    assert env.task.target.split("_")[0] in obs["instruction"]
    assert not env.task.success(env.state())


def test_touching_another_cube_does_not_count(envs):
    env = envs["touch"]
    env.reset(seed=4, render=False)
    state = env.state()
    other = next(n for n in state.objects if n.endswith("_cube") and n != env.task.target)
    assert not env.task.success(dataclasses.replace(state, touching=frozenset({other})))
    assert env.task.success(dataclasses.replace(state, touching=frozenset({env.task.target})))


def test_lifting_another_cube_does_not_count(envs):
    from mole_inference.sim.scene import ObjectState

    env = envs["pick"]
    env.reset(seed=4, render=False)
    state = env.state()
    other = next(n for n in state.objects if n.endswith("_cube") and n != env.task.target)
    lifted = dict(state.objects)
    lifted[other] = ObjectState(state.objects[other].pos + np.array([0.0, 0.0, 0.1]), state.objects[other].quat)
    fake = dataclasses.replace(state, objects=lifted, left_touching=frozenset({other}),
                               right_touching=frozenset({other}))
    assert not env.task.success(fake)


def test_layouts_keep_objects_apart(envs):
    from mole_inference.sim.tasks import MIN_SPACING

    task, rng = envs["stack"].task, np.random.default_rng(0)
    for _ in range(20):
        task.reset(rng)
        xy = np.array([[p.x, p.y] for p in task.layout.values()])
        dists = np.linalg.norm(xy[:, None] - xy[None], axis=-1) + np.eye(len(xy))
        assert dists.min() >= MIN_SPACING - 1e-9
        assert task.target != task.base


def test_unknown_task_suggests_a_name():
    from mole_inference.errors import ConfigError
    from mole_inference.sim.tasks import make_task

    with pytest.raises(ConfigError, match="did you mean 'pick'"):
        make_task("pik")


@pytest.mark.parametrize("turn", [True, False])
def test_expert_grasps_with_or_without_turning_to_the_cube(turn):
    """expert_grasp_turn=False keeps the yaw it starts with (close-ups show the cube at any angle, as a policy that
    does not turn sees it) and still lifts the cube; with the turn the fingers end square to a face."""
    from mole_inference.sim.env import make_env
    from mole_inference.sim.expert import ee_yaw, grasp_yaw
    from mole_inference.sim.scene import CUBE_HALF

    with make_env("pick", seed=0, cameras=(), start_yaw=0.3, expert_grasp_turn=turn) as env:
        for seed in (200, 201, 202):
            env.reset(seed, render=False)
            expert = env.make_expert()
            expert.reset()
            start = ee_yaw(env.state().ee_rot)
            yaw_at_close = None
            done, info = False, {}
            while not done:
                action = expert.act(env.state())
                if action[6] < 0.5 and yaw_at_close is None:
                    yaw_at_close = ee_yaw(env.state().ee_rot)
                    needed = grasp_yaw(env.state(), env.task.target, yaw_at_close)
                    low = env.state().ee_pos[2] < 2 * CUBE_HALF
                _, done, info = env.step(action, render=False)
            assert info["success"] and low
            if turn:
                assert abs(needed - yaw_at_close) < 0.06  # square to the nearest face
            else:
                assert abs(yaw_at_close - start) < 0.02  # never turned


def test_stack_expert_puts_the_cube_off_centre_and_opens_near_enough():
    """The stack expert aims the cube up to `expert_place_offset` off the base's centre and opens within
    `expert_release_tol` of the pose 2 mm above resting there: the demonstrations show "open" with the cube a few
    mm off centre (where a policy lands it), not only centred to 3 mm. Every episode still stacks. The old
    behaviour (0.003, centred, 6 mm up) stays available for replaying older recordings."""
    from mole_inference.sim.env import make_env

    def release(tol: float, offset: float, seed: int) -> tuple[int, float, bool]:
        with make_env("stack", seed=0, cameras=(), control_dt=0.02, expert_release_tol=tol,  # 50 Hz, as recorded
                      expert_place_offset=offset, start_near_target=0.02) as env:
            env.reset(seed, render=False)
            expert = env.make_expert()
            expert.reset()
            at, closed = None, False
            done, info, tick = False, {}, 0
            while not done:
                s = env.state()
                action = expert.act(s)
                closed |= bool(action[6] < 0.5)
                if at is None and closed and action[6] > 0.5:  # the first "open" after the grasp
                    top, base = s.objects[env.task.target].pos, s.objects[env.task.base].pos
                    at = (tick, float(np.linalg.norm(top[:2] - base[:2])))
                _, done, info = env.step(action, render=False)
                tick += 1
            assert at is not None
            return (*at, bool(info["success"]))

    seeds = (300, 301, 302, 303)
    tight = [release(0.003, 0.0, s) for s in seeds]
    loose = [release(0.008, 0.008, s) for s in seeds]
    assert all(r[2] for r in tight + loose)
    assert max(r[1] for r in tight) < 0.004  # centred
    assert max(r[1] for r in loose) > 0.004 and max(r[1] for r in loose) < 0.016  # spread, within offset + tol
    assert sum(r[0] for r in loose) < sum(r[0] for r in tight)  # opens sooner


@pytest.mark.parametrize("task", ["pick", "stack"])
def test_expert_lifts_once_the_fingers_hold_the_cube(task):
    """By default the expert lifts as soon as the fingers have held the cube for a moment (its wait is what the
    fingers show, not a clock); `expert_grasp_hold=0.6` stands still 0.6 s after closing, as the recordings before
    stage BB did. Both still succeed."""
    from mole_inference.sim.env import make_env

    def close_to_lift(hold: float | None, seed: int) -> tuple[int, int, bool]:
        with make_env(task, seed=0, cameras=(), control_dt=0.02, expert_grasp_hold=hold,  # 50 Hz, as recorded
                      start_near_target=0.02) as env:
            env.reset(seed, render=False)
            expert = env.make_expert()
            expert.reset()
            closed_at = held_at = lift_at = None
            done, info, tick = False, {}, 0
            while not done:
                s = env.state()
                if closed_at is not None and held_at is None and s.held(env.task.target):
                    held_at = tick
                action = expert.act(s)
                if closed_at is None and action[6] < 0.5:
                    closed_at = tick
                if closed_at is not None and lift_at is None and action[2] > 0.002:
                    lift_at = tick
                _, done, info = env.step(action, render=False)
                tick += 1
            return lift_at - closed_at, lift_at - held_at, bool(info["success"])

    for seed in (400, 401):
        waited, after_held, ok = close_to_lift(None, seed)
        assert ok and waited <= 10 and after_held <= 5  # 0.2 s after closing, 0.1 s after holding
        old, _, ok = close_to_lift(0.6, seed)
        assert ok and old == 30  # 0.6 s at 50 Hz


def test_expert_closes_off_centre_within_the_grasp_offset():
    """Each grasp closes with the TCP up to `expert_grasp_offset` off the cube's centre (demonstrations show "near
    enough: close", as a policy that is 5-20 mm off needs); 0 closes centred, as the recordings before stage BB.
    Every episode still lifts the cube."""
    from mole_inference.sim.env import make_env

    def close_offset(offset: float, seed: int) -> tuple[float, bool]:
        with make_env("pick", seed=0, cameras=(), control_dt=0.02, expert_grasp_offset=offset,
                      expert_grasp_turn=False, start_near_target=0.02) as env:
            env.reset(seed, render=False)
            expert = env.make_expert()
            expert.reset()
            at = None
            done, info = False, {}
            while not done:
                s = env.state()
                action = expert.act(s)
                if at is None and action[6] < 0.5:
                    at = float(np.linalg.norm(s.ee_pos[:2] - s.objects[env.task.target].pos[:2]))
                _, done, info = env.step(action, render=False)
            return at, bool(info["success"])

    seeds = (500, 501, 502, 503, 504, 505)
    centred = [close_offset(0.0, s) for s in seeds]
    spread = [close_offset(0.012, s) for s in seeds]
    assert all(ok for _, ok in centred + spread)
    assert max(d for d, _ in centred) < 0.005
    assert max(d for d, _ in spread) > 0.006 and max(d for d, _ in spread) < 0.012 + 0.005


def test_grasp_hold_is_checked():
    from mole_inference.config.sim import SimConfig
    from mole_inference.errors import ConfigError

    with pytest.raises(ConfigError, match="expert_grasp_hold"):
        SimConfig(expert_grasp_hold=0.0)
    with pytest.raises(ConfigError, match="expert_grasp_offset"):
        SimConfig(expert_grasp_offset=0.02)


def test_release_tolerance_and_place_offset_are_checked():
    from mole_inference.config.sim import SimConfig
    from mole_inference.errors import ConfigError

    with pytest.raises(ConfigError, match="expert_release_tol"):
        SimConfig(expert_release_tol=0.0)
    with pytest.raises(ConfigError, match="expert_place_offset"):
        SimConfig(expert_place_offset=0.03)


def test_milestones_name_where_an_episode_got_to(envs):
    """Hand-made states: at the cube (15 mm, 3 cm above its centre), held by both fingers, held 3 cm up, held
    within 2 cm of the base; each milestone needs its own condition."""
    from mole_inference.sim.scene import CUBE_HALF, ObjectState

    env = envs["stack"]
    env.reset(seed=5, render=False)
    task, state = env.task, env.state()
    cube = state.objects[task.target].pos
    assert task.milestones(state) == dict.fromkeys(task.milestone_names, False)  # at home
    at = dataclasses.replace(state, ee_pos=cube + np.array([0.01, 0.0, 0.02]))
    assert task.milestones(at)["reached"] and not task.milestones(at)["grasped"]
    assert not task.milestones(dataclasses.replace(state, ee_pos=cube + np.array([0.02, 0.0, 0.02])))["reached"]
    assert not task.milestones(dataclasses.replace(state, ee_pos=cube + np.array([0.0, 0.0, 0.04])))["reached"]
    both = frozenset({task.target})
    held = dataclasses.replace(at, left_touching=both, right_touching=both)
    assert task.milestones(held) == {"reached": True, "grasped": True, "lifted": False, "over_base": False}
    base = state.objects[task.base].pos
    for xy, over in ((0.015, True), (0.025, False)):
        objects = dict(state.objects)
        objects[task.target] = ObjectState(np.array([base[0] + xy, base[1], 3 * CUBE_HALF + 0.04]),
                                           state.objects[task.target].quat)
        carried = dataclasses.replace(held, objects=objects)
        assert task.milestones(carried)["lifted"] and task.milestones(carried)["over_base"] is over
        assert not task.milestones(dataclasses.replace(carried, left_touching=frozenset()))["over_base"]
    assert envs["touch"].task.milestones(state) == {}
