"""INT8 calibration data: (frame, instruction) samples from episode bags, and the stage inputs they produce.

Stage inputs are recorded by running the fp32 ONNX pipeline itself, so every stage (each decoder layer, every
DDIM step of the DiT head, every Euler step of the flow expert) is calibrated on the activations it sees at
inference; each sample runs once with the router's top-k and once with all layers, so layers the router rarely
picks still get data. A model with `vision.state_input` is fed one plausible state for every sample
(`calibration_state`): the samples carry no robot state.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mole_inference.errors import InputError
from mole_inference.export.stages import EXAMPLE_STATE
from mole_inference.model.state_input import check_state
from mole_inference.policy.processing import initial_noise

log = logging.getLogger(__name__)

Sample = tuple[np.ndarray, str]  # RGB (H, W, 3) uint8, instruction


@dataclass
class CalibrationSet:
    """Samples that set the INT8 ranges and held-out samples that measure the error against fp32."""

    calib: list[Sample]
    holdout: list[Sample]
    source: str


def bag_samples(root: str | Path, max_frames: int = 64, holdout_fraction: float = 0.25) -> CalibrationSet:
    """Frames spread evenly over the episodes under `root`, each with the instruction active at its time.

    With two or more episodes the last ones are held out whole (new scenes); with one, every fourth frame is.
    """
    from mole_inference.data.bag_reader import list_episodes, read_episode

    episodes = list_episodes(root)
    if not episodes:
        raise InputError(f"calibration bags: no episodes under {root} (folders with metadata.yaml)")
    per_ep = max(1, max_frames // len(episodes))
    grouped: list[list[Sample]] = []
    for path in episodes:
        ep = read_episode(path)
        frames = ep.camera()
        if not len(frames):
            continue
        idx = np.unique(np.linspace(0, len(frames) - 1, min(per_ep, len(frames))).round().astype(int))
        grouped.append([(np.asarray(frames.rgb[i]), ep.instruction_at(int(frames.t_ns[i]))) for i in idx])
    grouped = [g for g in grouped if g]
    if not grouped:
        raise InputError(f"calibration bags: the episodes under {root} have no camera frames")
    if len(grouped) >= 2:
        n_hold = max(1, round(holdout_fraction * len(grouped)))
        calib = [s for g in grouped[:-n_hold] for s in g]
        hold = [s for g in grouped[-n_hold:] for s in g]
    else:
        calib = [s for i, s in enumerate(grouped[0]) if i % 4 != 3]
        hold = [s for i, s in enumerate(grouped[0]) if i % 4 == 3] or grouped[0][-1:]
    log.info("calibration: %d frames from %d episodes, %d held out", len(calib), len(grouped), len(hold))
    return CalibrationSet(calib, hold, str(root))


SYNTHETIC_INSTRUCTIONS = ("pick up the red cube", "place the cup on the plate", "open the drawer",
                          "push the blue block to the left", "stack the green cube on the red one")


def synthetic_samples(n: int = 16, holdout: int = 4, seed: int = 0) -> CalibrationSet:
    """Smooth random frames and canned instructions: for benchmarks of random-weight presets without bags."""
    import cv2

    rng = np.random.default_rng(seed)
    out: list[Sample] = []
    for i in range(n + holdout):
        low = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        img = cv2.resize(low, (640, 480), interpolation=cv2.INTER_CUBIC)
        out.append((img, SYNTHETIC_INSTRUCTIONS[i % len(SYNTHETIC_INSTRUCTIONS)]))
    return CalibrationSet(out[:n], out[n:], "synthetic")


def calibration_state(cfg) -> np.ndarray | None:
    """The (7,) float32 state fed where no real one is at hand: every calibration and hold-out frame, and
    `runtime.bench` (`export.stages.EXAMPLE_STATE`: the hand above the table, pointing down); None when the model
    `cfg` does not read one."""
    return check_state(np.asarray(EXAMPLE_STATE), cfg.vision.state_input)


def record_stage_inputs(policy, samples: list[Sample], seed: int = 0, max_per_stage: int = 64
                        ) -> dict[str, list[dict[str, np.ndarray]]]:
    """Inputs of every stage over `samples`, from fp32 `OnnxStages` (routed run and full run per sample).

    At most `max_per_stage` feeds are kept per stage (stages run many times a step, DDIM's denoise, the
    autoregressive family's per-token stages or the flow family's per-Euler-step stages, are thinned evenly over
    the samples), bounding memory on large presets.
    """
    feeds: dict[str, list[dict[str, np.ndarray]]] = defaultdict(list)
    seen: dict[str, int] = defaultdict(int)
    keep_every = {stage: max(1, (2 * len(samples) * n) // max_per_stage)
                  for stage, n in _runs_per_step(policy).items()}

    def observe(stage: str, f: dict[str, np.ndarray]) -> None:
        seen[stage] += 1
        if len(feeds[stage]) < max_per_stage and seen[stage] % keep_every.get(stage, 1) == 0:
            feeds[stage].append({k: np.array(v, copy=True) for k, v in f.items()})

    state = calibration_state(policy.cfg)
    previous = policy.observer
    policy.observer = observe
    try:
        for i, (image, instruction) in enumerate(samples):
            pixels, ids, mask = policy.prepare(image, instruction)
            noise = initial_noise(seed + i, policy.chunk_size, policy.cfg.action_head.action_dim, policy._rng)
            policy.run(pixels, ids, mask, noise, state=state)
            policy.run(pixels, ids, mask, noise, layers=range(policy.num_layers), state=state)
    finally:
        policy.observer = previous
    return dict(feeds)


def _runs_per_step(policy) -> dict[str, int]:
    """Stages run more than once per control step, and how often (the others run once)."""
    head, family = policy.cfg.action_head, getattr(policy, "family", "diffusion")
    if family == "flow":
        from mole_inference.export.flow_stages import expert_stage

        steps = head.flow_steps  # every Euler step runs the suffix, the run expert layers and the velocity
        experts = {expert_stage(i): steps for i in range(policy.cfg.llm.num_layers)}
        return {"suffix": steps, "velocity": steps, **experts}
    if family != "autoregressive":
        return {"denoise": head.ddim_steps}
    from mole_inference.export.token_stages import decode_stage

    fed = head.action_dim - 1  # tokens fed back through the decode layers
    return {"lm_head": head.action_dim, "token_embed": fed,
            **{decode_stage(i): fed for i in range(policy.cfg.llm.num_layers)}}
