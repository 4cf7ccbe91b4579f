"""Spec sections every family shares: optimizer, scheduler, callbacks, precision, resources.

This module must import without torch: the API validates specs with it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["min", "max"]


class Section(BaseModel):
    """Base of every spec model: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --- optimizer ---------------------------------------------------------------------------------

# Extra keyword arguments each optimizer accepts; anything else is an error naming these.
OPTIMIZER_KWARGS: dict[str, tuple[str, ...]] = {
    "adam": ("betas", "eps", "amsgrad"),
    "adamw": ("betas", "eps", "amsgrad"),
    "sgd": ("momentum", "dampening", "nesterov"),
}


class OptimizerSpec(Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: Annotated[
        float, Field(gt=0, description="learning rate (the seed's training.learning_rate)")
    ] = 1e-3
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    kwargs: dict[str, float | bool | list[float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known_kwargs(self) -> OptimizerSpec:
        allowed = OPTIMIZER_KWARGS[self.name]
        unknown = sorted(set(self.kwargs) - set(allowed))
        if unknown:
            raise ValueError(
                f"unknown optimizer.kwargs {unknown} for {self.name!r}; allowed: {list(allowed)}"
            )
        return self


# --- schedulers: one variant per kind -----------------------------------------------------------


class NoScheduler(Section):
    name: Literal["none"] = "none"


class CosineScheduler(Section):
    """Linear warmup for `warmup_epochs`, then cosine decay to `min_lr` at the last epoch."""

    name: Literal["cosine"]
    warmup_epochs: Annotated[int, Field(ge=0)] = 0
    min_lr: Annotated[float, Field(ge=0)] = 0.0


class StepScheduler(Section):
    name: Literal["step"]
    step_size: Annotated[int, Field(ge=1)] = 30
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1


class PlateauScheduler(Section):
    name: Literal["plateau"]
    monitor: str = "val_loss"
    mode: Mode = "min"
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    patience: Annotated[int, Field(ge=0)] = 5
    min_lr: Annotated[float, Field(ge=0)] = 0.0


SchedulerSpec = Annotated[
    NoScheduler | CosineScheduler | StepScheduler | PlateauScheduler,
    Field(discriminator="name"),
]


# --- callbacks ----------------------------------------------------------------------------------


class EarlyStoppingSpec(Section):
    monitor: str = "val_loss"
    mode: Mode = "min"
    patience: Annotated[int, Field(ge=1, description="the seed's early_stopping_patience")] = 10
    min_delta: Annotated[float, Field(ge=0)] = 0.0


class CheckpointSpec(Section):
    monitor: str = "val_loss"
    mode: Mode = "min"
    every_n_epochs: Annotated[int, Field(ge=0, description="0: only the best and the last")] = 0
    keep_top_k: Annotated[int, Field(ge=1)] = 1
    save_last: bool = True


# --- training loop and resources ----------------------------------------------------------------


class TrainingSpec(Section):
    """Settings of the shared loop (the seed's `training:` block)."""

    epochs: Annotated[int, Field(ge=1)] = 100
    batch_size: Annotated[int, Field(ge=1)] = 512
    gradient_clip: Annotated[float, Field(ge=0, description="max grad norm; 0 disables")] = 1.0
    gradient_accumulation: Annotated[int, Field(ge=1)] = 1
    precision: Literal["fp32", "bf16", "fp16-mixed"] = "fp32"
    seed: int = 0
    deterministic: bool = False
    eval_every_n_epochs: Annotated[int, Field(ge=1)] = 1
    tensorboard: bool = Field(default=True, description="write TensorBoard event files")


class ResourcesSpec(Section):
    devices: Annotated[int, Field(ge=1, le=64, description="DDP world size")] = 1
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Annotated[int, Field(ge=1, le=512)] | None = Field(
        default=None, description="CPU threads per process; default: cores / processes"
    )


class BaseJobSpec(Section):
    """Sections shared by every family; a family adds `family`, `data`, `model` and its own."""

    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\w.\- ]*$")] = (
        "job"
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec = Field(default_factory=NoScheduler)
    early_stopping: EarlyStoppingSpec | None = Field(default_factory=EarlyStoppingSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
