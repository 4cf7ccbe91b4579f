"""Early stopping and model checkpointing, in the manner of Lightning's callbacks.

Each callback checks its `monitor` against the metrics the run can report before training
starts, and keeps its state in `state_dict()` so a resumed run continues exactly.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.trainer import Trainer

log = logging.getLogger(__name__)


class MonitorError(ValueError):
    """A callback monitors a metric the run does not report."""


def check_monitor(owner: str, monitor: str, available: set[str]) -> None:
    if monitor not in available:
        raise MonitorError(
            f"{owner}.monitor {monitor!r} is not a metric this run reports; "
            f"available: {', '.join(sorted(available))}"
        )


def _improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Callback:
    name = "callback"

    def setup(self, trainer: Trainer, available: set[str]) -> None:
        """Called once before training; raise if the configuration cannot work."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` evaluations."""

    name = "early_stopping"

    def __init__(self, monitor: str, mode: str = "min", patience: int = 10, min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"early_stopping.mode {mode!r}; choose one of min, max")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def setup(self, trainer: Trainer, available: set[str]) -> None:
        check_monitor("early_stopping", self.monitor, available)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.monitor not in metrics:  # not evaluated this epoch
            return
        value = float(metrics[self.monitor])
        if _improved(value, self.best, self.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            trainer.should_stop = True
            log.info(
                "early stopping at epoch %d: %s did not improve for %d evaluations",
                epoch,
                self.monitor,
                self.patience,
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], state["wait"]
        self.stopped_epoch = state["stopped_epoch"]


class ModelCheckpoint(Callback):
    """Keep the `keep_top_k` best checkpoints by `monitor`, one every `every_n_epochs`, and
    `last.pt`. Only rank 0 writes; every rank keeps the same bookkeeping."""

    name = "model_checkpoint"

    def __init__(
        self,
        dirpath: Path,
        monitor: str = "val_loss",
        mode: str = "min",
        every_n_epochs: int = 0,
        keep_top_k: int = 1,
        save_last: bool = True,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"checkpoint.mode {mode!r}; choose one of min, max")
        self.dirpath = dirpath
        self.monitor, self.mode = monitor, mode
        self.every_n_epochs, self.keep_top_k, self.save_last = every_n_epochs, keep_top_k, save_last
        self.top_k: list[tuple[float, int]] = []  # (score, epoch), best first
        self.best_path: str | None = None

    def setup(self, trainer: Trainer, available: set[str]) -> None:
        check_monitor("checkpoint", self.monitor, available)

    @property
    def best_score(self) -> float | None:
        return self.top_k[0][0] if self.top_k else None

    @property
    def best_epoch(self) -> int | None:
        return self.top_k[0][1] if self.top_k else None

    @staticmethod
    def top_name(epoch: int) -> str:
        return f"best-epoch-{epoch:04d}.pt"

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        saves: list[tuple[str, str]] = []  # (file name, tag)
        dropped: list[str] = []
        value = metrics.get(self.monitor)
        if value is not None and not math.isnan(value):
            ranked = sorted(
                [*self.top_k, (float(value), epoch)],
                key=lambda t: t[0] if self.mode == "min" else -t[0],
            )
            kept, removed = ranked[: self.keep_top_k], ranked[self.keep_top_k :]
            if (float(value), epoch) in kept:
                saves.append((self.top_name(epoch), "best" if kept[0][1] == epoch else "top_k"))
            dropped = [self.top_name(e) for _, e in removed if e != epoch]
            self.top_k = kept
            self.best_path = f"checkpoints/{self.top_name(kept[0][1])}"
        if self.every_n_epochs and epoch % self.every_n_epochs == 0:
            saves.append((f"epoch-{epoch:04d}.pt", "periodic"))
        if self.save_last:
            saves.append(("last.pt", "last"))
        # The state saved in the files below already includes this epoch's bookkeeping.
        for name, tag in saves:
            trainer.save_checkpoint(self.dirpath / name, tag=tag)
        for name in dropped:
            trainer.delete_checkpoint(self.dirpath / name)

    def state_dict(self) -> dict[str, Any]:
        return {"top_k": [list(t) for t in self.top_k], "best_path": self.best_path}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.top_k = [(float(s), int(e)) for s, e in state["top_k"]]
        self.best_path = state["best_path"]
