"""The one training loop every family uses.

Read `fit` top to bottom: resume, then per epoch train (gradient accumulation, AMP, clipping,
per-step schedulers, loss parts, grad norms, a stop at the first non-finite loss), evaluate,
ask the family for quality metrics, step the epoch scheduler, run the callbacks (early
stopping, checkpoints), report; at the end evaluate the best checkpoint on the test split and
write the family's outputs and `summary.json`. Under DDP every rank runs this loop; rank 0
alone writes files and reports.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core import distributed as D
from core.callbacks import Callback, EarlyStopping, ModelCheckpoint, check_monitor
from core.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint, sha256_file
from core.hooks import TensorBoardHook
from core.modelinfo import model_summary
from core.optim import get_optimizer, get_scheduler, scheduler_interval, step_scheduler
from core.projection import write_projections
from core.report import (
    ArtifactEvent,
    MetricsRecord,
    NullReporter,
    Reporter,
    RunDirReporter,
    finite_or_none,
    report_phase,
    strict_json,
)
from core.seed import rng_state, set_rng_state, set_seed
from core.spec import BaseJobSpec
from core.task import LossOutput, Output, RunContext, Task

log = logging.getLogger(__name__)

LogHook = Callable[[dict[str, float], int, str], None]
CHECKPOINT_FORMAT = 1
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16-mixed": torch.float16}


# Set by SIGTERM (`core.run`): save at the next optimizer step and stop (a spot node going
# away, a rolling update), so at most one step of work is lost, not an epoch.
PREEMPT = threading.Event()


class Preempted(RuntimeError):
    """The run saved a mid-epoch checkpoint at an optimizer step after SIGTERM and stopped."""


class NonFiniteLossError(FloatingPointError):
    """The loss of a training step was NaN or infinite; the run stops before that epoch's
    checkpoints are written."""


def split_loss(output: LossOutput) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`(loss, parts)` from what `Task.training_loss` returned (a tensor or a mapping with a
    `loss` entry); parts are detached."""
    if isinstance(output, torch.Tensor):
        return output, {}
    if not isinstance(output, Mapping) or "loss" not in output:
        raise TypeError("training_loss must return a tensor or a mapping with a 'loss' entry")
    parts = {k: v.detach().float() for k, v in output.items() if k != "loss"}
    return output["loss"], parts


class Trainer:
    """Trains `task` as `ctx.spec` says. One instance per rank."""

    def __init__(
        self,
        task: Task,
        callbacks: list[Callback] | None = None,
        reporter: Reporter | None = None,
        progress: bool = False,
    ):
        self.task = task
        self.ctx: RunContext = task.ctx
        self.spec: BaseJobSpec = task.spec
        train = self.spec.training
        set_seed(train.seed + self.ctx.rank, train.deterministic)
        task.setup_data()
        self.model: nn.Module = task.build_model()
        self.model_info = model_summary(self.model)
        if self.ctx.is_main:
            log.info(
                "model: %s parameters (%s trainable), %.2f MB",
                f"{self.model_info['parameters']:,}",
                f"{self.model_info['trainable']:,}",
                self.model_info["megabytes"],
            )
        self.net: nn.Module = self.model  # what the loop calls: DDP-wrapped under DDP
        if self.ctx.world_size > 1:
            if self.ctx.device.type == "cuda":
                # Batch statistics over the global batch, as one process computes them (CUDA
                # only: on CPU, BatchNorm statistics stay per rank).
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = get_optimizer(self.model, self.spec.optimizer)
        self.scheduler_interval = scheduler_interval(self.spec.scheduler)
        steps_per_epoch = self._steps_per_epoch() if self.scheduler_interval == "step" else None
        self.scheduler = get_scheduler(
            self.optimizer, self.spec.scheduler, train.epochs, steps_per_epoch
        )
        self.amp_dtype = _AMP_DTYPES.get(train.precision)
        self.scaler = torch.amp.GradScaler(
            self.ctx.device.type, enabled=train.precision == "fp16-mixed"
        )
        self.callbacks = callbacks if callbacks is not None else self.default_callbacks()
        self.reporter: Reporter = reporter or (
            RunDirReporter(self.ctx.run_dir) if self.ctx.is_main else NullReporter()
        )
        self.log_hooks: list[LogHook] = []
        if self.ctx.is_main and train.tensorboard:
            self.add_log_hook(TensorBoardHook(self.ctx.run_dir))
        self.progress = progress and self.ctx.is_main
        self.epoch = 0  # epochs completed
        self.global_step = 0  # optimizer steps taken
        self.step_lr = 0.0  # the LR of the last optimizer step
        self.in_epoch: dict[str, Any] | None = None  # a preempted epoch's progress, on resume
        self.epoch_lr = 0.0  # the LR at the start of the epoch being trained
        self.should_stop = False
        self.history: list[dict[str, Any]] = []

    # --- construction helpers -----------------------------------------------------------------

    def default_callbacks(self) -> list[Callback]:
        spec = self.spec
        callbacks: list[Callback] = []
        if spec.early_stopping is not None:  # before the checkpoint, which may follow it
            callbacks.append(EarlyStopping.from_spec(spec.early_stopping))
        ck = spec.checkpoint
        callbacks.append(
            ModelCheckpoint(
                self.ctx.run_dir / "checkpoints",
                ck.monitor,
                ck.mode,
                ck.every_n_epochs,
                ck.keep_top_k,
                ck.save_last,
            )
        )
        return callbacks

    def add_log_hook(self, hook: LogHook) -> None:
        """Call `hook(metrics, step, prefix)` after every epoch (rank 0), e.g. TensorBoard."""
        self.log_hooks.append(hook)

    @property
    def checkpointer(self) -> ModelCheckpoint | None:
        return next((c for c in self.callbacks if isinstance(c, ModelCheckpoint)), None)

    def available_metrics(self) -> set[str]:
        parts = {f"train_{p}" for p in self.task.loss_parts()}
        grads = {"grad_norm", "grad_norm_max"}
        return {"train_loss", "lr", "epoch"} | parts | grads | set(self.task.metric_names())

    def _steps_per_epoch(self) -> int:
        """Optimizer steps per epoch (for per-step schedulers): the family's batch count."""
        try:
            batches = len(self.task.train_batches(1))  # type: ignore[arg-type]
        except TypeError:
            raise ValueError(
                f"scheduler {self.spec.scheduler.name!r} steps per optimizer step and needs a "
                f"known number of batches per epoch, which family {self.spec.family!r} cannot "
                "tell in advance with these settings; use an epoch scheduler (cosine, step, "
                "plateau)"
            ) from None
        return max(1, math.ceil(batches / self.spec.training.gradient_accumulation))

    # --- one epoch ----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype)

    def _optimizer_step(self, micro_batches: int) -> torch.Tensor:
        """Unscale, clip, step; the gradients' total norm before clipping (a 0-dim tensor)."""
        accumulation = self.spec.training.gradient_accumulation
        if micro_batches != accumulation:  # a short last group: rescale to its mean
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.mul_(accumulation / micro_batches)
        self.scaler.unscale_(self.optimizer)
        clip = self.spec.training.gradient_clip
        params = [p for p in self.model.parameters() if p.grad is not None]
        norm = nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        self.step_lr = self._current_lr()  # the LR this step used (step rows report it)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.scheduler is not None and self.scheduler_interval == "step":
            self.scheduler.step()  # type: ignore[call-arg]
        return norm.detach().float()

    def _check_finite(self, loss: torch.Tensor, epoch: int, batch_index: int) -> None:
        if not bool(torch.isfinite(loss.detach())):
            raise NonFiniteLossError(
                f"the training loss is {float(loss):g} at epoch {epoch}, step "
                f"{self.global_step + 1} (batch {batch_index} of the epoch); stopped before any "
                "checkpoint of this epoch. Lower optimizer.lr, keep training.gradient_clip on, "
                "use precision fp32, or check the data for NaN/Inf values"
            )

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the family's training batches: `train_loss` and `train_<part>` (means
        over the epoch's batches and ranks), `grad_norm` (mean) and `grad_norm_max` (before
        clipping). Raises NonFiniteLossError at the first NaN/Inf loss."""
        self.net.train()
        self.task.epoch = epoch
        train = self.spec.training
        accumulation = train.gradient_accumulation
        loss_sum = torch.zeros((), device=self.ctx.device)
        part_sums: dict[str, torch.Tensor] = {}
        norms: list[torch.Tensor] = []
        window: list[torch.Tensor] = []  # losses since the last step-level row
        batches = 0
        pending = 0  # micro-batches whose gradients wait for a step
        epoch_batches = self.task.train_batches(epoch)
        D.check_batch_counts(epoch_batches, self.ctx.device, epoch)
        iterator: Iterator[Any] = iter(epoch_batches)
        resumed, self.in_epoch = self.in_epoch, None
        if resumed is not None and resumed["epoch"] == epoch:  # a preempted epoch goes on
            for _ in range(resumed["batches"]):  # the same batches, from their own generators
                next(iterator, None)
            batches = resumed["batches"]
            loss_sum += resumed["loss_sum"]
            part_sums = {
                k: torch.tensor(v, device=self.ctx.device) for k, v in resumed["parts"].items()
            }
            norms = [torch.tensor(v) for v in resumed["norms"]]
            log.info("resuming epoch %d after its batch %d", epoch, batches)
        batch = next(iterator, None)
        while batch is not None:
            following = next(iterator, None)
            sync = pending + 1 == accumulation or following is None
            no_sync = getattr(self.net, "no_sync", None)
            self.task.global_step = self.global_step
            with contextlib.nullcontext() if sync or no_sync is None else no_sync():
                with self._autocast():
                    loss, parts = split_loss(self.task.training_loss(self.net, batch))
                self._check_finite(loss, epoch, batches + 1)
                self.scaler.scale(loss / accumulation).backward()
            loss_sum += loss.detach().float()
            window.append(loss.detach().float())
            for name, value in parts.items():
                part_sums[name] = part_sums.get(name, 0.0) + value
            batches += 1
            pending += 1
            if sync:
                norms.append(self._optimizer_step(pending))
                pending = 0
                every = train.log_every_n_steps
                if every and self.global_step % every == 0:
                    self._report_step(epoch, window, norms[-1])
                    window = []
                if following is not None and self._preempt_agreed():
                    progress = {"epoch": epoch, "batches": batches, "lr": self.epoch_lr,
                                "loss_sum": float(loss_sum),
                                "parts": {k: float(v) for k, v in part_sums.items()},
                                "norms": [float(n) for n in norms]}  # fmt: skip
                    self._save_preempted(progress)
            batch = following
        count = max(batches, 1)
        metrics = {"train_loss": float(D.mean_across_ranks(loss_sum / count))}
        for name, total in part_sums.items():
            metrics[f"train_{name}"] = float(D.mean_across_ranks(total / count))
        if norms:
            stacked = torch.stack(norms)
            metrics["grad_norm"] = float(stacked.mean())
            metrics["grad_norm_max"] = float(stacked.max())
        return metrics

    def _preempt_agreed(self) -> bool:
        """Whether SIGTERM came (to any rank: every rank stops at the same step)."""
        flag = PREEMPT.is_set()
        return D.any_rank(flag, self.ctx.device) if self.ctx.world_size > 1 else flag

    def _save_preempted(self, progress: dict[str, Any]) -> None:
        """Save the whole state with the epoch's progress as `last.pt`, then stop."""
        self.in_epoch = progress
        path = self.ctx.run_dir / "checkpoints" / "last.pt"
        self.save_checkpoint(path, tag="last")
        PREEMPT.clear()  # served
        log.warning(
            "preempted: saved %s at epoch %d, step %d (batch %d); stopping",
            path.name, progress["epoch"], self.global_step, progress["batches"],
        )  # fmt: skip
        raise Preempted(f"stopped by SIGTERM at epoch {progress['epoch']}, step {self.global_step}")

    def _report_step(self, epoch: int, losses: list[torch.Tensor], norm: torch.Tensor) -> None:
        """A step-level metrics row: the mean loss since the last one, LR and grad norm."""
        loss = float(D.mean_across_ranks(torch.stack(losses).mean()))
        if self.ctx.is_main:
            values = {"train_loss": loss, "lr": self.step_lr, "grad_norm": float(norm)}
            self.reporter.metrics(MetricsRecord(epoch, self.global_step, values, "step"))

    @torch.no_grad()
    def eval_epoch(self, epoch: int, split: str = "val") -> dict[str, float]:
        """The family's metrics of `split` with the current weights."""
        self.model.eval()
        with self._autocast():
            return {k: float(v) for k, v in self.task.evaluate(self.model, split, epoch).items()}

    @torch.no_grad()
    def predict(self, split: str = "test") -> dict[str, torch.Tensor]:
        """The family's predictions on `split` with the current weights."""
        self.model.eval()
        with self._autocast():
            return self.task.predict(self.model, split)

    # --- checkpoints --------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict(),
            "callbacks": {c.name: c.state_dict() for c in self.callbacks},
            "task": self.task.state_dict(),
            "in_epoch": self.in_epoch,  # set only in a preempted run's checkpoint
            "epoch": self.epoch,
            "global_step": self.global_step,
            "history": self.history,
            "spec": self.spec.model_dump(mode="json"),
        }

    def save_checkpoint(self, path: Path, tag: str | None = None) -> None:
        """Save the full training state at `path` (every rank's RNG; rank 0 writes)."""
        state = self.state_dict()
        state["rng"] = D.gather_objects(rng_state())
        if not self.ctx.is_main:
            return
        digest = save_checkpoint(state, path)
        self._register(
            Output("checkpoint", str(path.relative_to(self.ctx.run_dir)), tag=tag), digest
        )

    def delete_checkpoint(self, path: Path) -> None:
        if not self.ctx.is_main:
            return
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        rel = str(path.relative_to(self.ctx.run_dir))
        self.reporter.artifact(ArtifactEvent("deleted", "checkpoint", rel))

    def load_checkpoint(self, path: Path, weights_only: bool = False) -> dict[str, Any]:
        """Restore from `path`: the model alone, or (default) the whole training state."""
        state = load_checkpoint(path, map_location=self.ctx.device)
        self.model.load_state_dict(state["model"])
        if weights_only:
            return state
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        for callback in self.callbacks:
            if callback.name in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][callback.name])
        self.task.load_state_dict(state.get("task") or {})
        self.in_epoch = state.get("in_epoch")
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.history = list(state["history"])
        rngs = state["rng"]
        if len(rngs) == self.ctx.world_size:
            set_rng_state(rngs[self.ctx.rank])
        else:
            log.warning(
                "checkpoint has %d ranks' RNG states, run has %d: reseeding",
                len(rngs),
                self.ctx.world_size,
            )
            set_seed(self.spec.training.seed + self.ctx.rank + self.epoch)
        log.info("resumed from %s at epoch %d", path, self.epoch)
        return state

    # --- the loop -----------------------------------------------------------------------------

    def _current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _report(self, record: dict[str, Any]) -> None:
        if not self.ctx.is_main:
            return
        values = {k: v for k, v in record.items() if k not in ("epoch", "step")}
        self.reporter.metrics(MetricsRecord(record["epoch"], record["step"], values))
        numeric = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "epoch"}
        for hook in self.log_hooks:
            hook(numeric, record["epoch"], "epoch")

    def _check_setup(self, available: set[str]) -> None:
        """Every monitor names a metric the run reports, before any epoch trains."""
        for callback in self.callbacks:
            callback.setup(self, available)
        monitor = getattr(self.spec.scheduler, "monitor", None)
        if monitor is not None:
            check_monitor("scheduler", monitor, available)

    def fit(self, resume_from: Path | None = None) -> dict[str, Any]:
        """Train to the last epoch or an early stop; return the run's summary."""
        train = self.spec.training
        self._check_setup(self.available_metrics())
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        started = time.perf_counter()
        report_phase("training", total=train.epochs, unit="epoch")
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=train.epochs, initial=self.epoch, unit="epoch", dynamic_ncols=True)
        try:
            while self.epoch < train.epochs and not self.should_stop:
                epoch = self.epoch + 1
                t0 = time.perf_counter()
                lr = self._current_lr()
                if self.in_epoch is not None and self.in_epoch["epoch"] == epoch:
                    lr = self.in_epoch["lr"]  # the epoch began before the preemption
                self.epoch_lr = lr
                metrics = self.train_epoch(epoch)
                if epoch % train.eval_every_n_epochs == 0 or epoch == train.epochs:
                    metrics |= self.eval_epoch(epoch, "val")
                if self.ctx.is_main:
                    self.model.eval()
                    with torch.no_grad(), self._autocast():
                        metrics |= self.task.epoch_metrics(self.model, epoch, final=False)
                metrics = D.broadcast_object(metrics)  # every rank acts on rank 0's numbers
                self.epoch = epoch
                record = {
                    "epoch": epoch,
                    "step": self.global_step,
                    **metrics,
                    "lr": lr,
                    "seconds": round(time.perf_counter() - t0, 4),
                }
                self.history.append(record)  # before the callbacks: checkpoints carry it
                if self.scheduler_interval == "epoch":
                    step_scheduler(
                        self.scheduler, metrics, getattr(self.spec.scheduler, "monitor", "")
                    )
                for callback in self.callbacks:
                    callback.on_epoch_end(self, epoch, metrics)
                self.should_stop = D.any_rank(self.should_stop, self.ctx.device)
                self._report(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
        finally:
            if bar is not None:
                bar.close()
        return self.finish(time.perf_counter() - started)

    def finish(self, seconds: float) -> dict[str, Any]:
        """Evaluate the best weights on the test split, write outputs and `summary.json`."""
        report_phase("writing outputs")
        ckpt = self.checkpointer
        best_path = self.ctx.run_dir / ckpt.best_path if ckpt and ckpt.best_path else None
        D.barrier()
        if best_path is not None and best_path.exists():
            self.load_checkpoint(best_path, weights_only=True)
        test = self.eval_epoch(self.epoch, "test")
        if not self.ctx.is_main:
            return {}
        self.model.eval()
        with torch.no_grad(), self._autocast():
            final = self.task.epoch_metrics(self.model, self.epoch, final=True)
            artifacts = self.task.write_outputs(self.model, self.ctx.run_dir)
            artifacts += write_projections(artifacts, self.ctx.run_dir)
            extra = self.task.summary()
        for hook in self.log_hooks:
            hook({**test, **final}, self.epoch, "best")
            if isinstance(hook, TensorBoardHook):
                hook.close()
                events = sorted(hook.log_dir.glob("events.*"))
                artifacts += [
                    Output("tensorboard", str(p.relative_to(self.ctx.run_dir))) for p in events
                ]
        early = next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)
        summary = {
            "family": self.spec.family,
            "name": self.spec.name,
            "epochs_completed": self.epoch,
            "global_step": self.global_step,
            "stopped_early": bool(early and early.stopped_epoch),
            "stopped_epoch": early.stopped_epoch if early else None,
            "early_stopping": early.summary() if early else None,  # per-task bests
            "monitor": ckpt.monitor if ckpt else None,
            "best_epoch": ckpt.best_epoch if ckpt else None,
            "best_score": ckpt.best_score if ckpt else None,
            "best_checkpoint": ckpt.best_path if ckpt else None,
            "final_metrics": self.history[-1] if self.history else {},
            "best_metrics": {**test, **final},
            "seconds": round(seconds, 3),
            "world_size": self.ctx.world_size,
            "model": self.model_info,
            "outputs": [a.path for a in artifacts],
            **extra,
        }
        summary = finite_or_none(summary)  # strict JSON: NaN/Inf as null
        for output in artifacts:
            self._register(output)
        path = self.ctx.run_dir / "summary.json"
        digest = atomic_write_bytes(path, strict_json(summary, indent=2).encode())
        self._register(Output("summary", "summary.json"), digest)
        return summary

    def _register(self, output: Output, sha256: str | None = None) -> None:
        """Report a file of the run directory as a created artifact (size, sha256 added)."""
        path = self.ctx.run_dir / output.path
        self.reporter.artifact(
            ArtifactEvent(
                "created",
                output.kind,
                output.path,
                size=path.stat().st_size,
                sha256=sha256 or sha256_file(path),
                epoch=output.epoch if output.epoch is not None else self.epoch,
                tag=output.tag,
                meta=output.meta,
            )
        )
