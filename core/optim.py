"""Optimizer and scheduler factories from the spec (closed registries, no import paths)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR, ReduceLROnPlateau, StepLR

from core.registry import Registry
from core.spec.common import (
    CosineScheduler,
    LinearWarmupScheduler,
    NoScheduler,
    OneCycleScheduler,
    OptimizerSpec,
    PlateauScheduler,
    StepScheduler,
)

OPTIMIZERS: Registry[type[Optimizer]] = Registry(
    "optimizer", {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
)

Scheduler = LRScheduler | ReduceLROnPlateau
SchedulerSpecs = (
    NoScheduler
    | CosineScheduler
    | StepScheduler
    | PlateauScheduler
    | LinearWarmupScheduler
    | OneCycleScheduler
)


def scheduler_interval(spec: SchedulerSpecs | None) -> str:
    """`"epoch"` or `"step"`: whether the scheduler steps once per epoch or per optimizer step."""
    return "epoch" if spec is None else spec.interval


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
    spec: SchedulerSpecs | None,
    total_epochs: int,
    steps_per_epoch: int | None = None,
) -> Scheduler | None:
    """The LR schedule; `None` for `name: none`. Epoch schedulers (cosine, step, plateau) step
    once per epoch; step schedulers (linear_warmup, onecycle) once per optimizer step and need
    `steps_per_epoch` (ValueError without it)."""
    if spec is None or isinstance(spec, NoScheduler):
        return None
    if isinstance(spec, LinearWarmupScheduler | OneCycleScheduler):
        if not steps_per_epoch:
            raise ValueError(f"scheduler {spec.name!r} needs the number of steps per epoch")
        total_steps = total_epochs * steps_per_epoch
        if isinstance(spec, OneCycleScheduler):
            return OneCycleLR(
                optimizer,
                max_lr=spec.max_lr,
                total_steps=total_steps,
                pct_start=spec.pct_start,
                anneal_strategy=spec.anneal_strategy,
                div_factor=spec.div_factor,
                final_div_factor=spec.final_div_factor,
            )
        return _linear_warmup(optimizer, spec, total_steps)
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


def _linear_warmup(optimizer: Optimizer, spec: LinearWarmupScheduler, total_steps: int) -> LambdaLR:
    warmup = spec.warmup_steps
    base_lrs = [group["lr"] for group in optimizer.param_groups]

    def factor(step: int, base: float) -> float:
        # `step` counts optimizer steps taken: the LR of step `step + 1`.
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if spec.decay == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        floor = spec.min_lr / base if base > 0 else 0.0
        shape = 1 - progress if spec.decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
        return floor + (1 - floor) * shape

    return LambdaLR(optimizer, [lambda s, b=b: factor(s, b) for b in base_lrs])


def step_scheduler(scheduler: Scheduler | None, metrics: dict[str, float], monitor: str) -> None:
    """Step an epoch scheduler after an epoch; the plateau scheduler steps only on epochs that
    report its `monitor` (evaluation epochs), which is checked to exist before training."""
    if scheduler is None:
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        if monitor in metrics:
            scheduler.step(metrics[monitor])
    else:
        scheduler.step()
