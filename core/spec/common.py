"""Spec sections every family shares: optimizer, scheduler, callbacks, precision, resources.

This module must import without torch: the API validates specs with it.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

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
    """The single form: stop when `monitor` has not improved by `min_delta` for `patience`
    evaluations (the multi-task form with one task, no grace period and no baseline)."""

    monitor: str = "val_loss"
    mode: Mode = "min"
    patience: Annotated[
        int, Field(ge=1, le=MAX_EPOCHS, description="the seed's early_stopping_patience")
    ] = 10
    min_delta: Annotated[float, Field(ge=0, le=1e9)] = 0.0


class EarlyStoppingTask(Section):
    """One monitored metric of the multi-task form (the seed's `early_stopping.tasks.<i>`:
    `metric` -> `monitor`, `delta` -> `min_delta`, `init_best_score` -> `baseline`)."""

    monitor: str = Field(description="a metric the run reports, e.g. val_loss, val_accuracy")
    mode: Mode = "min"
    min_delta: Annotated[
        float, Field(ge=0, le=1e9, description="the least change that counts as an improvement")
    ] = 0.0
    grace_period: Annotated[
        int,
        Field(
            ge=0,
            le=MAX_EPOCHS,
            description="evaluations of this monitor at the start that count no stall "
            "(an improvement there still sets the best)",
        ),
    ] = 0
    baseline: Annotated[
        float | None,
        Field(
            description="the best to beat at the start: a value not better than it (by "
            "min_delta) is no improvement (the seed's init_best_score)"
        ),
    ] = None


class MultiTaskEarlyStoppingSpec(Section):
    """The multi-task form (the seed's `DefaultEarlyStopping`): a task stalls when its monitor
    has not improved for `patience` evaluations after its grace period; `aggregate: any` stops
    when any task stalls, `all` when every task has stalled. See docs/early-stopping.md."""

    tasks: Annotated[list[EarlyStoppingTask], Field(min_length=1, max_length=32)]
    aggregate: Annotated[
        Literal["any", "all"],
        Field(description="any: stop when one task stalls; all: when every task has stalled"),
    ] = "any"
    patience: Annotated[
        int, Field(ge=1, le=MAX_EPOCHS, description="evaluations without improvement per task")
    ] = 10

    @model_validator(mode="after")
    def _distinct_monitors(self) -> MultiTaskEarlyStoppingSpec:
        monitors = [t.monitor for t in self.tasks]
        repeated = sorted({m for m in monitors if monitors.count(m) > 1})
        if repeated:
            raise ValueError(f"early_stopping.tasks monitor {repeated} more than once")
        return self


# The tags of the early-stopping union below (in validation errors' locations, where the spec
# loader drops them). They are not field names: a field is never called so.
EARLY_STOPPING_FORMS = {
    "single-monitor": EarlyStoppingSpec,
    "multi-task": MultiTaskEarlyStoppingSpec,
}


def _early_stopping_form(value: Any) -> str:
    """`multi-task` for a mapping with `tasks` (or that model), else `single-monitor`."""
    if isinstance(value, MultiTaskEarlyStoppingSpec):
        return "multi-task"
    return "multi-task" if isinstance(value, dict) and "tasks" in value else "single-monitor"


AnyEarlyStoppingSpec = Annotated[
    Annotated[EarlyStoppingSpec, Tag("single-monitor")]
    | Annotated[MultiTaskEarlyStoppingSpec, Tag("multi-task")],
    Discriminator(_early_stopping_form),
]

# `checkpoint.monitor: early_stopping` makes "best" follow the early stopper's decision.
FOLLOW_EARLY_STOPPING = "early_stopping"


class CheckpointSpec(Section):
    monitor: str = Field(
        default="val_loss",
        description="a metric the run reports, or 'early_stopping': the best checkpoint is the "
        "epoch of the early stopper's last combined improvement (mode is then not used)",
    )
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
    max_duration: Annotated[float, Field(gt=0, le=30 * 86400)] | None = Field(
        default=None,
        description="seconds one attempt may run; past it the run is stopped and the job "
        "fails (class `timeout`); default: no limit",
    )


# Failure classes an attempt may be retried after (`worker.policy`); a user error (bad data,
# a NaN loss) is never retried: it would fail the same way.
RetryOn = Literal["worker_lost", "infrastructure", "out_of_memory", "timeout"]


class RetrySpec(Section):
    """When the service runs a failed attempt again (each attempt resumes from the last
    checkpoint). A preempted attempt (the worker shutting down) is always requeued."""

    max_attempts: Annotated[int, Field(ge=1, le=20, description="attempts in all")] = 3
    on: list[RetryOn] = Field(
        default_factory=lambda: ["worker_lost", "infrastructure"],
        description="the failure classes that are retried",
    )
    backoff_seconds: Annotated[
        float, Field(ge=0, le=3600, description="before attempt n+1: this x 2**(n-1) s")
    ] = 10.0


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
    early_stopping: AnyEarlyStoppingSpec | None = Field(
        default_factory=EarlyStoppingSpec,
        description="one monitor {monitor, mode, patience, min_delta}, several "
        "{tasks: [...], aggregate: any|all, patience}, or null (never stop early)",
    )
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    def monitor_by_default(self, name: str, mode: Mode) -> None:
        """Checkpointing and early stopping monitor `name` (`mode`) unless the spec names their
        own monitors (a family's metric for best)."""
        if "monitor" not in self.checkpoint.model_fields_set:
            self.checkpoint.monitor, self.checkpoint.mode = name, mode
        es = self.early_stopping
        if isinstance(es, EarlyStoppingSpec) and "monitor" not in es.model_fields_set:
            es.monitor, es.mode = name, mode

    @model_validator(mode="after")
    def _checkpoint_follows_a_stopper(self) -> BaseJobSpec:
        if self.checkpoint.monitor == FOLLOW_EARLY_STOPPING and self.early_stopping is None:
            raise ValueError(
                "checkpoint.monitor 'early_stopping' follows the early stopper, but "
                "early_stopping is null; set early_stopping or monitor a metric"
            )
        return self

    @classmethod
    def family_name(cls) -> str:
        """The `family` value this spec model accepts (its one-value Literal)."""
        args = get_args(cls.model_fields["family"].annotation)
        if len(args) != 1 or not isinstance(args[0], str):
            raise TypeError(f"{cls.__name__}.family must be a one-value Literal")
        return args[0]
