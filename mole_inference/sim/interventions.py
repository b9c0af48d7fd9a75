"""Policy rollouts with expert takeovers (HG-DAgger, Kelly et al. 2019): the product's improvement loop in the sim.

On the robot, the operator watches the policy and takes over with the SpaceMouse when it drifts; the recorder
labels those ticks `teleop` and the policy's own ticks `policy`; retraining on the union teaches the policy
the recoveries it needed. Here the scripted expert is the operator. Each control tick (50 Hz, as the robot):

- while the policy drives, a new chunk is inferred from every wrist frame and stepped by the robot's
  `ChunkScheduler` (rate-split per tick) through the robot's `SafetyEnvelope`; the expert plans alongside;
- the expert takes over (for the rest of the episode, as an operator finishing the task) when the TCP gets
  `deviation` metres farther from the expert's current target (its waypoint) within `window_s`, measured level
  (heading the wrong way; descending early is a path's shape, not a fault), when it gets no `stall_progress`
  closer to a target `stall_far` away within `stall_s` (stuck, dithering, or descending beside the cube),
  when the policy's gripper (open or closed) has disagreed with the expert's for `gripper_s` with the TCP
  within `gripper_near` of the target cube (closing beside the cube, or letting go of it, is what an operator
  stops; fingers closed in free space do no harm), or when `give_up_fraction` of the episode's time has passed
  without success; `reason` says which;
- bags are written by `record_episode` (the demonstrations' code path): ticks labelled `policy` carry the delta
  the policy had sent, ticks labelled `teleop` the expert's action.

Retrain on demonstrations + interventions with `training.source_weights: {policy: 0, teleop: 1}` to learn from
the expert's labels only (HG-DAgger), or keep the default weights to also imitate the policy's own good ticks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mole_inference.config.base import check
from mole_inference.policy.contract import Policy, state_kwargs


@dataclass
class TakeoverRule:
    """When the simulated operator takes over."""

    deviation: float = 0.03  # m the TCP may get farther from the expert's current target over the window
    window_s: float = 0.5
    stall_s: float = 1.0  # s without `stall_progress` closer to a target more than `stall_far` away; 0: never
    stall_progress: float = 0.01  # m
    stall_far: float = 0.03  # m
    give_up_fraction: float = 0.7  # of the task's time limit, without success
    gripper_s: float = 0.3  # s the policy's gripper (open/closed) may disagree with the expert's; 0: never
    gripper_near: float = 0.08  # m from the target cube's centre within which a gripper disagreement counts

    def __post_init__(self) -> None:
        check(self.deviation > 0, "deviation", self.deviation, "must be > 0 m")
        check(self.window_s > 0, "window_s", self.window_s, "must be > 0 s")
        check(self.stall_s >= 0, "stall_s", self.stall_s, "must be >= 0 s (0: stalling never triggers)")
        check(self.gripper_s >= 0, "gripper_s", self.gripper_s, "must be >= 0 s (0: the gripper never triggers)")
        check(self.gripper_near > 0, "gripper_near", self.gripper_near, "must be > 0 m")
        check(0 < self.give_up_fraction <= 1, "give_up_fraction", self.give_up_fraction, "must be in (0, 1]")


class InterventionActor:
    """A policy driving through the robot's chunk/safety path, with the scripted expert as the operator."""

    notes = "policy rollout in the MuJoCo FR3 sim with scripted-expert takeovers (HG-DAgger)"

    def __init__(self, policy: Policy, control_dt: float, rule: TakeoverRule | None = None,
                 gripper_vote: bool = False, gripper_confirm: float = 0.0, gripper_lookahead: int = 0) -> None:
        self.policy, self.control_dt, self.rule = policy, control_dt, rule or TakeoverRule()
        # how the policy's gripper draws become commands while it drives, as `sim eval --gripper-vote
        # --gripper-confirm` (the robot's defaults): roll out the policy the way it will be deployed
        self.gripper_vote, self.gripper_confirm = gripper_vote, gripper_confirm
        self.gripper_lookahead = gripper_lookahead
        self.took_over_at: int | None = None  # tick of the takeover in the current episode
        self.reason = ""  # which rule fired: away, stall, gripper, time
        self._expert: Any = None
        self._scheduler: Any = None
        self._envelope: Any = None
        self._distances: deque[tuple[float, float]] = deque()  # TCP to the expert's waypoint (xy, 3-D) since it began
        self._waypoint: np.ndarray | None = None
        self._gripper_disagree = 0  # consecutive ticks
        self._seed = 0

    def reset(self, env: Any, seed: int) -> None:
        """New episode: fresh expert plan (no noise: the operator's labels are clean), scheduler and envelope."""
        from mole_inference.config.control import SchedulerConfig
        from mole_inference.control.scheduler import ChunkScheduler
        from mole_inference.sim.evaluate import safety_envelope
        self._expert = env.make_expert(noisy=False, control_dt=self.control_dt)
        self._expert.reset()
        dt = self.policy.action_dt
        self._scheduler = ChunkScheduler(SchedulerConfig(control_rate_hz=1.0 / self.control_dt, action_dt=dt,
                                                         gripper_ensemble=self.gripper_vote,
                                                         gripper_open_lookahead=self.gripper_lookahead))
        self._envelope = safety_envelope(self.control_dt, gripper_confirm=self.gripper_confirm)
        self._distances = deque(maxlen=1 + round(max(self.rule.window_s, self.rule.stall_s) / self.control_dt))
        self._waypoint = None
        self.took_over_at, self.reason = None, ""
        self._gripper_disagree = 0
        self._seed = seed
        if hasattr(self.policy, "env"):  # the scripted expert as the policy (tests, ceilings) reads the sim
            self.policy.env = env
        self.policy.reset()

    def act(self, env: Any, tick: int, frame: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
        """The policy's delta (source policy) until the takeover rule fires, then the expert's (source teleop)."""
        from mole_inference.control.safety import Source
        from mole_inference.control.transforms import Pose
        from mole_inference.sim.controller import GRIPPER_OPEN
        from mole_inference.sim.evaluate import command_to_env_delta

        state = env.state()
        expert = self._expert.act(state)  # the operator plans along, whoever drives
        if self.took_over_at is None:
            now = tick * self.control_dt
            obs = env.observe(render=False)
            if frame is not None:  # the frame was rendered this tick: the pose is the one it was taken at
                chunk = self.policy.infer(frame, env.instruction, seed=self._seed * 100_003 + tick,
                                          **state_kwargs(self.policy, obs["ee_pose"]))
                if chunk.is_finite:
                    self._scheduler.push(chunk.actions, now, now)
            measured = Pose.from_arrays(obs["ee_pose"][:3], obs["ee_pose"][3:])
            command = self._envelope.apply(measured, self._scheduler.next_action(now), Source.POLICY)
            gripper = command.gripper if command.gripper is not None else GRIPPER_OPEN
            action = command_to_env_delta(env, command, gripper)
            drift = self._drift(state.ee_pos, self._expert.waypoint_pos)
            near = np.linalg.norm(state.ee_pos - state.objects[env.task.target].pos) <= self.rule.gripper_near
            closed = (action[6] < 0.5, expert[6] < 0.5)
            self._gripper_disagree = self._gripper_disagree + 1 if near and closed[0] != closed[1] else 0
            gripper_wrong = self.rule.gripper_s > 0 and \
                self._gripper_disagree * self.control_dt >= self.rule.gripper_s - 1e-9
            late = tick >= self.rule.give_up_fraction * env.max_steps
            reasons = {drift or "drift": drift is not None, "gripper": gripper_wrong, "time": late}
            if not any(reasons.values()):
                return action, action.copy(), Source.POLICY.value
            self.took_over_at, self.reason = tick, "+".join(k for k, v in reasons.items() if v)
        return expert, expert.copy(), Source.TELEOP.value

    def _drift(self, tcp: np.ndarray, waypoint: np.ndarray | None) -> str | None:
        """"away" (heading away from the expert's current waypoint), "stall" (stuck short of it) or None; a jump
        of the waypoint, the plan's next phase, starts a fresh history."""
        if waypoint is None:
            return None
        if self._waypoint is None or np.linalg.norm(waypoint - self._waypoint) > 0.01:
            self._distances.clear()
        self._waypoint = waypoint.copy()
        self._distances.append((float(np.linalg.norm((waypoint - tcp)[:2])), float(np.linalg.norm(waypoint - tcp))))
        planar, d = [x[0] for x in self._distances], [x[1] for x in self._distances]
        ticks = len(d) - 1
        window = round(self.rule.window_s / self.control_dt)
        if ticks >= window and planar[-1] - planar[-1 - window] > self.rule.deviation:
            return "away"
        stall = round(self.rule.stall_s / self.control_dt)
        stalled = self.rule.stall_s > 0 and ticks >= stall and d[-1] > self.rule.stall_far and \
            d[-1 - stall] - d[-1] < self.rule.stall_progress
        return "stall" if stalled else None


@dataclass
class InterventionStats:
    """Per task: episodes, takeovers, policy-only successes, successes after a takeover."""

    episodes: int = 0
    takeovers: int = 0
    policy_successes: int = 0
    rescued: int = 0
    reasons: dict[str, int] = field(default_factory=dict)  # which rule fired (away, stall, gripper, time): count


def collect_interventions(policy: Policy, out: str, config: Any, rule: TakeoverRule | None = None,
                          on_episode: Any = None, gripper_vote: bool = False, gripper_confirm: float = 0.0,
                          gripper_lookahead: int = 0) -> tuple[Any, dict[str, InterventionStats]]:
    """Record `config.episodes` policy episodes per task (a `DemoConfig`: rates, seeds, start poses) with expert
    takeovers; every episode is kept (failed ones too: their expert ticks are still labels). `gripper_vote`,
    `gripper_confirm` (s) and `gripper_lookahead` (steps) drive the policy's gripper as `sim eval`'s options of the
    same names."""
    from mole_inference.sim.demos import record_demos

    actor = InterventionActor(policy, config.control_dt, rule, gripper_vote, gripper_confirm, gripper_lookahead)
    stats: dict[str, InterventionStats] = {}

    def on_result(result: Any) -> None:
        row = stats.setdefault(result.task, InterventionStats())
        row.episodes += 1
        row.takeovers += actor.took_over_at is not None
        row.policy_successes += result.success and actor.took_over_at is None
        row.rescued += result.success and actor.took_over_at is not None
        if actor.took_over_at is not None:
            row.reasons[actor.reason] = row.reasons.get(actor.reason, 0) + 1
        if on_episode is not None:
            on_episode(result, actor.took_over_at)

    config.keep_failures = True
    summary = record_demos(out, config, on_result, actor)
    return summary, stats
