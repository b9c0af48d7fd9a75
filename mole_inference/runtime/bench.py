"""Full model vs MoLe timed side by side in one process (interleaved, after warm-up, medians)."""

from __future__ import annotations

import statistics

import numpy as np

BENCH_INSTRUCTION = "pick up the red cube and place it on the blue plate"


def bench_inputs(policy, seed: int = 0) -> tuple:
    """One random 640x480 frame and the bench instruction prepared for `policy`, a noise draw and the state a
    state-input model gets (`export.calibration.calibration_state`): the arguments of `policy.run`."""
    from mole_inference.export.calibration import calibration_state  # torch: loaded with the policy anyway

    rng = np.random.default_rng(seed)
    pixels, ids, mask = policy.prepare(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), BENCH_INSTRUCTION)
    noise = rng.standard_normal((1, policy.chunk_size, 7)).astype(np.float32)
    return pixels, ids, mask, noise, calibration_state(policy.cfg)


def bench(policy, iters: int = 10, warmup: int = 2, seed: int = 0) -> dict[str, float | int | str]:
    """Time `policy.run` with all K layers and with the router's top-k, alternating each iteration.

    `policy` is a staged backend (`prepare`, `run(..., layers=, state=)`, `num_layers`). A policy that
    `uses_state` gets `export.calibration.calibration_state` (the hand above the table) every run. Returns medians
    in ms.
    """
    pixels, ids, mask, noise, state = bench_inputs(policy, seed)
    full_layers = list(range(policy.num_layers))
    runs: dict[str, list[dict[str, float]]] = {"full": [], "mole": []}
    active = 0
    for i in range(warmup + iters):
        for name, layers in (("full", full_layers), ("mole", None)) if i % 2 == 0 else (
                ("mole", None), ("full", full_layers)):
            _, routing, ms = policy.run(pixels, ids, mask, noise, layers=layers, state=state)
            if name == "mole":
                active = routing.num_active
            if i >= warmup:
                runs[name].append(ms)

    def med(name: str, stage: str) -> float:
        return statistics.median(r[stage] for r in runs[name])

    full_ms, mole_ms = med("full", "total"), med("mole", "total")
    llm_full, llm_mole = med("full", "llm"), med("mole", "llm")
    k, total = active, policy.num_layers
    return {
        "full_ms": full_ms, "mole_ms": mole_ms, "speedup": full_ms / mole_ms,
        "active_layers": k, "total_layers": total,
        "router_ms": med("mole", "router"),
        "ideal_ms": (mole_ms - llm_mole) + k / total * llm_full,
        "llm_full_ms": llm_full, "llm_mole_ms": llm_mole,
        "llm_mole_over_ideal": llm_mole / (k / total * llm_full),
        "vision_ms": med("mole", "vision"), "action_head_ms": med("mole", "action_head"),
        "iters": iters,
    }


def cuda_peak_memory(policy) -> dict[str, float]:
    """GiB on the GPU of a `TorchPolicy` on CUDA: the weights, and the peak of one full-layer and one MoLe run of
    the bench's inputs (each measured from a reset peak; the weights are included)."""
    import torch

    pixels, ids, mask, noise, state = bench_inputs(policy)
    out = {"weights_gb": torch.cuda.memory_allocated() / 2**30}
    for name, layers in (("full", list(range(policy.num_layers))), ("mole", None)):
        torch.cuda.reset_peak_memory_stats()
        policy.run(pixels, ids, mask, noise, layers=layers, state=state)
        out[f"peak_{name}_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out
