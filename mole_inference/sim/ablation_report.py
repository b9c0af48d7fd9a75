"""The ablation's outputs: `results.md` (success per task with Wilson CI, FLOPs, measured speed) and
`success_vs_flops.png` (Fig. 3 style), from each variant's `sim eval` report and checkpoint config.

FLOPs per step are analytic (model/flops.py `routed_step_flops`), except for `dynamic_exit`, whose depth depends
on the input: there the mean layers it actually ran in the evaluation are counted.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def variant_row(name: str, checkpoint: Path, report_path: Path) -> dict[str, Any]:
    """One results row: router, distill, k/K, per-task and mean success with CIs, GFLOPs, ms, Hz."""
    from mole_inference.model.checkpoint import read_checkpoint_config
    from mole_inference.model.flops import routed_step_flops, stage_flops

    cfg = read_checkpoint_config(checkpoint)[0]
    report = json.loads(report_path.read_text())
    if cfg.router.type == "dynamic_exit":
        f = stage_flops(cfg)
        flops = f["vision"] + f["router"] + f["llm_layer"] * report["mean_layers_run"] + f["action_head"]
    else:
        flops = routed_step_flops(cfg)
    return {"variant": name, "router": cfg.router.type, "distill": cfg.training.distill,
            "layers": report["mean_layers_run"], "total_layers": report["total_layers"],
            "per_task": report["per_task"], "success_rate": report["success_rate"], "ci95": report["ci95"],
            "gflops": flops / 1e9, "ms": report["inference_ms"]["mean"], "hz": report["inference_hz"],
            "episodes_per_task": report["episodes_per_task"], "seed": report["seed"]}


def results_markdown(rows: list[dict[str, Any]], tasks: list[str], note: str = "") -> str:
    """The results table as Markdown: one row per variant, one column per task."""
    lines = ["# Ablation results", ""]
    if note:
        lines += [note, ""]
    head = ["variant", "router", "distill", "layers run", *tasks, "mean (95 % CI)", "GFLOPs/step", "ms", "Hz"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], r["router"], r["distill"], f"{r['layers']:.2f}/{r['total_layers']}"]
        for task in tasks:
            t = r["per_task"].get(task)
            cells.append("-" if t is None else f"{t['successes']}/{t['episodes']} "
                                               f"({_pct(t['success_rate'])}, {_ci(t['ci95'])})")
        cells += [f"{_pct(r['success_rate'])} ({_ci(r['ci95'])})", f"{r['gflops']:.4g}", f"{r['ms']:.1f}",
                  f"{r['hz']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _ci(ci: list[float]) -> str:
    return f"CI {100 * ci[0]:.0f}-{100 * ci[1]:.0f} %"


def label_heights(points: list[tuple[float, float]], gap: float, x_tol: float) -> list[float]:
    """Label heights for `points` (x, y) so that labels of points within `x_tol` of each other in x are at least
    `gap` apart in y, in the points' order of y, the stack centred on its points (mean offset 0). One height per
    point, in the input order."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    heights = [y for _, y in points]
    clusters: list[list[int]] = []
    for i in order:  # consecutive in x: one cluster while within x_tol of its first member
        if clusters and points[i][0] - points[clusters[-1][0]][0] <= x_tol:
            clusters[-1].append(i)
        else:
            clusters.append([i])
    for members in clusters:
        members.sort(key=lambda i: points[i][1])
        placed: list[float] = []
        for i in members:  # bottom up, each at least `gap` above the one below
            placed.append(max(points[i][1], placed[-1] + gap) if placed else points[i][1])
        shift = (sum(placed) - sum(points[i][1] for i in members)) / len(members)  # centre the stack on them
        for i, h in zip(members, placed, strict=True):
            heights[i] = h - shift
    return heights


def success_vs_flops_png(rows: list[dict[str, Any]], path: Path) -> Path:
    """Mean success (Wilson 95 % error bars) against GFLOPs per step, one labelled point per variant (labels of
    variants at the same compute are stacked apart, with a leader line to their point)."""
    from mole_inference.analysis.plots import COLORS, new_figure, save

    fig = new_figure(7.0, 4.2)
    ax = fig.add_subplot()
    points = [(r["gflops"], 100 * r["success_rate"]) for r in rows]
    span = (max(x for x, _ in points) - min(x for x, _ in points)) if points else 0.0
    heights = label_heights(points, gap=4.0, x_tol=0.02 * span)
    for i, (r, (x, y), h) in enumerate(zip(rows, points, heights, strict=True)):
        lo, hi = r["ci95"]
        color = COLORS[i % len(COLORS)]
        ax.errorbar([x], [y], yerr=[[y - 100 * lo], [100 * hi - y]], fmt="o", capsize=3, color=color)
        ax.annotate(r["variant"], (x, y), xytext=(x + 0.012 * (span or 1.0), h), textcoords="data", fontsize=7,
                    va="center", arrowprops={"arrowstyle": "-", "color": color, "lw": 0.5})
    ax.set_xlabel("GFLOPs per control step")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.set_title("success vs. compute (Fig. 3 style)")
    return save(fig, path)


def write_results(cfg: Any, out: Path, runs: list[Any], quick: bool = False) -> list[dict[str, Any]]:
    """results.md, results.json and success_vs_flops.png (skipped with a warning without matplotlib)."""
    from mole_inference.errors import BackendUnavailableError

    rows = [variant_row(r.name, r.checkpoint, r.report) for r in runs]
    tasks = list(dict.fromkeys(t for r in rows for t in r["per_task"]))
    first = rows[0] if rows else {"episodes_per_task": 0, "seed": 0}
    note = (f"{'QUICK run (wiring check, not a result): ' if quick else ''}"
            f"{first['episodes_per_task']} episode(s) per task on layout seeds {first['seed']}.."
            f"{first['seed'] + first['episodes_per_task'] - 1} for every variant (gripper vote "
            f"{'on' if cfg.eval.gripper_vote else 'off'}, confirmation {cfg.eval.gripper_confirm:g} s); "
            f"data {cfg.data}; "
            "ms / Hz measured on this machine (sim eval's inference time).")
    (out / "results.md").write_text(results_markdown(rows, tasks, note))
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    try:
        success_vs_flops_png(rows, out / "success_vs_flops.png")
    except BackendUnavailableError as exc:
        log.warning("no success_vs_flops.png: %s", exc)
    return rows
