"""`torchrun --nproc_per_node 2` on CPU: DDP over gloo ends with the same weights on both ranks, and FSDP
(forced onto gloo, the path GPUs take) trains the same model."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("dist_worker.py")
STEPS = 3


def torchrun(bag_root, out: Path, strategy: str) -> Path:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER),
           str(bag_root), str(out), str(STEPS), strategy]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def ddp_run(bag_root, tmp_path_factory):
    return torchrun(bag_root, tmp_path_factory.mktemp("ddp"), "ddp")


def test_two_process_gloo_run_ends_with_identical_weights(ddp_run):
    r0, r1 = load_file(ddp_run / "rank0.safetensors"), load_file(ddp_run / "rank1.safetensors")
    assert r0.keys() == r1.keys()
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    # only rank 0 wrote checkpoints: step 2 (checkpoint_every) and the final step
    assert sorted(p.name for p in (ddp_run / "checkpoints").glob("step_*")) == ["step_0000002", "step_0000003"]
    saved = load_file(ddp_run / "checkpoints" / "step_0000003" / "model.safetensors")
    for key, value in saved.items():
        assert torch.equal(value, r0[f"student.{key}"]), key
    first = load_file(ddp_run / "checkpoints" / "step_0000002" / "model.safetensors")
    assert any(not torch.equal(first[k], saved[k]) for k in saved)  # training moved the weights


def test_fsdp_matches_ddp(ddp_run, bag_root, tmp_path):
    fsdp_run = torchrun(bag_root, tmp_path / "fsdp", "fsdp")
    for name in ("model.safetensors", "teacher.safetensors"):
        a = load_file(ddp_run / "checkpoints" / "step_0000003" / name)
        b = load_file(fsdp_run / "checkpoints" / "step_0000003" / name)
        assert a.keys() == b.keys()
        for key in a:
            if key.endswith("k_proj.bias"):
                # A key bias adds q.b to every logit of a row, which softmax cancels: its true gradient is 0, and
                # AdamW turns the float noise of the two reduction orders into full-size steps of random sign.
                continue
            torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=f"{name}: {key}")
