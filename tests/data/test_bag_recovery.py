"""Crash safety: a bag cut off by SIGKILL reads back, after recover_bag, exactly up to its last flush."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mole_inference.data.bag_reader import list_episodes, read_episode
from mole_inference.data.bag_recovery import is_bag_complete, recover_bag, storage_file
from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.mcap_repair import scan_mcap
from mole_inference.data.schema import EE_DELTA_TOPIC, EPISODE_TOPIC, IMAGE_TOPIC
from mole_inference.errors import InputError

REPO = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("sigkill_writer.py")


def _run_and_kill(bag: Path, storage: str, compress: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(bag), storage, "1" if compress else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line, f"writer died early: {proc.stderr.read()}"
        report = json.loads(line)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return report


@pytest.mark.parametrize(("storage", "compress"), [("mcap", False), ("mcap", True), ("sqlite3", False)])
def test_sigkill_mid_episode_recovers_exactly_the_flushed_messages(tmp_path, storage, compress):
    bag = tmp_path / "episode_killed"
    report = _run_and_kill(bag, storage, compress)
    flushed = report["flushed"]
    assert report["unflushed"][EE_DELTA_TOPIC] == flushed[EE_DELTA_TOPIC] + 3
    assert not is_bag_complete(bag)
    assert list_episodes(tmp_path) == []
    assert list_episodes(tmp_path, include_incomplete=True) == [bag]
    with pytest.raises(InputError, match="recover_bag"):
        read_episode(bag)

    result = recover_bag(bag)
    assert result.repaired
    assert result.message_counts == flushed

    episode = read_episode(bag)
    assert episode.recovered
    assert len(episode.camera(IMAGE_TOPIC)) == flushed[IMAGE_TOPIC] == 60
    assert len(episode.deltas) == flushed[EE_DELTA_TOPIC] == 300
    assert episode.camera().rgb.shape == (60, 48, 64, 3)
    np.testing.assert_array_equal(episode.deltas[:, 0], np.repeat(np.arange(60.0), 5))
    assert episode.delta_t_ns.max() < 1_700_000_010_000_000_000  # the unflushed tail is gone, not half-read
    assert episode.metadata.instruction == "stack the red block"
    assert episode.metadata.success is None  # never closed

    again = recover_bag(bag)  # idempotent: a closed/recovered bag is left untouched
    assert not again.repaired and again.message_counts == flushed


def _chunked_mcap(tmp_path: Path) -> tuple[Path, list[dict[str, int]]]:
    """A closed MCAP bag flushed after every 10 deltas; returns (file, counts on disk after each chunk)."""
    bag = tmp_path / "chunked"
    writer = EpisodeBagWriter(bag, "mcap", start_ns=1_000, flush_interval_s=None)
    counts = [dict(writer.flushed_counts)]
    for i in range(50):
        writer.write_ee_delta([i, 0, 0, 0, 0, 0, 0], "teleop", 2_000 + i)
        if i % 10 == 9:
            writer.flush()
            counts.append(dict(writer.flushed_counts))
    writer.close(success=True)
    counts.append(dict(writer.counts))  # the chunk close() wrote (final /mole/episode)
    return storage_file(bag), counts


def test_truncation_anywhere_recovers_up_to_the_last_complete_chunk(tmp_path):
    file, counts = _chunked_mcap(tmp_path)
    data = file.read_bytes()
    with file.open("rb") as bio:
        chunk_ends = [c.end for c in scan_mcap(bio, len(data))[0]]
    assert len(chunk_ends) == len(counts) == 7
    cuts = sorted(
        {
            *range(chunk_ends[0], len(data), len(data) // 40),
            *chunk_ends,
            *(e - 1 for e in chunk_ends[1:]),
            len(data) - 5,
        }
    )
    for k, cut in enumerate(cuts):
        bag = tmp_path / f"cut_{k}"
        bag.mkdir()
        (bag / f"cut_{k}.mcap").write_bytes(data[:cut])
        expected = counts[max(i for i, end in enumerate(chunk_ends) if end <= cut)]
        result = recover_bag(bag)
        assert result.message_counts == expected, f"cut at {cut} of {len(data)}"
        episode = read_episode(bag, decode_images=False)
        np.testing.assert_array_equal(episode.deltas[:, 0], np.arange(len(episode.deltas), dtype=float))


def test_nothing_flushed_raises(tmp_path):
    for name, content in [("empty", b""), ("header_only", b"\x89MCAP0\r\n\x01")]:
        bag = tmp_path / name
        bag.mkdir()
        (bag / f"{name}.mcap").write_bytes(content)
        with pytest.raises(InputError):
            recover_bag(bag)
    with pytest.raises(InputError, match="exactly one"):
        recover_bag(tmp_path)


def test_closed_bag_is_untouched(tmp_path):
    bag = tmp_path / "closed"
    with EpisodeBagWriter(bag, "sqlite3", start_ns=5) as writer:
        writer.write_ee_delta([0] * 7, "hold", 6)
    before = (bag / "metadata.yaml").read_text()
    result = recover_bag(bag)
    assert not result.repaired
    assert result.message_counts == {EPISODE_TOPIC: 2, EE_DELTA_TOPIC: 1}
    assert (bag / "metadata.yaml").read_text() == before


def test_recovered_bag_copy_is_readable_by_rosbags_directly(tmp_path):
    file, _ = _chunked_mcap(tmp_path)
    bag = tmp_path / "copy"
    bag.mkdir()
    shutil.copy(file, bag / "copy.mcap")
    with open(bag / "copy.mcap", "r+b") as f:  # drop summary + footer, as a SIGKILL before close would
        f.truncate(file.stat().st_size - 300)
    recover_bag(bag)
    from rosbags.rosbag2 import Reader

    with Reader(bag) as reader:
        assert reader.message_count == sum(c.msgcount for c in reader.connections) > 0
