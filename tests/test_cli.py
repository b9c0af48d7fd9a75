"""The `mole-vla` entry point: info and bench JSON, and one-line errors for user mistakes."""

import json

import pytest

from mole_inference.cli import main


def test_info_cogact_7b_json_on_meta_device(capsys):
    assert main(["info", "--preset", "cogact-7b", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["parameters"]) == {"vision", "llm", "router", "action_head", "total"}
    assert report["router_fraction_of_llm"] < 1e-3
    assert report["flops_mole"] < report["flops_full"]
    assert report["active_layers"] == 16 and report["total_layers"] == 32


def test_bench_tiny_json_fields(capsys):
    assert main(["bench", "--preset", "tiny", "--iters", "2", "--warmup", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    for key in ("full_ms", "mole_ms", "speedup", "active_layers", "total_layers", "router_ms", "ideal_ms",
                "llm_full_ms", "llm_mole_ms"):
        assert key in report, key
    assert (report["active_layers"], report["total_layers"]) == (4, 8)
    assert report["speedup"] == pytest.approx(report["full_ms"] / report["mole_ms"])


def test_user_errors_exit_2_with_one_line(capsys):
    assert main(["info", "--preset", "tiyn"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'tiny'" in err and err.count("\n") == 1


def test_cuda_requested_without_cuda_is_a_clear_error(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["bench", "--preset", "tiny", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
