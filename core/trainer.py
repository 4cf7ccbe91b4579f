"""The one training loop every family uses.

Read `fit` top to bottom: resume, then per epoch train (gradient accumulation, AMP, clipping),
evaluate, ask the family for quality metrics, step the scheduler, run the callbacks
(early stopping, checkpoints), report; at the end evaluate the best checkpoint on the test
split and write the family's outputs and `summary.json`. Under DDP every rank runs this loop;
rank 0 alone writes files and reports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from core import distributed as D
from core.callbacks import Callback, EarlyStopping, ModelCheckpoint
from core.checkpoint import atomic_write_bytes, load_checkpoint, save_checkpoint, sha256_file
from core.hooks import TensorBoardHook
from core.optim import get_optimizer, get_scheduler, step_scheduler
from core.report import NullReporter, Reporter, RunDirReporter
from core.seed import rng_state, set_rng_state, set_seed
from core.spec import BaseJobSpec
from core.task import Artifact, RunContext, Task

log = logging.getLogger(__name__)

LogHook = Callable[[dict[str, float], int, str], None]
CHECKPOINT_FORMAT = 1
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16-mixed": torch.float16}


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
        self.model: nn.Module = task.build_model()
        self.net: nn.Module = self.model  # what the loop calls: DDP-wrapped under DDP
        if self.ctx.world_size > 1:
            ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = get_optimizer(self.model, self.spec.optimizer)
        self.scheduler = get_scheduler(self.optimizer, self.spec.scheduler, train.epochs)
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
        self.should_stop = False
        self.history: list[dict[str, Any]] = []

    # --- construction helpers -----------------------------------------------------------------

    def default_callbacks(self) -> list[Callback]:
        spec = self.spec
        callbacks: list[Callback] = []
        if spec.early_stopping is not None:
            es = spec.early_stopping
            callbacks.append(EarlyStopping(es.monitor, es.mode, es.patience, es.min_delta))
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
        return {"train_loss", "lr", "epoch"} | set(self.task.metric_names())

    # --- one epoch ----------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.amp_dtype)

    def _optimizer_step(self, micro_batches: int) -> None:
        accumulation = self.spec.training.gradient_accumulation
        if micro_batches != accumulation:  # a short last group: rescale to its mean
            for p in self.model.parameters():
                if p.grad is not None:
                    p.grad.mul_(accumulation / micro_batches)
        self.scaler.unscale_(self.optimizer)
        if self.spec.training.gradient_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.training.gradient_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the family's training batches; returns `{"train_loss": mean}`."""
        self.net.train()
        accumulation = self.spec.training.gradient_accumulation
        loss_sum = torch.zeros((), device=self.ctx.device)
        batches = 0
        pending = 0  # micro-batches whose gradients wait for a step
        iterator: Iterator[Any] = iter(self.task.train_batches(epoch))
        batch = next(iterator, None)
        while batch is not None:
            following = next(iterator, None)
            sync = pending + 1 == accumulation or following is None
            no_sync = getattr(self.net, "no_sync", None)
            with contextlib.nullcontext() if sync or no_sync is None else no_sync():
                with self._autocast():
                    loss = self.task.training_loss(self.net, batch)
                self.scaler.scale(loss / accumulation).backward()
            loss_sum += loss.detach().float()
            batches += 1
            pending += 1
            if sync:
                self._optimizer_step(pending)
                pending = 0
            batch = following
        mean = D.mean_across_ranks(loss_sum / max(batches, 1))
        return {"train_loss": float(mean)}

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
        self.reporter.artifact(
            {
                "event": "created",
                "kind": "checkpoint",
                "tag": tag,
                "epoch": self.epoch,
                "path": str(path.relative_to(self.ctx.run_dir)),
                "size": path.stat().st_size,
                "sha256": digest,
            }
        )

    def delete_checkpoint(self, path: Path) -> None:
        if not self.ctx.is_main:
            return
        path.unlink(missing_ok=True)
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        self.reporter.artifact(
            {
                "event": "deleted",
                "kind": "checkpoint",
                "path": str(path.relative_to(self.ctx.run_dir)),
            }
        )

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
        self.reporter.epoch(record)
        numeric = {k: v for k, v in record.items() if isinstance(v, int | float) and k != "epoch"}
        for hook in self.log_hooks:
            hook(numeric, record["epoch"], "epoch")

    def fit(self, resume_from: Path | None = None) -> dict[str, Any]:
        """Train to the last epoch or an early stop; return the run's summary."""
        train = self.spec.training
        available = self.available_metrics()
        for callback in self.callbacks:
            callback.setup(self, available)
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        started = time.perf_counter()
        bar = None
        if self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=train.epochs, initial=self.epoch, unit="epoch", dynamic_ncols=True)
        try:
            while self.epoch < train.epochs and not self.should_stop:
                epoch = self.epoch + 1
                t0 = time.perf_counter()
                lr = self._current_lr()
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
                step_scheduler(self.scheduler, metrics, getattr(self.spec.scheduler, "monitor", ""))
                for callback in self.callbacks:
                    callback.on_epoch_end(self, epoch, metrics)
                self.should_stop = D.any_rank(self.should_stop, self.ctx.device)
                self._report(record)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.4g}" for k, v in metrics.items()}, refresh=False)
                if not all(math.isfinite(v) for k, v in metrics.items() if k.endswith("loss")):
                    raise FloatingPointError(f"non-finite loss at epoch {epoch}: {metrics}")
        finally:
            if bar is not None:
                bar.close()
        return self.finish(time.perf_counter() - started)

    def finish(self, seconds: float) -> dict[str, Any]:
        """Evaluate the best weights on the test split, write outputs and `summary.json`."""
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
        for hook in self.log_hooks:
            hook({**test, **final}, self.epoch, "best")
            if isinstance(hook, TensorBoardHook):
                hook.close()
                events = sorted(hook.log_dir.glob("events.*"))
                artifacts += [
                    Artifact("tensorboard", str(p.relative_to(self.ctx.run_dir))) for p in events
                ]
        early = next((c for c in self.callbacks if isinstance(c, EarlyStopping)), None)
        summary = {
            "family": self.spec.family,  # type: ignore[attr-defined]
            "name": self.spec.name,
            "epochs_completed": self.epoch,
            "global_step": self.global_step,
            "stopped_early": bool(early and early.stopped_epoch),
            "monitor": ckpt.monitor if ckpt else None,
            "best_epoch": ckpt.best_epoch if ckpt else None,
            "best_score": ckpt.best_score if ckpt else None,
            "best_checkpoint": ckpt.best_path if ckpt else None,
            "final_metrics": self.history[-1] if self.history else {},
            "best_metrics": {**test, **final},
            "seconds": round(seconds, 3),
            "world_size": self.ctx.world_size,
            "outputs": [a.path for a in artifacts],
        }
        self._register(artifacts)
        path = self.ctx.run_dir / "summary.json"
        digest = atomic_write_bytes(path, json.dumps(summary, indent=2, default=float).encode())
        self.reporter.artifact(
            {
                "event": "created",
                "kind": "summary",
                "path": "summary.json",
                "size": path.stat().st_size,
                "sha256": digest,
                "epoch": self.epoch,
                "tag": None,
            }
        )
        return summary

    def _register(self, artifacts: list[Artifact]) -> None:
        for art in artifacts:
            path = self.ctx.run_dir / art.path
            self.reporter.artifact(
                {
                    "event": "created",
                    "kind": art.kind,
                    "path": art.path,
                    "tag": art.tag,
                    "epoch": art.epoch if art.epoch is not None else self.epoch,
                    "size": path.stat().st_size,
                    "sha256": sha256_file(path),
                    **art.extra,
                }
            )
