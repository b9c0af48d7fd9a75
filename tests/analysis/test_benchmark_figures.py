"""benchmarks/control_jitter.py --out: JSON and histogram PNGs from the measured samples (fake numbers here;
the benchmark itself is timing-sensitive and not run in tests)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install -e '.[plot]')")

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "control_jitter.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("control_jitter", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_write_results_writes_json_and_histograms(tmp_path):
    rng = np.random.default_rng(0)
    rows = [{"preset": p, "jitter_p99_ms": 1.0,
             "samples": {"jitter_ms": rng.gamma(2, s, 400).tolist(), "latency_ms": rng.normal(60 * s, 5, 50).tolist(),
                         "inference_ms": rng.normal(40 * s, 3, 50).tolist()}}
            for p, s in (("tiny", 0.2), ("small", 0.5))]
    rows.append({"preset": "idle", "samples": {"jitter_ms": [float("nan")], "latency_ms": [], "inference_ms": []}})
    paths = [Path(p) for p in load_benchmark().write_results(rows, str(tmp_path / "bench"))]
    assert [p.name for p in paths] == ["control_jitter.json", "control_jitter.png", "control_latency.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths[1:])
    saved = json.loads(paths[0].read_text())
    assert saved[0]["samples"]["jitter_ms"] == rows[0]["samples"]["jitter_ms"]
