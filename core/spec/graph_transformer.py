"""Spec of the `graph_transformer` family: GPS-style graph transformers with multi-scale
positional encodings for graph regression, graph classification and link prediction.

The task/loss/metric tables below are the single source of truth: `core.losses` and
`core.metrics` build their registries from them, and this module imports without torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.spec.common import BaseJobSpec, Mode, Section, TrainingSpec

TaskName = Literal["graph_regression", "graph_classification", "link_prediction"]
LossName = Literal["mse", "mae", "huber", "cross_entropy", "bce_logits", "edge_bce"]
MetricName = Literal["mse", "mae", "rmse", "accuracy", "f1", "roc_auc", "ap", "precision_at_k"]

# Which losses and metrics fit which task; the first loss is the task's default.
TASK_LOSSES: dict[str, tuple[str, ...]] = {
    "graph_regression": ("mae", "mse", "huber"),
    "graph_classification": ("cross_entropy", "bce_logits"),
    "link_prediction": ("edge_bce",),
}
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "graph_regression": ("mae", "mse", "rmse"),
    "graph_classification": ("accuracy", "f1", "roc_auc", "ap"),
    "link_prediction": ("roc_auc", "ap", "accuracy", "precision_at_k"),
}
# Whether a larger value of a metric is better; `loss` is always minimised.
METRIC_MODES: dict[str, Mode] = {
    "loss": "min",
    "mse": "min",
    "mae": "min",
    "rmse": "min",
    "accuracy": "max",
    "f1": "max",
    "roc_auc": "max",
    "ap": "max",
    "precision_at_k": "max",
}
DEFAULT_METRIC_FOR_BEST: dict[str, tuple[str, Mode]] = {
    "graph_regression": ("val_mae", "min"),
    "graph_classification": ("val_accuracy", "max"),
    "link_prediction": ("val_ap", "max"),
}


def _relative_path(value: str) -> str:
    from pathlib import PurePosixPath

    parts = PurePosixPath(value.replace("\\", "/")).parts
    if value.startswith(("/", "\\")) or ".." in parts or ":" in value:
        raise ValueError(
            "must be a path relative to the data root, without '..' (e.g. 'uploads/MYDATA')"
        )
    return value


# --- splits: one variant per kind ---------------------------------------------------------------


class OwnSplit(Section):
    """The dataset's published split (ZINC: the benchmarking-gnns 10k/1k/1k split)."""

    kind: Literal["own"]


class FractionsSplit(Section):
    """A seeded random split of the graphs into train/val/test fractions."""

    kind: Literal["fractions"]
    fractions: tuple[
        Annotated[float, Field(gt=0, lt=1)],
        Annotated[float, Field(ge=0, lt=1)],
        Annotated[float, Field(ge=0, lt=1)],
    ] = (0.8, 0.1, 0.1)
    seed: int | None = Field(default=None, description="default: training.seed")
    stratify: bool = Field(default=True, description="keep class proportions (classification)")

    @model_validator(mode="after")
    def _sums_to_one(self) -> FractionsSplit:
        total = sum(self.fractions)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split.fractions {list(self.fractions)} must sum to 1, not {total:g}")
        return self


class KFoldSplit(Section):
    """Fold `fold` of a seeded k-fold split is the test set; `val_fraction` of the rest is
    held out for validation."""

    kind: Literal["kfold"]
    k: Annotated[int, Field(ge=2, le=100)] = 10
    fold: Annotated[int, Field(ge=0)] = 0
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    seed: int | None = Field(default=None, description="default: training.seed")
    stratify: bool = Field(default=True, description="keep class proportions (classification)")

    @model_validator(mode="after")
    def _fold_in_range(self) -> KFoldSplit:
        if self.fold >= self.k:
            raise ValueError(f"split.fold ({self.fold}) must be in 0..{self.k - 1} (split.k - 1)")
        return self


AnySplit = Annotated[OwnSplit | FractionsSplit | KFoldSplit, Field(discriminator="kind")]
DerivedSplit = Annotated[FractionsSplit | KFoldSplit, Field(discriminator="kind")]


# --- data: one variant per format ---------------------------------------------------------------


class ZincData(Section):
    """ZINC 12k: `<root>/ZINC/graphium_ZINC_bench_gnn/` SMILES + score (= logP - SA, not
    normalised), graphs built with RDKit and the benchmarking-gnns atom vocabulary."""

    format: Literal["zinc"]
    subset: bool = Field(default=True, description="the 12k subset; the full 250k is not shipped")
    max_graphs: Annotated[int, Field(ge=3)] | None = Field(
        default=None,
        description="keep at most this many graphs, the first rows of each split in proportion "
        "(for quick runs and CI)",
    )
    split: AnySplit = Field(default_factory=lambda: OwnSplit(kind="own"))


class TUData(Section):
    """A TU collection dataset in its raw layout: `<root>/<name>/raw/<name>_A.txt` etc."""

    format: Literal["tu"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$", max_length=100)]
    use_node_attributes: bool = Field(
        default=False, description="append `<name>_node_attributes.txt` to the one-hot labels"
    )
    split: DerivedSplit = Field(default_factory=lambda: FractionsSplit(kind="fractions"))


class TUUploadData(Section):
    """A user dataset in TU raw layout: a directory (relative to the data root) holding one
    `<NAME>_A.txt`, `<NAME>_graph_indicator.txt`, `<NAME>_graph_labels.txt`, ... (or a `raw/`
    subdirectory holding them)."""

    format: Literal["tu_upload"]
    path: Annotated[str, Field(min_length=1, max_length=500)]
    use_node_attributes: bool = True
    split: DerivedSplit = Field(default_factory=lambda: FractionsSplit(kind="fractions"))

    @field_validator("path")
    @classmethod
    def _relative(cls, value: str) -> str:
        return _relative_path(value)


GraphSetData = Annotated[ZincData | TUData | TUUploadData, Field(discriminator="format")]


# --- positional encodings: one variant per kind, a list of scales ------------------------------


class RwsePE(Section):
    """Random-walk structural encoding: return probabilities after 1..L steps, for every L in
    `walk_lengths`, concatenated (several lengths = several scales)."""

    kind: Literal["rwse"]
    walk_lengths: Annotated[list[Annotated[int, Field(ge=1, le=64)]], Field(min_length=1)] = Field(
        default_factory=lambda: [8, 16]
    )
    dim: Annotated[int, Field(ge=1, le=512, description="width after the encoder")] = 24

    @property
    def raw_dim(self) -> int:
        return sum(self.walk_lengths)


class LaplacianPE(Section):
    """The `k` eigenvectors of the symmetric normalised Laplacian after the trivial one (zero
    columns where a graph has fewer than k + 1 nodes)."""

    kind: Literal["laplacian"]
    k: Annotated[int, Field(ge=1, le=64)] = 8
    dim: Annotated[int, Field(ge=1, le=512, description="width after the encoder")] = 16
    random_sign_flip: bool = Field(
        default=True, description="flip each eigenvector's sign at random, anew every epoch"
    )

    @property
    def raw_dim(self) -> int:
        return self.k


PositionalEncoding = Annotated[RwsePE | LaplacianPE, Field(discriminator="kind")]


# --- model, link prediction, metric for best ---------------------------------------------------


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


class MetricForBest(Section):
    name: Annotated[str, Field(min_length=1)]
    mode: Mode


class GraphTrainingSpec(TrainingSpec):
    """The shared loop's settings with this family's default batch of 32 graphs."""

    batch_size: Annotated[int, Field(ge=1, description="graphs per batch")] = 32


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
        if self.metric_for_best is None:
            name, mode = DEFAULT_METRIC_FOR_BEST[self.task]
            if name not in reported:
                name, mode = "val_loss", "min"
            self._fill("metric_for_best", MetricForBest(name=name, mode=mode))
        elif self.metric_for_best.name not in reported:
            errors.append(
                f"metric_for_best.name {self.metric_for_best.name!r} is not reported; choose one "
                f"of {', '.join(reported)}"
            )
        pe_width = sum(pe.dim for pe in self.positional_encodings)
        if pe_width >= self.model.channels:
            errors.append(
                f"positional_encodings dims sum to {pe_width}, which must be smaller than "
                f"model.channels ({self.model.channels}): node features get the rest"
            )
        if errors:
            raise ValueError("; ".join(errors))
        # The metric for best drives checkpointing and early stopping unless they name their own.
        best = self.metric_for_best
        if "monitor" not in self.checkpoint.model_fields_set:
            self.checkpoint.monitor, self.checkpoint.mode = best.name, best.mode
        es = self.early_stopping
        if es is not None and "monitor" not in es.model_fields_set:
            es.monitor, es.mode = best.name, best.mode
        return self

    def _fill(self, name: str, value: object) -> None:
        # Direct write: assignment would re-run this validator (validate_assignment is on).
        self.__dict__[name] = value
