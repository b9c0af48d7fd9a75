"""torchrun worker for test_distributed: train the micro model, then every rank writes its own weights.

Run: python -m torch.distributed.run --standalone --nproc_per_node 2 dist_worker.py DATA OUT STEPS STRATEGY
"""

import os
import sys

import torch
from conftest import micro_config  # this file's folder is sys.path[0] when run as a script
from safetensors.torch import save_file
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from mole_inference.training.distributed import init_distributed
from mole_inference.training.trainer import Trainer


def main() -> None:
    data, out, steps, strategy = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    ctx = init_distributed("cpu", strategy)
    trainer = Trainer(micro_config(max_steps=steps, checkpoint_every=2), data, out, progress=False, ctx=ctx)
    assert ctx.world_size == int(os.environ["WORLD_SIZE"]) and ctx.backend == "gloo"
    assert ctx.fsdp == (strategy == "fsdp")
    trainer.fit()
    if not ctx.fsdp:  # DDP replicas: each rank's own copy
        opts = StateDictOptions(full_state_dict=False)
        weights = {f"student.{k}": v for k, v in get_model_state_dict(trainer.student, options=opts).items()}
        weights.update({f"teacher.{k}": v for k, v in get_model_state_dict(trainer.teacher, options=opts).items()})
        save_file({k: v.contiguous() for k, v in weights.items()}, os.path.join(out, f"rank{ctx.rank}.safetensors"))


if __name__ == "__main__":
    main()
