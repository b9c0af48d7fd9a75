"""Episode bags round trip: write a known episode (MCAP, MCAP+zstd, sqlite3), read back exact counts and values."""

import numpy as np
import pytest

from mole_inference.data.bag_reader import iter_images, list_episodes, read_episode
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata, new_episode_path
from mole_inference.data.images import header, rgb_to_compressed_msg, rgb_to_image_msg
from mole_inference.data.schema import (
    ACTIVE_SOURCE_TOPIC,
    COMPRESSED_IMAGE_TOPIC,
    EE_DELTA_SOURCES,
    EE_DELTA_TOPIC,
    EPISODE_TOPIC,
    GRIPPER_COMMAND_TOPIC,
    IMAGE_TOPIC,
    INSTRUCTION_TOPIC,
    MEASURED_POSE_TOPIC,
    TARGET_POSE_TOPIC,
    default_typestore,
    encode_ee_delta,
)
from mole_inference.errors import ConfigError, InputError

T0 = 1_700_000_000_000_000_000
MS = 1_000_000
TS = default_typestore()


def pose_msg(t_ns: int, xyz, quat_xyzw):
    geo = TS.types
    pose = geo["geometry_msgs/msg/Pose"](
        position=geo["geometry_msgs/msg/Point"](*map(float, xyz)),
        orientation=geo["geometry_msgs/msg/Quaternion"](*map(float, quat_xyzw)),
    )
    return geo["geometry_msgs/msg/PoseStamped"](header=header(t_ns, "fr3_link0"), pose=pose)


def frame(k: int) -> np.ndarray:
    img = np.zeros((24, 32, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = k, 2 * k, 255 - k
    img[k % 24, :, :] = 255
    return img


def write_demo(path, storage: str, compress: bool = False) -> EpisodeMetadata:
    """30 raw frames (10 Hz, rgb8/bgr8 alternating), 5 PNG frames, 1 instruction, 150 deltas (50 Hz)."""
    meta = EpisodeMetadata(task="pick_cup", instruction="pick up the cup", operator="alice")
    with EpisodeBagWriter(path, storage, meta, start_ns=T0, compress=compress) as w:
        w.write_text(INSTRUCTION_TOPIC, "pick up the cup", T0 + 1)
        w.write_text(ACTIVE_SOURCE_TOPIC, "teleop", T0 + 2)
        for k in range(30):
            t = T0 + 10 * MS + k * 100 * MS
            w.write(IMAGE_TOPIC, rgb_to_image_msg(frame(k), t, encoding=("rgb8", "bgr8")[k % 2]), t)
            if k % 6 == 0:
                w.write(COMPRESSED_IMAGE_TOPIC, rgb_to_compressed_msg(frame(k), t, fmt="png"), t)
            w.write(MEASURED_POSE_TOPIC, pose_msg(t - 5 * MS, [0.3, 0.0, 0.01 * k], [0, 0, 0, 1]), t - 5 * MS)
        for j in range(150):
            t = T0 + 10 * MS + j * 20 * MS
            w.write_ee_delta([j, -j, 0.5, 0.0, 0.1, 0.0, 0.08], EE_DELTA_SOURCES[j // 50], t)
            w.write(TARGET_POSE_TOPIC, pose_msg(t, [0.3, 0.0, j], [0, 0, 0, 1]), t)
            w.write(GRIPPER_COMMAND_TOPIC, TS.types["std_msgs/msg/Float64"](data=0.08), t)
        w.write_text(ACTIVE_SOURCE_TOPIC, "policy", T0 + 1000 * MS)
        w.close(success=True, notes="clean run", t_ns=T0 + 3100 * MS)
    return meta


@pytest.fixture(scope="module", params=[("mcap", False), ("mcap", True), ("sqlite3", False)])
def demo(request, tmp_path_factory):
    storage, compress = request.param
    path = new_episode_path(tmp_path_factory.mktemp(storage), "pick cup", T0)
    write_demo(path, storage, compress)
    return path, read_episode(path)


def test_counts_are_exact(demo):
    _, ep = demo
    assert len(ep.camera(IMAGE_TOPIC)) == 30 and ep.camera(IMAGE_TOPIC).rgb.shape == (30, 24, 32, 3)
    assert len(ep.camera(COMPRESSED_IMAGE_TOPIC)) == 5
    assert ep.camera() is ep.frames[IMAGE_TOPIC]
    assert ep.instructions == ["pick up the cup"]
    assert ep.deltas.shape == (150, 7) and ep.delta_sources.shape == (150,)
    assert len(ep.measured_poses) == 30 and len(ep.target_poses) == 150
    assert ep.gripper_width.shape == (150,) and ep.active_sources == ["teleop", "policy"]
    assert not ep.recovered


def test_values_round_trip(demo):
    path, ep = demo
    for k in range(30):
        np.testing.assert_array_equal(ep.frames[IMAGE_TOPIC].rgb[k], frame(k))
    np.testing.assert_array_equal(ep.frames[COMPRESSED_IMAGE_TOPIC].rgb, np.stack([frame(k) for k in range(0, 30, 6)]))
    np.testing.assert_array_equal(ep.frames[IMAGE_TOPIC].stamp_ns, ep.frames[IMAGE_TOPIC].t_ns)
    np.testing.assert_array_equal(ep.deltas[:, 0], np.arange(150.0))
    np.testing.assert_array_equal(
        ep.deltas[:, 1:], np.tile([[0, 0.5, 0, 0.1, 0, 0.08]], (150, 1)) + np.c_[-np.arange(150.0), np.zeros((150, 5))]
    )
    assert list(ep.delta_sources) == ["policy"] * 50 + ["teleop"] * 50 + ["hold"] * 50
    np.testing.assert_array_equal(ep.target_poses.position[:, 2], np.arange(150.0))
    np.testing.assert_array_equal(ep.measured_poses.as_array()[:, 6], np.ones(30))
    meta = ep.metadata
    assert (meta.task, meta.operator, meta.success, meta.notes) == ("pick_cup", "alice", True, "clean run")
    assert (meta.start_ns, meta.stop_ns) == (T0, T0 + 3100 * MS)
    assert path.name == "episode_20231114_221320_000000_pick_cup"
    stream = list(iter_images(path, COMPRESSED_IMAGE_TOPIC))
    assert [t for t, _ in stream] == list(ep.frames[COMPRESSED_IMAGE_TOPIC].t_ns)


def test_qos_and_metadata_yaml(demo):
    from rosbags.highlevel import AnyReader
    from rosbags.interfaces import QosDurability, QosReliability

    path, _ = demo
    with AnyReader([path]) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert qos[IMAGE_TOPIC].reliability == QosReliability.BEST_EFFORT
    assert qos[INSTRUCTION_TOPIC].durability == QosDurability.TRANSIENT_LOCAL
    assert qos[EE_DELTA_TOPIC].reliability == QosReliability.RELIABLE
    assert counts[EPISODE_TOPIC] == 2  # at start and the updated one at close
    assert "mole.episode" in (path / "metadata.yaml").read_text()


def test_alignment_on_read_back(demo):
    _, ep = demo
    samples = ep.aligned_samples(16)
    assert samples.actions.shape == (30, 16, 7) and samples.pose.shape == (30, 7)
    # frame k is logged with delta 5k: its window starts there
    np.testing.assert_array_equal(samples.actions[3, :, 0], np.arange(15.0, 31.0))
    assert samples.action_mask[:27].all() and samples.action_mask[29].sum() == 150 - 145
    np.testing.assert_array_equal(samples.pose[:, 2], 0.01 * np.arange(30))
    assert samples.instruction == ["pick up the cup"] * 30


def test_raw_cdr_path_round_trip(tmp_path):
    from rosbags.rosbag2 import Reader

    path = tmp_path / "raw"
    delta = encode_ee_delta([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.07], "teleop")
    image = rgb_to_image_msg(frame(3), T0)
    raws = [
        (EE_DELTA_TOPIC, delta.__msgtype__, bytes(TS.serialize_cdr(delta, delta.__msgtype__))),
        (IMAGE_TOPIC, image.__msgtype__, bytes(TS.serialize_cdr(image, image.__msgtype__))),
        (
            INSTRUCTION_TOPIC,
            "std_msgs/msg/String",
            bytes(TS.serialize_cdr(TS.types["std_msgs/msg/String"](data="go"), "std_msgs/msg/String")),
        ),
    ]
    with EpisodeBagWriter(path, "mcap", start_ns=T0) as w:
        for i, (topic, msgtype, data) in enumerate(raws):
            w.write_raw(topic, msgtype, data, T0 + 10 + i)
    with Reader(path) as reader:
        got = {c.topic: data for c, _, data in reader.messages() if c.topic != EPISODE_TOPIC}
    assert got == {topic: data for topic, _, data in raws}
    ep = read_episode(path)
    np.testing.assert_allclose(ep.deltas[0], [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.07])
    np.testing.assert_array_equal(ep.camera().rgb[0], frame(3))
    assert ep.instructions == ["go"] and list(ep.delta_sources) == ["teleop"]


def test_bad_inputs_raise_typed_errors(tmp_path):
    w = EpisodeBagWriter(tmp_path / "bad", "mcap", start_ns=T0)
    with pytest.raises(InputError, match="unknown message type"):
        w.write_raw("/foo", "my_msgs/msg/Nope", b"\x00\x01\x00\x00", T0)
    with pytest.raises(InputError, match="carries"):
        w.write_raw(EE_DELTA_TOPIC, "std_msgs/msg/String", b"\x00\x01\x00\x00\x01\x00\x00\x00\x00", T0)
    with pytest.raises(InputError, match="shape"):
        w.write_ee_delta([0.0] * 6, "policy", T0)
    with pytest.raises(InputError, match="source"):
        w.write_ee_delta([0.0] * 7, "autopilot", T0)
    bad = encode_ee_delta([0.0] * 7, "policy")
    bad.data = np.zeros(5)
    with pytest.raises(InputError, match="shape"):
        w.write(EE_DELTA_TOPIC, bad, T0)
    with pytest.raises(InputError, match="shape"):
        w.write_raw(EE_DELTA_TOPIC, bad.__msgtype__, bytes(TS.serialize_cdr(bad, bad.__msgtype__)), T0)
    with pytest.raises(InputError, match="deserialize"):
        w.write_raw(EE_DELTA_TOPIC, bad.__msgtype__, b"\x00\x01\x00\x00\xff", T0)
    with pytest.raises(InputError, match="t_ns"):
        w.write_ee_delta([0.0] * 7, "hold", -1)
    with pytest.raises(InputError, match="rosbags typestore message"):
        w.write(IMAGE_TOPIC, np.zeros((2, 2, 3), np.uint8), T0)
    w.write_ee_delta([0.0] * 7, "hold", T0 + 1)  # a rejected write leaves the writer usable
    w.close()
    assert w.close() is w.metadata  # idempotent
    with pytest.raises(InputError, match="closed"):
        w.write_ee_delta([0.0] * 7, "hold", T0 + 2)
    with pytest.raises(InputError, match="closed"):
        w.flush()
    with pytest.raises(InputError, match="new_episode_path"):
        EpisodeBagWriter(tmp_path / "bad", "mcap")
    with pytest.raises(ConfigError, match="storage"):
        EpisodeBagWriter(tmp_path / "other", "rosbag1")
    assert read_episode(tmp_path / "bad").deltas.shape == (1, 7)
    with pytest.raises(InputError):
        read_episode(tmp_path / "missing")


def test_exception_inside_with_still_closes(tmp_path):
    path = tmp_path / "crashy"
    with pytest.raises(RuntimeError), EpisodeBagWriter(path, "sqlite3", start_ns=T0) as w:
        w.write_ee_delta([0.0] * 7, "policy", T0 + 1)
        raise RuntimeError("camera unplugged")
    ep = read_episode(path)
    assert "camera unplugged" in ep.metadata.notes and ep.metadata.success is None


def test_list_episodes_sorted(tmp_path):
    for t in (T0 + 2 * 10**9, T0, T0 + 10**9):
        EpisodeBagWriter(new_episode_path(tmp_path / "task_a", "a", t), start_ns=t).close()
    found = list_episodes(tmp_path)
    assert [read_episode(p, decode_images=False).metadata.start_ns for p in found] == [T0, T0 + 10**9, T0 + 2 * 10**9]
    with pytest.raises(InputError):
        list_episodes(tmp_path / "nope")


def test_list_episodes_follows_folder_links_once(tmp_path):
    """A training set as a folder of links to recording sessions: every bag found, none twice, cycles ignored."""
    for name, t in (("session_1", T0), ("session_2", T0 + 10**9)):
        EpisodeBagWriter(new_episode_path(tmp_path / name / "pick", "a", t), start_ns=t).close()
    union = tmp_path / "union"
    union.mkdir()
    (union / "one").symlink_to(tmp_path / "session_1")
    (union / "two").symlink_to(tmp_path / "session_2")
    (union / "one_again").symlink_to(tmp_path / "session_1")
    (tmp_path / "session_2" / "loop").symlink_to(union)
    found = list_episodes(union)
    assert len(found) == 2
    assert sorted(read_episode(p, decode_images=False).metadata.start_ns for p in found) == [T0, T0 + 10**9]
