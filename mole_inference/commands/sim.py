"""`mole-vla sim`: record scripted-expert demonstration bags, evaluate a policy in closed loop."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mole_inference.config.sim import expert_settings
from mole_inference.errors import BackendUnavailableError, ConfigError

if TYPE_CHECKING:
    from mole_inference.sim.demos import EpisodeResult
    from mole_inference.sim.evaluate import EpisodeOutcome

def _router_names() -> list[str]:
    from typing import get_args

    from mole_inference.config.model import RouterType

    return list(get_args(RouterType))


ROUTERS = _router_names()


def _tasks(text: str) -> tuple[str, ...]:
    from mole_inference.sim.tasks import TASKS

    return tuple(TASKS) if text == "all" else tuple(t.strip() for t in text.split(",") if t.strip())


def _linger_arg(p: argparse.ArgumentParser) -> None:
    """How long a recording goes on after the task is done (`record-demos` and `collect-interventions` alike)."""
    p.add_argument("--linger", type=float, default=None, metavar="S",
                   help="keep recording S seconds after the task is done (default: each task's own, stack 0.5 s "
                   "for the release and the move away, pick 0.5 s for the rest of the lift, 0 for touch and "
                   "push: end at the success tick)")


def _expert_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    """How the scripted expert acts (`record-demos`, `collect-interventions`, `sim eval --expert` alike)."""
    p.add_argument("--grasp-turn", action=argparse.BooleanOptionalAction, default=True,
                   help=prefix + "the expert turns to the cube's nearest face before grasping (default on; "
                   "--no-grasp-turn: it grasps at the yaw it comes with, as a policy that does not turn)")
    p.add_argument("--place-offset", type=float, default=0.008, metavar="M",
                   help=prefix + "stack: the expert puts the cube up to M off the base's centre in x/y (default "
                   "0.008; 0: centred, as in the recordings before stage T)")
    p.add_argument("--release-tol", type=float, default=0.008, metavar="M",
                   help=prefix + "stack: the expert opens once the TCP is within M of its release pose, the cube "
                   "2 mm above resting (default 0.008; the recordings before stage T: 0.003 with --place-offset 0, "
                   "6 mm up)")
    p.add_argument("--grasp-hold", type=float, default=None, metavar="S",
                   help=prefix + "pick and stack: the expert stands still S seconds after closing the fingers "
                   "(default: until they hold the cube, then it lifts; 0.6: the recordings before stage BB)")
    p.add_argument("--grasp-offset", type=float, default=0.012, metavar="M",
                   help=prefix + "pick and stack: the expert closes with the TCP up to M off the cube's centre in "
                   "x/y (default 0.012; 0: centred, as in the recordings before stage BB)")


def _gripper_args(p: argparse.ArgumentParser) -> None:
    """How the policy's gripper draws become commands (`sim eval` and `collect-interventions` alike; the robot uses
    the vote and a confirmation, launch/config/robot.yaml)."""
    p.add_argument("--gripper-vote", action="store_true",
                   help="gripper command = weighted vote of the recent chunks' gripper draws (hysteresis binarizes)")
    p.add_argument("--gripper-confirm", type=float, default=0.0, metavar="S",
                   help="send a policy gripper switch only after it was asked for S seconds in a row (0: off)")
    p.add_argument("--gripper-lookahead", type=int, default=0, metavar="N",
                   help="read each chunk's gripper N steps ahead for opening: a release the chunk plans within N "
                   "steps is sent now; closing is not delayed (SchedulerConfig.gripper_open_lookahead; 0: off)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `sim record-demos`, `sim eval`, `sim collect-interventions`, `sim probe` and `sim ablate`."""
    s = sub.add_parser("sim", help="MuJoCo FR3 simulation: expert demonstrations, closed-loop evaluation")
    cmds = s.add_subparsers(dest="sim_command", required=True)

    r = cmds.add_parser("record-demos", help="scripted-expert episodes as ROS 2 bags (the robot's topics)")
    r.add_argument("--tasks", type=_tasks, default="all", help="comma-separated task names, or 'all'")
    r.add_argument("--episodes", type=int, default=10, help="episodes kept per task")
    r.add_argument("--out", type=Path, required=True, help="root folder; bags go to OUT/<task>/episode_*")
    r.add_argument("--seed", type=int, default=0, help="first layout seed (retries use the next ones)")
    r.add_argument("--control-hz", type=float, default=50.0, help="pose / delta rate (the robot's controller)")
    r.add_argument("--image-hz", type=float, default=10.0, help="wrist camera rate; must divide --control-hz")
    r.add_argument("--noise", type=float, default=0.002, help="expert translation noise std per tick (m)")
    r.add_argument("--noise-rot", type=float, default=0.0, help="expert rotation noise std per tick (rad)")
    r.add_argument("--dart", action=argparse.BooleanOptionalAction, default=True,
                   help="record the expert's clean action while executing the noisy one (default on)")
    r.add_argument("--start-offset", type=float, default=0.06, help="random start TCP around home, +- m (0: home)")
    r.add_argument("--start-yaw", type=float, default=0.3, help="random start yaw, +- rad")
    r.add_argument("--start-near-target", type=float, default=0.0, metavar="M",
                   help="start above the target cube, off-centre by up to M in x and y, 5-13 cm high, instead of "
                   "around home: the last centimetres of pick/stack (0: off)")
    _linger_arg(r)
    r.add_argument("--keep-failures", action="store_true", help="keep failed episodes too (metadata success=false)")
    r.add_argument("--binarize-gripper", action=argparse.BooleanOptionalAction, default=True,
                   help="send 0/1 gripper commands like the robot's safety envelope (default on)")
    r.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    _expert_args(r)
    r.set_defaults(func=run_record)

    e = cmds.add_parser("eval", help="closed-loop success of a policy per task, with a JSON report and a strip")
    src = e.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint folder")
    src.add_argument("--preset", help="a preset with random weights (wiring checks)")
    src.add_argument("--expert", action="store_true",
                     help="the scripted expert through the same chunk/safety path (the action interface's ceiling)")
    e.add_argument("--router", choices=ROUTERS, help="swap the router (ablations); default: the checkpoint's")
    e.add_argument("--active-layers", type=int, default=None, metavar="K",
                   help="run K of the LLM's layers per inference with the same weights (the router's top-k; "
                   "default: the checkpoint's)")
    e.add_argument("--cfg-scale", type=float, default=None, metavar="S",
                   help="classifier-free guidance of the diffusion head (1: off, CogACT's default 1.5; needs a "
                   "model trained with cond_dropout > 0; default: the checkpoint's)")
    e.add_argument("--tasks", type=_tasks, default="all", help="comma-separated task names, or 'all'")
    e.add_argument("--episodes", type=int, default=10, help="episodes per task")
    e.add_argument("--seed", type=int, default=0, help="layout seeds seed..seed+N-1; policy noise derived from it")
    e.add_argument("--replan", type=int, default=1, help="steps executed from each chunk before re-inferring")
    e.add_argument("--ensemble", action="store_true", help="temporal ensemble over recent chunks")
    _gripper_args(e)
    e.add_argument("--ensemble-horizon", type=int, default=4, metavar="N",
                   help="chunks kept for --ensemble and --gripper-vote (default 4)")
    e.add_argument("--ensemble-decay", type=float, default=0.5, metavar="K",
                   help="weights exp(-K * i), i = 0 for the newest chunk (default 0.5; 0: plain mean)")
    e.add_argument("--sticky-gripper", type=float, default=0.0, metavar="S",
                   help="keep each policy gripper switch for S seconds before accepting another (0: off)")
    e.add_argument("--max-seconds", type=float, help="episode limit override (default: each task's own)")
    e.add_argument("--video-episodes", type=int, default=1, help="episodes per task drawn in the strip")
    e.add_argument("--start-offset", type=float, default=0.0,
                   help="random start TCP around home, +- m (default 0: home; record-demos' value replays demo seeds)")
    e.add_argument("--start-yaw", type=float, default=0.0, help="random start yaw, +- rad (default 0)")
    _expert_args(e, "--expert only: ")
    e.add_argument("--out", type=Path, default=Path("runs/sim_eval"), help="folder for report.json, strip.png")
    e.add_argument("--device", default="cpu")
    e.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    e.set_defaults(func=run_eval)

    c = cmds.add_parser("collect-interventions",
                        help="policy rollouts with scripted-expert takeovers, recorded as bags (HG-DAgger)")
    c.add_argument("--checkpoint", required=True, help="checkpoint folder of the policy to improve")
    c.add_argument("--tasks", type=_tasks, default="all", help="comma-separated task names, or 'all'")
    c.add_argument("--episodes", type=int, default=10, help="episodes per task (all kept)")
    c.add_argument("--seed", type=int, default=0, help="first layout seed (use seeds apart from eval seeds)")
    c.add_argument("--out", type=Path, required=True, help="root folder; bags go to OUT/<task>/episode_*")
    c.add_argument("--deviation", type=float, default=0.03,
                   help="take over when the TCP gets this much farther from the expert's waypoint in --window (m)")
    c.add_argument("--window", type=float, default=0.5, help="seconds over which the deviation is summed")
    c.add_argument("--stall", type=float, default=1.0,
                   help="take over when the TCP gets no 1 cm closer to a waypoint 3 cm away in this long (s; 0: never)")
    c.add_argument("--give-up", type=float, default=0.7, help="take over after this share of the time limit")
    c.add_argument("--gripper-window", type=float, default=0.3,
                   help="take over when the policy's gripper disagrees with the expert's this long (s; 0: never) "
                   "within --gripper-near of the target cube")
    c.add_argument("--gripper-near", type=float, default=0.08, help="see --gripper-window (m)")
    c.add_argument("--start-offset", type=float, default=0.06, help="random start TCP around home, +- m")
    c.add_argument("--start-yaw", type=float, default=0.3, help="random start yaw, +- rad")
    _expert_args(c)
    _linger_arg(c)
    _gripper_args(c)
    c.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    c.set_defaults(func=run_interventions)

    pr = cmds.add_parser("probe", help="does the policy go where the instruction says? (same image, each colour)")
    pr.add_argument("--checkpoint", required=True, help="checkpoint folder")
    pr.add_argument("--router", choices=ROUTERS, help="swap the router; default: the checkpoint's")
    pr.add_argument("--frames", type=int, default=20, help="held-out first frames (4 queries each)")
    pr.add_argument("--seed", type=int, default=700_000, help="layout seeds seed..seed+frames-1")
    pr.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    pr.add_argument("--yaw", action="store_true",
                    help="also probe the grasp rotation on held-out pick frames (needed vs predicted yaw)")
    pr.add_argument("--grasp", action="store_true",
                    help="also probe the last centimetres: TCP 15/30 mm off the named cube at 5 and 8 cm on --frames "
                    "pick layouts; centring gain (expert 0.75-0.87), descent and closes while off-centre")
    pr.add_argument("--order", action="store_true",
                    help="also probe the word order on --frames stack layouts: 'stack the A cube on the B cube' vs "
                    "the swap; does each motion point at its first-named cube?")
    pr.add_argument("--json", action="store_true", help="print the summary as JSON")
    pr.set_defaults(func=run_probe)

    a = cmds.add_parser("ablate", help="the ablation: a shared all-layers model, each router / CogKD variant "
                                       "trained from it and evaluated on the same seeds; results.md + plot")
    a.add_argument("--config", type=Path, required=True, help="ablation YAML (see models/ablation.yaml)")
    a.add_argument("--out", type=Path, required=True, help="folder: base/, one subfolder per variant, results.md")
    a.add_argument("--resume", action="store_true",
                   help="skip finished variants (final checkpoint + eval report), continue half-trained ones")
    a.add_argument("--quick", action="store_true", help="the YAML's quick_steps and quick_episodes (wiring check)")
    a.add_argument("--init", help="checkpoint folder of the shared all-layers model (skips training it)")
    a.add_argument("--no-progress", dest="progress", action="store_false", help="no training progress bars")
    a.set_defaults(func=run_ablate)


def _progress(total: int, unit: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, dynamic_ncols=True)


def run_record(args: argparse.Namespace) -> int:
    """Record expert demonstrations and print a per-task summary."""
    from mole_inference.sim.demos import DemoConfig, record_demos

    if not args.verbose:  # one INFO line per bag opened/closed would bury the progress bar
        logging.getLogger("mole_inference.data.bag_writer").setLevel(logging.WARNING)
    cfg = DemoConfig(tasks=args.tasks, episodes=args.episodes, seed=args.seed, control_hz=args.control_hz,
                     image_hz=args.image_hz, noise_trans=args.noise, noise_rot=args.noise_rot, dart=args.dart,
                     start_offset=args.start_offset, start_yaw=args.start_yaw,
                     start_near_target=args.start_near_target, keep_failures=args.keep_failures, storage=args.storage,
                     binarize_gripper=args.binarize_gripper, linger=args.linger, **expert_settings(args))
    with _progress(len(cfg.tasks) * cfg.episodes, "ep") as bar:
        def on_episode(result: EpisodeResult) -> None:
            bar.set_postfix_str(f"{result.task} seed {result.seed}: {'ok' if result.success else 'FAIL'}")
            if result.path is not None:
                bar.update(1)

        summary = record_demos(args.out, cfg, on_episode)
    print(f"{'task':<14}{'kept':>6}{'tries':>7}{'expert ok':>11}{'s/episode':>11}{'ticks':>8}{'MiB':>9}")
    for task, row in summary.per_task().items():
        print(f"{task:<14}{row['kept']:>6}{row['attempts']:>7}{row['success_rate']:>10.0%}"
              f"{row['wall_s_per_episode']:>11.2f}{row['mean_ticks']:>8.0f}{row['bytes'] / 2**20:>9.1f}")
    kept = sum(r.path is not None for r in summary.results)
    size = sum(r.bytes for r in summary.results) / 2**20
    print(f"{kept} episodes ({size:.1f} MiB) in {args.out} in {summary.wall_s:.1f} s")
    return 0 if kept == len(cfg.tasks) * cfg.episodes else 1


def run_interventions(args: argparse.Namespace) -> int:
    """Record policy episodes with expert takeovers and print takeovers and successes per task."""
    from mole_inference.runtime import load_policy
    from mole_inference.sim.demos import DemoConfig
    from mole_inference.sim.interventions import TakeoverRule, collect_interventions

    if not args.verbose:
        logging.getLogger("mole_inference.data.bag_writer").setLevel(logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rule = TakeoverRule(deviation=args.deviation, window_s=args.window, give_up_fraction=args.give_up,
                        stall_s=args.stall, gripper_s=args.gripper_window, gripper_near=args.gripper_near)
    cfg = DemoConfig(tasks=args.tasks, episodes=args.episodes, seed=args.seed, noise_trans=0.0, dart=False,
                     start_offset=args.start_offset, start_yaw=args.start_yaw, keep_failures=True,
                     linger=args.linger, **expert_settings(args))
    policy = load_policy(checkpoint=args.checkpoint)
    with _progress(len(cfg.tasks) * cfg.episodes, "ep") as bar:
        def on_episode(result: EpisodeResult, took_over_at: int | None) -> None:
            how = "policy alone" if took_over_at is None else f"takeover at {took_over_at * cfg.control_dt:.1f} s"
            bar.set_postfix_str(f"{result.task}: {how}, {'ok' if result.success else 'fail'}")
            bar.update(1)

        summary, stats = collect_interventions(policy, args.out, cfg, rule, on_episode,
                                               gripper_vote=args.gripper_vote, gripper_confirm=args.gripper_confirm,
                                               gripper_lookahead=args.gripper_lookahead)
    print(f"{'task':<14}{'episodes':>9}{'takeovers':>11}{'policy ok':>11}{'rescued':>9}  takeover rule fired")
    for task, row in stats.items():
        why = ", ".join(f"{k} {v}" for k, v in sorted(row.reasons.items(), key=lambda kv: -kv[1])) or "-"
        print(f"{task:<14}{row.episodes:>9}{row.takeovers:>11}{row.policy_successes:>11}{row.rescued:>9}  {why}")
    print(f"{len(summary.results)} episodes in {args.out} in {summary.wall_s:.1f} s; retrain on demos + these with "
          "training.source_weights {policy: 0, teleop: 1} to learn from the interventions only")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    """Print how often the predicted motion points at the cube the instruction names."""
    from mole_inference.runtime import load_policy
    from mole_inference.sim.probe import probe_grasp, probe_instructions, probe_order, probe_yaw

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    policy = load_policy(checkpoint=args.checkpoint, router=args.router)
    data = probe_instructions(policy, frames=args.frames, seed=args.seed).to_dict()
    if args.yaw:
        data["yaw"] = probe_yaw(policy, frames=args.frames, seed=args.seed).to_dict()
    if args.grasp:
        data["grasp"] = probe_grasp(policy, layouts=args.frames, seed=args.seed).to_dict()
    if args.order:
        data["order"] = probe_order(policy, frames=args.frames, seed=args.seed).to_dict()
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    colors = ", ".join(f"{c} {v:.0%}" for c, v in data["per_color"].items())
    print(f"instruction probe: {data['hit_rate']:.0%} of {data['queries']} queries point at the named cube "
          f"(chance {data['chance']:.0%}; {colors}); motions differ by {data['spread_m'] * 1e3:.1f} mm between "
          f"colours, mean motion {data['motion_m'] * 1e3:.1f} mm")
    if args.yaw:
        y = data["yaw"]
        print(f"yaw probe: grasp rotation error {y['mae_rad']:.3f} rad vs {y['mae_no_turn_rad']:.3f} rad for not "
              f"turning (correlation {y['corr']:.2f}, {y['frames']} pick frames)")
    if args.grasp:
        for height, g in data["grasp"]["heights"].items():
            print(f"grasp probe at {height}: centring gain x {g['gain_x']:.2f}, y {g['gain_y']:.2f} "
                  f"(expert 0.75-0.87); descends {g['descent_mm']:.1f} mm per step and closes in "
                  f"{g['close_rate']:.0%} of steps while 15-30 mm off-centre")
    if args.order:
        o = data["order"]
        print(f"order probe: the first motion points at the first-named cube in {o['first_named']:.0%} of "
              f"{o['frames']} stack frames, {o['first_named_swapped']:.0%} with the colours swapped; both orders "
              f"point at the same cube in {o['same_cube']:.0%} (a bag-of-words reading: ~100 %)")
    return 0


def run_ablate(args: argparse.Namespace) -> int:
    """Run (or resume) the ablation and print one line per variant and where the results are."""
    from mole_inference.sim.ablate import load_ablation_config, run_ablation

    cfg = load_ablation_config(args.config)
    t0 = time.perf_counter()
    runs = run_ablation(cfg, args.out, resume=args.resume, quick=args.quick, init=args.init, progress=args.progress)
    for r in runs:
        did = ", ".join(w for w, done in (("trained", r.trained), ("evaluated", r.evaluated)) if done) or "skipped"
        print(f"{r.name:<24}{did:<22}{r.report}")
    print(f"results: {args.out / 'results.md'} ({time.perf_counter() - t0:.0f} s)")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """Evaluate a policy in the sim; print per-task success, Hz, layers; write report.json and strip.png."""
    from mole_inference.runtime import load_policy
    from mole_inference.sim.evaluate import EvalConfig, evaluate, strip_rows
    from mole_inference.sim.strip import save_strip

    cfg = EvalConfig(tasks=args.tasks, episodes=args.episodes, seed=args.seed, replan=args.replan,
                     ensemble=args.ensemble, gripper_vote=args.gripper_vote, gripper_lookahead=args.gripper_lookahead,
                     ensemble_horizon=args.ensemble_horizon, ensemble_decay=args.ensemble_decay,
                     sticky_gripper=args.sticky_gripper,
                     gripper_confirm=args.gripper_confirm, max_seconds=args.max_seconds,
                     video_episodes=args.video_episodes, start_offset=args.start_offset, start_yaw=args.start_yaw,
                     **expert_settings(args))
    model_only = [flag for flag, value in (("--router", args.router), ("--active-layers", args.active_layers),
                                           ("--cfg-scale", args.cfg_scale)) if value is not None]
    if args.expert and model_only:
        raise ConfigError(f"sim eval --expert: {', '.join(model_only)} set a model's inference; the scripted expert "
                          "has none")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.expert:
        from mole_inference.sim.expert_policy import ExpertPolicy

        policy = ExpertPolicy()
    else:
        policy = load_policy(checkpoint=args.checkpoint, preset=args.preset, device=args.device, router=args.router,
                             active_layers=args.active_layers, cfg_scale=args.cfg_scale)
    load_s = time.perf_counter() - t0
    with _progress(len(cfg.tasks) * cfg.episodes, "ep") as bar:
        def on_episode(outcome: EpisodeOutcome) -> None:
            bar.set_postfix_str(f"{outcome.task}: {'ok' if outcome.success else 'fail'}")
            bar.update(1)

        report = evaluate(policy, cfg, on_episode)
    router = args.router or getattr(getattr(getattr(policy, "cfg", None), "router", None), "type", None)
    head = getattr(getattr(policy, "cfg", None), "action_head", None)
    data = report.to_dict(checkpoint=args.checkpoint, preset=args.preset, expert=args.expert, router=router,
                          cfg_scale=getattr(head, "cfg_scale", None), device=args.device, load_s=round(load_s, 2))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(data, indent=2) + "\n")
    rows = strip_rows(report)
    if rows:
        save_strip(args.out / "strip.png", rows)
    routing_pngs = _routing_figures(report, args.out)
    for task, row in data["per_task"].items():
        lo, hi = row["ci95"]
        print(f"{task:<14} success {row['successes']}/{row['episodes']} ({row['success_rate']:.0%}, "
              f"95 % CI {lo:.0%}-{hi:.0%}; {row['clamped_share']:.0%} of steps clamped)"
              + "".join(f", {name} {share:.0%}" for name, share in row["milestones"].items()))
    lo, hi = data["ci95"]
    print(f"overall {data['success_rate']:.0%} (95 % CI {lo:.0%}-{hi:.0%}); inference {data['inference_hz']:.1f} Hz "
          f"(mean {data['inference_ms']['mean']:.1f} ms, median {data['inference_ms']['median']:.1f} ms); "
          f"layers run {data['mean_layers_run']:.2f}/{data['total_layers']} (router {router}); "
          f"{data['wall_s_per_episode']:.2f} s/episode")
    print(f"report: {args.out / 'report.json'}" + (f", strip: {args.out / 'strip.png'}" if rows else "")
          + (f", routing: {', '.join(p.name for p in routing_pngs)}" if routing_pngs else ""))
    return 0


def _routing_figures(report: Any, out: Path) -> list[Path]:
    """routing_<task>.png (layers run per inference) for each task's first episode; none without matplotlib."""
    try:
        from mole_inference.analysis.plots import routing_png
    except ImportError:
        return []
    paths = []
    for task in report.config.tasks:
        episode = next((e for e in report.episodes if e.task == task and e.routing), None)
        if episode is not None and report.num_layers > 0:
            try:
                paths.append(routing_png(episode.routing, report.num_layers, out / f"routing_{task}.png",
                                         f"{task}: {episode.instruction}"))
            except BackendUnavailableError:
                return paths
    return paths
