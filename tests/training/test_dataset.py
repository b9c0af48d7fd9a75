"""Bags -> dataset: stats with the checkpoint, augmentation, source filtering, mixed-task sampling."""

import numpy as np
import pytest
import torch

from mole_inference.training.dataset import BagDataset, augment, load_table
from mole_inference.training.sampler import MixedTaskSampler


def test_items_shapes_and_normalization(bag_root, micro_cfg):
    cfg = micro_cfg()
    ds = BagDataset(load_table(bag_root, cfg), cfg)
    assert len(ds) == 30 and ds.table.tasks == ["task0", "task1"]
    item = ds[(0, 123)]
    s, t, c = cfg.vision.image_size, cfg.llm.max_text_tokens, cfg.action_head.chunk_size
    assert item["pixels"].shape == (3, s, s) and item["pixels"].dtype == torch.float32
    assert item["pixels"].min() >= 0.0 and item["pixels"].max() <= 1.0
    assert item["ids"].shape == (t,) and item["text_mask"].dtype == torch.bool
    assert item["actions"].shape == (c, 7) and item["actions"].abs().max() <= 1.0
    # dx is +0.005 per action for task0 and -0.005 for task1: q01/q99 span it, gripper stays raw
    np.testing.assert_allclose([ds.stats.q01[0], ds.stats.q99[0]], [-0.005, 0.005])
    assert not ds.stats.mask[6] and set(np.unique(ds.actions[..., 6].numpy())) <= {0.0, 1.0}
    torch.testing.assert_close(ds[(5, 1)], ds[(5, 1)])  # an item is a pure function of (index, seed)
    # 10 frames of 0.1 s: the last frame's chunk has one recorded action, the rest is padding the loss skips
    assert item["action_mask"].shape == (c,) and item["action_mask"].dtype == torch.bool
    last = ds[(9, None)]["action_mask"]
    assert last[0] and not last[1:].any()


def test_hold_samples_filtered_and_teleop_kept(tmp_path, micro_cfg, episode_writer):
    episode_writer(tmp_path / "ep", 0, frames=9, sources=("policy", "teleop", "hold"))
    cfg = micro_cfg()
    table = load_table(tmp_path, cfg)
    assert list(table.source) == ["policy"] * 3 + ["teleop"] * 3  # the hold third is dropped
    everything = load_table(tmp_path, micro_cfg(source_weights={"policy": 1, "teleop": 1, "hold": 1}))
    assert len(everything) == 9
    teleop_heavy = BagDataset(table, micro_cfg(source_weights={"policy": 1, "teleop": 3, "hold": 0}))
    w = teleop_heavy.sample_weights()
    assert w[3] == pytest.approx(3 * w[0]) and w.sum() == pytest.approx(1.0)


def test_augmentation_crops_and_keeps_shape():
    img = np.zeros((28, 28, 3), np.uint8)
    img[:, :14] = 255
    rng = np.random.default_rng(0)
    out = augment(img, rng, crop_scale=0.5, jitter=0.0)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert not np.array_equal(augment(img, np.random.default_rng(1), 0.5, 0.0), augment(img, rng, 0.5, 0.0))
    np.testing.assert_array_equal(augment(img, rng, 1.0, 0.0), img)  # no crop, no jitter: unchanged


def test_sampler_mixes_tasks_and_splits_ranks(bag_root, micro_cfg):
    ds = BagDataset(load_table(bag_root, micro_cfg()), micro_cfg())
    w = ds.sample_weights()
    task_share = np.bincount(ds.table.task_id, weights=w)
    np.testing.assert_allclose(task_share, [0.5, 0.5])  # task0 has 2 episodes, task1 one: balanced anyway
    single = MixedTaskSampler(w, 8, seed=3)
    ranks = [MixedTaskSampler(w, 8, seed=3, rank=r, world_size=2) for r in range(2)]
    for step in (0, 7):
        assert ranks[0].batch(step) + ranks[1].batch(step) == single.batch(step)
    resumed = MixedTaskSampler(w, 8, seed=3, start_step=5, steps=2)
    assert list(resumed) == [single.batch(5), single.batch(6)]
    draws = np.concatenate([[i for i, _ in single.batch(s)] for s in range(200)])
    share = np.bincount(ds.table.task_id[draws], minlength=2) / len(draws)
    assert abs(share[0] - 0.5) < 0.05


def test_early_frames_are_drawn_more_often(bag_root, micro_cfg):
    table = load_table(bag_root, micro_cfg())
    assert list(table.frame_index[:10]) == list(range(10))
    plain = BagDataset(table, micro_cfg()).sample_weights()
    early = BagDataset(table, micro_cfg(early_frames=3, early_weight=4.0)).sample_weights()
    first, later = table.frame_index < 3, table.frame_index >= 3
    np.testing.assert_allclose(early[first] / early[later].mean(), 4.0 * plain[first] / plain[later].mean())
    assert early.sum() == pytest.approx(1.0)


def test_the_table_is_built_in_one_pass_over_the_episodes(bag_root, micro_cfg):
    """load_table streams the bags: each episode's full-size frames are resized into the table and dropped before
    the next bag is read (a list of every decoded episode first needed all full-size frames at once: 12 GB of RAM
    for 2000 sim episodes). The streamed table equals the one built from a list."""
    from mole_inference.data.bag_reader import list_episodes, read_episode
    from mole_inference.training.dataset import SampleTable
    from mole_inference.training.windows import episode_samples

    cfg = micro_cfg()
    alive: list[int] = []  # episodes whose samples are still referenced when the next one is read

    def stream():
        import gc
        import weakref

        refs = []
        for path in list_episodes(bag_root):
            gc.collect()
            alive.append(sum(r() is not None for r in refs))
            ep = episode_samples(read_episode(path), cfg.action_head.chunk_size, cfg.action_dt)
            refs.append(weakref.ref(ep.frames))
            yield ep
            del ep

    streamed = SampleTable.from_episodes(stream(), cfg.vision.image_size, cfg.training.source_weights)
    listed = load_table(bag_root, cfg)
    assert len(alive) == 3 and max(alive) <= 1  # at most the one the consumer is finishing (a list: 0, 1, 2)
    np.testing.assert_array_equal(streamed.frames, listed.frames)
    np.testing.assert_array_equal(streamed.actions, listed.actions)
    assert streamed.episodes == listed.episodes and len(streamed.episodes) == 3
