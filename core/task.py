"""The seam between the shared training loop and a model family.

A family is a small module that supplies data, model, loss, metrics and outputs (in the manner of
PyG's `Node2Vec.loss`); `core.trainer.Trainer` is the one loop that trains every family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.spec import BaseJobSpec


@dataclass
class RunContext:
    """Where and how this process trains: one per rank."""

    spec: BaseJobSpec
    run_dir: Path
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Artifact:
    """A file a run wrote, relative to the run directory."""

    kind: str  # checkpoint | embeddings | node_ids | predictions | summary | tensorboard | ...
    path: str
    epoch: int | None = None
    tag: str | None = None  # for checkpoints: best | last | periodic
    extra: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """What a family gives the shared loop. One instance per rank."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.spec = ctx.spec

    @abstractmethod
    def build_model(self) -> nn.Module:
        """Load the data (on `ctx.device`) and return the model, already on `ctx.device`."""

    @abstractmethod
    def train_batches(self, epoch: int) -> Iterable[Any]:
        """This rank's batches for `epoch` (1-based). Every rank yields the same number."""

    @abstractmethod
    def training_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """Mean loss of one batch. `model` may be DDP-wrapped: call it, not its methods."""

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str, epoch: int) -> dict[str, float]:
        """Metrics of `split` ("val" or "test"), names prefixed with the split (`val_loss`)."""

    def metric_names(self) -> set[str]:
        """Every metric name `evaluate` and `epoch_metrics` can report (checked against the
        callbacks' `monitor` before training starts)."""
        return {"val_loss"}

    def epoch_metrics(self, model: nn.Module, epoch: int, final: bool) -> dict[str, float]:
        """Extra quality metrics reported beside the loss (rank 0 only), e.g. a probe."""
        return {}

    def predict(self, model: nn.Module, split: str) -> dict[str, torch.Tensor]:
        """The model's outputs on `split` (for notebooks: `Trainer.predict`)."""
        raise NotImplementedError(f"{type(self).__name__} has no predictions")

    def write_outputs(self, model: nn.Module, run_dir: Path) -> list[Artifact]:
        """Write the run's outputs (embeddings, predictions) at the end (rank 0 only)."""
        return []
