"""The graph_transformer family end to end: spec errors, the GraphGPS ZINC model size, rank
sharding, training through the shared loop (loss falls, outputs written, reproducible), ZINC,
link prediction and the TensorBoard hook."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.families.graph_transformer.model import GPSModel, GraphInputs
from core.modelinfo import count_parameters
from core.run import train
from core.spec import SpecError, load_spec
from core.task import RunContext
from tests.support.graphs import gt_cache, gt_env, one_thread, tiny_gt  # noqa: F401
from tests.support.specs import metric_rows, stopped_and_resumed

pytestmark = pytest.mark.usefixtures("one_thread", "gt_env")


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


# --- spec ----------------------------------------------------------------------------------------


def _errors(spec: dict) -> str:
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    return str(err.value)


def test_spec_defaults_by_task():
    spec = load_spec(tiny_gt(task="graph_regression", data={"format": "zinc"}))
    assert spec.loss == "mae" and spec.metrics == ["mae", "mse", "rmse"]
    assert (spec.metric_for_best.name, spec.metric_for_best.mode) == ("val_mae", "min")
    assert spec.checkpoint.monitor == spec.early_stopping.monitor == "val_mae"
    assert spec.data.split.kind == "own" and spec.training.batch_size == 32
    spec = load_spec(tiny_gt(checkpoint={"monitor": "val_loss"}))
    assert spec.checkpoint.monitor == "val_loss" and spec.early_stopping.monitor == "val_accuracy"
    assert load_spec(tiny_gt(task="link_prediction")).metric_for_best.name == "val_ap"


def test_spec_errors_name_fields_and_choices():
    msg = _errors(tiny_gt(data={"format": "tu", "name": "MUTAG", "split": {"kind": "own"}}))
    assert "data.split.kind: unknown kind 'own'; allowed: fractions, kfold" in msg
    msg = _errors(tiny_gt(loss="mse", metrics=["mae"]))
    assert "loss 'mse' does not fit task 'graph_classification'; choose one of cross_entropy" in msg
    assert "metrics ['mae'] do not fit task" in msg
    assert "model.local_layer" in _errors(tiny_gt(model={"local_layer": "gat"}))
    msg = _errors(tiny_gt(positional_encodings=[{"kind": "lappe"}]))
    assert "positional_encodings.0.kind: unknown kind 'lappe'; allowed: rwse, laplacian" in msg
    msg = _errors(tiny_gt(model={"channels": 30, "heads": 4}))
    assert "divisible by model.heads" in msg
    msg = _errors(
        tiny_gt(
            data={"format": "tu", "name": "MUTAG", "split": {"kind": "kfold", "k": 5, "fold": 5}}
        )
    )
    assert "split.fold (5) must be in 0..4" in msg
    assert "relative to the data root" in _errors(
        tiny_gt(data={"format": "tu_upload", "path": "/x"})
    )
    msg = _errors(tiny_gt(metric_for_best={"name": "val_mae", "mode": "min"}))
    assert "metric_for_best.name 'val_mae' is not reported; choose one of val_loss" in msg
    msg = _errors(tiny_gt(model={"channels": 12, "heads": 4}))
    assert "must be smaller than model.channels (12)" in msg
    msg = _errors(tiny_gt(task="node_classification"))
    assert "task: Input should be 'graph_regression', 'graph_classification'" in msg


# --- model ---------------------------------------------------------------------------------------


def test_graphgps_zinc_config_has_424k_parameters():
    model = GPSModel(
        GraphInputs(num_node_types=28, node_dim=None, num_edge_types=4, edge_dim=None,
                    pe_raw_dims=(20,)),
        task="graph_regression", out_dim=1, channels=64, layers=10, heads=4,
        local_layer="gine", pooling="add", head_layers=3, pe_dims=(28,), pe_attrs=("pe_0",),
    )  # fmt: skip
    assert count_parameters(model) == 423_717
    with pytest.raises(ValueError, match="unknown local layer 'gat'; choose one of gcn, gin"):
        GPSModel(GraphInputs(28, None, 4, None), task="graph_regression", out_dim=1,
                 local_layer="gat")  # fmt: skip


# --- sharding ------------------------------------------------------------------------------------


def test_ranks_agree_on_order_and_get_equal_shares(tmp_path):
    from core.families.graph_transformer.task import GraphTransformerTask

    spec = load_spec(tiny_gt())
    tasks = [
        GraphTransformerTask(RunContext(spec, tmp_path, torch.device("cpu"), rank, 3))
        for rank in range(3)
    ]
    tasks[0].setup_data()
    for t in tasks[1:]:
        t.index, t.data = tasks[0].index, tasks[0].data
    orders = [t._rank_order(epoch=2) for t in tasks]
    assert len({o.numel() for o in orders}) == 1
    train = set(tasks[0].index["train"].tolist())
    assert set(torch.cat(orders).tolist()) == train
    assert not torch.equal(tasks[0]._rank_order(1), tasks[0]._rank_order(2))
    assert torch.equal(tasks[0]._rank_order(2), orders[0])
    counts = [sum(1 for _ in t.train_batches(1)) for t in tasks]
    assert len(set(counts)) == 1 and tasks[0].per_rank_batch_size() == 32 // 3


# --- training through the shared loop ------------------------------------------------------------


def test_mutag_trains_and_writes_outputs(tmp_path):
    summary = train(load_spec(tiny_gt(training={"epochs": 4})), tmp_path)
    rows = metric_rows(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert {"val_loss", "val_accuracy", "val_f1", "val_roc_auc", "val_ap"} <= set(rows[0])
    assert summary["monitor"] == "val_accuracy"
    assert {"test_loss", "test_accuracy"} <= set(summary["best_metrics"])
    emb = np.load(tmp_path / "embeddings.npy")
    assert emb.shape == (188, 32) and emb.dtype == np.float32
    ids = _csv(tmp_path / "graph_ids.csv")
    assert len(ids) == 188 and {r["split"] for r in ids} == {"train", "val", "test"}
    preds = _csv(tmp_path / "predictions.csv")
    assert len(preds) == 188 and set(preds[0]) == {
        "graph_id", "split", "target", "prediction", "prob_0", "prob_1"
    }  # fmt: skip
    events = [json.loads(x) for x in (tmp_path / "artifacts.jsonl").read_text().splitlines()]
    assert {"embeddings", "ids", "predictions", "checkpoint"} <= {e["kind"] for e in events}
    (ids_event,) = [e for e in events if e["kind"] == "ids"]
    assert ids_event["path"] == "graph_ids.csv" and ids_event["meta"]["id_column"] == "graph_id"


def test_seeded_run_is_reproducible(tmp_path):
    spec = load_spec(tiny_gt(training={"epochs": 2}))
    train(spec, tmp_path / "a")
    train(spec, tmp_path / "b")
    keys = ("train_loss", "val_loss", "val_accuracy")
    a, b = metric_rows(tmp_path / "a"), metric_rows(tmp_path / "b")
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]


def test_zinc_subset_regression_loss_falls(tmp_path):
    spec = tiny_gt(
        task="graph_regression",
        data={"format": "zinc", "max_graphs": 360},
        training={"epochs": 4},
        optimizer={"lr": 0.003},
        model={"pooling": "add"},
    )
    summary = train(load_spec(spec), tmp_path)
    rows = metric_rows(tmp_path)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert summary["monitor"] == "val_mae" and "test_mae" in summary["best_metrics"]
    preds = _csv(tmp_path / "predictions.csv")
    assert len(preds) == 360 and set(preds[0]) == {"graph_id", "split", "target", "prediction"}


def test_link_prediction_runs(tmp_path):
    spec = tiny_gt(task="link_prediction", training={"epochs": 2}, model={"local_layer": "gcn"})
    summary = train(load_spec(spec), tmp_path)
    row = metric_rows(tmp_path)[-1]
    assert {"val_roc_auc", "val_ap", "val_precision_at_k", "val_accuracy"} <= set(row)
    assert 0.0 <= summary["best_metrics"]["test_roc_auc"] <= 1.0
    preds = _csv(tmp_path / "predictions.csv")
    assert set(preds[0]) == {"graph_id", "split", "src", "dst", "target", "score"}
    assert {p["target"] for p in preds} == {"0", "1"}


def test_tensorboard_hook_writes_events(tmp_path):
    from core.hooks import TensorBoardHook

    hook = TensorBoardHook(tmp_path)
    hook({"train_loss": 0.5, "val_mae": 0.25, "nan": float("nan")}, 1, "epoch")
    hook({"train_loss": 0.4}, 2, "epoch")
    hook.close()
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0


def test_resume_continues_like_the_uninterrupted_run(tmp_path):
    spec = tiny_gt(
        training={"epochs": 4},
        model={"dropout": 0.2, "attn_dropout": 0.2},
        checkpoint={"every_n_epochs": 1, "keep_top_k": 1},
    )
    full, part = stopped_and_resumed(spec, tmp_path)
    a, b = metric_rows(full), metric_rows(part)
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):  # same batches, sign flips and dropout masks
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-5)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-5)
