"""The trainer on a micro model: loss falls on a tiny batch, resume is exact, checkpoints load as a policy."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from mole_inference.cli import main
from mole_inference.config import save_model_config
from mole_inference.errors import CheckpointError, ConfigError
from mole_inference.training.dataset import BagDataset, load_table
from mole_inference.training.objective import draw_diffusion, step_generator
from mole_inference.training.trainer import Trainer, assign_goal_head


@pytest.fixture(scope="module")
def table(bag_root, micro_cfg):
    return load_table(bag_root, micro_cfg())


def test_a_few_steps_overfit_a_tiny_batch(table, micro_cfg, tmp_path):
    cfg = micro_cfg(learning_rate=3e-3, crop_scale=1.0, color_jitter=0.0)
    trainer = Trainer(cfg, BagDataset(table, cfg), tmp_path, progress=False)
    batch = next(iter(trainer.loader()))
    noise, t, drop = draw_diffusion(4, cfg, step_generator(99, 0), torch.device("cpu"))
    drop[:] = False

    def fixed_loss() -> float:
        with torch.no_grad():
            th = trainer.teacher.forward_train(batch["pixels"], batch["ids"], batch["text_mask"], full=True)[0]
            parts = trainer.objective(batch["pixels"], batch["ids"], batch["text_mask"], batch["actions"], noise, t,
                                      drop, th)
        return parts["loss"].item()

    before = fixed_loss()
    for _ in range(50):
        trainer.train_step(batch)
    after = fixed_loss()
    print(f"fixed-noise loss {before:.4f} -> {after:.4f}")
    assert after < 0.5 * before, (before, after)
    assert trainer.step == 50


@pytest.mark.parametrize("goal_weight", [0.0, 0.5])
def test_resume_continues_identically(table, micro_cfg, tmp_path, goal_weight):
    def cfg(steps):
        return micro_cfg(max_steps=steps, goal_weight=goal_weight)

    straight = Trainer(cfg(4), BagDataset(table, cfg(4)), tmp_path / "a", progress=False).fit()
    Trainer(cfg(2), BagDataset(table, cfg(2)), tmp_path / "b", progress=False).fit()
    resumed = Trainer(cfg(4), BagDataset(table, cfg(4)), tmp_path / "b", resume=True, progress=False)
    assert resumed.step == 2
    result = resumed.fit()
    assert result.step == 4 and result.steps_run == 2
    for name in ("model.safetensors", "teacher.safetensors", "cogkd.safetensors", "optimizer.safetensors"):
        a, b = load_file(straight.checkpoint / name), load_file(result.checkpoint / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]
    assert any(k.startswith("goal_head.") for k in load_file(result.checkpoint / "cogkd.safetensors")) == (
        goal_weight > 0)


def test_subgoal_head_fits_the_recorded_offsets(table, micro_cfg, tmp_path):
    """goal_weight adds the subgoal regression to the loss; a few steps on one batch fit it."""
    cfg = micro_cfg(learning_rate=3e-3, crop_scale=1.0, color_jitter=0.0, goal_weight=1.0, goal_scale=0.01,
                    goal_rot_scale=0.1)
    data = BagDataset(table, cfg)
    assert data.goal_mask.all() and data.goals.abs().max() > 0.001  # the fixture episodes record measured poses
    trainer = Trainer(cfg, data, tmp_path, progress=False)
    batch = next(iter(trainer.loader()))
    first = trainer.train_step(batch)
    for _ in range(60):
        last = trainer.train_step(batch)
    assert "goal" in first and last["goal"] < 0.2 * first["goal"], (first["goal"], last["goal"])
    assert torch.isclose(last["loss"], last["task"] + 0.5 * last["cog"] + 0.1 * last["lb"] + last["goal"], rtol=1e-4)
    branch = Trainer(cfg, data, tmp_path / "branch", init=trainer.save(), progress=False)  # --init keeps the head
    assert torch.equal(branch.objective.goal_head.weight, trainer.objective.goal_head.weight)


def test_checkpoint_is_a_policy_with_the_dataset_stats(table, micro_cfg, tmp_path):
    from mole_inference.runtime.torch_backend import TorchPolicy

    cfg = micro_cfg(max_steps=1)
    ds = BagDataset(table, cfg)
    result = Trainer(cfg, ds, tmp_path, progress=False).fit()
    policy = TorchPolicy.from_checkpoint(result.checkpoint)
    np.testing.assert_allclose(policy.stats.q01, ds.stats.q01)
    chunk = policy.infer(table.frames[0], table.instructions[0])
    assert chunk.actions.shape == (cfg.action_head.chunk_size, 7)
    with pytest.raises(ConfigError, match="earlier run"):  # a fresh run never overwrites another's checkpoints
        Trainer(cfg, ds, tmp_path, progress=False)
    # --init: a linear-router student starts from these weights, its router fresh
    linear = micro_cfg("linear", max_steps=1)
    student = Trainer(linear, BagDataset(table, linear), tmp_path / "init", init=result.checkpoint,
                      progress=False).student
    saved = load_file(result.checkpoint / "model.safetensors")
    for key, value in student.state_dict().items():
        assert key.startswith("router.") or torch.equal(value, saved[key]), key


@pytest.mark.parametrize("router, distill", [("linear", "mse"), ("star", "kl"), ("full", "none"),
                                             ("star", "reverse_kl")])
def test_tab3_variants_train(table, micro_cfg, tmp_path, router, distill):
    cfg = micro_cfg(router, max_steps=1, distill=distill)
    result = Trainer(cfg, BagDataset(table, cfg), tmp_path, progress=False).fit()
    assert np.isfinite(result.metrics["loss"])
    assert ("cog_mimic" in result.metrics) == ("mse" in distill)
    assert (result.checkpoint / "teacher.safetensors").is_file() == (distill != "none")


def test_cli_train(bag_root, micro_cfg, tmp_path, capsys):
    cfg_path = tmp_path / "micro.yaml"
    save_model_config(micro_cfg(), cfg_path)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--data", str(bag_root), "--out", str(out), "--steps", "2",
                 "--seed", "1", "--no-progress"]) == 0
    assert "trained to step 2" in capsys.readouterr().out
    assert (out / "checkpoints" / "latest").read_text() == "step_0000002"
    assert (out / "metrics.csv").is_file()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert main(["train", "--config", str(cfg_path), "--data", str(bag_root), "--out", str(out), "--steps", "3",
                     "--seed", "1", "--resume", "--no-progress", "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1  # --threads sets torch's intra-op threads for the run
    finally:
        torch.set_num_threads(threads)
    assert "trained to step 3 (1 steps" in capsys.readouterr().out


def test_learning_rate_warms_up_then_follows_a_cosine_to_ten_percent(micro_cfg):
    from mole_inference.training.trainer import learning_rate

    t = micro_cfg(learning_rate=1e-3, warmup_steps=10, lr_schedule="cosine", max_steps=110).training
    assert learning_rate(t, 0) == pytest.approx(1e-4) and learning_rate(t, 9) == pytest.approx(1e-3)
    assert learning_rate(t, 60) == pytest.approx(0.55e-3)  # half way through the cosine
    assert learning_rate(t, 110) == pytest.approx(1e-4) and learning_rate(t, 500) == pytest.approx(1e-4)
    const = micro_cfg(learning_rate=1e-3, warmup_steps=0, lr_schedule="constant").training
    assert learning_rate(const, 0) == learning_rate(const, 10_000) == 1e-3


def test_a_position_only_subgoal_head_fills_the_position_rows_of_a_rotation_head():
    old, new = torch.nn.Linear(8, 3), torch.nn.Linear(8, 6)
    fresh = new.weight[3:].detach().clone()
    assign_goal_head(new, old.state_dict())
    assert torch.equal(new.weight[:3], old.weight) and torch.equal(new.bias[:3], old.bias)
    assert torch.equal(new.weight[3:], fresh)  # rotation rows keep their initialization
    with pytest.raises(CheckpointError, match="does not fit"):
        assign_goal_head(old, new.state_dict())


def test_router_lr_scale_puts_the_router_in_its_own_faster_group(table, micro_cfg, tmp_path):
    cfg = micro_cfg(router_lr_scale=10.0)
    trainer = Trainer(cfg, BagDataset(table, cfg), tmp_path, progress=False)
    body, router = trainer.optimizer.param_groups
    router_ids = {id(p) for p in trainer.student.router.parameters()}
    assert {id(p) for p in router["params"]} == router_ids and not router_ids & {id(p) for p in body["params"]}
    trainer.train_step(next(iter(trainer.loader())))
    assert router["lr"] == pytest.approx(10.0 * body["lr"]) and body["lr"] > 0


def test_state_input_trains_from_the_recorded_poses_and_needs_them(table, micro_cfg, tmp_path):
    """vision.state_input: the batch carries each frame's measured pose, the zero-initialised map learns, the
    teacher reads the same state, and a table without poses is refused with the reason."""
    import dataclasses

    from mole_inference.runtime.torch_backend import TorchPolicy

    base = micro_cfg(learning_rate=3e-3)
    cfg = dataclasses.replace(base, vision=dataclasses.replace(base.vision, state_input=True))
    data = BagDataset(table, cfg)
    np.testing.assert_array_equal(data.states.numpy(), table.states.astype(np.float32))
    trainer = Trainer(cfg, data, tmp_path, progress=False)
    batch = next(iter(trainer.loader()))
    assert batch["state"].shape == (4, 7)
    for _ in range(3):
        trainer.train_step(batch)
    assert trainer.student.state_input.proj.weight.abs().sum() > 0  # it learned from zero
    policy = TorchPolicy.from_checkpoint(trainer.save())
    assert policy.uses_state
    with pytest.raises(Exception, match="measured EE pose"):
        BagDataset(dataclasses.replace(table, states=np.full_like(table.states, np.nan)), cfg)
    assert BagDataset(dataclasses.replace(table, states=None), base)  # models without it do not care
