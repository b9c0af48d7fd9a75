"""Episode metadata (the JSON carried on `/mole/episode`) and episode directory naming."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mole_inference.errors import InputError

_SLUG = re.compile(r"[^a-z0-9]+")



def parse_json_object(text: str, what: str = "message") -> dict:
    """A JSON object from `text`; InputError naming `what` when it is not valid JSON or not an object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{what} is not valid JSON: {err}; text={text[:80]!r}") from err
    if not isinstance(value, dict):
        raise InputError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@dataclass
class EpisodeMetadata:
    """What a demonstration was: task, instruction, operator, outcome, start/stop time (ns), notes.

    `success` is None until the episode is closed (or when the recorder crashed before closing).
    `extra` holds any further JSON-serializable fields a recorder wants to keep (e.g. sim seed).
    """

    task: str = ""
    instruction: str = ""
    operator: str = ""
    success: bool | None = None
    start_ns: int | None = None
    stop_ns: int | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialize to one JSON object (keys sorted, so bags diff cleanly)."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EpisodeMetadata:
        """Parse JSON written by `to_json`; unknown keys go to `extra`, InputError on malformed JSON."""
        raw = parse_json_object(text, "episode metadata")
        known = {f.name for f in dataclasses.fields(cls)}
        extra = dict(raw.pop("extra", None) or {})
        extra.update({k: raw.pop(k) for k in list(raw) if k not in known})
        return cls(**raw, extra=extra)


def slugify(text: str, max_len: int = 40) -> str:
    """Lower-case `text` to `[a-z0-9_]` for use in a directory name ("Pick the cup!" -> "pick_the_cup")."""
    return _SLUG.sub("_", text.lower()).strip("_")[:max_len].strip("_")


def episode_dir_name(task: str = "", t_ns: int | None = None) -> str:
    """`episode_<UTC yyyymmdd_HHMMSS_ffffff>[_<task slug>]`: sortable by time, unique per microsecond."""
    t_ns = time.time_ns() if t_ns is None else t_ns
    stamp = datetime.fromtimestamp(t_ns / 1e9, tz=timezone.utc).strftime("%Y%m%d_%H%M%S_%f")
    slug = slugify(task)
    return f"episode_{stamp}_{slug}" if slug else f"episode_{stamp}"


def new_episode_path(root: str | Path, task: str = "", t_ns: int | None = None) -> Path:
    """A not-yet-existing bag directory for a new episode under `root` (the bag writer creates it)."""
    return Path(root) / episode_dir_name(task, t_ns)
