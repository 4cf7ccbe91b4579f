"""Spec of the `graph_transformer` family: GPS-style graph transformers with multi-scale
positional encodings for graph regression, graph classification and link prediction.

Shared sections: data formats (`core.spec.data`), splits (`core.spec.splits`), positional
encodings (`core.spec.pe`), tasks with their losses and metrics (`core.spec.tasks`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.spec.common import BaseJobSpec, Section, TrainingSpec
from core.spec.data import GraphSetData
from core.spec.pe import PositionalEncoding, RwsePE
from core.spec.tasks import (
    DEFAULT_METRIC_FOR_BEST,
    TASK_LOSSES,
    TASK_METRICS,
    LossName,
    MetricForBest,
    MetricName,
    TaskName,
    pick_metric_for_best,
)


class GpsModelSpec(Section):
    """A stack of GPS layers: a local message-passing layer plus global attention per layer."""

    layers: Annotated[int, Field(ge=1, le=64)] = 10
    channels: Annotated[int, Field(ge=4, le=4096)] = 64
    heads: Annotated[int, Field(ge=1, le=64)] = 4
    local_layer: Literal["gine", "gin", "gcn", "none"] = "gine"
    attention: Literal["multihead", "performer"] = "multihead"
    attn_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    pooling: Literal["mean", "add", "max"] = "add"
    head_layers: Annotated[int, Field(ge=1, le=6, description="MLP after pooling, halving")] = 3
    norm: Literal["batch_norm", "layer_norm", "none"] = Field(
        default="batch_norm",
        description="the norm of each GPS layer and of the raw positional encodings; "
        "batch_norm follows GraphGPS; layer_norm is independent of the batch (one-node batches, "
        "DDP on CPU, where batch statistics cannot be synchronised)",
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> GpsModelSpec:
        if self.channels % self.heads:
            raise ValueError(
                f"model.channels ({self.channels}) must be divisible by model.heads ({self.heads})"
            )
        return self


class LinkSpec(Section):
    """Link prediction on each graph: a seeded fraction of its edges become targets (removed
    from the message-passing graph), scored against node pairs that are not edges."""

    target_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    negatives_per_positive: Annotated[int, Field(ge=1, le=20)] = 1
    precision_k: Annotated[int, Field(ge=1, le=1000, description="k of precision_at_k")] = 5


class GraphTrainingSpec(TrainingSpec):
    """The shared loop's settings with this family's default batch of 32 graphs."""

    batch_size: Annotated[int, Field(ge=1, le=1_000_000, description="graphs per batch")] = 32


class GraphTransformerSpec(BaseJobSpec):
    family: Literal["graph_transformer"]
    task: TaskName
    data: GraphSetData
    model: GpsModelSpec = Field(default_factory=GpsModelSpec)
    positional_encodings: list[PositionalEncoding] = Field(
        default_factory=lambda: [RwsePE(kind="rwse")]
    )
    loss: LossName | None = Field(default=None, description="default: the task's first loss")
    metrics: list[MetricName] | None = Field(default=None, description="default: all of the task's")
    metric_for_best: MetricForBest | None = Field(
        default=None,
        description="default by task (val_mae/min, val_accuracy/max, val_ap/max); also the "
        "checkpoint and early-stopping monitor unless those are set",
    )
    link: LinkSpec = Field(default_factory=LinkSpec)
    training: GraphTrainingSpec = Field(default_factory=GraphTrainingSpec)

    @model_validator(mode="after")
    def _cross_fields(self) -> GraphTransformerSpec:
        errors: list[str] = []
        losses = TASK_LOSSES[self.task]
        if self.loss is None:
            self._fill("loss", losses[0])
        elif self.loss not in losses:
            errors.append(
                f"loss {self.loss!r} does not fit task {self.task!r}; choose one of "
                f"{', '.join(losses)}"
            )
        allowed_metrics = TASK_METRICS[self.task]
        if self.metrics is None:
            self._fill("metrics", list(allowed_metrics))
        else:
            bad = [m for m in self.metrics if m not in allowed_metrics]
            if bad:
                errors.append(
                    f"metrics {bad} do not fit task {self.task!r}; choose from "
                    f"{', '.join(allowed_metrics)}"
                )
            self._fill("metrics", list(dict.fromkeys(self.metrics)))
        reported = ["val_loss", *(f"val_{m}" for m in self.metrics)]
        best, error = pick_metric_for_best(
            self.metric_for_best, DEFAULT_METRIC_FOR_BEST[self.task], reported
        )
        if best is not None:
            self._fill("metric_for_best", best)
        if error is not None:
            errors.append(error)
        pe_width = sum(pe.dim for pe in self.positional_encodings)
        if pe_width >= self.model.channels:
            errors.append(
                f"positional_encodings dims sum to {pe_width}, which must be smaller than "
                f"model.channels ({self.model.channels}): node features get the rest"
            )
        if errors:
            raise ValueError("; ".join(errors))
        best = self.metric_for_best
        assert best is not None
        self.monitor_by_default(best.name, best.mode)  # unless they name their own
        return self

    def _fill(self, name: str, value: object) -> None:
        # Direct write: assignment would re-run this validator (validate_assignment is on).
        self.__dict__[name] = value
