"""`Trainer`: STAR + CogKD fine-tuning of MoLe-VLA on episode bags (one process, or every rank of torchrun).

One step: the EMA teacher runs every layer on the batch (no gradients); the student runs its router's top-k
layers (straight-through gate); Eq. 18 is minimized with AdamW (warmup, then a constant or cosine learning
rate); the teacher then follows the student by EMA. Every random draw depends only on (seed, step, rank), so
`resume` continues exactly where a checkpoint left off.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from mole_inference.config.model import ModelConfig, TrainingConfig
from mole_inference.errors import CheckpointError, ConfigError
from mole_inference.model.action_stats import ActionStats
from mole_inference.model.checkpoint import STATS, save_checkpoint
from mole_inference.model.vla import MoLeVLA
from mole_inference.training.dataset import BagDataset, load_table
from mole_inference.training.distributed import (
    DistContext,
    all_reduce_mean,
    barrier,
    init_distributed,
    shard_like_student,
    wrap_for_training,
)
from mole_inference.training.ema import ema_update, make_teacher
from mole_inference.training.metrics import MetricsLogger
from mole_inference.training.objective import MoLeObjective, draw_diffusion, step_generator
from mole_inference.training.sampler import MixedTaskSampler
from mole_inference.training.train_state import (
    checkpoint_dir,
    latest_checkpoint,
    load_resume_state,
    mark_latest,
    save_resume_state,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a `fit` call did: last checkpoint, step reached, steps run, wall time, last logged metrics."""

    checkpoint: Path | None
    step: int
    steps_run: int
    seconds: float
    metrics: dict[str, float]

    @property
    def steps_per_s(self) -> float:
        """Optimizer steps per second of wall time in `fit` (data loading and checkpoints included)."""
        return self.steps_run / self.seconds if self.seconds > 0 else 0.0


class Trainer:
    """Builds data, student, teacher and optimizer from `cfg`; `fit()` trains to `cfg.training.max_steps`.

    `data`: a folder of episode bags, a list of bag folders, or a ready `BagDataset`. `init`: a checkpoint
    folder whose weights start the student (and teacher), e.g. a model pre-trained with all layers;
    `init_fresh`: module prefixes (e.g. "action_head") neither taken from `init` nor required in it, to put a new
    action head of another family on a trained vision tower and LLM.
    """

    def __init__(self, cfg: ModelConfig, data: str | Path | list[Path] | BagDataset, out: str | Path, *,
                 resume: bool = False, init: str | Path | None = None, device: str | None = None,
                 progress: bool = True, ctx: DistContext | None = None, init_fresh: tuple[str, ...] = ()) -> None:
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self.ctx = ctx or init_distributed(device)
        t = cfg.training
        resume_from = latest_checkpoint(self.out) if resume else None
        if not resume and any((self.out / "checkpoints").glob("step_*")):
            raise ConfigError(f"--out {self.out} holds checkpoints of an earlier run: pass --resume to continue it, "
                              "or choose another --out")
        if resume and resume_from is None:
            log.warning("--resume: no checkpoint under %s, starting from step 0", self.out)
        saved = load_resume_state(resume_from) if resume_from else None
        if saved and saved["state"].get("world_size") not in (None, self.ctx.world_size):
            log.warning("resuming a %s-rank run on %d ranks: same batches, different diffusion-noise draws",
                        saved["state"]["world_size"], self.ctx.world_size)
        stats = ActionStats.load(resume_from / STATS) if resume_from else None
        if isinstance(data, BagDataset):
            self.dataset = data if stats is None else BagDataset(data.table, cfg, stats)
        else:
            self.dataset = BagDataset(load_table(data, cfg), cfg, stats)
        self.stats = self.dataset.stats

        torch.manual_seed(t.seed)  # identical initial weights on every rank (FSDP does not broadcast)
        student = MoLeVLA(cfg)
        if init is not None:
            _load_init(student, Path(init), init_fresh)
        self.objective = MoLeObjective(student, cfg)
        if init is not None and self.objective.goal_head is not None:
            _load_goal_head(self.objective.goal_head, Path(init))
        self.teacher = make_teacher(student) if self.objective.uses_teacher else None
        self.step = 0
        if saved:
            self._load_weights(saved)
        dev = self.ctx.device
        self.objective.to(dev)
        self.module = wrap_for_training(self.objective, student.llm.layers, self.ctx)
        if self.teacher is not None:
            self.teacher = shard_like_student(self.teacher.to(dev), self.teacher.llm.layers, self.ctx)
        self.optimizer = torch.optim.AdamW(param_groups(self.objective, t.router_lr_scale), lr=t.learning_rate,
                                           weight_decay=t.weight_decay)
        if saved:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(self.objective, self.optimizer, saved["optimizer"],
                                     options=StateDictOptions(full_state_dict=True))
            self.step = int(saved["state"]["step"])
            log.info("resumed from %s at step %d", resume_from, self.step)

    @property
    def student(self) -> MoLeVLA:
        """The student model (unwrapped)."""
        return self.objective.student

    def _load_weights(self, saved: dict) -> None:
        self.student.load_state_dict(saved["student"])
        if self.objective.mu is not None:
            self.objective.mu.load_state_dict({k.removeprefix("mu."): v for k, v in saved["mu"].items()
                                               if k.startswith("mu.")})
        if self.objective.goal_head is not None:
            head = {k.removeprefix("goal_head."): v for k, v in saved["mu"].items() if k.startswith("goal_head.")}
            if head:  # absent when the run resumed was started without the subgoal head: it starts fresh
                assign_goal_head(self.objective.goal_head, head)
        if self.teacher is not None:
            if saved["teacher"] is None:
                raise CheckpointError("the checkpoint has no teacher but training.distill needs one")
            self.teacher.load_state_dict(saved["teacher"])

    # --- one step --------------------------------------------------------------------------------------
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Forward, backward, clip, AdamW, EMA; returns the detached loss parts. Advances `self.step`."""
        t, dev = self.cfg.training, self.ctx.device
        b = {k: v.to(dev, non_blocking=True) for k, v in batch.items()}
        teacher_hidden = None
        if self.teacher is not None:
            with torch.no_grad():
                teacher_hidden = self.teacher.forward_train(b["pixels"], b["ids"], b["text_mask"], full=True,
                                                            state=b.get("state"))[0]
            if hasattr(self.teacher, "reshard"):  # FSDP keeps a root unsharded after forward, awaiting a backward
                self.teacher.reshard()
        gen = step_generator(t.seed, self.step, self.ctx.rank)
        noise, timesteps, drop = draw_diffusion(b["pixels"].shape[0], self.cfg, gen, dev)
        self.student.train()
        parts = self.module(b["pixels"], b["ids"], b["text_mask"], b["actions"], noise, timesteps, drop,
                            teacher_hidden, b.get("action_mask"), b.get("goal"), b.get("goal_mask"), b.get("state"))
        self.optimizer.zero_grad(set_to_none=True)
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(t, self.step) * group.get("lr_scale", 1.0)
        parts["loss"].backward()
        if t.grad_clip > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
            parts["grad_norm"] = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # DTensor under FSDP
        self.optimizer.step()
        if self.teacher is not None:
            ema_update(self.teacher, self.student, t.ema_decay)
        self.step += 1
        return {k: v.detach() for k, v in parts.items()}

    # --- the loop ----------------------------------------------------------------------------------------
    def loader(self) -> DataLoader:
        """Batches for the remaining steps, this rank's share, starting at `self.step`."""
        t = self.cfg.training
        sampler = MixedTaskSampler(self.dataset.sample_weights(), t.batch_size, t.seed, self.ctx.rank,
                                   self.ctx.world_size, start_step=self.step, steps=max(t.max_steps - self.step, 0))
        return DataLoader(self.dataset, batch_sampler=sampler, num_workers=t.num_workers,
                          pin_memory=self.ctx.device.type == "cuda", persistent_workers=False)

    def fit(self) -> TrainResult:
        """Train until `cfg.training.max_steps`, logging and checkpointing; returns what was done."""
        from tqdm import tqdm

        t, main = self.cfg.training, self.ctx.is_main
        start, t0 = self.step, time.perf_counter()
        metrics = MetricsLogger(self.out, start) if main else None
        bar = tqdm(total=t.max_steps, initial=start, desc="train", disable=not (main and self.progress),
                   dynamic_ncols=True)
        last: dict[str, float] = {}
        ckpt: Path | None = latest_checkpoint(self.out) if main and self.out.is_dir() else None
        window: dict[str, torch.Tensor] = {}
        window_t, window_n = time.perf_counter(), 0
        try:
            for batch in self.loader():
                parts = self.train_step(batch)
                bar.update(1)
                window_n += 1
                for k, v in parts.items():
                    window[k] = window[k] + v if k in window else v  # no host sync per step
                done = self.step >= t.max_steps
                if self.step % t.log_every == 0 or done:
                    now = time.perf_counter()
                    last = all_reduce_mean({k: float(v) / window_n for k, v in window.items()}, self.ctx)
                    last["steps_per_s"] = window_n / max(now - window_t, 1e-9)
                    last["lr"] = self.optimizer.param_groups[0]["lr"]
                    if metrics is not None:
                        metrics.log(self.step, last)
                    bar.set_postfix(loss=f"{last['loss']:.4f}", task=f"{last['task']:.4f}")
                    window, window_t, window_n = {}, now, 0
                if self.step % t.checkpoint_every == 0 or done:
                    ckpt = self.save()
        finally:
            bar.close()
            if metrics is not None:
                metrics.close()
        return TrainResult(ckpt, self.step, self.step - start, time.perf_counter() - t0, last)

    def save(self) -> Path:
        """Write the policy checkpoint and resume state for `self.step` (collective; rank 0 writes)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        full = get_model_state_dict(self.objective, options=opts)
        teacher = get_model_state_dict(self.teacher, options=opts) if self.teacher is not None else None
        optim = get_optimizer_state_dict(self.objective, self.optimizer, options=opts)
        path = checkpoint_dir(self.out, self.step)
        if self.ctx.is_main:
            student = {k.removeprefix("student."): v for k, v in full.items() if k.startswith("student.")}
            model = self.student if not self.ctx.fsdp else _cpu_shadow(self.cfg, student)
            save_checkpoint(path, model, self.cfg, self.stats, extra={"step": str(self.step)})
            extras = {k: v for k, v in full.items() if k.startswith(("mu.", "goal_head."))}
            save_resume_state(path, teacher, extras, optim,
                              {"step": self.step, "seed": self.cfg.training.seed, "world_size": self.ctx.world_size})
            mark_latest(self.out, path, self.cfg.training.keep_checkpoints)
        barrier(self.ctx)
        return path


def param_groups(objective: torch.nn.Module, router_lr_scale: float) -> list[dict[str, Any]]:
    """AdamW groups: everything trainable at the schedule's rate; with `router_lr_scale` != 1 the router's own
    parameters in a second group at that multiple (a single group otherwise, as checkpoints before it had)."""
    named = [(n, p) for n, p in objective.named_parameters() if p.requires_grad]
    if router_lr_scale == 1.0:
        return [{"params": [p for _, p in named], "lr_scale": 1.0}]
    router = [p for n, p in named if ".router." in f".{n}"]
    if not router:
        raise ConfigError("training.router_lr_scale is set but the model has no trainable router parameters")
    rest = [p for n, p in named if ".router." not in f".{n}"]
    return [{"params": rest, "lr_scale": 1.0}, {"params": router, "lr_scale": router_lr_scale}]


def learning_rate(t: TrainingConfig, step: int) -> float:
    """The learning rate of optimizer step `step` (0-based): linear warmup, then constant or cosine to 10 %.

    A pure function of the step, so a resumed run continues on the same curve.
    """
    if step < t.warmup_steps:
        return t.learning_rate * (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return t.learning_rate
    span = max(1, t.max_steps - t.warmup_steps)
    progress = min(1.0, (step - t.warmup_steps) / span)
    return t.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _cpu_shadow(cfg: ModelConfig, state: dict[str, torch.Tensor]) -> MoLeVLA:
    """A CPU MoLeVLA holding gathered weights without allocating its own (meta init + assign)."""
    with torch.device("meta"):
        model = MoLeVLA(cfg)
    model.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)  # own storage per tensor
    return model


def _load_goal_head(head: torch.nn.Linear, path: Path) -> None:
    """Continue the subgoal head of an --init checkpoint that trained one (else it starts fresh)."""
    from safetensors.torch import load_file

    from mole_inference.training.train_state import COGKD

    if not (path / COGKD).is_file():
        return
    saved = {k.removeprefix("goal_head."): v for k, v in load_file(str(path / COGKD)).items()
             if k.startswith("goal_head.")}
    if saved:
        assign_goal_head(head, saved)
        log.info("initialized the subgoal head from %s", path)


def assign_goal_head(head: torch.nn.Linear, saved: dict[str, torch.Tensor]) -> None:
    """Load a saved subgoal head; a position-only head (3 outputs) fills the position rows of a position +
    rotation head (6), whose rotation rows keep their fresh initialization."""
    rows = saved["weight"].shape[0]
    if rows == head.out_features:
        head.load_state_dict(saved)
        return
    if rows > head.out_features or saved["weight"].shape[1] != head.in_features:
        raise CheckpointError(f"saved subgoal head {tuple(saved['weight'].shape)} does not fit "
                              f"{tuple(head.weight.shape)} (training.goal_rot_scale changed to 0?)")
    with torch.no_grad():
        head.weight[:rows].copy_(saved["weight"])
        head.bias[:rows].copy_(saved["bias"])


def _load_init(student: MoLeVLA, path: Path, init_fresh: tuple[str, ...] = ()) -> None:
    """Start from a checkpoint's weights (same shapes; the router may differ, e.g. from a full model); modules
    under the `init_fresh` prefixes keep their fresh initialization."""
    from safetensors.torch import load_file

    from mole_inference.model.checkpoint import WEIGHTS, read_checkpoint_config

    read_checkpoint_config(path)  # typed error when files are missing
    own = tuple(p.rstrip(".") + "." for p in init_fresh)
    unknown = [p for p in own if not any(k.startswith(p) for k in student.state_dict())]
    if unknown:
        raise ConfigError(f"--init-fresh {', '.join(p[:-1] for p in unknown)}: no such module in this model "
                          f"(top-level modules: {sorted({k.split('.')[0] for k in student.state_dict()})})")
    source = {k: v for k, v in load_file(str(path / WEIGHTS)).items() if not k.startswith(own)}  # () matches nothing
    missing, unexpected = student.load_state_dict(source, strict=False)
    fresh = ("router.", "text_film.", *own)  # modules a run may add to a trained model (zero-init FiLM: identity)
    bad = [k for k in [*missing, *unexpected] if not k.startswith(fresh)]
    if bad:
        raise ConfigError(f"--init {path}: weights do not match this config ({sorted(bad)[:5]}); "
                          "--init-fresh PREFIX leaves a module (e.g. action_head) fresh")
    left = sorted({k.split(".")[0] for k in missing})
    log.info("initialized the student from %s%s", path, f" ({', '.join(left)} left fresh)" if missing else "")
