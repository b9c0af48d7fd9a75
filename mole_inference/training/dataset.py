"""`BagDataset`: episode bags -> (image, instruction ids, normalized action chunk) training samples.

Frames are resized once at load to the model's square input (the same area resize the policy uses), so a
dataset of a few thousand frames fits in memory. Each item is augmented CogACT-style: a random square crop
keeping an area fraction in [crop_scale, 1] resized back to the input size (scale 1 is the policy's view),
then brightness/contrast jitter. Actions are resampled to `action_dt` (see `windows`) and normalized with
q01/q99 statistics computed over the recorded (unpadded) actions of the kept samples; those stats travel
with every checkpoint. Items are addressed by `(index, augmentation seed)` so a batch is a pure function of
the sampler's step (resume continues identically, any number of loader workers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mole_inference.config.model import ModelConfig
from mole_inference.errors import InputError
from mole_inference.model.action_stats import ActionStats
from mole_inference.model.state_input import STATE_DIM
from mole_inference.model.tokenizer import check_lengths, load_tokenizer, tokenize_batch
from mole_inference.policy.processing import resize_image
from mole_inference.training.windows import GOAL_DIM, EpisodeSamples, episode_samples

log = logging.getLogger(__name__)


@dataclass
class SampleTable:
    """All samples of a dataset as flat arrays (F rows)."""

    frames: np.ndarray  # (F, S, S, 3) uint8, already resized to the model input
    actions: np.ndarray  # (F, C, 7) robot units
    action_mask: np.ndarray  # (F, C) bool, False where padded (hold)
    source: np.ndarray  # (F,) str: who commanded the first action
    instruction_id: np.ndarray  # (F,) into `instructions`
    task_id: np.ndarray  # (F,) into `tasks`
    episode_id: np.ndarray  # (F,) into `episodes`
    instructions: list[str]
    tasks: list[str]
    episodes: list[Path]
    frame_index: np.ndarray | None = None  # (F,) position of the frame in its episode (0 = first frame)
    goals: np.ndarray | None = None  # (F, 6) offset (m) + rotation vector (rad) to the next subgoal; NaN: unknown
    states: np.ndarray | None = None  # (F, 7) measured EE pose at the frame (windows.robot_states); NaN: unknown

    def __len__(self) -> int:
        return len(self.frames)

    @classmethod
    def from_episodes(cls, episodes: Iterable[EpisodeSamples], image_size: int, source_weights: dict[str, float]
                      ) -> SampleTable:
        """Concatenate episodes, dropping samples whose source has weight 0 (default: hold). One pass: given a
        generator, only one episode's full-size frames are in memory at a time (the table keeps resized ones)."""
        rows: dict[str, list] = {k: [] for k in ("frames", "actions", "mask", "source", "instr", "task", "ep", "idx",
                                                  "goal", "state")}
        instructions: dict[str, int] = {}
        tasks: dict[str, int] = {}
        paths: list[Path] = []
        for e_id, ep in enumerate(episodes):
            paths.append(ep.path)
            keep = np.array([source_weights.get(s, 0.0) > 0 for s in ep.sample_sources], dtype=bool)
            if not keep.any():
                continue
            t_id = tasks.setdefault(ep.task, len(tasks))
            idx = np.flatnonzero(keep)
            rows["frames"].append(np.stack([resize_image(ep.frames[i], image_size) for i in idx]))
            rows["actions"].append(ep.windows.actions[idx])
            rows["mask"].append(ep.windows.mask[idx])
            rows["source"].append(ep.sample_sources[idx])
            rows["instr"].append(np.array([instructions.setdefault(ep.instructions[i], len(instructions))
                                           for i in idx]))
            rows["task"].append(np.full(len(idx), t_id))
            rows["ep"].append(np.full(len(idx), e_id))
            rows["idx"].append(idx)
            rows["goal"].append(ep.goals[idx] if ep.goals is not None else np.full((len(idx), GOAL_DIM), np.nan))
            rows["state"].append(ep.states[idx] if ep.states is not None else np.full((len(idx), STATE_DIM), np.nan))
        if not rows["frames"]:
            raise InputError(f"no usable samples in {len(paths)} episodes (source weights {source_weights})")
        cat = {k: np.concatenate(v) for k, v in rows.items()}
        return cls(cat["frames"], cat["actions"], cat["mask"], cat["source"], cat["instr"], cat["task"], cat["ep"],
                   list(instructions), list(tasks), paths, cat["idx"], cat["goal"],
                   cat["state"])

    @classmethod
    def concat(cls, tables: Sequence[SampleTable]) -> SampleTable:
        """Several tables as one (`--data A --data B`): instruction and task ids point into the merged lists, the
        episodes follow in order. An episode in two tables is an InputError (its samples would count twice, e.g. a
        cache and the bag folder it was built from). An optional column one table lacks is unknown for its rows
        (NaN goals and states); `frame_index` is kept only when every table has it."""
        if not tables:
            raise InputError("no data sources given")
        if len(tables) == 1:
            return tables[0]
        if len({t.frames.shape[1:] for t in tables}) > 1:
            raise InputError(f"data sources have different frame sizes {sorted({t.frames.shape[1:] for t in tables})}")
        seen: dict[str, int] = {}
        twice: list[str] = []
        for i, t in enumerate(tables):
            for p in t.episodes:
                key = str(Path(p).resolve()) if Path(p).exists() else str(p)
                if key in seen:
                    twice.append(f"{p} (sources {seen[key] + 1} and {i + 1})")
                seen[key] = i
        if twice:
            raise InputError(f"{len(twice)} episodes are in two data sources, e.g. {twice[0]}: their samples would "
                             "count twice (pass each recording once)")
        instructions: dict[str, int] = {}
        tasks: dict[str, int] = {}
        instr, task, ep = [], [], []
        offset = 0
        for t in tables:
            instr.append(np.array([instructions.setdefault(s, len(instructions)) for s in t.instructions])[
                t.instruction_id])
            task.append(np.array([tasks.setdefault(s, len(tasks)) for s in t.tasks])[t.task_id])
            ep.append(t.episode_id + offset)
            offset += len(t.episodes)

        def column(name: str, width: int) -> np.ndarray:
            return np.concatenate([getattr(t, name) if getattr(t, name) is not None
                                   else np.full((len(t), width), np.nan) for t in tables])

        index = None
        if all(t.frame_index is not None for t in tables):
            index = np.concatenate([t.frame_index for t in tables])
        else:
            log.warning("a data source has no frame positions: early-frame weighting is off for the union")
        return cls(np.concatenate([t.frames for t in tables]), np.concatenate([t.actions for t in tables]),
                   np.concatenate([t.action_mask for t in tables]), np.concatenate([t.source for t in tables]),
                   np.concatenate(instr), np.concatenate(task), np.concatenate(ep), list(instructions), list(tasks),
                   [p for t in tables for p in t.episodes], index, column("goals", GOAL_DIM),
                   column("states", STATE_DIM))

    def action_stats(self) -> ActionStats:
        """q01/q99 over the recorded (unpadded) actions; the gripper dimension stays unnormalized."""
        return ActionStats.from_actions(self.actions[self.action_mask])  # (M, 7)


def load_table(data: str | Path | list[Path], cfg: ModelConfig) -> SampleTable:
    """Read every closed episode bag under `data` (or the listed bag folders) into a SampleTable."""
    from mole_inference.data.bag_reader import list_episodes, read_episode

    paths = list(data) if isinstance(data, list) else list_episodes(data)
    if not paths:
        raise InputError(f"no closed episode bags under {data}")
    episodes = (episode_samples(read_episode(p), cfg.action_head.chunk_size, cfg.action_dt) for p in paths)
    table = SampleTable.from_episodes(episodes, cfg.vision.image_size, cfg.training.source_weights)
    counts = {s: int((table.source == s).sum()) for s in ("policy", "teleop", "hold")}
    log.info("dataset: %d episodes, %d samples, %d tasks %s, sources %s", len(paths), len(table), len(table.tasks),
             table.tasks, counts)
    return table


def augment(image: np.ndarray, rng: np.random.Generator, crop_scale: float, jitter: float) -> np.ndarray:
    """CogACT-style augmentation of an (S, S, 3) uint8 frame: random square crop + resize, color jitter."""
    import cv2

    size = image.shape[0]
    if crop_scale < 1.0:
        side = max(1, round(size * np.sqrt(rng.uniform(crop_scale, 1.0))))
        y, x = rng.integers(0, size - side + 1, size=2)
        image = cv2.resize(image[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_LINEAR)
    if jitter > 0:
        img = image.astype(np.float32)
        img = img * rng.uniform(1 - jitter, 1 + jitter)  # brightness
        mean = img.mean()
        img = (img - mean) * rng.uniform(1 - jitter, 1 + jitter) + mean  # contrast
        image = np.clip(img, 0, 255).astype(np.uint8)
    return image


class BagDataset(Dataset):
    """Training samples: `dataset[(i, seed)]` -> pixels (3, S, S), ids (T,), text_mask (T,), actions (C, A),
    action_mask (C,) (False for chunk steps past the episode's end: left out of the task loss), goal (6,) the
    offset (m) and rotation vector (rad) to the next subgoal and goal_mask () (False where unknown; see
    windows.subgoal_offsets); with `vision.state_input` also state (7,), the measured EE pose at the frame."""

    def __init__(self, table: SampleTable, cfg: ModelConfig, stats: ActionStats | None = None,
                 augment_images: bool = True) -> None:
        self.table, self.cfg = table, cfg
        self.stats = stats or table.action_stats()
        self.augment_images = augment_images
        tok = load_tokenizer(cfg.llm.tokenizer, cfg.llm.vocab_size, cfg.llm.text_tokenizer)
        check_lengths(tok, table.instructions, cfg.llm.max_text_tokens)
        self.ids, self.text_mask = tokenize_batch(tok, table.instructions, cfg.llm.max_text_tokens)  # (I, T)
        self.actions = torch.from_numpy(self.stats.normalize(table.actions).astype(np.float32))  # (F, C, A)
        self.action_mask = torch.from_numpy(table.action_mask)  # (F, C)
        goals = table.goals if table.goals is not None else np.full((len(table), GOAL_DIM), np.nan)
        self.goal_mask = torch.from_numpy(np.isfinite(goals).all(axis=1))  # (F,)
        self.goals = torch.from_numpy(np.nan_to_num(goals).astype(np.float32))  # (F, 6)
        self.states = None
        if cfg.vision.state_input:  # the model reads the robot state: every sample needs one
            states = table.states if table.states is not None else np.full((len(table), STATE_DIM), np.nan)
            unknown = ~np.isfinite(states).all(axis=1)
            if unknown.any():
                bad = sorted({table.episodes[e].name for e in table.episode_id[unknown]})
                raise InputError(f"vision.state_input needs the measured EE pose at every frame; "
                                 f"{int(unknown.sum())} frames of {len(bad)} episodes have none (first: {bad[:3]})")
            self.states = torch.from_numpy(states.astype(np.float32))  # (F, 7)

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, seed = (key, None) if isinstance(key, (int, np.integer)) else key
        image = self.table.frames[i]
        if self.augment_images and seed is not None:
            t = self.cfg.training
            image = augment(image, np.random.default_rng(seed), t.crop_scale, t.color_jitter)
        pixels = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0  # (3, S, S)
        instr = int(self.table.instruction_id[i])
        item = {"pixels": pixels, "ids": self.ids[instr], "text_mask": self.text_mask[instr],
                "actions": self.actions[i], "action_mask": self.action_mask[i], "goal": self.goals[i],
                "goal_mask": self.goal_mask[i]}
        if self.states is not None:
            item["state"] = self.states[i]  # (7,)
        return item

    def sample_weights(self) -> np.ndarray:
        """Draw probabilities (F,): source weight, times `early_weight` for an episode's first `early_frames`
        frames (where the instruction decides which object to go for), divided by the task's total when
        `task_balance`."""
        t = self.cfg.training
        w = np.array([t.source_weights.get(s, 0.0) for s in self.table.source], dtype=np.float64)
        if t.early_frames > 0 and self.table.frame_index is not None:
            w = np.where(self.table.frame_index < t.early_frames, w * t.early_weight, w)
        if t.task_balance:
            totals = np.bincount(self.table.task_id, weights=w)
            w = w / totals[self.table.task_id]
        return w / w.sum()
