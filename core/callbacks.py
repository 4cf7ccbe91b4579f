"""Early stopping and model checkpointing, in the manner of Lightning's callbacks.

Each callback checks its `monitor` against the metrics the run can report before training
starts, and keeps its state in `state_dict()` so a resumed run continues exactly.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.spec.common import (
    FOLLOW_EARLY_STOPPING,
    EarlyStoppingSpec,
    MultiTaskEarlyStoppingSpec,
)

if TYPE_CHECKING:
    from core.trainer import Trainer

log = logging.getLogger(__name__)


class MonitorError(ValueError):
    """A callback monitors a metric the run does not report."""


def check_monitor(owner: str, monitor: str, available: set[str]) -> None:
    if monitor not in available:
        raise MonitorError(
            f"{owner}.monitor {monitor!r} is not a metric this run reports; "
            f"available: {', '.join(sorted(available))}"
        )


def _improved(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if best is None:
        return not math.isnan(value)
    return value < best - min_delta if mode == "min" else value > best + min_delta


class Callback:
    name = "callback"

    def setup(self, trainer: Trainer, available: set[str]) -> None:
        """Called once before training; raise if the configuration cannot work."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@dataclass
class StopTask:
    """One monitored metric of an `EarlyStopping` and its running state.

    `best` is the best value that counted as an improvement (None until one did), `wait` the
    evaluations since the last improvement that count towards `patience` (none during the
    grace period), `evals` the evaluations of `monitor` seen."""

    monitor: str
    mode: str = "min"
    min_delta: float = 0.0
    grace_period: int = 0
    baseline: float | None = None
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    evals: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("min", "max"):
            raise ValueError(f"early_stopping.mode {self.mode!r}; choose one of min, max")

    def update(self, value: float, epoch: int) -> bool:
        """Count one evaluation of `value`; whether it improved. The first `grace_period`
        evaluations count no stall; an improvement there still sets `best`."""
        self.evals += 1
        reference = self.best if self.best is not None else self.baseline
        if _improved(value, reference, self.mode, self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return True
        if self.evals > self.grace_period:
            self.wait += 1
        return False

    def stalled(self, patience: int) -> bool:
        return self.wait >= patience

    _STATE = ("best", "best_epoch", "wait", "evals")

    def state(self) -> dict[str, Any]:
        return {"monitor": self.monitor, **{k: getattr(self, k) for k in self._STATE}}


class EarlyStopping(Callback):
    """Stop training when monitored metrics stop improving (Lightning's `EarlyStopping`, with
    the several tasks, grace periods and baselines of the seed's `DefaultEarlyStopping`).

    Per task, at each evaluation of its `monitor` (an epoch whose metrics include it):

    - it *improves* when the value is better than the reference by more than `min_delta`
      (`value < ref - min_delta` for `mode: min`, `value > ref + min_delta` for `max`); the
      reference is the task's best so far, or before any improvement its `baseline` (a value
      not better than the baseline is no improvement); with neither, any non-NaN value
      improves. NaN never improves. An improvement sets `best` and resets `wait` to 0.
    - otherwise `wait` grows by one, except during the task's first `grace_period`
      evaluations, which count no stall (an improvement there still sets `best`).
    - it is *stalled* while `wait >= patience`; a later improvement un-stalls it.

    After the tasks of an epoch are updated, `aggregate: any` stops when at least one task is
    stalled, `all` when every task is. A combined improvement (what `checkpoint.monitor:
    early_stopping` follows) is the dual of the stop rule: under `all` (the run goes on while
    some task improves) an epoch where at least one task improved; under `any` (the run goes
    on only while every task improves) an epoch where every task evaluated at it improved.
    `last_improved_epoch` is the latest such epoch. The single form is one task with no grace
    period and no baseline, and behaves as before.

    Raises ValueError on a bad mode or aggregate, MonitorError (in `setup`) on a monitor the
    run does not report.
    """

    name = "early_stopping"

    def __init__(
        self,
        monitor: str | None = None,
        mode: str = "min",
        patience: int = 10,
        min_delta: float = 0.0,
        *,
        tasks: list[StopTask] | None = None,
        aggregate: str = "any",
    ):
        if aggregate not in ("any", "all"):
            raise ValueError(f"early_stopping.aggregate {aggregate!r}; choose one of any, all")
        if tasks is None:
            if monitor is None:
                raise ValueError("early_stopping needs a monitor or tasks")
            tasks = [StopTask(monitor, mode, min_delta)]
        if not tasks:
            raise ValueError("early_stopping.tasks is empty")
        self.tasks, self.aggregate, self.patience = tasks, aggregate, patience
        self.stopped_epoch: int | None = None
        self.last_improved_epoch: int | None = None

    @classmethod
    def from_spec(cls, spec: EarlyStoppingSpec | MultiTaskEarlyStoppingSpec) -> EarlyStopping:
        """The stopper an `early_stopping` section describes (either form)."""
        if isinstance(spec, MultiTaskEarlyStoppingSpec):
            tasks = [
                StopTask(t.monitor, t.mode, t.min_delta, t.grace_period, t.baseline)
                for t in spec.tasks
            ]
            return cls(tasks=tasks, aggregate=spec.aggregate, patience=spec.patience)
        return cls(spec.monitor, spec.mode, spec.patience, spec.min_delta)

    @property
    def monitor(self) -> str:
        """The monitors, comma-separated (one name for the single form)."""
        return ", ".join(t.monitor for t in self.tasks)

    def setup(self, trainer: Trainer, available: set[str]) -> None:
        for index, task in enumerate(self.tasks):
            owner = "early_stopping" if len(self.tasks) == 1 else f"early_stopping.tasks.{index}"
            check_monitor(owner, task.monitor, available)

    def update(self, epoch: int, metrics: dict[str, float]) -> bool:
        """Count the epoch's evaluations; whether the run should stop (sets `stopped_epoch`)."""
        improved = [
            task.update(float(metrics[task.monitor]), epoch)
            for task in self.tasks
            if task.monitor in metrics  # not evaluated this epoch otherwise
        ]
        if not improved:
            return False
        if (all if self.aggregate == "any" else any)(improved):
            self.last_improved_epoch = epoch
        stalled = [task.stalled(self.patience) for task in self.tasks]
        if not (any if self.aggregate == "any" else all)(stalled):
            return False
        self.stopped_epoch = epoch
        return True

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        if self.update(epoch, metrics):
            trainer.should_stop = True
            stalled = [t.monitor for t in self.tasks if t.stalled(self.patience)]
            log.info(
                "early stopping at epoch %d: %s did not improve for %d evaluations",
                epoch,
                ", ".join(stalled),
                self.patience,
            )

    def summary(self) -> dict[str, Any]:
        """What `summary.json` reports: the stop, and each task's best."""
        return {
            "aggregate": self.aggregate,
            "patience": self.patience,
            "stopped_epoch": self.stopped_epoch,
            "last_improved_epoch": self.last_improved_epoch,
            "tasks": [
                {**t.state(), "mode": t.mode, "stalled": t.stalled(self.patience)}
                for t in self.tasks
            ],
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "tasks": [t.state() for t in self.tasks],
            "stopped_epoch": self.stopped_epoch,
            "last_improved_epoch": self.last_improved_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "tasks" not in state:  # a checkpoint from before the multi-task form: one task
            state = {
                "tasks": [{"monitor": self.tasks[0].monitor, "best": state["best"],
                           "best_epoch": None, "wait": state["wait"], "evals": None}],
                "stopped_epoch": state["stopped_epoch"],
                "last_improved_epoch": None,
            }  # fmt: skip
        saved = [t["monitor"] for t in state["tasks"]]
        if saved != [t.monitor for t in self.tasks]:
            raise ValueError(
                f"the checkpoint's early stopping monitors {saved} differ from the spec's "
                f"{[t.monitor for t in self.tasks]}; resume with the spec it was trained with"
            )
        for task, saved_task in zip(self.tasks, state["tasks"], strict=True):
            task.best, task.best_epoch = saved_task["best"], saved_task["best_epoch"]
            task.wait = saved_task["wait"]
            # Unknown in an old checkpoint: past any grace period (there was none then).
            task.evals = saved_task["evals"] if saved_task["evals"] is not None else task.wait
        self.stopped_epoch = state["stopped_epoch"]
        self.last_improved_epoch = state["last_improved_epoch"]


class ModelCheckpoint(Callback):
    """Keep the `keep_top_k` best checkpoints by `monitor`, one every `every_n_epochs`, and
    `last.pt`. Only rank 0 writes; every rank keeps the same bookkeeping.

    `monitor: early_stopping` follows the run's `EarlyStopping` (which must run before this
    callback): an epoch that is a combined improvement (`EarlyStopping.last_improved_epoch`)
    is ranked by its epoch number, higher first, so "best" is the latest combined improvement
    and the top k are the k latest; `best_score` is then None."""

    name = "model_checkpoint"

    def __init__(
        self,
        dirpath: Path,
        monitor: str = "val_loss",
        mode: str = "min",
        every_n_epochs: int = 0,
        keep_top_k: int = 1,
        save_last: bool = True,
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"checkpoint.mode {mode!r}; choose one of min, max")
        self.dirpath = dirpath
        self.monitor, self.mode = monitor, mode
        self.every_n_epochs, self.keep_top_k, self.save_last = every_n_epochs, keep_top_k, save_last
        self.top_k: list[tuple[float, int]] = []  # (score, epoch), best first
        self.best_path: str | None = None
        self.stopper: EarlyStopping | None = None  # followed with monitor: early_stopping
        if monitor == FOLLOW_EARLY_STOPPING:
            self.mode = "max"  # the score is the epoch of a combined improvement

    def setup(self, trainer: Trainer, available: set[str]) -> None:
        if self.monitor != FOLLOW_EARLY_STOPPING:
            check_monitor("checkpoint", self.monitor, available)
            return
        callbacks = trainer.callbacks
        stopper = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
        if stopper is None:
            raise MonitorError(
                "checkpoint.monitor 'early_stopping' follows the early stopper, but the run has "
                "none (early_stopping is null); set early_stopping or monitor a metric"
            )
        if callbacks.index(stopper) > callbacks.index(self):
            raise ValueError("EarlyStopping must come before the ModelCheckpoint that follows it")
        self.stopper = stopper

    def _score(self, epoch: int, metrics: dict[str, float]) -> float | None:
        """This epoch's score, None when it does not rank (not evaluated, NaN, no improvement)."""
        if self.monitor == FOLLOW_EARLY_STOPPING:
            improved = self.stopper is not None and self.stopper.last_improved_epoch == epoch
            return float(epoch) if improved else None
        value = metrics.get(self.monitor)
        return None if value is None or math.isnan(value) else float(value)

    @property
    def best_score(self) -> float | None:
        if self.monitor == FOLLOW_EARLY_STOPPING:
            return None
        return self.top_k[0][0] if self.top_k else None

    @property
    def best_epoch(self) -> int | None:
        return self.top_k[0][1] if self.top_k else None

    @staticmethod
    def top_name(epoch: int) -> str:
        return f"best-epoch-{epoch:04d}.pt"

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None:
        saves: list[tuple[str, str]] = []  # (file name, tag)
        dropped: list[str] = []
        value = self._score(epoch, metrics)
        if value is not None:
            ranked = sorted(
                [*self.top_k, (value, epoch)],
                key=lambda t: t[0] if self.mode == "min" else -t[0],
            )
            kept, removed = ranked[: self.keep_top_k], ranked[self.keep_top_k :]
            if (value, epoch) in kept:
                saves.append((self.top_name(epoch), "best" if kept[0][1] == epoch else "top_k"))
            dropped = [self.top_name(e) for _, e in removed if e != epoch]
            self.top_k = kept
            self.best_path = f"checkpoints/{self.top_name(kept[0][1])}"
        if self.every_n_epochs and epoch % self.every_n_epochs == 0:
            saves.append((f"epoch-{epoch:04d}.pt", "periodic"))
        if self.save_last:
            saves.append(("last.pt", "last"))
        # The state saved in the files below already includes this epoch's bookkeeping.
        for name, tag in saves:
            trainer.save_checkpoint(self.dirpath / name, tag=tag)
        for name in dropped:
            trainer.delete_checkpoint(self.dirpath / name)

    def state_dict(self) -> dict[str, Any]:
        return {"top_k": [list(t) for t in self.top_k], "best_path": self.best_path}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.top_k = [(float(s), int(e)) for s, e in state["top_k"]]
        self.best_path = state["best_path"]
