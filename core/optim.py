"""Optimizer and scheduler factories from the spec (closed registries, no import paths)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau, StepLR

from core.registry import Registry
from core.spec.common import (
    CosineScheduler,
    NoScheduler,
    OptimizerSpec,
    PlateauScheduler,
    StepScheduler,
)

OPTIMIZERS: Registry[type[Optimizer]] = Registry(
    "optimizer", {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
)

Scheduler = LRScheduler | ReduceLROnPlateau


def get_optimizer(
    model: nn.Module | Iterable[nn.Parameter], spec: OptimizerSpec | None = None, **overrides: Any
) -> Optimizer:
    """An optimizer named by `spec.name` (adam, adamw, sgd) over the trainable parameters."""
    spec = spec or OptimizerSpec()
    if overrides:
        spec = spec.model_validate({**spec.model_dump(), **overrides})
    params = model.parameters() if isinstance(model, nn.Module) else model
    kwargs: dict[str, Any] = dict(spec.kwargs)
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    return OPTIMIZERS.get(spec.name)(
        [p for p in params if p.requires_grad], lr=spec.lr, weight_decay=spec.weight_decay, **kwargs
    )


def get_scheduler(
    optimizer: Optimizer,
    spec: NoScheduler | CosineScheduler | StepScheduler | PlateauScheduler | None,
    total_epochs: int,
) -> Scheduler | None:
    """The epoch-level LR schedule; `None` for `name: none`. Stepped once per epoch."""
    if spec is None or isinstance(spec, NoScheduler):
        return None
    if isinstance(spec, StepScheduler):
        return StepLR(optimizer, step_size=spec.step_size, gamma=spec.gamma)
    if isinstance(spec, PlateauScheduler):
        return ReduceLROnPlateau(
            optimizer,
            mode=spec.mode,
            factor=spec.factor,
            patience=spec.patience,
            min_lr=spec.min_lr,
        )
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    warmup, min_lr = spec.warmup_epochs, spec.min_lr

    def factor(epoch: int, base: float) -> float:
        # `epoch` counts completed epochs: the LR used during epoch `epoch + 1`.
        if warmup and epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        span = max(1, total_epochs - warmup)
        progress = min(1.0, (epoch - warmup) / span)
        floor = min_lr / base if base > 0 else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, [lambda e, b=b: factor(e, b) for b in base_lrs])


def step_scheduler(scheduler: Scheduler | None, metrics: dict[str, float], monitor: str) -> None:
    if scheduler is None:
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        if monitor not in metrics:
            raise KeyError(
                f"scheduler.monitor {monitor!r} is not a reported metric; "
                f"available: {', '.join(sorted(metrics))}"
            )
        scheduler.step(metrics[monitor])
    else:
        scheduler.step()
