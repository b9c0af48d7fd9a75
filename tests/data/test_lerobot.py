"""LeRobot v3.0 both ways: episode bags -> export -> the v3.0 layout, and back as the same training samples."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mole_inference.cli import main
from mole_inference.control.transforms import quat_from_rpy
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata
from mole_inference.data.images import rgb_to_image_msg
from mole_inference.data.lerobot.export import IMAGE_KEY, export_lerobot
from mole_inference.data.lerobot.reader import read_lerobot
from mole_inference.data.lerobot.video import decode_at
from mole_inference.data.schema import IMAGE_TOPIC, INSTRUCTION_TOPIC, MEASURED_POSE_TOPIC
from mole_inference.errors import InputError
from mole_inference.sim.demos import pose_msg
from mole_inference.training.dataset import load_table
from mole_inference.training.sources import load_source_table
from tests.training.conftest import micro_config

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
SIZE = 32
ALL_SOURCES = {"policy": 1.0, "teleop": 1.0, "hold": 1.0}


def frame(task: int, k: int) -> np.ndarray:
    """Smooth colour per task with a bright band that moves with time (codec-friendly, still distinct)."""
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[..., task % 3] = 90 + 50 * task
    img[..., (task + 1) % 3] = np.linspace(0, 200, SIZE, dtype=np.uint8)[None, :]
    img[(3 * k) % (SIZE - 4) : (3 * k) % (SIZE - 4) + 4, :, :] = 230
    return img


def write_bag(path, task: int, frames: int = 8, tick_ms: int = 20, teleop_from: int | None = None,
              lost_ticks: int = 0) -> None:
    """10 Hz frames, deltas every `tick_ms` (policy, then teleop from tick `teleop_from`), measured poses per
    tick, an instruction change halfway; the last `lost_ticks` ticks are never logged (a trailing partial)."""
    meta = EpisodeMetadata(task=f"task{task}", instruction=f"do task {task}")
    n_ticks = frames * 100 // tick_ms - lost_ticks
    with EpisodeBagWriter(path, "mcap", meta, start_ns=T0) as w:
        w.write_text(INSTRUCTION_TOPIC, f"do task {task}", T0 + 1)
        w.write_text(INSTRUCTION_TOPIC, f"now finish task {task}", T0 + 10 * MS + frames // 2 * 100 * MS - MS)
        for k in range(frames):
            t = T0 + 10 * MS + k * 100 * MS
            w.write(IMAGE_TOPIC, rgb_to_image_msg(frame(task, k), t), t)
        for j in range(n_ticks):
            t = T0 + 10 * MS + j * tick_ms * MS
            pos = np.array([0.4 + 0.001 * j, 0.01 * task, 0.3])
            w.write(MEASURED_POSE_TOPIC, pose_msg(pos, quat_from_rpy(np.pi, 0.0, 0.01 * j), t - MS), t - MS)
            src = "teleop" if teleop_from is not None and j >= teleop_from else "policy"
            w.write_ee_delta([0.001 * (task + 1), -0.0005 * j, 0.0003, 0.0, 0.001, 0.002 * task,
                              1.0 if j < n_ticks // 2 else 0.0], src, t)
        w.close(success=True, t_ns=T0 + frames * 100 * MS + 50 * MS)


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    root = tmp_path_factory.mktemp("bags")
    write_bag(root / "ep0", 0)
    write_bag(root / "ep1", 1, teleop_from=12, lost_ticks=2)
    write_bag(root / "ep2", 0, frames=6, tick_ms=100)  # deltas at the policy rate, one per frame
    return root


@pytest.fixture(scope="module")
def exported(bags, tmp_path_factory):
    out = tmp_path_factory.mktemp("lerobot") / "ds"
    result = export_lerobot(bags, out, fps=10, image_size=SIZE, progress=False)
    assert (result.episodes, result.frames, result.tasks) == (3, 22, 4)
    return out


def test_export_follows_the_v30_layout(exported):
    info = json.loads((exported / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0"
    for key in ("robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
                "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "data_path", "video_path"):
        assert key in info, key
    assert (info["total_episodes"], info["total_frames"], info["total_tasks"], info["fps"]) == (3, 22, 4, 10)
    assert info["splits"] == {"train": "0:3"} and info["chunks_size"] == 1000
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    video = feats[IMAGE_KEY]
    assert video["dtype"] == "video" and video["shape"] == [SIZE, SIZE, 3]
    assert video["names"] == ["height", "width", "channels"]
    assert video["info"]["video.codec"] == "av1" and video["info"]["video.pix_fmt"] == "yuv420p"
    assert (video["info"]["video.fps"], video["info"]["video.height"], video["info"]["has_audio"]) == (10, SIZE, False)
    assert feats["observation.state"] == {"dtype": "float32", "shape": [7],
                                          "names": ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]}
    assert feats["action"]["dtype"] == "float32" and feats["action"]["shape"] == [7]
    for key, dtype in (("timestamp", "float32"), ("frame_index", "int64"), ("episode_index", "int64"),
                       ("index", "int64"), ("task_index", "int64"), ("next.done", "bool"),
                       ("intervention", "bool"), ("action.source", "string"), ("action.valid", "bool")):
        assert feats[key]["dtype"] == dtype and feats[key]["shape"] == [1], key

    for rel in ("meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                "data/chunk-000/file-000.parquet", f"videos/{IMAGE_KEY}/chunk-000/file-000.mp4"):
        assert (exported / rel).is_file(), rel

    data = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    assert set(data.column_names) == {k for k, f in feats.items() if f["dtype"] != "video"}
    assert data.schema.field("action").type == pa.list_(pa.float32(), 7)
    assert data.schema.field("observation.state").type == pa.list_(pa.float32(), 7)
    assert data.schema.field("timestamp").type == pa.float32()
    assert data.schema.field("next.done").type == pa.bool_()
    for key in ("frame_index", "episode_index", "index", "task_index"):
        assert data.schema.field(key).type == pa.int64(), key
    assert data.column("index").to_pylist() == list(range(22))
    ep_index = np.array(data.column("episode_index").to_pylist())
    done = np.array(data.column("next.done").to_pylist())
    assert list(np.flatnonzero(done)) == [7, 15, 21] and list(np.bincount(ep_index)) == [8, 8, 6]
    np.testing.assert_allclose(data.column("timestamp").to_numpy()[:8], np.arange(8) / 10, atol=1e-7)

    tasks = pq.read_table(exported / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "task"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    assert tasks.column("task").to_pylist()[:2] == ["do task 0", "now finish task 0"]

    eps = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    assert [e["length"] for e in eps] == [8, 8, 6]
    assert [(e["dataset_from_index"], e["dataset_to_index"]) for e in eps] == [(0, 8), (8, 16), (16, 22)]
    prefix = f"videos/{IMAGE_KEY}/"
    assert [(e[prefix + "from_timestamp"], e[prefix + "to_timestamp"]) for e in eps] == [
        (0.0, 0.8), (0.8, 1.6), (1.6, 2.2)]
    for e in eps:
        assert e["tasks"] == [f"do task {e['mole/task'][-1]}", f"now finish task {e['mole/task'][-1]}"]
        for key in ("data/chunk_index", "data/file_index", prefix + "chunk_index", prefix + "file_index",
                    "meta/episodes/chunk_index", "meta/episodes/file_index"):
            assert e[key] == 0, key
        assert e["stats/action/count"] == [e["length"]] and len(e["stats/action/q99"]) == 7

    stats = json.loads((exported / "meta/stats.json").read_text())
    for key in ("observation.state", "action", IMAGE_KEY, "timestamp", "next.done"):
        assert set(stats[key]) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}, key
    assert np.array(stats[IMAGE_KEY]["mean"]).shape == (3, 1, 1) and stats["action"]["count"] == [22]
    assert np.min(stats[IMAGE_KEY]["min"]) >= 0.0 and np.max(stats[IMAGE_KEY]["max"]) <= 1.0
    all_actions = np.array(data.column("action").to_pylist())
    np.testing.assert_allclose(stats["action"]["mean"], all_actions.mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(stats["action"]["std"], all_actions.std(axis=0), atol=1e-6)

    frames = decode_at(exported / f"videos/{IMAGE_KEY}/chunk-000/file-000.mp4", np.arange(22) / 10, 0.05,
                       lambda x: x)
    assert len(frames) == 22 and frames[0].shape == (SIZE, SIZE, 3)


def test_exported_rows_carry_state_sources_and_partial_windows(exported):
    _, eps = read_lerobot(exported, state_key="observation.state")
    ep1 = eps[1]
    assert list(ep1.source) == ["policy"] * 2 + ["teleop"] * 6  # ticks 12.. are teleop: frame 2 on
    assert list(ep1.valid) == [True] * 7 + [False]  # the last window lost 2 of its 5 ticks
    np.testing.assert_allclose(ep1.state[0, :3], [0.4, 0.01, 0.3], atol=1e-6)  # the first pose fills frame 0
    np.testing.assert_allclose(ep1.state[3, 3:6], [np.pi, 0.0, 0.15], atol=1e-5)  # rpy at tick 15
    assert ep1.state[0, 6] == 1.0 and ep1.state[-1, 6] == 0.0
    assert eps[2].task == "task0" and eps[2].instructions[-1] == "now finish task 0"


@pytest.mark.parametrize("action_dt", [0.1, 0.2])
def test_round_trip_gives_the_bag_samples(bags, exported, action_dt):
    cfg = micro_config(source_weights=ALL_SOURCES)
    cfg.action_dt = action_dt
    ref = load_table(bags, cfg)
    got = load_source_table(f"lerobot:{exported}", cfg)
    assert len(got) == len(ref) == 22
    assert got.tasks == ref.tasks
    assert [got.instructions[i] for i in got.instruction_id] == [ref.instructions[i] for i in ref.instruction_id]
    if action_dt == 0.1:  # with two rows per action the vote is over rows, not ticks: a takeover may differ
        assert list(got.source) == list(ref.source)
    assert np.array_equal(got.action_mask, ref.action_mask)
    assert np.array_equal(got.task_id, ref.task_id) and np.array_equal(got.episode_id, ref.episode_id)
    if action_dt == 0.1:  # one row per action: the float32 values the dataset stores, bit for bit
        assert np.array_equal(got.actions, ref.actions.astype(np.float32).astype(np.float64))
    else:  # two rows per action, summed from their float32 values
        np.testing.assert_allclose(got.actions, ref.actions, rtol=0, atol=1e-7)
    err = np.abs(got.frames.astype(np.int16) - ref.frames.astype(np.int16))
    assert got.frames.shape == ref.frames.shape and err.mean() < 4 and err.reshape(len(err), -1).mean(1).max() < 8


def test_many_files_read_back_the_same(bags, exported, tmp_path):
    out = tmp_path / "sharded"
    export_lerobot(bags, out, fps=10, image_size=SIZE, codec="h264", progress=False,
                   data_file_mb=1e-4, video_file_mb=1e-4)
    assert len(list((out / "data").rglob("file-*.parquet"))) == 3
    assert len(list((out / "videos" / IMAGE_KEY).rglob("file-*.mp4"))) == 3
    info = json.loads((out / "meta/info.json").read_text())
    assert info["features"][IMAGE_KEY]["info"]["video.codec"] == "h264"
    cfg = micro_config(source_weights=ALL_SOURCES)
    one, many = load_source_table(f"lerobot:{exported}", cfg), load_source_table(f"lerobot:{out}", cfg)
    assert np.array_equal(one.actions, many.actions) and list(one.source) == list(many.source)
    assert np.abs(one.frames.astype(int) - many.frames.astype(int)).mean() < 6


def test_features_it_cannot_map_name_the_flag(exported, bags):
    cfg = micro_config()
    with pytest.raises(InputError, match="--image-key"):
        load_source_table(f"lerobot:{exported}", cfg, image_key="observation.images.top")
    with pytest.raises(InputError, match="--action-key"):
        load_source_table(f"lerobot:{exported}", cfg, action_key="observation.state.velocity")
    with pytest.raises(InputError, match="shape"):
        load_source_table(f"lerobot:{exported}", cfg, action_key="timestamp")
    with pytest.raises(InputError, match="--state-key"):
        load_source_table(f"lerobot:{exported}", cfg, state_key="observation.joints")
    with pytest.raises(InputError, match="whole number"):
        cfg.action_dt = 0.15
        load_source_table(f"lerobot:{exported}", cfg)
    with pytest.raises(InputError, match="apply to LeRobot data"):
        load_source_table(bags, micro_config(), image_key="observation.images.wrist")
    with pytest.raises(InputError, match="not a LeRobot dataset"):
        load_source_table(f"lerobot:{bags}", micro_config())


def test_cli_export_lerobot(bags, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["data", "export-lerobot", str(bags), "--out", str(out), "--fps", "10", "--image-size", "16",
                 "--codec", "h264", "--no-progress"]) == 0
    assert "3 episodes, 22 frames, 4 tasks at 10 fps" in capsys.readouterr().out
    assert json.loads((out / "meta/info.json").read_text())["features"][IMAGE_KEY]["shape"] == [16, 16, 3]
    assert main(["data", "export-lerobot", str(bags), "--out", str(out), "--no-progress"]) == 2
    assert "not empty" in capsys.readouterr().err
