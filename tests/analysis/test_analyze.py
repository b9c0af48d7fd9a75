"""`mole-vla analyze` on a micro checkpoint and hand-made bags: every file is written, report.md prints the numbers
behind each figure (analysis.json), and those numbers are what the model does (recomputed here independently)."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib not installed (pip install -e '.[plot]')")
pytest.importorskip("torch")

import torch

from mole_inference.analysis.report import FIGURES
from mole_inference.analysis.routing import analyze_routing, layer_cosines
from mole_inference.cli import main
from mole_inference.model.checkpoint import save_checkpoint
from mole_inference.model.tokenizer import load_tokenizer, tokenize_batch
from mole_inference.model.vla import MoLeVLA
from mole_inference.training.dataset import load_table
from tests.training.conftest import micro_config, write_episode


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("analyze")
    bags = root / "bags"
    write_episode(bags / "ep0", 0, frames=6)
    write_episode(bags / "ep1", 1, frames=6)
    write_episode(bags / "ep2", 0, frames=6)
    cfg = micro_config()
    torch.manual_seed(0)
    model = MoLeVLA(cfg).eval()
    table = load_table(bags, cfg)
    ckpt = save_checkpoint(root / "ckpt", model, cfg, table.action_stats())
    return root, bags, ckpt, model, table


@pytest.fixture(scope="module")
def result(setup):
    root, bags, ckpt, _, _ = setup
    out = root / "out"
    assert main(["analyze", str(ckpt), "--data", str(bags), "--out", str(out), "--batch-size", "5"]) == 0
    return out, json.loads((out / "analysis.json").read_text()), (out / "report.md").read_text()


def table_rows(report: str, header: str) -> list[list[str]]:
    """Cells of the markdown table whose header row starts with `header`."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def close(text: str, value) -> bool:
    return text == "—" if value is None else abs(float(text) - value) <= 5e-4


def test_files_are_written(result):
    out, data, report = result
    for name in FIGURES.values():
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name
        assert f"]({name})" in report, name
    assert data["frames"] == 18 and data["num_layers"] == 4


def test_report_prints_the_numbers_behind_each_figure(result):
    _, data, report = result
    usage = table_rows(report, "| task | L0")
    assert [r[0] for r in usage] == list(data["usage"])
    for row in usage:
        assert all(close(c, v) for c, v in zip(row[1:], data["usage"][row[0]], strict=True)), row
    for row in table_rows(report, "| task | frames | mean"):
        e = data["entropy"][row[0]]
        assert int(row[1]) == e["frames"] and close(row[2], e["mean"]) and close(row[3], e["min"])
        assert close(row[4], e["max"]) and float(row[5]) == pytest.approx(data["max_entropy"] - e["mean"], rel=0.01)
        assert e["mean"] == pytest.approx(np.mean(e["values"]), abs=1e-5)
    cos = table_rows(report, "| layer | all layers")
    assert len(cos) == data["num_layers"]
    for i, row in enumerate(cos):
        assert close(row[1], data["cosine"]["all_layers"][i]) and close(row[2], data["cosine"]["routed"][i])
    assert f"{len(data['raster']['layers_per_frame'])} frames" in report
    assert re.search(rf"{data['mean_layers_run']:.3f} layers run per frame", report)


def test_numbers_are_what_the_model_does(setup, result):
    _, _, _, model, table = setup
    _, data, _ = result
    cfg = model.cfg
    tok = load_tokenizer(cfg.llm.tokenizer, cfg.llm.vocab_size, cfg.llm.text_tokenizer)
    ids, mask = tokenize_batch(tok, table.instructions, cfg.llm.max_text_tokens)
    chosen, entropy = [], []
    with torch.inference_mode():
        for f in range(len(table)):
            pixels = torch.from_numpy(table.frames[f].transpose(2, 0, 1).copy()).float()[None] / 255.0
            i = int(table.instruction_id[f])
            _, out, layers = model.cognition(pixels, ids[i : i + 1], mask[i : i + 1])
            chosen.append(layers[0])
            p = out.probs[0].double()
            entropy.append(float(-(p * p.log()).sum()))
    for t, name in enumerate(table.tasks):
        frames = [c for c, tid in zip(chosen, table.task_id, strict=True) if tid == t]
        expected = [sum(k in c for c in frames) / len(frames) for k in range(model.num_layers)]
        assert data["usage"][name] == pytest.approx(expected, abs=1e-6)
        got = data["entropy"][name]["values"]
        assert got == pytest.approx([e for e, tid in zip(entropy, table.task_id, strict=True) if tid == t], abs=1e-5)
    e0 = data["raster"]["episode_index"]
    expected = [c for c, eid in zip(chosen, table.episode_id, strict=True) if eid == e0]
    assert data["raster"]["layers_per_frame"] == expected
    assert all(len(c) == cfg.router.num_active_layers for c in chosen)
    assert data["max_entropy"] == pytest.approx(math.log(model.num_layers), abs=1e-6)


def test_routed_path_is_the_models_own(setup):
    _, _, _, model, table = setup
    analysis = analyze_routing(model, table, batch_size=4, max_frames=6)
    ran = analysis.ran()
    assert np.array_equal(np.isfinite(analysis.cos_routed), ran)  # a cosine exactly where a layer ran
    assert np.all(analysis.cos_full <= 1 + 1e-5) and np.all(analysis.cos_full > -1)
    with torch.inference_mode():
        pixels = torch.rand(2, 3, 28, 28)
        ids = torch.randint(0, 200, (2, 12))
        text_mask = torch.ones(2, 12, dtype=torch.bool)
        img, text = model.encode_image(pixels), model.embed_text(ids)
        h, key_mask = model.prompt(img, text, text_mask)
        for layers in ([0, 1, 2, 3], [1, 3], [2]):
            cos, hidden = layer_cosines(model, h, key_mask, layers)
            torch.testing.assert_close(hidden, model.hidden_states(h, key_mask, layers=layers))
            assert torch.isfinite(cos[:, layers]).all() and torch.isnan(cos).sum() == 2 * (4 - len(layers))
