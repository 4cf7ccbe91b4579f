"""Log hooks for `Trainer.add_log_hook`: callables taking `(metrics, step, prefix)`."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class TensorBoardHook:
    """Writes every numeric metric as a TensorBoard scalar `<prefix>/<name>` at `step`, into
    event files under `<run_dir>/tensorboard/` (rank 0 only: register it there)."""

    def __init__(self, run_dir: Path | str, subdir: str = "tensorboard", flush_secs: int = 30):
        self.log_dir = Path(run_dir) / subdir
        self.flush_secs = flush_secs
        self._writer: Any = None

    @property
    def writer(self) -> Any:
        if self._writer is None:  # created on first use: no empty event file for a dead run
            from torch.utils.tensorboard import SummaryWriter

            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.log_dir), flush_secs=self.flush_secs)
        return self._writer

    def __call__(self, metrics: dict[str, float], step: int, prefix: str) -> None:
        for name, value in metrics.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            if numeric and math.isfinite(float(value)):
                self.writer.add_scalar(f"{prefix}/{name}", float(value), step)
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


__all__ = ["TensorBoardHook"]
