"""Manifest validation: missing files, altered files, another preset or other shapes fail with a clear message."""

import json
import shutil

import pytest

from mole_inference.errors import CheckpointError
from mole_inference.export.manifest import Manifest, ManifestError


@pytest.fixture
def export_copy(tiny_export, tmp_path):
    """A private copy of the fp32 export (tests mutate it)."""
    _, man = tiny_export
    dst = tmp_path / "export"
    shutil.copytree(man.root, dst, ignore=shutil.ignore_patterns("int8"))
    data = json.loads((dst / "manifest.json").read_text())
    data["variants"].pop("int8")
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst


def edit_manifest(root, fn):
    data = json.loads((root / "manifest.json").read_text())
    fn(data)
    (root / "manifest.json").write_text(json.dumps(data))


def test_valid_copy_loads(export_copy):
    man = Manifest.load(export_copy)
    assert man.preset == "tiny" and sorted(man.variants) == ["fp32"]


def test_is_a_checkpoint_error(export_copy):
    (export_copy / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"no manifest\.json; create it with `mole-vla export"):
        Manifest.load(export_copy)


def test_missing_file_names_the_stage(export_copy):
    (export_copy / "fp32" / "layer_03.onnx").unlink()
    with pytest.raises(ManifestError, match=r"fp32/layer_03 file fp32/layer_03\.onnx is missing"):
        Manifest.load(export_copy)


def test_hash_mismatch(export_copy):
    path = export_copy / "fp32" / "denoise.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ManifestError, match=r"fp32/denoise file .* has sha256 .* manifest says"):
        Manifest.load(export_copy)


def test_hashes_are_skipped_when_asked(export_copy):
    path = export_copy / "fp32" / "denoise.onnx"
    path.write_bytes(path.read_bytes() + b"\0")
    Manifest.load(export_copy, verify=False)


def test_wrong_preset(export_copy):
    with pytest.raises(ManifestError, match=r"exported for preset 'tiny', expected 'small'"):
        Manifest.load(export_copy, preset="small")


def test_shapes_that_do_not_match_the_config(export_copy):
    edit_manifest(export_copy, lambda d: d["config"]["llm"].update(max_text_tokens=24))  # tiny exports 16
    with pytest.raises(ManifestError, match=r"fp32/router inputs .* do not match preset 'tiny', which needs"):
        Manifest.load(export_copy)


def test_graph_that_declares_other_io(export_copy):
    def swap(d):
        layer = d["variants"]["fp32"]["layer_00"]
        layer["files"] = {"fp32/cognition.onnx": d["variants"]["fp32"]["cognition"]["files"]["fp32/cognition.onnx"]}

    edit_manifest(export_copy, swap)
    with pytest.raises(ManifestError, match=r"fp32/layer_00 graph declares"):
        Manifest.load(export_copy)


def test_missing_stage_and_missing_variant(export_copy):
    with pytest.raises(ManifestError, match=r"no 'int8' variant .*--int8 --calib-bags"):
        Manifest.load(export_copy, "int8")
    edit_manifest(export_copy, lambda d: d["variants"]["fp32"].pop("layer_05"))
    with pytest.raises(ManifestError, match=r"stage 'layer_05' is missing"):
        Manifest.load(export_copy)


def test_malformed_and_bad_k(export_copy):
    edit_manifest(export_copy, lambda d: d.update(k=99))
    with pytest.raises(ManifestError, match=r"k=99 outside 1\.\.8"):
        Manifest.load(export_copy)
    (export_copy / "manifest.json").write_text("{")
    with pytest.raises(ManifestError, match=r"malformed"):
        Manifest.load(export_copy)
