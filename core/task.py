"""The seam between the shared training loop and a model family.

A family (`core/families/<name>/`) supplies a `Task`: it sets up its data, builds its model,
yields this rank's training batches, computes the objective through the model's own `loss`
(as PyG's `Node2Vec.loss`), evaluates, and writes its outputs. `core.trainer.Trainer` is the one
loop that trains every family; `tests/families/test_contract.py` is the definition of a family.

The order the trainer calls a Task in:

    setup_data()                       # once: load, validate, split (every rank)
    build_model()                      # once: the model on ctx.device
    state (load_state_dict) on resume
    per epoch: train_batches(epoch) -> training_loss(net, batch) per batch
               evaluate(model, "val", epoch) on evaluation epochs
               epoch_metrics(model, epoch, final=False) (rank 0)
    at the end: evaluate(model, "test", epoch) with the best weights,
               epoch_metrics(final=True), write_outputs(model, run_dir), summary() (rank 0)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.report import ArtifactKind
from core.spec import BaseJobSpec

# What `training_loss` returns: the loss, or {"loss": total, "<part>": term, ...} whose parts
# (detached) are reported as `train_<part>` (mean over the epoch's steps).
LossOutput = torch.Tensor | Mapping[str, torch.Tensor]


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
class Output:
    """A file `write_outputs` wrote, relative to the run directory; the trainer registers it as
    an artifact (size and sha256 added). `meta` is kind-specific (see `core.report`)."""

    kind: ArtifactKind
    path: str
    epoch: int | None = None
    tag: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def embeddings_outputs(
    path: str, shape: tuple[int, ...], ids_path: str, id_column: str
) -> list[Output]:
    """The two outputs of an embeddings file: the float32 `.npy` [rows, dim] and the CSV whose
    `id_column` names each row (downloads key rows by it)."""
    return [
        Output(
            "embeddings", path, meta={"shape": list(shape), "dtype": "float32", "ids": ids_path}
        ),
        Output("ids", ids_path, meta={"id_column": id_column, "of": path}),
    ]


class Task(ABC):
    """What a family gives the shared loop. One instance per rank.

    `epoch` (1-based, the epoch being trained) and `global_step` (optimizer steps taken) are
    kept current by the trainer, for schedules a family owns (e.g. KL annealing per step).
    """

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.spec = ctx.spec
        self.epoch = 0
        self.global_step = 0

    # --- set-up -----------------------------------------------------------------------------------

    @abstractmethod
    def setup_data(self) -> None:
        """Load, validate and split the data (every rank, before `build_model`). Bad data raise
        a clear error naming the file, line and field."""

    @abstractmethod
    def build_model(self) -> nn.Module:
        """The model, on `ctx.device`, owning its objective as `loss(...)`."""

    # --- training ---------------------------------------------------------------------------------

    @abstractmethod
    def train_batches(self, epoch: int) -> Iterable[Any]:
        """This rank's batches for `epoch` (1-based). Every rank must yield the same number:
        shard with `core.distributed.shard_items` and return a `RankBatches` so the trainer can
        check the counts agree before the epoch starts."""

    @abstractmethod
    def training_loss(self, model: nn.Module, batch: Any) -> LossOutput:
        """The batch's mean loss, or `{"loss": total, part: term, ...}`. `model` may be
        DDP-wrapped: call it (its forward), then the unwrapped model's `loss`."""

    def loss_parts(self) -> tuple[str, ...]:
        """The names of the parts `training_loss` reports beside the loss (e.g. recon, kl)."""
        return ()

    # --- evaluation ---------------------------------------------------------------------------

    @abstractmethod
    def evaluate(self, model: nn.Module, split: str, epoch: int) -> dict[str, float]:
        """Metrics of `split` ("val" or "test"), names prefixed with the split (`val_loss`,
        `val_<part>` for each loss part)."""

    def metric_names(self) -> set[str]:
        """Every metric name `evaluate` (on "val") and `epoch_metrics` can report; callbacks'
        and schedulers' monitors are checked against it before training starts."""
        return {"val_loss"}

    def epoch_metrics(self, model: nn.Module, epoch: int, final: bool) -> dict[str, float]:
        """Extra quality metrics reported beside the loss (rank 0 only), e.g. a probe."""
        return {}

    def predict(self, model: nn.Module, split: str) -> dict[str, torch.Tensor]:
        """The model's outputs on `split` (for notebooks: `Trainer.predict`)."""
        raise NotImplementedError(f"{type(self).__name__} has no predictions")

    # --- state and outputs ----------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Family state a resumed run needs beyond the model and optimizer (e.g. a stage)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 (optional hook)
        """Restore what `state_dict` returned."""

    def write_outputs(self, model: nn.Module, run_dir: Path) -> list[Output]:
        """Write the run's outputs (embeddings, predictions, plots) at the end (rank 0 only)."""
        return []

    def summary(self) -> dict[str, Any]:
        """Extra `summary.json` entries (rank 0, after `write_outputs`): e.g. `data_warnings`,
        `quality`."""
        return {}
