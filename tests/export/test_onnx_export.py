"""Per-stage ONNX export: every graph matches its torch module in fp32; the manifest records what loaders check."""

import json

import pytest

from mole_inference.cli import main
from mole_inference.errors import ConfigError
from mole_inference.export.manifest import Manifest
from mole_inference.export.parity import FP32_TOL, stage_errors
from mole_inference.export.stages import layer_stage, stage_io, stage_modules


def test_every_stage_matches_torch_in_fp32(tiny_export):
    model, man = tiny_export
    errors = stage_errors(model, man)
    assert set(errors) == set(stage_io(model.cfg))
    assert max(errors.values()) <= FP32_TOL, errors


def test_one_graph_per_decoder_layer_at_the_fixed_token_count(tiny_export):
    model, man = tiny_export
    cfg = model.cfg
    stages = man.variants["fp32"]
    assert [n for n in stages if n.startswith("layer_")] == [layer_stage(i) for i in range(cfg.llm.num_layers)]
    h = stages[layer_stage(0)].inputs[0]
    assert h.name == "h" and h.shape == (1, cfg.seq_len, cfg.llm.hidden_size) and h.dtype == "float32"
    assert stages["router"].inputs[1].dtype == "int64" and stages["router"].inputs[2].dtype == "bool"


def test_manifest_records_preset_k_hashes_and_reports(tiny_export):
    model, man = tiny_export
    data = json.loads((man.root / "manifest.json").read_text())
    assert data["preset"] == "tiny" and data["k"] == model.cfg.router.num_active_layers
    assert all(len(digest) == 64 for e in data["variants"]["fp32"].values() for digest in e["files"].values())
    assert data["reports"]["parity_fp32"]["max_abs"] <= FP32_TOL
    reloaded = Manifest.load(man.root, "int8", preset="tiny")
    assert reloaded.model_config() == model.cfg


def test_random_router_is_refused():
    from mole_inference.config import preset
    from mole_inference.model.vla import MoLeVLA

    with pytest.raises(ConfigError, match=r"router.type='random'"):
        stage_modules(MoLeVLA(preset("tiny", router={"type": "random"})))


def test_cli_export_from_preset(tmp_path, capsys):
    assert main(["export", "--preset", "tiny", "--out", str(tmp_path / "e"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["variants"] == ["fp32"] and out["stages"] == 12 and out["parity_fp32"]["max_abs"] <= FP32_TOL


def test_cli_int8_without_calibration_frames_is_a_clear_error(tmp_path, capsys):
    assert main(["export", "--preset", "tiny", "--out", str(tmp_path / "e"), "--int8"]) == 2
    assert "--calib-bags" in capsys.readouterr().err
