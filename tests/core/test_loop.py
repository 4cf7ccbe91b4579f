"""The shared loop on its own, through a toy Task (linear regression on seeded random data):
loss parts, gradient norms, per-step schedulers and step-level rows, the plateau scheduler on
evaluation epochs only, monitors checked before training, a clear stop at a non-finite loss,
strict JSON, and the rank-sharding helpers."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from core import distributed as D
from core.callbacks import MonitorError
from core.report import (
    ArtifactEvent,
    MetricsRecord,
    RunEventError,
    parse_artifact_line,
    parse_metrics_line,
    strict_json,
)
from core.spec.common import BaseJobSpec
from core.task import Output, RunContext, Task
from core.trainer import NonFiniteLossError, Trainer


class Regressor(nn.Linear):
    """y = Wx + b with its own objective: MSE, reported with its MAE part."""

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        mse = (pred - target).pow(2).mean()
        return {"loss": mse, "mae": (pred - target).abs().mean().detach()}


class ToyTask(Task):
    """64 training rows in batches of `training.batch_size`, 32 validation rows."""

    def setup_data(self) -> None:
        gen = torch.Generator().manual_seed(0)
        w = torch.randn(4, 1, generator=gen)
        self.x = {s: torch.randn(n, 4, generator=gen) for s, n in (("train", 64), ("val", 32))}
        self.x["test"] = self.x["val"]
        self.y = {s: x @ w for s, x in self.x.items()}

    def build_model(self) -> nn.Module:
        return Regressor(4, 1)

    def train_batches(self, epoch: int) -> D.RankBatches[tuple[torch.Tensor, torch.Tensor]]:
        size = self.spec.training.batch_size
        gen = torch.Generator().manual_seed(epoch)
        order = D.shard_items(torch.randperm(64, generator=gen), self.ctx.rank, 1)
        chunks = [order[i : i + size] for i in range(0, 64, size)]
        return D.RankBatches(
            lambda: ((self.x["train"][c], self.y["train"][c]) for c in chunks), len(chunks)
        )

    def training_loss(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        x, y = batch
        return model.loss(model(x), y)

    def loss_parts(self) -> tuple[str, ...]:
        return ("mae",)

    def evaluate(self, model: nn.Module, split: str, epoch: int) -> dict[str, float]:
        out = model.loss(model(self.x[split]), self.y[split])
        return {f"{split}_{'loss' if k == 'loss' else k}": float(v) for k, v in out.items()}

    def metric_names(self) -> set[str]:
        return {"val_loss", "val_mae"}

    def write_outputs(self, model: nn.Module, run_dir: Path) -> list[Output]:
        (run_dir / "weights.json").write_text(json.dumps(model.weight.tolist()))
        return [Output("file", "weights.json")]


def _trainer(tmp_path: Path, **sections: Any) -> Trainer:
    spec = BaseJobSpec.model_validate(
        {
            "family": "toy",
            "training": {"epochs": 4, "batch_size": 16, "tensorboard": False},
            "optimizer": {"name": "sgd", "lr": 0.05},
            **sections,
        }
    )
    return Trainer(ToyTask(RunContext(spec, tmp_path, torch.device("cpu"))))


def _records(run: Path) -> list[MetricsRecord]:
    return [parse_metrics_line(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_loss_parts_and_gradient_norms_are_reported(tmp_path):
    summary = _trainer(tmp_path).fit()
    rows = [r.values for r in _records(tmp_path)]
    assert len(rows) == 4
    for row in rows:
        assert {"train_loss", "train_mae", "val_loss", "val_mae", "grad_norm"} <= set(row)
        assert row["grad_norm_max"] >= row["grad_norm"] > 0
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["model"]["parameters"] == 5
    assert "weights.json" in summary["outputs"]


def test_per_step_schedulers_step_every_optimizer_step_and_log_step_rows(tmp_path):
    trainer = _trainer(
        tmp_path,
        scheduler={"name": "onecycle", "max_lr": 0.1, "pct_start": 0.5},
        training={"epochs": 2, "batch_size": 16, "log_every_n_steps": 1, "tensorboard": False},
    )
    trainer.fit()
    steps = [r for r in _records(tmp_path) if r.granularity == "step"]
    assert [r.step for r in steps] == list(range(1, 9))  # 4 batches x 2 epochs
    lrs = [r.values["lr"] for r in steps]
    peak = lrs.index(max(lrs))
    assert 0 < peak < 7 and max(lrs) == pytest.approx(0.1, rel=0.05)
    assert lrs[-1] < lrs[0]  # annealed below the start
    assert all(r.values["grad_norm"] > 0 for r in steps)
    assert [r.epoch for r in _records(tmp_path) if r.granularity == "epoch"] == [1, 2]


def test_linear_warmup_rises_over_its_steps_then_decays(tmp_path):
    trainer = _trainer(
        tmp_path,
        scheduler={"name": "linear_warmup", "warmup_steps": 4, "decay": "linear"},
        training={"epochs": 3, "batch_size": 16, "log_every_n_steps": 1, "tensorboard": False},
    )
    trainer.fit()
    lrs = [r.values["lr"] for r in _records(tmp_path) if r.granularity == "step"]
    assert lrs[:5] == sorted(lrs[:5]) and lrs[4] == pytest.approx(0.05)
    assert lrs[5:] == sorted(lrs[5:], reverse=True) and lrs[-1] < 0.01


def test_plateau_steps_only_on_epochs_that_evaluate(tmp_path):
    trainer = _trainer(
        tmp_path,
        scheduler={"name": "plateau", "monitor": "val_loss", "patience": 0, "factor": 0.5},
        training={"epochs": 5, "batch_size": 16, "eval_every_n_epochs": 2, "tensorboard": False},
        early_stopping=None,
    )
    trainer.fit()
    rows = [r.values for r in _records(tmp_path)]
    assert len(rows) == 5
    assert ["val_loss" in r for r in rows] == [False, True, False, True, True]


def test_a_misspelled_monitor_is_refused_before_any_epoch(tmp_path):
    trainer = _trainer(tmp_path, scheduler={"name": "plateau", "monitor": "val_los"})
    with pytest.raises(MonitorError, match="scheduler.monitor 'val_los' .* available: .*val_loss"):
        trainer.fit()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_non_finite_loss_stops_at_once_naming_epoch_and_step(tmp_path):
    trainer = _trainer(tmp_path)
    original = trainer.task.training_loss

    def poisoned(model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        out = original(model, batch)
        if trainer.task.epoch == 3:
            out["loss"] = out["loss"] * float("inf")
        return out

    trainer.task.training_loss = poisoned  # type: ignore[method-assign]
    with pytest.raises(NonFiniteLossError, match=r"is inf at epoch 3, step 9 \(batch 1"):
        trainer.fit()
    assert trainer.epoch == 2
    assert all(math.isfinite(p) for p in trainer.model.weight.flatten().tolist())
    assert not list((tmp_path / "checkpoints").glob("*0003.pt"))


def test_a_per_step_scheduler_needs_a_known_batch_count(tmp_path):
    class Unsized(ToyTask):
        def train_batches(self, epoch: int):  # a bare generator
            return iter(list(super().train_batches(epoch)))

    spec = BaseJobSpec.model_validate(
        {"family": "toy", "scheduler": {"name": "onecycle"}, "training": {"tensorboard": False}}
    )
    with pytest.raises(ValueError, match="needs a known number of batches per epoch"):
        Trainer(Unsized(RunContext(spec, tmp_path, torch.device("cpu"))))


# --- the run contract ---------------------------------------------------------------------------


def test_run_events_round_trip_with_non_finite_values_as_null():
    line = MetricsRecord(3, 40, {"train_loss": float("nan"), "lr": 0.1}).to_json()
    assert "NaN" not in line and json.loads(line)["train_loss"] is None
    record = parse_metrics_line(line)
    assert (record.epoch, record.step, record.values) == (3, 40, {"train_loss": None, "lr": 0.1})
    event = ArtifactEvent("created", "embeddings", "e.npy", 8, "ab", 2, None, {"ids": "i.csv"})
    assert parse_artifact_line(event.to_json()) == event
    assert strict_json({"a": [float("inf"), 1.0]}) == '{"a": [null, 1.0]}'
    for bad in ('{"step": 1}', '{"epoch": -1}', "[1]", '{"epoch": 1, "v": 99}', "nope"):
        with pytest.raises(RunEventError):
            parse_metrics_line(bad)
    with pytest.raises(RunEventError, match="allowed: created, deleted"):
        parse_artifact_line('{"event": "moved", "path": "x"}')


# --- rank sharding --------------------------------------------------------------------------------


@pytest.mark.parametrize("n, world", [(1, 2), (7, 2), (10, 3), (9, 3), (5, 8)])
def test_shards_are_equal_and_cover_every_item(n, world):
    items = torch.arange(n)
    for layout in ("strided", "blocks"):
        shards = [D.shard_items(items, r, world, layout) for r in range(world)]
        assert len({s.numel() for s in shards}) == 1
        assert shards[0].numel() == math.ceil(n / world)
        assert set(torch.cat(shards).tolist()) == set(range(n))
    # strided: the k-th items of the ranks are the k-th consecutive block of the order
    strided = [D.shard_items(items, r, world) for r in range(world)]
    assert torch.stack(strided, 1).flatten()[:n].tolist() == list(range(n))
    with pytest.raises(ValueError, match="zero items"):
        D.shard_items(torch.arange(0), 0, 2)


def test_rank_batches_hold_a_family_to_its_declared_count():
    assert len(D.RankBatches(lambda: iter([1, 2]), 2)) == 2
    assert list(D.RankBatches(lambda: iter([1, 2]), 2)) == [1, 2]
    with pytest.raises(RuntimeError, match="yielded 1 batches, declared 2"):
        list(D.RankBatches(lambda: iter([1]), 2))
    with pytest.raises(RuntimeError, match="more than its 1 batches"):
        list(D.RankBatches(lambda: iter([1, 2]), 1))
