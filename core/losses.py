"""Loss functions by task, from a closed registry: `get_loss_fn(task, loss_type, num_classes)`.

Every loss takes the model's raw outputs (regression values, class logits, link logits) and
the targets, and returns the mean over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from core.registry import Registry
from core.spec.tasks import TASK_LOSSES

LossFn = Callable[[Tensor, Tensor], Tensor]

# The seed's task names, accepted beside the spec's.
TASK_ALIASES: dict[str, str] = {
    "regression": "graph_regression",
    "classification": "graph_classification",
    "edge_prediction": "link_prediction",
}


def canonical_task(task: str) -> str:
    """The spec's task name for `task` (which may be a seed alias); ValueError if unknown."""
    task = TASK_ALIASES.get(task, task)
    if task not in TASK_LOSSES:
        choices = sorted([*TASK_LOSSES, *TASK_ALIASES])
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(choices)}")
    return task


def _regression(fn: Callable[[Tensor, Tensor], Tensor]) -> LossFn:
    def loss(pred: Tensor, target: Tensor) -> Tensor:
        return fn(pred.reshape(target.shape).float(), target.float())

    return loss


def _cross_entropy(pred: Tensor, target: Tensor) -> Tensor:
    return F.cross_entropy(pred.float(), target.long().view(-1))  # pred: [B, C] logits


def _binary_logits(pred: Tensor, target: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(pred.float().view(-1), target.float().view(-1))


_LOSSES: Registry[LossFn] = Registry(
    "loss",
    {
        "mse": _regression(F.mse_loss),
        "mae": _regression(F.l1_loss),
        "huber": _regression(F.huber_loss),  # delta 1.0
        "cross_entropy": _cross_entropy,
        "bce_logits": _binary_logits,  # one logit per graph, 2 classes
        "edge_bce": _binary_logits,  # one logit per node pair
    },
)


def loss_output_dim(task: str, loss_type: str, num_classes: int | None) -> int:
    """Width of the model output this loss expects."""
    if canonical_task(task) == "graph_classification" and loss_type == "cross_entropy":
        return int(num_classes or 2)
    return 1


def get_loss_fn(task: str, loss_type: str | None = None, num_classes: int | None = None) -> LossFn:
    """The loss `loss_type` (default: the task's first) for `task`; a ValueError names the
    allowed choices when the name is unknown or does not fit the task."""
    task = canonical_task(task)
    allowed = TASK_LOSSES[task]
    name = loss_type or allowed[0]
    fn = _LOSSES.get(name)
    if name not in allowed:
        raise ValueError(
            f"loss {name!r} does not fit task {task!r}; choose one of {', '.join(allowed)}"
        )
    if name == "bce_logits" and num_classes not in (None, 2):
        raise ValueError(
            f"loss 'bce_logits' needs 2 classes, the data have {num_classes}; use cross_entropy"
        )
    if name == "cross_entropy" and num_classes is not None and num_classes < 2:
        raise ValueError(f"loss 'cross_entropy' needs at least 2 classes, got {num_classes}")
    return fn


__all__ = ["TASK_ALIASES", "canonical_task", "get_loss_fn", "loss_output_dim"]
