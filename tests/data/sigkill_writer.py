"""Subprocess for test_bag_recovery: record an episode, report what was flushed, then wait to be SIGKILLed.

Usage: python sigkill_writer.py BAG_DIR STORAGE COMPRESS(0|1). Prints one JSON line `{"flushed": {...},
"unflushed": {...}}` once the last flush happened and more (unflushed) messages were written, then sleeps.
"""

import json
import sys
import time

import numpy as np

from mole_inference.data.bag_writer import EpisodeBagWriter
from mole_inference.data.episode_meta import EpisodeMetadata
from mole_inference.data.images import rgb_to_image_msg
from mole_inference.data.schema import EE_DELTA_SOURCES, IMAGE_TOPIC, INSTRUCTION_TOPIC

T0 = 1_700_000_000_000_000_000


def main() -> None:
    path, storage, compress = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    meta = EpisodeMetadata(task="stack", instruction="stack the red block", operator="test")
    writer = EpisodeBagWriter(
        path, storage, meta, start_ns=T0, chunk_bytes=64 * 1024, flush_interval_s=None, compress=compress
    )
    writer.write_text(INSTRUCTION_TOPIC, meta.instruction, T0 + 1)
    rng = np.random.default_rng(0)
    for i in range(60):  # 60 x 9 KiB frames: several size-triggered flushes along the way
        t = T0 + 10_000_000 + i * 100_000_000
        writer.write(IMAGE_TOPIC, rgb_to_image_msg(rng.integers(0, 255, (48, 64, 3), np.uint8), t), t)
        for j in range(5):
            delta = [i, j, 0.0, 0.0, 0.0, 0.0, 0.04]
            writer.write_ee_delta(delta, EE_DELTA_SOURCES[(i + j) % 3], t + j * 20_000_000)
    writer.flush()
    flushed = dict(writer.flushed_counts)
    for i in range(3):  # stays in the pending chunk / open transaction: lost on SIGKILL
        writer.write_ee_delta([0.0] * 7, "hold", T0 + 10_000_000_000 + i)
    print(json.dumps({"flushed": flushed, "unflushed": dict(writer.counts)}), flush=True)
    time.sleep(60)


if __name__ == "__main__":
    main()
