"""Training data sources behind one spec: a folder of episode bags, `lerobot:DIR` (a LeRobot v3.x dataset) or
`cache:FILE` (a `table_cache` file written by `mole-vla data cache`).

All give the same `SampleTable` (frame, instruction, action chunk at `action_dt`, mask, source). A LeRobot
dataset has one action per row at its fps; with m = action_dt * fps rows per action (a positive integer),
chunk step j of row i sums the motion of rows i + j*m .. i + (j+1)*m - 1 and takes the gripper of the last
one, as `windows` sums recorded ticks; its source is the majority over those rows (a vote over rows, not
ticks, so at a takeover inside a step it can differ from the bags'). Steps past the episode's end are hold
(no motion, last gripper) and, like steps built from a row marked invalid or a partial group, are masked out
of the loss. For a dataset exported by `mole-vla data export-lerobot` at fps = 1 / action_dt this reproduces
the bag samples.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mole_inference.config.model import ModelConfig
from mole_inference.data.action_windows import SOURCES, ActionWindows
from mole_inference.data.lerobot.layout import EpisodeRows
from mole_inference.errors import InputError
from mole_inference.training.dataset import SampleTable, load_table
from mole_inference.training.windows import EpisodeSamples

log = logging.getLogger(__name__)

LEROBOT_PREFIX = "lerobot:"


def rows_per_action(fps: float, action_dt: float) -> int:
    """m = action_dt * fps; InputError unless it is a positive integer."""
    m = action_dt * fps
    if m < 1 - 1e-6 or abs(m - round(m)) > 1e-6:
        raise InputError(f"LeRobot dataset at {fps:g} fps cannot give actions every action_dt={action_dt:g} s: "
                         "action_dt * fps must be a whole number (export at --fps 1/action_dt)")
    return round(m)


def chunk_rows(rows: EpisodeRows, n: int, m: int) -> ActionWindows:
    """The next `n` actions of every row, each the sum of `m` rows (module docstring): (K, n, A) etc."""
    k, dim = rows.action.shape
    pad = n * m
    motion = np.concatenate([rows.action[:, :-1].astype(np.float64), np.zeros((pad, dim - 1))])  # (K + pad, A-1)
    gripper = np.concatenate([rows.action[:, -1].astype(np.float64), np.full(pad, float(rows.action[-1, -1]))])
    valid = np.concatenate([rows.valid.astype(bool), np.zeros(pad, bool)])
    exists = np.arange(k + pad) < k
    codes = np.array([SOURCES.index(s) if s in SOURCES else 2 for s in rows.source] + [len(SOURCES)] * pad)
    idx = np.arange(k)[:, None, None] + m * np.arange(n)[None, :, None] + np.arange(m)[None, None, :]  # (K, n, m)
    actions = np.zeros((k, n, dim))
    actions[..., :-1] = motion[idx].sum(axis=2)
    actions[..., -1] = gripper[idx[..., -1]]
    mask = valid[idx].all(axis=2)
    votes = (codes[idx][..., None] == np.arange(len(SOURCES))).sum(axis=2)  # (K, n, 3)
    sources = np.where(exists[idx].any(axis=2), np.array(SOURCES)[votes.argmax(axis=2)], "hold")
    return ActionWindows(actions, mask, sources.astype("<U6"))


def lerobot_episode_samples(root: str | Path, cfg: ModelConfig, image_key: str | None = None,
                            action_key: str | None = None, state_key: str | None = None) -> list[EpisodeSamples]:
    """Every episode of a LeRobot dataset as `EpisodeSamples` at the model's chunk size and action_dt."""
    from mole_inference.data.lerobot.reader import read_lerobot

    info, episodes = read_lerobot(root, image_key, action_key, state_key, cfg.vision.image_size)
    m = rows_per_action(float(info["fps"]), cfg.action_dt)
    return [EpisodeSamples(Path(ep.name), ep.task, ep.frames, chunk_rows(ep, cfg.action_head.chunk_size, m),
                           ep.instructions) for ep in episodes]


def load_source_table(spec: str | Path | Sequence[str | Path], cfg: ModelConfig, image_key: str | None = None,
                      action_key: str | None = None, state_key: str | None = None) -> SampleTable:
    """`lerobot:DIR` -> a LeRobot dataset's samples; `cache:FILE` -> a cached table; anything else -> the episode
    bags under it (`load_table`). Several specs -> their union (`SampleTable.concat`): a cache of the data so far
    plus the folder of new recordings, say; the LeRobot keys apply to the LeRobot ones."""
    from mole_inference.training.table_cache import CACHE_PREFIX, load_table_cache

    specs = [spec] if isinstance(spec, (str, Path)) else list(spec)
    keys = (("--image-key", image_key), ("--action-key", action_key), ("--state-key", state_key))
    given = [flag for flag, v in keys if v]
    if given and not any(str(s).startswith(LEROBOT_PREFIX) for s in specs):
        raise InputError(f"{', '.join(given)} apply to LeRobot data: pass --data {LEROBOT_PREFIX}DIR")
    if len(specs) != 1:
        lerobot = [str(s).startswith(LEROBOT_PREFIX) for s in specs]
        tables = [load_source_table(s, cfg, *((image_key, action_key, state_key) if lr else (None, None, None)))
                  for s, lr in zip(specs, lerobot, strict=True)]
        table = SampleTable.concat(tables)
        log.info("dataset: %d sources, %d episodes, %d samples, %d tasks %s", len(specs), len(table.episodes),
                 len(table), len(table.tasks), table.tasks)
        return table
    text = str(specs[0])
    if not text.startswith(LEROBOT_PREFIX):
        if text.startswith(CACHE_PREFIX):
            return load_table_cache(text[len(CACHE_PREFIX):], cfg)
        return load_table(text, cfg)
    root = Path(text[len(LEROBOT_PREFIX):]).expanduser()
    episodes = lerobot_episode_samples(root, cfg, image_key, action_key, state_key)
    if not episodes:
        raise InputError(f"LeRobot dataset {root} has no episodes")
    table = SampleTable.from_episodes(episodes, cfg.vision.image_size, cfg.training.source_weights)
    counts = {s: int((table.source == s).sum()) for s in SOURCES}
    log.info("dataset: LeRobot %s, %d episodes, %d samples, %d tasks, sources %s", root, len(episodes), len(table),
             len(table.tasks), counts)
    return table
