"""What every converter shares: the bookkeeping of a key mapping, its checks, and reading a source file."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mole_inference.errors import CheckpointError

log = logging.getLogger(__name__)


class UnmatchedKeysError(CheckpointError):
    """Source keys no rule maps, or keys of our model nothing fills: no checkpoint is written."""


@dataclass
class Conversion:
    """Target tensors, and for every source key what became of it."""

    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    ignored: dict[str, str] = field(default_factory=dict)  # source key -> why the source's forward never reads it
    gaps: list[str] = field(default_factory=list)  # what our modules cannot express yet (see docs/convert.md)
    storages: set[int] = field(default_factory=set, repr=False)  # storages already held by a target

    def put(self, target: str, tensor: torch.Tensor, *sources: str) -> None:
        """Fill `target` from the given source keys (marked used).

        A tensor owning its whole storage is kept as is, not copied: a 7B source then costs its size in memory
        once, not twice. Views (a q/k/v split, rows of a padded table) and tensors already given to another
        target are copied, as safetensors refuses to write tensors that share memory.
        """
        if target in self.weights:
            raise CheckpointError(f"converter bug: {target!r} filled twice (from {sources})")
        t = tensor.detach()
        storage = t.untyped_storage()
        whole = t.is_contiguous() and t.storage_offset() == 0 and storage.nbytes() == t.numel() * t.element_size()
        if not whole or t.numel() == 0 or storage.data_ptr() in self.storages:
            t = t.clone(memory_format=torch.contiguous_format)
        self.storages.add(t.untyped_storage().data_ptr())
        self.weights[target] = t
        self.used.update(sources)

    def ignore(self, key: str, reason: str) -> None:
        """Mark a source key as deliberately dropped."""
        self.ignored[key] = reason

    def check(self, source: dict[str, torch.Tensor], target_shapes: dict[str, tuple[int, ...]]) -> None:
        """UnmatchedKeysError listing unmatched source keys, unfilled or unknown targets and shape mismatches."""
        unmatched = sorted(set(source) - self.used - set(self.ignored))
        missing = sorted(set(target_shapes) - set(self.weights))
        unknown = sorted(set(self.weights) - set(target_shapes))
        shapes = sorted(f"{k}: converted {tuple(v.shape)}, model {target_shapes[k]}" for k, v in self.weights.items()
                        if k in target_shapes and tuple(v.shape) != tuple(target_shapes[k]))
        problems = [(f"{len(unmatched)} source keys match no rule", unmatched),
                    (f"{len(missing)} keys of our model are not filled", missing),
                    (f"{len(unknown)} converted keys are not in our model", unknown),
                    (f"{len(shapes)} shape mismatches", shapes)]
        lines = [f"{title}:\n    " + "\n    ".join(keys) for title, keys in problems if keys]
        if lines:
            raise UnmatchedKeysError("conversion refused, no checkpoint written; " + "\n".join(lines))

    def refuse_gaps(self, source: str) -> None:
        """CheckpointError listing the gaps (what the weights assume and our modules cannot express yet)."""
        if self.gaps:
            raise CheckpointError("conversion refused: every key maps, but our modules cannot yet express "
                                  f"{len(self.gaps)} things the weights assume (docs/convert.md):\n    - "
                                  + "\n    - ".join(self.gaps) + "\npass --accept-gaps to write it anyway "
                                  f"(a fine-tuning start, not {source}'s behaviour)")

    def summary(self) -> str:
        """One line for the log: how many keys were mapped and dropped."""
        return f"{len(self.weights)} tensors written from {len(self.used)} source keys, {len(self.ignored)} ignored"


def read_state_dict(path: str | Path) -> dict:
    """A `.pt` / `.bin` (torch.load with weights_only: no pickle code runs) or `.safetensors` file, as loaded."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix not in (".pt", ".pth", ".bin"):
        raise CheckpointError(f"{path}: expected a .pt, .pth, .bin or .safetensors file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; the user needs the path
        raise CheckpointError(f"{path}: cannot read as a weights-only torch file ({exc})") from None


def read_hf_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """A Hugging Face model folder's safetensors: `model.safetensors.index.json` and every shard it names, or a
    single `model.safetensors` (a path to the index or to a single file works too).

    CheckpointError when a shard is missing, a key the index names is not in its shard, or a key is in two shards.
    """
    from safetensors.torch import load_file

    path = Path(folder)
    index = path if path.name.endswith(".index.json") else path / "model.safetensors.index.json"
    if path.is_file() and path.suffix == ".safetensors":
        return load_file(str(path))
    if not index.is_file():
        single = path / "model.safetensors"
        if single.is_file():
            return load_file(str(single))
        raise CheckpointError(f"{path}: neither model.safetensors.index.json nor model.safetensors (a Hugging Face "
                              "model folder, e.g. a download of openvla/openvla-7b, is expected)")
    from mole_inference.convert.stats import read_json

    weight_map = read_json(index, "a safetensors index").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{index}: no weight_map")
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(weight_map.values())):
        file = index.parent / shard
        if not file.is_file():
            raise CheckpointError(f"{index}: shard {shard} is missing (incomplete download?)")
        tensors = load_file(str(file))
        expected = {k for k, v in weight_map.items() if v == shard}
        if missing := sorted(expected - set(tensors)):
            raise CheckpointError(f"{file}: {len(missing)} keys the index puts here are absent: {missing[:5]}")
        if twice := sorted(set(tensors) & set(out)):
            raise CheckpointError(f"{file}: keys also in another shard: {twice[:5]}")
        if extra := sorted(set(tensors) - expected):
            log.warning("%s: %d keys not in the index (read anyway): %s", file, len(extra), extra[:5])
        out.update(tensors)
        log.info("read %s (%d tensors)", file, len(tensors))
    return out


def flatten(tree: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts of tensors -> one dict with dotted keys (`{"a": {"b": t}}` -> `{"a.b": t}`)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, torch.Tensor):
            out[name] = value
        else:
            raise CheckpointError(f"source key {name!r}: expected a tensor or a dict, got {type(value).__name__}")
    return out


def target_model(cfg):
    """Our MoLeVLA for `cfg` on the meta device (no memory): its state-dict shapes are what a converter fills."""
    from mole_inference.model.vla import MoLeVLA

    with torch.device("meta"):
        return MoLeVLA(cfg)


def fill_fresh(conv: Conversion, cfg, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> list[str]:
    """Initialize the modules no public checkpoint has (router, text FiLM) as our training would; returns them."""
    from mole_inference.model.film import TextFiLM
    from mole_inference.model.routers import build_router

    torch.manual_seed(seed)
    fresh = {"router.": build_router(cfg.router, cfg.llm.num_layers, cfg.llm.hidden_size)}
    if cfg.vision.text_film:
        fresh["text_film."] = TextFiLM(cfg.llm.hidden_size)
    filled = []
    for prefix, module in fresh.items():
        for k, v in module.state_dict().items():
            if prefix + k in shapes and prefix + k not in conv.weights:
                conv.put(prefix + k, v)
                filled.append(prefix + k)
    return filled


def save_converted(conv: Conversion, cfg, stats, out: str | Path, metadata: dict[str, str]) -> Path:
    """Our checkpoint folder via `model.checkpoint.save_checkpoint`, tensors assigned onto a meta-device model."""
    from mole_inference.model.checkpoint import save_checkpoint

    model = target_model(cfg)
    model.load_state_dict(conv.weights, strict=True, assign=True)
    return save_checkpoint(out, model, cfg, stats, extra=metadata)
