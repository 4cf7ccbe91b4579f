"""Supervised graph tasks and the losses and metrics that fit each (shared by every family that
predicts per graph or per node pair).

These tables are the single source of truth: `core.losses` and `core.metrics` build their
registries from them, and this module imports without torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from core.spec.common import Mode, Section

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
DEFAULT_METRIC_FOR_BEST: dict[str, tuple[str, Mode]] = {
    "graph_regression": ("val_mae", "min"),
    "graph_classification": ("val_accuracy", "max"),
    "link_prediction": ("val_ap", "max"),
}


class MetricForBest(Section):
    name: Annotated[str, Field(min_length=1)]
    mode: Mode


def pick_metric_for_best(
    chosen: MetricForBest | None, default: tuple[str, Mode], reported: list[str]
) -> tuple[MetricForBest | None, str | None]:
    """The run's metric for best: `chosen` if the run reports it (else an error naming the
    reported metrics); without a choice, `default` if reported, else `val_loss` (min).
    Returns `(metric, error)`: a metric to fill in when none was chosen, or an error."""
    if chosen is None:
        name, mode = default if default[0] in reported else ("val_loss", "min")
        return MetricForBest(name=name, mode=mode), None
    if chosen.name not in reported:
        return None, (
            f"metric_for_best.name {chosen.name!r} is not reported; choose one of "
            f"{', '.join(reported)}"
        )
    return None, None
