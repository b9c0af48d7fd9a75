"""`mole-vla data cache` / `train --data cache:FILE`: the bag table as one file, exact or lossy, refused for other
configs."""

import numpy as np
import pytest

from mole_inference.cli import main
from mole_inference.errors import InputError
from mole_inference.training.dataset import BagDataset, load_table
from mole_inference.training.sources import load_source_table
from mole_inference.training.table_cache import load_table_cache, parse_codec, save_table


def assert_same_samples(a, b, frames_atol: int = 0):
    assert a.instructions == b.instructions and a.tasks == b.tasks and a.episodes == b.episodes
    for k in ("actions", "action_mask", "source", "instruction_id", "task_id", "episode_id", "frame_index",
              "goals", "states"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    diff = np.abs(a.frames.astype(int) - b.frames.astype(int))
    assert a.frames.shape == b.frames.shape and diff.max() <= frames_atol


@pytest.mark.parametrize("codec", ["png", "raw"])
def test_lossless_codecs_give_back_the_bag_table(bag_root, micro_cfg, tmp_path, codec):
    cfg = micro_cfg()
    table = load_table(bag_root, cfg)
    path = save_table(table, tmp_path / "train.npz", cfg, codec)
    cached = load_source_table(f"cache:{path}", cfg)
    assert_same_samples(table, cached)
    # the dataset built on it: same stats and items as from the bags
    a, b = BagDataset(table, cfg), BagDataset(cached, cfg)
    np.testing.assert_array_equal(a.stats.q01, b.stats.q01)
    for key in ((0, 7), (13, None)):
        for k, v in a[key].items():
            np.testing.assert_array_equal(v.numpy(), b[key][k].numpy(), err_msg=k)


def test_webp_is_smaller_and_close(bag_root, micro_cfg, tmp_path):
    cfg = micro_cfg()
    table = load_table(bag_root, cfg)
    raw = save_table(table, tmp_path / "raw.npz", cfg, "raw")
    webp = save_table(table, tmp_path / "webp.npz", cfg, "webp:90")
    lossy = load_table_cache(webp, cfg)
    with np.load(raw) as r, np.load(webp) as w:  # (these flat test frames deflate well; compare the frame bytes)
        assert len(w["frame_bytes"]) < len(r["frame_bytes"]) / 4
    assert np.abs(lossy.frames.astype(int) - table.frames.astype(int)).mean() < 4.0  # lossy, but the same images
    assert_same_samples(table, lossy, frames_atol=255)  # everything but the pixels is exact


def test_a_cache_for_another_config_is_refused(bag_root, micro_cfg, tmp_path):
    cfg = micro_cfg()
    path = save_table(load_table(bag_root, cfg), tmp_path / "t.npz", cfg)
    other = micro_cfg(source_weights={"policy": 1, "teleop": 1, "hold": 1})
    with pytest.raises(InputError, match=r"kept_sources.*rebuild"):
        load_table_cache(path, other)
    from mole_inference.config import from_dict, to_dict
    from mole_inference.config.model import ModelConfig

    data = to_dict(cfg)
    data["action_head"]["chunk_size"] = cfg.action_head.chunk_size + 1
    with pytest.raises(InputError, match="chunk_size"):
        load_table_cache(path, from_dict(ModelConfig, data))
    with pytest.raises(InputError, match="does not exist"):
        load_table_cache(tmp_path / "missing.npz", cfg)


@pytest.mark.parametrize("bad", ["jpg", "webp", "webp:0", "webp:101", "png:3"])
def test_codec_names_are_checked(bad):
    with pytest.raises(InputError, match="image codec"):
        parse_codec(bad)


def test_cli_cache_then_train_on_it(bag_root, micro_cfg, tmp_path, capsys):
    from mole_inference.config import save_model_config

    cfg_path = tmp_path / "micro.yaml"
    save_model_config(micro_cfg(), cfg_path)
    out = tmp_path / "cache" / "train.npz"
    assert main(["data", "cache", "--data", str(bag_root), "--config", str(cfg_path), "--out", str(out)]) == 0
    assert "30 samples of 3 episodes" in capsys.readouterr().out
    assert main(["train", "--config", str(cfg_path), "--data", f"cache:{out}", "--out", str(tmp_path / "run"),
                 "--steps", "2", "--no-progress"]) == 0
    assert "trained to step 2" in capsys.readouterr().out
    assert main(["data", "cache", "--data", str(bag_root), "--config", str(cfg_path), "--out", str(out),
                 "--image-codec", "gif"]) == 2


def rows(table):
    """Per-row view independent of id order: instruction and task strings, the rest as stored."""
    return {"instruction": np.array(table.instructions)[table.instruction_id],
            "task": np.array(table.tasks)[table.task_id],
            "episode": np.array([str(table.episodes[e]) for e in table.episode_id]),
            **{k: getattr(table, k) for k in ("actions", "action_mask", "source", "frame_index", "goals", "states",
                                              "frames")}}


def test_union_of_a_cache_and_new_bags_is_the_table_of_all_bags(bag_root, micro_cfg, tmp_path):
    cfg = micro_cfg()
    new = tmp_path / "new"
    new.mkdir()
    for name in ("ep1", "ep2"):  # the "new recordings": ep1 brings a second task and instruction
        (new / name).symlink_to(bag_root / name)
    old = save_table(load_table([bag_root / "ep0"], cfg), tmp_path / "old.npz", cfg, "png")
    union = load_source_table([f"cache:{old}", str(new)], cfg)
    everything = load_table([bag_root / "ep0", new / "ep1", new / "ep2"], cfg)
    a, b = rows(union), rows(everything)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert sorted(union.tasks) == ["task0", "task1"] and len(union.episodes) == 3
    assert len(BagDataset(union, cfg)) == len(everything)


def test_union_refuses_a_recording_given_twice(bag_root, micro_cfg, tmp_path):
    cfg = micro_cfg()
    cache = save_table(load_table(bag_root, cfg), tmp_path / "all.npz", cfg, "png")
    with pytest.raises(InputError, match=r"3 episodes are in two data sources.*count twice"):
        load_source_table([f"cache:{cache}", str(bag_root)], cfg)


def test_union_fills_what_one_source_lacks(bag_root, micro_cfg):
    from dataclasses import replace

    from mole_inference.training.dataset import SampleTable

    cfg = micro_cfg()
    a = load_table([bag_root / "ep0"], cfg)
    b = replace(load_table([bag_root / "ep1"], cfg), goals=None, states=None, frame_index=None)  # an old cache
    union = SampleTable.concat([a, b])
    np.testing.assert_array_equal(union.goals[: len(a)], a.goals)
    assert np.isnan(union.goals[len(a):]).all() and np.isnan(union.states[len(a):]).all()
    assert union.frame_index is None  # early-frame weighting needs every row's position
    with pytest.raises(InputError, match="no data sources"):
        SampleTable.concat([])


def test_cli_train_and_cache_on_several_sources(bag_root, micro_cfg, tmp_path, capsys):
    from mole_inference.config import save_model_config

    cfg_path = tmp_path / "micro.yaml"
    save_model_config(micro_cfg(), cfg_path)
    old = tmp_path / "old"
    old.mkdir()
    (old / "ep0").symlink_to(bag_root / "ep0")
    new = tmp_path / "new"
    new.mkdir()
    for name in ("ep1", "ep2"):
        (new / name).symlink_to(bag_root / name)
    first = tmp_path / "old.npz"
    assert main(["data", "cache", "--data", str(old), "--config", str(cfg_path), "--out", str(first)]) == 0
    both = tmp_path / "both.npz"
    assert main(["data", "cache", "--data", f"cache:{first}", "--data", str(new), "--config", str(cfg_path),
                 "--out", str(both)]) == 0
    assert "30 samples of 3 episodes" in capsys.readouterr().out
    assert main(["train", "--config", str(cfg_path), "--data", f"cache:{first}", "--data", str(new),
                 "--out", str(tmp_path / "run"), "--steps", "2", "--no-progress"]) == 0
    assert "trained to step 2" in capsys.readouterr().out
    assert main(["train", "--config", str(cfg_path), "--data", f"cache:{first}", "--data", str(old),
                 "--out", str(tmp_path / "run2"), "--steps", "2", "--no-progress"]) != 0  # ep0 twice
