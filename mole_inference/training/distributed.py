"""One entry point from a laptop CPU to `torchrun --nproc_per_node N`: FSDP on GPUs, DDP with gloo on CPUs.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without them training runs in one
process with no process group. Only rank 0 writes files; all ranks take part in every collective.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch import nn

from mole_inference.errors import BackendUnavailableError, ConfigError

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """Where this process sits: rank, world size, its device and the process-group backend (None: single)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None
    strategy: str = "auto"  # auto: FSDP on CUDA, DDP on CPU; or force "fsdp" / "ddp"

    @property
    def distributed(self) -> bool:
        """True under torchrun with more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes checkpoints, metrics and the progress bar."""
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        """Sharded (FSDP2) training: several processes on CUDA devices (or forced by `strategy`)."""
        if not self.distributed or self.strategy == "ddp":
            return False
        return self.strategy == "fsdp" or self.device.type == "cuda"


def init_distributed(device: str | None = None, strategy: str = "auto") -> DistContext:
    """Read torchrun's environment, pick the device (`device` or CUDA when present) and join the group.

    `strategy`: "auto" (FSDP on CUDA, DDP on CPU), "fsdp" or "ddp" (e.g. FSDP over gloo to test sharding).
    """
    if strategy not in ("auto", "fsdp", "ddp"):
        raise ConfigError(f"strategy={strategy!r}: expected auto, fsdp or ddp")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    if want_cuda and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device={device!r}: CUDA is not available in this torch build")
    if want_cuda:
        index = local if world > 1 else (torch.device(device).index or 0) if device else 0
        dev = torch.device("cuda", index)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    ctx = DistContext(rank, world, local, dev, None, strategy)
    if world > 1:
        ctx.backend = "nccl" if want_cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(ctx.backend)
        log.info("rank %d/%d on %s (%s, %s)", rank, world, dev, ctx.backend, "FSDP" if ctx.fsdp else "DDP")
    return ctx


def _shard(module: nn.Module, layers: nn.ModuleList) -> None:
    from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

    for layer in layers:  # one all-gather unit per decoder layer, then the rest at the root
        fully_shard(layer)
    fully_shard(module)
    if hasattr(module, "forward_train"):  # the teacher is called through this method, not forward()
        register_fsdp_forward_method(module, "forward_train")


def wrap_for_training(module: nn.Module, layers: nn.ModuleList, ctx: DistContext) -> nn.Module:
    """The module whose forward the step calls: FSDP2 (in place) on GPUs, DDP on CPU, itself when single."""
    if not ctx.distributed:
        return module
    if ctx.fsdp:
        _shard(module, layers)
        return module
    return nn.parallel.DistributedDataParallel(module)


def shard_like_student(teacher: nn.Module, layers: nn.ModuleList, ctx: DistContext) -> nn.Module:
    """Shard the teacher as the student is (FSDP only) so the EMA pairs up local shards."""
    if ctx.fsdp:
        _shard(teacher, layers)
    return teacher


def all_reduce_mean(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average scalar metrics over ranks (identity when single)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t)
    return dict(zip(keys, (t / ctx.world_size).tolist(), strict=True))


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op when single)."""
    if ctx.distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group if this process joined one."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
