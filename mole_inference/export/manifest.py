"""The export manifest (`manifest.json`): stages, shapes, dtypes, file hashes, preset, k, action family; validated
on load.

One export folder holds variants (`fp32/`, `int8/`) of the same stages. Loaders call `Manifest.load`, which
checks that every stage the config needs is present with the shapes it needs, and (by default) that every file
exists with the recorded SHA-256 and declares the recorded inputs and outputs. `family` (the config's
`action_head.type`) tells a runtime which loop drives the stages: DDIM (diffusion), greedy tokens
(autoregressive) or Euler steps (flow); manifests written before it existed are diffusion exports.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from mole_inference.errors import CheckpointError
from mole_inference.export.stages import TensorSpec, stage_io

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = 1
VARIANTS = ("fp32", "int8")


class ManifestError(CheckpointError):
    """An export folder is incomplete, altered, or made for another model; the message says which stage."""


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def stage_files(root: Path, onnx_rel: str) -> dict[str, str]:
    """{relative path: sha256} of a stage's graph and its external-data sidecar when there is one."""
    files = {onnx_rel: sha256(root / onnx_rel)}
    data = f"{onnx_rel}.data"
    if (root / data).is_file():
        files[data] = sha256(root / data)
    return files


@dataclass
class StageEntry:
    """One exported stage: its files (graph first) with hashes, and its I/O specs."""

    name: str
    files: dict[str, str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    @property
    def graph(self) -> str:
        """Relative path of the `.onnx` file."""
        return next(iter(self.files))

    def to_json(self) -> dict:
        """Plain dict for the manifest."""
        return {"files": self.files, "inputs": [s.to_json() for s in self.inputs],
                "outputs": [s.to_json() for s in self.outputs]}

    @classmethod
    def from_json(cls, name: str, data: dict) -> StageEntry:
        """Inverse of `to_json`."""
        return cls(name, dict(data["files"]), [TensorSpec.from_json(s) for s in data["inputs"]],
                   [TensorSpec.from_json(s) for s in data["outputs"]])


@dataclass
class Manifest:
    """What an export folder holds; `load` validates it, `save` writes it."""

    root: Path
    preset: str
    k: int
    config: dict
    action_stats: dict
    opset: int
    variants: dict[str, dict[str, StageEntry]] = field(default_factory=dict)
    reports: dict[str, dict] = field(default_factory=dict)
    family: str = "diffusion"

    def model_config(self):
        """The ModelConfig the stages were exported from."""
        from mole_inference.config import ModelConfig, from_dict

        return from_dict(ModelConfig, self.config)

    def stats(self):
        """The checkpoint's ActionStats."""
        from mole_inference.model.action_stats import ActionStats

        return ActionStats.from_json(self.action_stats, f"{self.root / MANIFEST}: action_stats")

    def path(self, variant: str, stage: str) -> Path:
        """Absolute path of a stage's `.onnx` file."""
        return self.root / self.variants[variant][stage].graph

    def save(self) -> Path:
        """Write `manifest.json` into `root`."""
        data = {"format": FORMAT, "preset": self.preset, "k": self.k, "family": self.family, "opset": self.opset,
                "config": self.config, "action_stats": self.action_stats, "reports": self.reports,
                "variants": {v: {n: e.to_json() for n, e in stages.items()} for v, stages in self.variants.items()}}
        out = self.root / MANIFEST
        out.write_text(json.dumps(data, indent=2))
        return out

    @classmethod
    def load(cls, root: str | Path, variant: str | None = "fp32", preset: str | None = None,
             verify: bool = True) -> Manifest:
        """Read and validate; `variant` must be present (None: any), `preset` must match when given.

        `verify` also hashes every file of `variant` and checks each graph declares the recorded I/O.
        """
        root = Path(root)
        path = root / MANIFEST
        if not path.is_file():
            raise ManifestError(f"{root}: no {MANIFEST}; create it with `mole-vla export --out {root}`")
        try:
            data = json.loads(path.read_text())
            man = cls(root, str(data["preset"]), int(data["k"]), dict(data["config"]), dict(data["action_stats"]),
                      int(data["opset"]), {v: {n: StageEntry.from_json(n, e) for n, e in stages.items()}
                                           for v, stages in data["variants"].items()},
                      dict(data.get("reports", {})), str(data.get("family", "diffusion")))
            fmt = data["format"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"{path}: malformed manifest ({exc!r})") from None
        if fmt != FORMAT:
            raise ManifestError(f"{path}: format {fmt}, this version reads {FORMAT}; re-export")
        if preset is not None and man.preset != preset:
            raise ManifestError(f"{path}: exported for preset {man.preset!r}, expected {preset!r}")
        for v in [variant] if variant is not None else list(man.variants):
            man.validate(v, verify)
        return man

    def validate(self, variant: str, verify: bool = True) -> None:
        """Raise ManifestError unless `variant` has every stage with the shapes the config needs."""
        where = f"{self.root / MANIFEST}"
        if variant not in self.variants:
            hint = " (export with --int8 --calib-bags DIR)" if variant == "int8" else ""
            raise ManifestError(f"{where}: no {variant!r} variant{hint}; has {sorted(self.variants)}")
        cfg = self.model_config()
        if self.family != cfg.action_head.type:
            raise ManifestError(f"{where}: family {self.family!r} but its config has action_head.type="
                                f"{cfg.action_head.type!r} (altered manifest); re-export")
        if not 1 <= self.k <= cfg.llm.num_layers:
            raise ManifestError(f"{where}: k={self.k} outside 1..{cfg.llm.num_layers}")
        stages = self.variants[variant]
        for name, (ins, outs) in stage_io(cfg).items():
            if name not in stages:
                raise ManifestError(f"{where}: {variant} stage {name!r} is missing")
            entry = stages[name]
            for kind, want, got in (("input", ins, entry.inputs), ("output", outs, entry.outputs)):
                if want != got:
                    raise ManifestError(f"{where}: {variant}/{name} {kind}s {_fmt(got)} do not match preset "
                                        f"{cfg.name!r}, which needs {_fmt(want)}")
            if verify:
                self._verify_files(variant, entry)

    def _verify_files(self, variant: str, entry: StageEntry) -> None:
        for rel, digest in entry.files.items():
            f = self.root / rel
            if not f.is_file():
                raise ManifestError(f"{self.root}: {variant}/{entry.name} file {rel} is missing")
            actual = sha256(f)
            if actual != digest:
                raise ManifestError(f"{self.root}: {variant}/{entry.name} file {rel} has sha256 {actual[:12]}..., "
                                    f"manifest says {digest[:12]}... (altered or from another export)")
        declared = graph_io(self.root / entry.graph)
        want = ([(s.name, s.shape) for s in entry.inputs], [(s.name, s.shape) for s in entry.outputs])
        if declared != want:
            raise ManifestError(f"{self.root}: {variant}/{entry.name} graph declares {declared}, manifest {want}")


def graph_io(path: Path) -> tuple[list[tuple[str, tuple[int, ...]]], list[tuple[str, tuple[int, ...]]]]:
    """(name, static shape) of a graph's inputs and outputs, read without its weights."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in g.initializer}

    def dims(v) -> tuple[int, ...]:
        return tuple(d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim)

    return ([(v.name, dims(v)) for v in g.input if v.name not in inits], [(v.name, dims(v)) for v in g.output])


def _fmt(specs: list[TensorSpec]) -> str:
    return ", ".join(f"{s.name}{list(s.shape)}:{s.dtype}" for s in specs)
