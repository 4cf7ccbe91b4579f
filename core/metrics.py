"""Evaluation metrics by task as a torchmetrics `MetricCollection`, from closed registries:
`get_metrics(task, names, num_classes)`.

Inputs (see `metric_inputs`): regression values; class probabilities ([N] of class 1 for two
classes, [N, C] otherwise) with integer targets; link probabilities with 0/1 targets, plus
`indexes=` (the graph of each candidate pair) for `precision_at_k`, which is precision among
the k best-scored pairs of each graph, averaged over graphs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torchmetrics import (
    AUROC,
    Accuracy,
    AveragePrecision,
    F1Score,
    MeanAbsoluteError,
    MeanSquaredError,
    Metric,
    MetricCollection,
)
from torchmetrics.retrieval import RetrievalPrecision

from core.losses import canonical_task
from core.registry import Registry
from core.spec.tasks import TASK_METRICS

MetricFactory = Callable[[int | None, int], Metric]


def _classification(kind: type[Metric], **kwargs: object) -> MetricFactory:
    def make(num_classes: int | None, k: int) -> Metric:
        if num_classes is None or num_classes == 2:
            return kind(task="binary")  # type: ignore[call-arg]
        return kind(task="multiclass", num_classes=num_classes, **kwargs)  # type: ignore[call-arg]

    return make


_METRICS: Registry[MetricFactory] = Registry(
    "metric",
    {
        "mse": lambda c, k: MeanSquaredError(),
        "mae": lambda c, k: MeanAbsoluteError(),
        "rmse": lambda c, k: MeanSquaredError(squared=False),
        "accuracy": _classification(Accuracy),
        "f1": _classification(F1Score, average="macro"),
        "roc_auc": _classification(AUROC, average="macro"),
        "ap": _classification(AveragePrecision, average="macro"),
        "precision_at_k": lambda c, k: RetrievalPrecision(
            top_k=k, adaptive_k=True, empty_target_action="skip"
        ),
    },
)
# The seed's spelling.
_ALIASES = {"precision@k": "precision_at_k", "auroc": "roc_auc", "auc": "roc_auc"}


def get_metrics(
    task: str,
    names: Sequence[str] | None = None,
    num_classes: int | None = None,
    k: int = 5,
) -> MetricCollection:
    """A `MetricCollection` keyed by metric name (default: every metric of the task); a
    ValueError names the allowed choices for an unknown or unfitting name."""
    task = canonical_task(task)
    allowed = TASK_METRICS[task]
    chosen = [_ALIASES.get(n, n) for n in (names if names is not None else allowed)]
    metrics = {}
    for name in chosen:
        factory = _METRICS.get(name)
        if name not in allowed:
            raise ValueError(
                f"metric {name!r} does not fit task {task!r}; choose from {', '.join(allowed)}"
            )
        link = task == "link_prediction"
        metrics[name] = factory(None if link else num_classes, k)
    return MetricCollection(metrics, compute_groups=False)


def metric_inputs(task: str, outputs: Tensor, num_classes: int | None = None) -> Tensor:
    """Raw model outputs -> what the task's metrics take (values or probabilities)."""
    task = canonical_task(task)
    outputs = outputs.detach().float()
    if task == "graph_regression":
        return outputs.squeeze(-1) if outputs.dim() > 1 and outputs.size(-1) == 1 else outputs
    if task == "link_prediction" or outputs.dim() == 1 or outputs.size(-1) == 1:
        return torch.sigmoid(outputs.view(-1))  # binary: probability of the positive class
    probs = torch.softmax(outputs, -1)
    return probs[:, 1] if (num_classes or probs.size(-1)) == 2 else probs


__all__ = ["get_metrics", "metric_inputs"]
