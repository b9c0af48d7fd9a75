"""Training metrics to `<out>/metrics.csv` and, when tensorboard is installed, `<out>/tensorboard/`."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)


class MetricsLogger:
    """Append one row per logged step; on resume, rows after the resumed step are dropped first."""

    def __init__(self, out: Path, resume_step: int = 0, tensorboard: bool = True) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.csv"
        self.fields: list[str] | None = None
        if self.path.is_file():
            rows = list(csv.DictReader(self.path.open()))
            keep = [r for r in rows if resume_step and int(float(r["step"])) <= resume_step]
            self.fields = list(rows[0]) if keep else None
            self._rewrite(keep)
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
            except ImportError:
                log.info("tensorboard is not installed (pip install 'mole-inference[train]'): CSV metrics only")

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        with self.path.open("w", newline="") as f:
            if self.fields:
                w = csv.DictWriter(f, self.fields)
                w.writeheader()
                w.writerows(rows)

    def log(self, step: int, values: dict[str, float]) -> None:
        """Record `values` at `step`."""
        row = {"step": step, **values}
        if self.fields is None:
            self.fields = list(row)
            self._rewrite([])
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(row)
        if self.tb is not None:
            for key, value in values.items():
                self.tb.add_scalar(f"train/{key}", value, step)

    def close(self) -> None:
        """Flush TensorBoard."""
        if self.tb is not None:
            self.tb.close()
