"""`mole-vla sim ablate --quick` end to end on a micro model: base, 3 variants, results.md, plot, resume."""

from __future__ import annotations

import importlib.util
import itertools
import json

import pytest
import yaml

from tests.sim.conftest import missing_sim_reason

pytestmark = [pytest.mark.sim, pytest.mark.skipif(missing_sim_reason() is not None,
                                                  reason=str(missing_sim_reason())),
              pytest.mark.usefixtures("one_torch_thread")]

VARIANTS = ["full", "full_same_steps", "star_cogkd", "dynamic_exit"]


@pytest.fixture(scope="module")
def ablation_yaml(tmp_path_factory):
    """A micro model config, two hand-made bags and an ablation YAML over them (one task, one episode)."""
    from mole_inference.config import save_model_config
    from tests.training.conftest import micro_config, write_episode

    root = tmp_path_factory.mktemp("ablate")
    write_episode(root / "bags" / "ep0", 0)
    write_episode(root / "bags" / "ep1", 1)
    save_model_config(micro_config(), root / "micro.yaml")
    spec = {"data": str(root / "bags"), "config": str(root / "micro.yaml"), "variants": VARIANTS,
            "quick_steps": 2, "quick_episodes": 1, "calibration_samples": 8,
            "eval": {"tasks": ["pick"], "episodes": 50, "seed": 3, "max_seconds": 0.3, "gripper_vote": True,
                     "gripper_confirm": 0.3}}
    path = root / "ablation.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _mtimes(out):
    """Modification times of every weights file and eval report under `out`."""
    return {p: p.stat().st_mtime_ns for p in out.rglob("*")
            if p.is_file() and (p.suffix == ".safetensors" or p.name == "report.json")}


def test_quick_ablation_then_resume_skips_finished(ablation_yaml, tmp_path, capsys, monkeypatch):
    from mole_inference.cli import main
    from mole_inference.errors import ConfigError
    from mole_inference.sim.ablate import load_ablation_config, run_ablation

    out = tmp_path / "ablation"
    assert main(["sim", "ablate", "--config", str(ablation_yaml), "--out", str(out), "--quick",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "star_cogkd" in printed and "trained, evaluated" in printed

    results = (out / "results.md").read_text()
    assert "QUICK" in results and "pick" in results and "gripper vote on, confirmation 0.3 s" in results
    report = json.loads((out / "star_cogkd" / "eval" / "report.json").read_text())
    assert report["gripper_vote"] is True and report["gripper_confirm"] == 0.3  # as sim eval's options
    rows = {r["variant"]: r for r in json.loads((out / "results.json").read_text())}
    assert list(rows) == VARIANTS
    for name in VARIANTS:
        line = next(ln for ln in results.splitlines() if ln.startswith(f"| {name} |"))
        assert "/1 (" in line and "CI " in line  # successes/episodes (rate, Wilson CI): --quick runs 1 episode
        r = rows[name]
        assert 0.0 <= r["ci95"][0] <= r["success_rate"] <= r["ci95"][1] <= 1.0 and r["gflops"] > 0 and r["hz"] > 0
        assert f"{r['gflops']:.4g}" in line
    # compute: the full model runs all 4 layers, STAR top-2 of 4 and fewer FLOPs than full
    assert rows["full"]["layers"] == 4 and rows["star_cogkd"]["layers"] == 2
    assert rows["star_cogkd"]["gflops"] < rows["full"]["gflops"]
    assert (out / "base" / "checkpoints" / "step_0000002" / "model.safetensors").is_file()
    assert (out / "dynamic_exit" / "calibrated" / "config.yaml").is_file()
    assert not (out / "full" / "checkpoints").exists()  # the base itself, not retrained
    assert rows["full_same_steps"]["layers"] == 4 and rows["full_same_steps"]["router"] == "full"
    assert (out / "full_same_steps" / "checkpoints" / "step_0000002" / "model.safetensors").is_file()
    if importlib.util.find_spec("matplotlib"):
        assert (out / "success_vs_flops.png").stat().st_size > 1000

    before = _mtimes(out)
    assert len(before) >= 2 * len(VARIANTS)
    with monkeypatch.context() as m:  # nothing left to train: the demonstrations are not even read
        m.setattr("mole_inference.training.sources.load_source_table",
                  lambda *a: pytest.fail("read the data with nothing to train"))
        runs = run_ablation(load_ablation_config(ablation_yaml), out, resume=True, quick=True, progress=False)
    assert [(r.trained, r.evaluated) for r in runs] == [(False, False)] * len(VARIANTS)
    assert _mtimes(out) == before  # no checkpoint or report rewritten: nothing trained or evaluated

    (out / "star_cogkd" / "eval" / "report.json").unlink()  # a variant trained but not evaluated: eval only
    runs = run_ablation(load_ablation_config(ablation_yaml), out, resume=True, quick=True, progress=False)
    assert [(r.name, r.trained, r.evaluated) for r in runs if r.trained or r.evaluated] == [
        ("star_cogkd", False, True)]

    with pytest.raises(ConfigError, match="--resume"):
        run_ablation(load_ablation_config(ablation_yaml), out, quick=True, progress=False)


def test_unknown_variant_is_a_clear_error(tmp_path):
    from mole_inference.errors import ConfigError
    from mole_inference.sim.ablate import load_ablation_config

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"data": "bags", "preset": "tiny", "variants": ["star_cogkd", "stra"]}))
    with pytest.raises(ConfigError, match=r"bad.yaml.*'stra'.*did you mean 'star'"):
        load_ablation_config(path)


def test_labels_at_the_same_compute_are_stacked_apart_in_order_and_others_stay_put():
    from mole_inference.sim.ablation_report import label_heights

    points = [(0.34, 58.0), (0.48, 72.0), (0.34, 57.0), (0.27, 50.0), (0.34, 65.0), (0.341, 64.0)]
    h = label_heights(points, gap=4.0, x_tol=0.004)
    cluster = [0, 2, 4, 5]
    ys = sorted(cluster, key=lambda i: points[i][1])
    assert [h[i] for i in ys] == sorted(h[i] for i in cluster)  # the labels keep the points' order
    stacked = sorted(h[i] for i in cluster)
    assert min(b - a for a, b in itertools.pairwise(stacked)) >= 4.0 - 1e-9
    assert abs(sum(h[i] - points[i][1] for i in cluster)) < 1e-9  # centred on the cluster
    assert h[1] == 72.0 and h[3] == 50.0  # alone at their compute: at their point
