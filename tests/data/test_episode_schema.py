"""The ee-delta convention, episode metadata JSON, directory names, image codecs and alignment edge cases."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mole_inference.data.episode import Episode, Poses
from mole_inference.data.episode_meta import EpisodeMetadata, episode_dir_name, slugify
from mole_inference.data.images import decode_image, rgb_to_compressed_msg, rgb_to_image_msg
from mole_inference.data.schema import EPISODE_TOPICS, decode_ee_delta, default_typestore, encode_ee_delta
from mole_inference.errors import InputError

REPO = Path(__file__).resolve().parents[2]


def test_ee_delta_convention():
    msg = encode_ee_delta([1, 2, 3, 4, 5, 6, 0.04], "teleop")
    assert msg.__msgtype__ == "std_msgs/msg/Float64MultiArray"
    dim = msg.layout.dim[0]
    assert (dim.label, dim.size, dim.stride) == ("teleop", 7, 7)
    delta, source = decode_ee_delta(msg)
    np.testing.assert_array_equal(delta, [1, 2, 3, 4, 5, 6, 0.04])
    assert source == "teleop"
    with pytest.raises(InputError):
        encode_ee_delta([np.nan] * 7, "policy")
    msg.layout.dim = []
    with pytest.raises(InputError, match="layout"):
        decode_ee_delta(msg)


def test_schema_types_exist_in_typestore():
    ts = default_typestore()
    assert all(spec.msgtype in ts.fielddefs for spec in EPISODE_TOPICS.values())


def test_metadata_json_round_trip():
    meta = EpisodeMetadata(
        task="t", instruction="i", operator="o", success=False, start_ns=1, stop_ns=2, notes="n", extra={"seed": 3}
    )
    assert EpisodeMetadata.from_json(meta.to_json()) == meta
    assert EpisodeMetadata.from_json('{"task": "x", "camera": "gopro"}').extra == {"camera": "gopro"}
    with pytest.raises(InputError):
        EpisodeMetadata.from_json("not json")
    with pytest.raises(InputError):
        EpisodeMetadata.from_json("[1]")


def test_episode_dir_names():
    assert slugify("Pick the Cup!") == "pick_the_cup"
    assert episode_dir_name("Pick the Cup!", 0) == "episode_19700101_000000_000000_pick_the_cup"
    assert episode_dir_name("", 1_500_000) == "episode_19700101_000000_001500"


def test_image_codecs():
    rgb = np.random.default_rng(1).integers(0, 255, (20, 30, 3), np.uint8)
    for enc in ("rgb8", "bgr8"):
        np.testing.assert_array_equal(decode_image(rgb_to_image_msg(rgb, 5, encoding=enc)), rgb)
    np.testing.assert_array_equal(decode_image(rgb_to_compressed_msg(rgb, 5, fmt="png")), rgb)
    smooth = np.broadcast_to(np.linspace(0, 255, 30, dtype=np.uint8)[None, :, None], (20, 30, 3)).copy()
    jpeg = decode_image(rgb_to_compressed_msg(smooth, 5, fmt="jpeg", quality=95))
    assert np.abs(jpeg.astype(int) - smooth).mean() < 3
    padded = rgb_to_image_msg(rgb, 5)
    padded.step, padded.data = 30 * 3 + 6, np.pad(rgb.reshape(20, 90), ((0, 0), (0, 6))).reshape(-1)
    np.testing.assert_array_equal(decode_image(padded), rgb)
    padded.encoding = "16UC1"
    with pytest.raises(InputError, match="encoding"):
        decode_image(padded)
    with pytest.raises(InputError):
        rgb_to_image_msg(rgb[..., 0], 5)


def test_alignment_edges():
    ep = Episode(
        path=Path("x"),
        delta_t_ns=np.array([10, 20, 30]),
        deltas=np.arange(21.0).reshape(3, 7),
        delta_sources=np.array(["policy", "teleop", "hold"]),
        measured_poses=Poses(np.array([15]), np.array([15]), np.zeros((1, 3)), np.array([[0, 0, 0, 1.0]])),
    )
    w = ep.actions_after(20, 4)
    np.testing.assert_array_equal(w.mask, [True, True, False, False])
    np.testing.assert_array_equal(w.actions[:, 6], [13, 20, 20, 20])  # padded with hold: last gripper
    np.testing.assert_array_equal(w.actions[2:, :6], 0)
    assert list(w.sources) == ["teleop", "hold", "", ""]
    assert ep.actions_after(31, 2).mask.sum() == 0 and ep.actions_after(31, 2).actions[0, 6] == 20
    assert np.isnan(ep.pose_at(14)).all() and ep.pose_at(15)[6] == 1
    assert np.isnan(ep.pose_at(100, max_age_ns=50)).all()
    assert ep.instruction_at(0) == ""
    with pytest.raises(InputError):
        ep.actions_after(0, 0)
    with pytest.raises(InputError, match="no frames"):
        ep.camera()


def test_package_import_is_light():
    code = (
        "import sys, mole_inference.data, mole_inference.data.schema, mole_inference.data.episode;"
        "print(','.join(m for m in ('rosbags', 'cv2', 'torch', 'rclpy') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""
