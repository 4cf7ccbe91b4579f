"""Spec sections every family shares: optimizer, scheduler, callbacks, precision, resources.

This module must import without torch: the API validates specs with it.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["min", "max"]

# Upper bounds of the shared loop's settings: far above any real run, low enough that a typo
# (10**12 epochs) is refused at submit instead of occupying a worker for ever.
MAX_EPOCHS = 100_000
MAX_BATCH = 10_000_000


class Section(BaseModel):
    """Base of every spec model: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
        float, Field(gt=0, le=10, description="learning rate (the seed's training.learning_rate)")
    ] = 1e-3
    weight_decay: Annotated[float, Field(ge=0, le=10)] = 0.0
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
    interval: ClassVar[str] = "epoch"


class CosineScheduler(Section):
    """Linear warmup for `warmup_epochs`, then cosine decay to `min_lr` at the last epoch."""

    name: Literal["cosine"]
    interval: ClassVar[str] = "epoch"
    warmup_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 0
    min_lr: Annotated[float, Field(ge=0, le=10)] = 0.0


class StepScheduler(Section):
    name: Literal["step"]
    interval: ClassVar[str] = "epoch"
    step_size: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 30
    gamma: Annotated[float, Field(gt=0, le=1)] = 0.1


class PlateauScheduler(Section):
    """Reduce the LR when `monitor` stops improving; steps only on epochs that evaluate."""

    name: Literal["plateau"]
    interval: ClassVar[str] = "epoch"
    monitor: str = "val_loss"
    mode: Mode = "min"
    factor: Annotated[float, Field(gt=0, lt=1)] = 0.5
    patience: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = 5
    min_lr: Annotated[float, Field(ge=0, le=10)] = 0.0


class LinearWarmupScheduler(Section):
    """Per optimizer step: linear warmup from 0 over `warmup_steps`, then `decay` (constant,
    linear or cosine) to `min_lr` at the last step."""

    name: Literal["linear_warmup"]
    interval: ClassVar[str] = "step"
    warmup_steps: Annotated[int, Field(ge=0, le=10_000_000)] = 1000
    decay: Literal["constant", "linear", "cosine"] = "constant"
    min_lr: Annotated[float, Field(ge=0, le=10)] = 0.0


class OneCycleScheduler(Section):
    """Per optimizer step: the 1cycle policy (Smith & Topin 2017, `torch.optim.lr_scheduler.
    OneCycleLR`) from `max_lr / div_factor` up to `max_lr` over `pct_start` of the steps, then
    down to `max_lr / (div_factor * final_div_factor)`. `optimizer.lr` is not used."""

    name: Literal["onecycle"]
    interval: ClassVar[str] = "step"
    max_lr: Annotated[float, Field(gt=0, le=100)] = 0.01
    pct_start: Annotated[float, Field(gt=0, lt=1)] = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: Annotated[float, Field(ge=1, le=1e6)] = 25.0
    final_div_factor: Annotated[float, Field(ge=1, le=1e9)] = 1e4


SchedulerSpec = Annotated[
    NoScheduler
    | CosineScheduler
    | StepScheduler
    | PlateauScheduler
    | LinearWarmupScheduler
    | OneCycleScheduler,
    Field(discriminator="name"),
]


# --- callbacks ----------------------------------------------------------------------------------


class EarlyStoppingSpec(Section):
    monitor: str = "val_loss"
    mode: Mode = "min"
    patience: Annotated[
        int, Field(ge=1, le=MAX_EPOCHS, description="the seed's early_stopping_patience")
    ] = 10
    min_delta: Annotated[float, Field(ge=0, le=1e9)] = 0.0


class CheckpointSpec(Section):
    monitor: str = "val_loss"
    mode: Mode = "min"
    every_n_epochs: Annotated[
        int, Field(ge=0, le=MAX_EPOCHS, description="0: only the best and the last")
    ] = 0
    keep_top_k: Annotated[int, Field(ge=1, le=100)] = 1
    save_last: bool = True


# --- training loop and resources ----------------------------------------------------------------


class TrainingSpec(Section):
    """Settings of the shared loop (the seed's `training:` block)."""

    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 100
    batch_size: Annotated[int, Field(ge=1, le=MAX_BATCH)] = 512
    gradient_clip: Annotated[
        float, Field(ge=0, le=1e6, description="max grad norm; 0 disables")
    ] = 1.0
    gradient_accumulation: Annotated[int, Field(ge=1, le=1024)] = 1
    precision: Literal["fp32", "bf16", "fp16-mixed"] = "fp32"
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    deterministic: bool = False
    eval_every_n_epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 1
    log_every_n_steps: Annotated[int, Field(ge=1, le=10_000_000)] | None = Field(
        default=None,
        description="also report the running train_loss, lr and grad_norm every N optimizer "
        "steps (step-level metric rows, for long epochs); default: per epoch only",
    )
    tensorboard: bool = Field(default=True, description="write TensorBoard event files")


class ResourcesSpec(Section):
    devices: Annotated[int, Field(ge=1, le=64, description="DDP world size")] = 1
    accelerator: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Annotated[int, Field(ge=1, le=512)] | None = Field(
        default=None, description="CPU threads per process; default: cores / processes"
    )


class BaseJobSpec(Section):
    """Sections shared by every family. A family's spec (`core/families/<name>/spec.py`)
    narrows `family` to `Literal["<name>"]` and adds `data`, `model` and its own sections."""

    family: str
    name: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][\w.\- ]*$")] = (
        "job"
    )
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec = Field(default_factory=NoScheduler)
    early_stopping: EarlyStoppingSpec | None = Field(default_factory=EarlyStoppingSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    def monitor_by_default(self, name: str, mode: Mode) -> None:
        """Checkpointing and early stopping monitor `name` (`mode`) unless the spec names their
        own monitors (a family's metric for best)."""
        if "monitor" not in self.checkpoint.model_fields_set:
            self.checkpoint.monitor, self.checkpoint.mode = name, mode
        es = self.early_stopping
        if es is not None and "monitor" not in es.model_fields_set:
            es.monitor, es.mode = name, mode

    @classmethod
    def family_name(cls) -> str:
        """The `family` value this spec model accepts (its one-value Literal)."""
        args = get_args(cls.model_fields["family"].annotation)
        if len(args) != 1 or not isinstance(args[0], str):
            raise TypeError(f"{cls.__name__}.family must be a one-value Literal")
        return args[0]
