"""`mole-vla sim eval`: closed loop through the tiny random-weight policy; report, strip and layers run."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tests.sim.conftest import missing_sim_reason

pytestmark = [pytest.mark.sim, pytest.mark.skipif(missing_sim_reason() is not None,
                                                  reason=str(missing_sim_reason())),
              pytest.mark.usefixtures("one_torch_thread")]


def test_cli_eval_end_to_end(tmp_path, capsys):
    cv2 = pytest.importorskip("cv2")
    from mole_inference.cli import main
    from mole_inference.sim.strip import strip_shape
    from mole_inference.sim.tasks import TASKS

    out = tmp_path / "eval"
    rc = main(["sim", "eval", "--preset", "tiny", "--episodes", "1", "--seed", "7", "--max-seconds", "0.3",
               "--threads", "1", "--gripper-lookahead", "3", "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["preset"] == "tiny" and report["router"] == "star" and report["seed"] == 7
    assert report["gripper_lookahead"] == 3
    assert set(report["per_task"]) == set(TASKS) and len(report["episodes"]) == len(TASKS)
    for ep in report["episodes"]:
        assert ep["steps"] == 3 and ep["inferences"] == 3 and ep["success"] is False  # random weights
        assert set(ep) >= {"task", "seed", "instruction", "success", "steps", "mean_layers_run"}
    assert report["mean_layers_run"] == 4 and report["total_layers"] == 8  # tiny: top-4 of 8
    assert report["inference_ms"]["count"] == 3 * len(TASKS) and report["inference_hz"] > 0
    assert cv2.imread(str(out / "strip.png")).shape == strip_shape(len(TASKS), 8, 128)
    if importlib.util.find_spec("matplotlib"):  # routing raster per task (the plot extra)
        assert all((out / f"routing_{task}.png").stat().st_size > 1000 for task in TASKS)
    assert report["per_task"]["stack"]["milestones"] == dict.fromkeys(("reached", "grasped", "lifted", "over_base"),
                                                                      0.0)  # 0.3 s from home: nowhere near
    printed = capsys.readouterr().out
    assert "layers run 4.00/8" in printed and "pick" in printed and "over_base 0%" in printed


def test_full_router_runs_every_layer_and_is_deterministic():
    from mole_inference.runtime import load_policy
    from mole_inference.sim.evaluate import EvalConfig, evaluate

    policy = load_policy(preset="tiny", router="full")
    cfg = EvalConfig(tasks=("pick",), episodes=1, seed=1, max_seconds=0.3, replan=2)
    a, b = evaluate(policy, cfg), evaluate(policy, cfg)
    assert a.layers_run == [8, 8]  # 3 steps, a new chunk every 2
    assert a.to_dict()["mean_layers_run"] == 8
    fa, fb = a.episodes[0].frames, b.episodes[0].frames
    assert len(fa) == 4 and not np.array_equal(fa[0], fa[-1])  # the arm moved
    np.testing.assert_array_equal(fa[-1], fb[-1])  # same seed, same noise, same motion


def test_active_layers_sets_the_budget_of_a_preset_and_of_the_random_router():
    from mole_inference.runtime import load_policy
    from mole_inference.sim.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(tasks=("touch",), episodes=1, seed=2, max_seconds=0.2)
    assert evaluate(load_policy(preset="tiny", active_layers=2), cfg).layers_run == [2, 2]
    assert evaluate(load_policy(preset="tiny", router="random", active_layers=6), cfg).layers_run == [6, 6]


def test_bad_checkpoint_is_one_line_error(tmp_path, capsys):
    from mole_inference.cli import main

    assert main(["sim", "eval", "--checkpoint", str(tmp_path / "nope"), "--episodes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mole-vla: error:") and "nope" in err and "\n" not in err


class ExpertPolicy:
    """The scripted expert behind the Policy contract (privileged state): a chunk repeating its next action."""

    action_dt, chunk_size, num_layers = 0.1, 16, 2

    def __init__(self, env):
        self.env, self.expert = env, env.make_expert(np.random.default_rng(0))

    def reset(self):
        self.expert.reset()

    def infer(self, image, instruction, *, seed=None):
        from mole_inference.policy.contract import ActionChunk, RoutingDecision

        action = self.expert.act(self.env.state())
        return ActionChunk(np.tile(action, (16, 1)), RoutingDecision((0, 1), np.ones(2), 2))


@pytest.mark.parametrize(("task", "ensemble"), [("pick", False), ("touch", True)])
def test_expert_through_the_eval_loop_succeeds(task, ensemble):
    """Scheduler -> safety envelope -> sim target is faithful: a good policy succeeds through it."""
    from mole_inference.sim.env import make_env
    from mole_inference.sim.evaluate import EvalConfig, run_episode

    with make_env(task, control_dt=0.1, cameras=("wrist",)) as env:
        outcome = run_episode(env, ExpertPolicy(env), EvalConfig(tasks=(task,), ensemble=ensemble), 0, 0)
    assert outcome.success and outcome.layers_run[0] == 2


def test_expert_through_the_policy_path_solves_every_task(tmp_path):
    """Ladder rung 1: the scripted expert as a Policy (chunk -> scheduler -> safety envelope -> sim) succeeds, so
    the action interface can do the tasks; a model that fails them fails on its own account."""
    from mole_inference.cli import main
    from mole_inference.sim.tasks import TASKS

    out = tmp_path / "expert"
    assert main(["sim", "eval", "--expert", "--episodes", "2", "--seed", "31", "--video-episodes", "0",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["expert"] is True and set(report["per_task"]) == set(TASKS)
    assert all(row["successes"] == 2 for row in report["per_task"].values()), report["per_task"]
    # Every milestone on the way was passed, and seen at the 0.1 s steps (success does not imply them here).
    assert {task: list(row["milestones"]) for task, row in report["per_task"].items()} == {
        "touch": [], "push_forward": [], "pick": ["reached", "grasped"],
        "stack": ["reached", "grasped", "lifted", "over_base"]}
    assert all(share == 1.0 for row in report["per_task"].values() for share in row["milestones"].values())
    # The envelope clamps a minority of steps: the expert's speed limit equals the robot's default step limit.
    steps = sum(e["steps"] for e in report["episodes"])
    assert sum(e["clamped_steps"] for e in report["episodes"]) < 0.5 * steps


@pytest.mark.parametrize("flag", [["--router", "random"], ["--active-layers", "2"], ["--cfg-scale", "1.5"]])
def test_model_inference_options_with_the_expert_are_a_usage_error(tmp_path, capsys, flag):
    from mole_inference.cli import main

    assert main(["sim", "eval", "--expert", *flag, "--episodes", "1", "--out", str(tmp_path)]) == 2
    assert f"{flag[0]} set a model's inference" in capsys.readouterr().err
    assert not (tmp_path / "report.json").exists()


def test_expert_policy_needs_an_env():
    from mole_inference.sim.expert_policy import ExpertPolicy

    with pytest.raises(RuntimeError, match="env"):
        ExpertPolicy().infer(np.zeros((8, 8, 3), np.uint8), "touch the red cube")


def test_wilson_interval_matches_known_values():
    from mole_inference.sim.evaluate import wilson_interval

    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-4) and hi == pytest.approx(0.7634, abs=1e-4)
    lo, hi = wilson_interval(0, 50)
    assert lo == 0.0 and hi == pytest.approx(0.0714, abs=1e-4)
    assert wilson_interval(50, 50)[1] == 1.0 and wilson_interval(0, 0) == (0.0, 1.0)


def test_eval_with_the_demo_start_settings_replays_a_demo_seed(tmp_path):
    """Ladder rung 2 needs an exact replay: `sim eval --seed S --start-offset/--start-yaw` (the demos' values)
    starts from the very scene and start pose the demonstration with seed S started from."""
    from mole_inference.data.bag_reader import read_episode
    from mole_inference.sim.demos import DemoConfig, record_demos
    from mole_inference.sim.evaluate import EvalConfig, evaluate
    from mole_inference.sim.expert_policy import ExpertPolicy

    demo_cfg = DemoConfig(tasks=("touch",), episodes=1, seed=41)
    result = record_demos(tmp_path, demo_cfg).results[-1]
    first_frame = read_episode(result.path).camera().rgb[0]
    report = evaluate(ExpertPolicy(), EvalConfig(tasks=("touch",), episodes=1, seed=result.seed, video_episodes=1,
                                                 start_offset=demo_cfg.start_offset, start_yaw=demo_cfg.start_yaw))
    episode = report.episodes[0]
    assert episode.instruction == result.instruction and episode.success
    np.testing.assert_array_equal(episode.frames[0], first_frame)


class PoseReadingExpert(ExpertPolicy):
    """The expert as a state-input model: records the state it is given next to the sim's measured pose."""

    uses_state = True

    def __init__(self, env):
        super().__init__(env)
        self.pairs = []

    def infer(self, image, instruction, *, seed=None, state=None):
        obs = self.env.observe(render=False)
        self.pairs.append((np.array(state), obs["ee_pose"].copy()))
        return super().infer(image, instruction, seed=seed)


def test_a_state_input_policy_gets_the_measured_pose_at_its_frame():
    """(A policy without `uses_state` gets no `state` argument: ExpertPolicy above has none and runs.)"""
    from mole_inference.sim.env import make_env
    from mole_inference.sim.evaluate import EvalConfig, run_episode

    with make_env("touch", control_dt=0.1, cameras=("wrist",)) as env:
        policy = PoseReadingExpert(env)
        assert run_episode(env, policy, EvalConfig(tasks=("touch",)), 0, 0).success
        assert len(policy.pairs) > 3
    for state, pose in policy.pairs:
        np.testing.assert_array_equal(state, pose)
    assert not np.allclose(policy.pairs[0][0][:3], policy.pairs[-1][0][:3])  # the hand moved: the state follows
