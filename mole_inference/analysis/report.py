"""`mole-vla analyze` output: four figures, `analysis.json` with exactly the numbers each figure draws, and a
short `report.md` that embeds the figures and prints those numbers (3 decimals)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from mole_inference.analysis import plots
from mole_inference.analysis.routing import RoutingAnalysis
from mole_inference.errors import InputError

FIGURES = {"usage": "layer_usage.png", "entropy": "router_entropy.png", "cosine": "cosine_similarity.png",
           "raster": "routing_raster.png"}


def _num(x: float) -> float | None:
    return None if not math.isfinite(float(x)) else round(float(x), 9)


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


def figure_data(analysis: RoutingAnalysis, episode: int | None = None) -> dict:
    """The numbers behind every figure (JSON-ready; NaN -> None): usage, entropy, cosine, raster episode."""
    present = sorted(set(analysis.episode_id.tolist()))
    if not present:
        raise InputError("no frames to analyze")
    episode = present[0] if episode is None else episode
    if episode not in present:
        raise InputError(f"episode {episode} has no analyzed frames; choose one of {present}")
    full, routed = analysis.cosine_means()
    entropy = analysis.entropy_by_task()
    return {
        "num_layers": analysis.num_layers,
        "frames": len(analysis.layers),
        "mean_layers_run": float(np.mean([len(x) for x in analysis.layers])),
        "usage": {t: [_num(v) for v in u] for t, u in analysis.usage().items()},
        "entropy": {t: {"frames": int(e.size), "mean": _num(e.mean()), "min": _num(e.min()), "max": _num(e.max()),
                        "values": [_num(v) for v in e]} for t, e in entropy.items()},
        "max_entropy": _num(math.log(analysis.num_layers)),
        "cosine": {"all_layers": [_num(v) for v in full], "routed": [_num(v) for v in routed]},
        "raster": {"episode": analysis.episodes[episode], "episode_index": int(episode),
                   "layers_per_frame": analysis.episode_layers(episode)},
    }


def write_report(analysis: RoutingAnalysis, out: str | Path, checkpoint: str = "", episode: int | None = None
                 ) -> Path:
    """Write the figures, analysis.json and report.md into `out`; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = figure_data(analysis, episode)
    k = data["num_layers"]
    plots.layer_usage_png(data["usage"], out / FIGURES["usage"], "fraction of frames in which each layer ran")
    plots.entropy_png({t: e["values"] for t, e in data["entropy"].items()}, k, out / FIGURES["entropy"])
    cos = data["cosine"]
    plots.cosine_png([np.nan if v is None else v for v in cos["all_layers"]],
                     [np.nan if v is None else v for v in cos["routed"]], out / FIGURES["cosine"])
    raster = data["raster"]
    plots.routing_png(raster["layers_per_frame"], k, out / FIGURES["raster"],
                      f"layers run per frame, episode {Path(raster['episode']).name}")
    (out / "analysis.json").write_text(json.dumps({"checkpoint": checkpoint, **data}, indent=1) + "\n")

    lines = [f"# Routing of {checkpoint or 'the model'}", "",
             f"{data['frames']} frames, {len(data['usage'])} tasks, {k} LLM layers, "
             f"{data['mean_layers_run']:.3f} layers run per frame on average. Numbers below are the data of each "
             "figure (also in analysis.json).", "",
             "## Layer usage per task", "", f"![layer usage]({FIGURES['usage']})", "",
             "| task | " + " | ".join(f"L{i}" for i in range(k)) + " |",
             "|---|" + "---|" * k]
    lines += [f"| {t} | " + " | ".join(_fmt(v) for v in u) + " |" for t, u in data["usage"].items()]
    lines += ["", "## Router entropy", "", f"![router entropy]({FIGURES['entropy']})", "",
              f"Entropy of the router's softmax over layers, in nats (uniform: ln {k} = {data['max_entropy']:.3f}).",
              "ln K - mean says how far from uniform the router is (0: it does not prefer any layer; top-k still "
              "picks the largest probabilities, however small their lead).",
              "", "| task | frames | mean | min | max | ln K - mean |", "|---|---|---|---|---|---|"]
    lines += [f"| {t} | {e['frames']} | {_fmt(e['mean'])} | {_fmt(e['min'])} | {_fmt(e['max'])} | "
              f"{data['max_entropy'] - e['mean']:.2e} |" for t, e in data["entropy"].items()]
    lines += ["", "## Cosine similarity of consecutive layer outputs (paper Fig. 1B)", "",
              f"![cosine similarity]({FIGURES['cosine']})", "",
              "cos(input of layer k, output of layer k), mean over prompt tokens and frames: with all layers run, "
              "and along the path MoLe picked (mean over the frames where layer k ran; — = never ran). Values near "
              "1 mean the layer barely changes the hidden state.", "",
              "| layer | all layers | MoLe-routed |", "|---|---|---|"]
    pairs = zip(cos["all_layers"], cos["routed"], strict=True)
    lines += [f"| {i} | {_fmt(a)} | {_fmt(r)} |" for i, (a, r) in enumerate(pairs)]
    lines += ["", "## Routing raster of one episode", "", f"![routing raster]({FIGURES['raster']})", "",
              f"Episode `{Path(raster['episode']).name}`: {len(raster['layers_per_frame'])} frames.", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
