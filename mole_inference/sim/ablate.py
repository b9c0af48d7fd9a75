"""`mole-vla sim ablate`: the paper's ablation from one shared all-layers model, each variant in its own folder.

1. `base/`: the all-layers model (router `full`, no distillation) trained on the demonstrations, or `--init`;
2. `<variant>/`: from it, the same step budget on the same data with the variant's router / distill mode
   (`VARIANTS`); `dynamic_exit` is then calibrated to the same mean depth k as the layer routers (`calibrated/`);
3. `<variant>/eval/report.json`: `sim eval`'s report on the same held-out seeds for every variant;
4. `results.md` and `success_vs_flops.png` (sim/ablation_report.py).

Resume: a variant whose final checkpoint (step = its budget) and eval report exist is skipped; one with earlier
checkpoints continues with the trainer's resume. Relative paths in the YAML are relative to the working folder.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mole_inference.config.base import check, from_dict, load_yaml, suggest
from mole_inference.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: router type, distill mode, and k/K (None: the base config's k)."""

    router: str
    distill: str
    active_share: float | None = None
    trains: bool = True  # False: the shared base model itself, evaluated as is
    router_extra: tuple[tuple[str, Any], ...] = ()  # further router settings, e.g. (("exit_training", ...),)


VARIANTS: dict[str, Variant] = {
    "full": Variant("full", "none", trains=False),  # reference: all K layers (the shared base)
    "full_same_steps": Variant("full", "none"),  # all K layers trained the variants' steps on their data
    "star_cogkd": Variant("star", "mse+reverse_kl"),  # MoLe: STAR + CogKD (Table 3's mse + reverse KL)
    "star": Variant("star", "none"),  # STAR without CogKD
    "star_cogkd_mse": Variant("star", "mse"),  # Table 3
    "star_cogkd_kl": Variant("star", "kl"),
    "star_cogkd_reverse_kl": Variant("star", "reverse_kl"),
    "linear": Variant("linear", "mse+reverse_kl"),  # router ablation, rest as MoLe
    "random": Variant("random", "none"),  # Table 1 baselines
    "early_exit": Variant("early_exit", "none"),
    "dynamic_exit": Variant("dynamic_exit", "none"),  # trained at full depth, exits at inference only
    "dynamic_exit_trained": Variant("dynamic_exit", "none", router_extra=(("exit_training", "random_depth"),)),
    "mod": Variant("mod", "none"),
    "star_cogkd_k25": Variant("star", "mse+reverse_kl", 0.25),  # Fig. 3: other compute budgets
    "star_cogkd_k75": Variant("star", "mse+reverse_kl", 0.75),
}


@dataclass
class AblationEval:
    """`sim eval` settings shared by every variant (the held-out seeds)."""

    tasks: list[str] | str = "all"
    episodes: int = 50
    seed: int = 100_000  # layout seeds seed..seed+episodes-1; keep apart from the demos' seeds
    max_seconds: float | None = None
    replan: int = 1
    gripper_vote: bool = False  # sim eval --gripper-vote (the robot's handling of a diffusion head's gripper draws)
    gripper_confirm: float = 0.0  # s, sim eval --gripper-confirm
    video_episodes: int = 0
    threads: int = 0
    device: str = "cpu"


@dataclass
class AblationConfig:
    """The ablation YAML: base model config (preset + section overrides, or a config file), data, budgets."""

    data: str
    preset: str | None = None  # a preset name (e.g. tiny), or `config`
    config: str | None = None  # a model config YAML instead of `preset`
    overrides: dict[str, Any] = field(default_factory=dict)  # sections merged into the preset, e.g. training
    base_steps: int = 2000
    variant_steps: int = 1000
    variants: list[str] | str = "all"
    eval: AblationEval = field(default_factory=AblationEval)
    quick_steps: int = 4
    quick_episodes: int = 1
    calibration_samples: int = 64  # dynamic_exit threshold: training frames whose mean depth is matched to k

    def __post_init__(self) -> None:
        if self.variants == "all":
            self.variants = list(VARIANTS)
        for name in self.variants:
            if name not in VARIANTS:
                raise ConfigError(f"variants: unknown variant {name!r}{suggest(name, VARIANTS)}; "
                                  f"known: {list(VARIANTS)}")
        check(len(self.variants) > 0, "variants", self.variants, "name at least one variant")
        check((self.preset is None) != (self.config is None), "preset/config", (self.preset, self.config),
              "give exactly one of preset or config")
        for name in ("base_steps", "variant_steps", "quick_steps", "quick_episodes", "calibration_samples"):
            check(getattr(self, name) > 0, name, getattr(self, name), "must be > 0")

    def model_config(self, **sections: Any) -> Any:
        """The base ModelConfig with the YAML's overrides, then `sections` (router / training fields) on top."""
        from mole_inference.config import ModelConfig, load_model_config, preset, to_dict

        if self.config:
            data = to_dict(load_model_config(self.config))
            for section, values in self.overrides.items():
                data.setdefault(section, {}).update(values)
        else:
            data = to_dict(preset(self.preset, **self.overrides))
        for section, values in sections.items():
            data[section].update(values)
        return from_dict(ModelConfig, data)


def load_ablation_config(path: str | Path) -> AblationConfig:
    """Read and validate the ablation YAML (errors name the file and the field)."""
    try:
        return from_dict(AblationConfig, load_yaml(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


@dataclass
class VariantRun:
    """What happened to one variant in this call: its checkpoint, report, and whether it trained / evaluated."""

    name: str
    checkpoint: Path
    report: Path
    trained: bool
    evaluated: bool


def final_checkpoint(folder: Path, steps: int) -> Path:
    """The checkpoint a finished training run of `steps` steps leaves in `folder`."""
    from mole_inference.training.train_state import checkpoint_dir

    return checkpoint_dir(folder, steps)


def is_complete(checkpoint: Path) -> bool:
    """Whether `checkpoint` holds a loadable policy."""
    from mole_inference.model.checkpoint import CONFIG, STATS, WEIGHTS

    return all((checkpoint / name).is_file() for name in (WEIGHTS, CONFIG, STATS))


def run_ablation(cfg: AblationConfig, out: str | Path, *, resume: bool = False, quick: bool = False,
                 init: str | Path | None = None, progress: bool = True) -> list[VariantRun]:
    """Train (or reuse) the base, train/calibrate/evaluate each variant, write results.md and the plot."""
    from mole_inference.sim.ablation_report import write_results
    from mole_inference.training.sources import load_source_table

    out = Path(out)
    if not resume and out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--out {out} is not empty: pass --resume to continue that ablation, or choose another")
    out.mkdir(parents=True, exist_ok=True)
    base_steps = cfg.quick_steps if quick else cfg.base_steps
    steps = cfg.quick_steps if quick else cfg.variant_steps
    base_cfg = cfg.model_config(router={"type": "full"}, training={"distill": "none", "max_steps": base_steps})
    # the demonstrations, read once and only if something trains or calibrates
    table = functools.cache(lambda: load_source_table(cfg.data, base_cfg, None, None, None))

    if init is not None:
        from mole_inference.model.checkpoint import read_checkpoint_config

        read_checkpoint_config(init)  # typed error naming the missing file
        base = Path(init)
    else:
        base = final_checkpoint(out / "base", base_steps)
        if not is_complete(base):
            _train(base_cfg, table(), out / "base", None, progress)
    runs = []
    for name in cfg.variants:
        runs.append(_run_variant(cfg, name, out / name, base, table, steps, quick, progress))
    write_results(cfg, out, runs, quick=quick)
    return runs


def variant_config(cfg: AblationConfig, name: str, steps: int) -> Any:
    """The ModelConfig variant `name` trains with: the base config, its router / distill / k, `steps` steps."""
    v = VARIANTS[name]
    k_total = cfg.model_config().llm.num_layers
    router: dict[str, Any] = {"type": v.router, **dict(v.router_extra)}
    if v.active_share is not None:
        router["num_active_layers"] = max(1, round(v.active_share * k_total))
    return cfg.model_config(router=router, training={"distill": v.distill, "max_steps": steps})


def _run_variant(cfg: AblationConfig, name: str, folder: Path, base: Path, table: Callable[[], Any], steps: int,
                 quick: bool, progress: bool) -> VariantRun:
    v = VARIANTS[name]
    report = folder / "eval" / "report.json"
    trained = evaluated = False
    if not v.trains:
        ckpt = base
    else:
        ckpt = final_checkpoint(folder, steps)
        if not is_complete(ckpt):
            _train(variant_config(cfg, name, steps), table(), folder, base, progress)
            trained = True
        if v.router == "dynamic_exit":
            calibrated = folder / "calibrated"
            if trained or not is_complete(calibrated):
                _calibrate_exit(ckpt, calibrated, table(), cfg.calibration_samples)
            ckpt = calibrated
    if trained or not report.is_file():
        _evaluate(cfg, name, ckpt, report, quick)
        evaluated = True
    else:
        log.info("%s: final checkpoint and eval report exist, skipped", name)
    return VariantRun(name, ckpt, report, trained, evaluated)


def _train(model_cfg: Any, table: Any, folder: Path, init: Path | None, progress: bool) -> None:
    """The trainer on `table`, resuming any earlier checkpoint in `folder` (a half-trained variant)."""
    from mole_inference.training.dataset import BagDataset
    from mole_inference.training.train_state import latest_checkpoint
    from mole_inference.training.trainer import Trainer

    resume = folder.is_dir() and latest_checkpoint(folder) is not None
    log.info("training %s (%s router, distill %s, %d steps%s)", folder.name, model_cfg.router.type,
             model_cfg.training.distill, model_cfg.training.max_steps, ", resumed" if resume else "")
    result = Trainer(model_cfg, BagDataset(table, model_cfg), folder, resume=resume, init=init,
                     progress=progress).fit()
    log.info("%s: step %d, %.2f steps/s, checkpoint %s", folder.name, result.step, result.steps_per_s,
             result.checkpoint)


def _calibrate_exit(ckpt: Path, dest: Path, table: Any, samples: int) -> None:
    """Save `ckpt` with the exit threshold whose mean depth on training frames is the router's k."""
    import torch

    from mole_inference.config import ModelConfig, to_dict
    from mole_inference.model.checkpoint import load_checkpoint, save_checkpoint
    from mole_inference.model.dynamic_exit import calibrate_exit_threshold
    from mole_inference.training.dataset import BagDataset

    model, model_cfg, stats = load_checkpoint(ckpt)
    data = BagDataset(table, model_cfg, stats)
    items = [data[(i, 0)] for i in range(min(samples, len(data)))]
    keys = ("pixels", "ids", "text_mask") + (("state",) if model_cfg.vision.state_input else ())
    batches = [tuple(torch.stack([it[key] for it in items[j:j + 16]]) for key in keys)
               for j in range(0, len(items), 16)]
    threshold, depth = calibrate_exit_threshold(model, batches, target=model_cfg.router.num_active_layers)
    cfg_data = to_dict(model_cfg)
    cfg_data["router"]["exit_threshold"] = threshold
    save_checkpoint(dest, model, from_dict(ModelConfig, cfg_data), stats,
                    extra={"exit_threshold": str(threshold), "calibrated_mean_layers": str(depth)})
    log.info("dynamic_exit: threshold %.4g runs %.2f layers on average (target %d)", threshold, depth,
             model_cfg.router.num_active_layers)


def _evaluate(cfg: AblationConfig, name: str, ckpt: Path, report_path: Path, quick: bool) -> None:
    """`sim eval` (sim/evaluate.py `evaluate`) on the shared seeds; writes its report.json."""
    from mole_inference.runtime import load_policy
    from mole_inference.sim.evaluate import EvalConfig, evaluate
    from mole_inference.sim.tasks import TASKS

    e = cfg.eval
    names = e.tasks.split(",") if isinstance(e.tasks, str) else e.tasks
    tasks = tuple(TASKS) if e.tasks == "all" else tuple(t.strip() for t in names if t.strip())
    ecfg = EvalConfig(tasks=tasks, episodes=cfg.quick_episodes if quick else e.episodes, seed=e.seed,
                      replan=e.replan, max_seconds=e.max_seconds, video_episodes=e.video_episodes,
                      gripper_vote=e.gripper_vote, gripper_confirm=e.gripper_confirm)
    if e.threads:
        import torch

        torch.set_num_threads(e.threads)
    t0 = time.perf_counter()
    policy = load_policy(checkpoint=ckpt, device=e.device)
    load_s = time.perf_counter() - t0
    report = evaluate(policy, ecfg)
    data = report.to_dict(checkpoint=str(ckpt), variant=name, router=policy.cfg.router.type, device=e.device,
                          load_s=round(load_s, 2))
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(json.dumps(data, indent=2) + "\n")
    log.info("%s: success %.0f%% on %d episodes, %.1f Hz", name, 100 * data["success_rate"],
             len(report.episodes), data["inference_hz"])
