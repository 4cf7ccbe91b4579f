"""The composed_gnn family: registries and their errors, width inference, the seed's example
architecture (22,819 parameters), multi-head loss parts, graph statistics on a hand-made batch,
transforms, filters, the zarr reader, ZINC's two targets and the outputs of a run."""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.spec import SpecError, load_spec

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# The seed's example (docs/training_a_model.md of QuantumGrav), translated.
SEED_MODEL: dict[str, Any] = {
    "encoder": [
        {"layer": "sage", "in": 12, "out": 64, "kwargs": {"aggr": "mean"},
         "inputs": ["x", "edge_index"]},
        {"layer": "relu", "inputs": ["x"]},
        {"layer": "sage", "in": 64, "out": 64, "kwargs": {"aggr": "mean"}},
    ],
    "pooling": {"ops": ["mean"], "combine": "cat"},
    "graph_features": {"features": ["num_nodes", "num_edges", "density", "mean_degree"],
                       "dims": [32], "activation": "relu"},
    "heads": [{"name": "manifold", "dims": [128], "activation": "relu"}],
}  # fmt: skip


def _spec(**sections: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "family": "composed_gnn",
        "name": "tiny-composed",
        "task": "graph_classification",
        "data": {"format": "tu", "name": "MUTAG",
                 "split": {"kind": "fractions", "fractions": [0.6, 0.2, 0.2]}},
        "model": copy.deepcopy(SEED_MODEL),
        "training": {"epochs": 2, "batch_size": 32, "seed": 1, "tensorboard": False},
    }  # fmt: skip
    spec["model"]["encoder"][0].pop("in")
    spec.update(sections)
    return spec


def _errors(spec: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(SpecError) as err:
        load_spec(spec)
    return err.value.errors


# --- registries and their errors -----------------------------------------------------------------


def test_unknown_layer_names_the_field_and_lists_the_registry():
    spec = _spec()
    spec["model"]["encoder"][1]["layer"] = "torch.nn.ReLU"
    (error,) = _errors(spec)
    assert error["loc"] == "model.encoder.1.layer"
    assert "sage" in error["allowed"] and "layer_norm" in error["allowed"]
    assert "unknown layer 'torch.nn.ReLU'" in error["msg"]


def test_unknown_layer_kwarg_lists_the_allowed_kwargs():
    spec = _spec()
    spec["model"]["encoder"][0]["kwargs"] = {"aggr": "mean", "cls": "os.system"}
    (error,) = _errors(spec)
    assert error["loc"] == "model.encoder.0.kwargs.cls"
    assert "aggr" in error["allowed"] and "normalize" in error["allowed"]


def test_an_unknown_encoder_key_lists_the_keys_a_spec_writes():
    spec = _spec()
    spec["model"]["encoder"][0]["bogus"] = 1
    (error,) = _errors(spec)
    assert error["loc"] == "model.encoder.0.bogus"
    assert "in" in error["allowed"] and "in_" not in error["allowed"]  # the alias, as written


def test_unknown_transform_and_monitor_list_their_registries():
    spec = _spec()
    spec["data"]["transforms"] = [{"name": "mymodule.pre_transform"}]
    spec["validation"] = {"monitors": [{"head": "manifold", "monitor": "sklearn.f1_score"}]}
    errors = {e["loc"]: e for e in _errors(spec)}
    assert "one_hot_degree" in errors["data.transforms.0.name"]["allowed"]
    assert "f1" in errors["validation.monitors.0.monitor"]["allowed"]


def test_seed_keys_without_meaning_in_a_service_are_refused_with_the_reason():
    spec = _spec()
    spec["training"] |= {"num_workers": 4, "path": "/path/to/run_artifacts"}
    spec["data"]["reader"] = "mymodule.reader"
    messages = " | ".join(e["msg"] for e in _errors(spec))
    assert "training.num_workers is refused" in messages and "worker counts" in messages
    assert "training.path is refused: the service owns the run directory" in messages
    assert "data.reader is refused" in messages
    spec = _spec(criterion="mymodule.compute_loss")
    assert "criterion is refused" in _errors(spec)[0]["msg"]


def test_monitor_of_an_unknown_head_or_wrong_task_is_an_error():
    spec = _spec(validation={"monitors": [{"head": "nope", "monitor": "accuracy"},
                                          {"head": "manifold", "monitor": "mae"}]})  # fmt: skip
    msg = _errors(spec)[0]["msg"]
    assert "validation.monitors[0].head 'nope' is not a head; choose one of manifold" in msg
    assert "validation.monitors[1].monitor 'mae' does not fit task" in msg


# --- widths ------------------------------------------------------------------------------------


def test_widths_are_inferred_through_the_encoder():
    from core.families.composed_gnn.spec import ComposedModelSpec, infer_widths

    model = ComposedModelSpec.model_validate(
        {
            "encoder": [
                {"layer": "gcn", "out": 32},
                {"layer": "batch_norm"},
                {"layer": "relu"},
                {"layer": "gat", "out": 16, "kwargs": {"heads": 4}},
                {"layer": "linear", "out": 8},
                {"layer": "dropout"},
            ],
            "heads": [{"name": "h"}],
        }  # fmt: skip
    )
    widths, errors = infer_widths(model.encoder, 7)
    assert errors == []
    assert widths == [(7, 32), (32, 32), (32, 32), (32, 16), (16, 8), (8, 8)]


def test_an_in_that_does_not_match_names_the_entry():
    spec = _spec()
    spec["model"]["encoder"][2]["in"] = 32
    msg = _errors(spec)[0]["msg"]
    assert "model.encoder[2].in is 32 but model.encoder[1] gives 64" in msg
    spec = _spec()
    spec["model"]["encoder"][0] |= {"in": 12, "skip": True}  # 12 in, 64 out: no residual
    assert "model.encoder[0].skip adds the input (12) to the output (64)" in _errors(spec)[0]["msg"]

    from core.families.composed_gnn.model import ComposedGNN, HeadPlan

    seed = load_spec(_spec(model=copy.deepcopy(SEED_MODEL)))
    with pytest.raises(ValueError, match=r"model.encoder\[0\].in is 12 but the node inputs give 7"):
        ComposedGNN(seed.model, 7, None, [HeadPlan("manifold", 0, "cross_entropy", 1, 3, True)])


def test_inputs_must_fit_the_layer():
    spec = _spec()
    spec["model"]["encoder"][0]["inputs"] = ["x"]
    msg = _errors(spec)[0]["msg"]
    assert "model.encoder[0].inputs ['x'] do not fit layer 'sage'" in msg


# --- the model ---------------------------------------------------------------------------------


def test_the_seed_example_builds_22819_parameters():
    from core.families.composed_gnn.model import ComposedGNN, HeadPlan
    from core.modelinfo import count_parameters

    spec = load_spec(_spec(model=copy.deepcopy(SEED_MODEL)))
    plan = HeadPlan("manifold", 0, "cross_entropy", 1.0, 3, True)
    model = ComposedGNN(spec.model, 12, None, [plan])
    assert count_parameters(model) == 22_819
    assert model.embedding_dim == 96  # 64 pooled + 32 graph features: the head's 96 inputs


def _batch() -> Any:
    """Graph 0: a triangle (both directions). Graph 1: an edge 0-1 and an isolated node."""
    from torch_geometric.data import Batch, Data

    tri = torch.tensor([[0, 1, 1, 2, 2, 0], [1, 0, 2, 1, 0, 2]])
    pair = torch.tensor([[0, 1], [1, 0]])
    return Batch.from_data_list(
        [Data(x=torch.ones(3, 2), edge_index=tri, y=torch.tensor([[1, 0.5]])),
         Data(x=torch.ones(3, 2), edge_index=pair, y=torch.tensor([[0, -1.0]]))]
    )  # fmt: skip


def test_graph_statistics_on_a_hand_made_batch():
    from core.families.composed_gnn.model import graph_statistics

    b = _batch()
    names = ["num_nodes", "num_edges", "density", "mean_degree", "max_degree", "min_degree",
             "num_isolated", "log_num_nodes"]  # fmt: skip
    stats = graph_statistics(names, b.edge_index, b.batch, 2)
    expected = [[3, 6, 1.0, 2.0, 2, 2, 0, np.log(4)],
                [3, 2, 2 / 6, 2 / 3, 1, 0, 1, np.log(4)]]  # fmt: skip
    torch.testing.assert_close(stats, torch.tensor(expected, dtype=torch.float32))


def test_multi_head_loss_is_the_weighted_sum_of_its_parts():
    from core.families.composed_gnn.model import ComposedGNN, HeadPlan

    model = {
        "encoder": [{"layer": "gcn", "out": 8}],
        "heads": [{"name": "cls", "loss": "mse"}, {"name": "reg", "loss": "mae", "weight": 0.25}],
    }
    data = {"format": "zinc", "targets": ["logp", "SA"]}
    spec = load_spec(_spec(task="graph_regression", data=data, model=model))
    plans = [HeadPlan("cls", 0, "mse", 1.0, 1, False), HeadPlan("reg", 1, "mae", 0.25, 1, False)]
    model = ComposedGNN(spec.model, 2, None, plans)
    b = _batch()
    out = model(b)
    parts = model.loss(out, b.y)
    mse = F.mse_loss(out["cls"].view(-1), b.y[:, 0])
    mae = F.l1_loss(out["reg"].view(-1), b.y[:, 1])
    torch.testing.assert_close(parts["cls_loss"], mse)
    torch.testing.assert_close(parts["reg_loss"], mae)
    torch.testing.assert_close(parts["loss"], mse + 0.25 * mae)


# --- data ----------------------------------------------------------------------------------------


def test_transforms_one_hot_degree_constant_self_loops_undirected():
    from torch_geometric.data import Data

    from core.families.composed_gnn.spec import ComposedTUData
    from core.families.composed_gnn.task import apply_transforms

    directed = Data(x=torch.ones(3, 1), edge_index=torch.tensor([[0, 0], [1, 2]]),
                    edge_attr=torch.tensor([[1.0], [2.0]]))  # fmt: skip
    data = ComposedTUData.model_validate({
        "format": "tu", "name": "MUTAG",
        "transforms": [{"name": "to_undirected"}, {"name": "one_hot_degree"},
                       {"name": "constant", "value": 0.5}, {"name": "add_self_loops"}],
    })  # fmt: skip
    (out,) = apply_transforms([directed.clone()], data.transforms)
    # to_undirected: 4 edges; degrees 2, 1, 1 -> one-hot of width 3 after the ones; then 0.5
    assert out.x.tolist() == [[1, 0, 0, 1, 0.5], [1, 0, 1, 0, 0.5], [1, 0, 1, 0, 0.5]]
    assert out.edge_index.size(1) == 4 + 3 and out.edge_attr.size(0) == 7
    too_small = ComposedTUData.model_validate(
        {"format": "tu", "name": "MUTAG", "transforms": [{"name": "one_hot_degree",
                                                          "max_degree": 1}]})  # fmt: skip
    with pytest.raises(ValueError, match=r"data.transforms\[0\].max_degree is 1 but a graph has "
                                         "degree 2"):  # fmt: skip
        apply_transforms([directed.clone()], too_small.transforms)


def test_filters_leave_graphs_out_and_say_so(tmp_path, gt_env):
    from core.families.composed_gnn.task import ComposedGnnTask
    from core.task import RunContext

    spec = load_spec(_spec(data={"format": "tu", "name": "MUTAG",
                                 "filters": {"min_nodes": 12, "max_nodes": 20}}))  # fmt: skip
    task = ComposedGnnTask(RunContext(spec, tmp_path, torch.device("cpu")))
    task.setup_data()
    sizes = torch.tensor([d.num_nodes for d in task.data])
    assert bool(((sizes >= 12) & (sizes <= 20)).all()) and len(task.data) < 188
    assert "data.filters left out" in task.summary()["data_warnings"][0]
    with pytest.raises(SpecError, match="min_nodes \\(30\\) exceeds max_nodes"):
        load_spec(_spec(data={"format": "tu", "name": "MUTAG",
                              "filters": {"min_nodes": 30, "max_nodes": 20}}))  # fmt: skip


def test_unshuffled_fractions_cut_in_stored_order(tmp_path, gt_env):
    from core.families.composed_gnn.task import ComposedGnnTask
    from core.task import RunContext

    spec = load_spec(_spec(data={"format": "tu", "name": "MUTAG", "split": {
        "kind": "fractions", "fractions": [0.8, 0.1, 0.1], "shuffle": False}}))  # fmt: skip
    task = ComposedGnnTask(RunContext(spec, tmp_path, torch.device("cpu")))
    task.setup_data()
    assert task.index["train"].tolist() == list(range(150))
    assert task.index["test"].tolist() == list(range(169, 188))


def _zarr_store(root: Path) -> None:
    zarr = pytest.importorskip("zarr")
    group = zarr.open_group(str(root / "csets" / "data.zarr"), mode="w")
    adj = np.zeros((4, 5, 5), dtype=np.int8)
    adj[0, 0, 1] = adj[0, 1, 2] = 1  # graph 0: 3 nodes, path 0->1->2
    adj[1, 0, 3] = 1  # graph 1: 4 nodes
    adj[1, 4, 0] = 1  # beyond graph 1's 4 nodes: ignored
    adj[2, 1, 0] = 1  # graph 2: 2 nodes
    adj[3, 0, 1] = adj[3, 1, 0] = adj[3, 2, 3] = adj[3, 3, 4] = 1  # graph 3: 5 nodes
    group.create_array("adjacency_matrix", data=adj)
    group.create_array("cset_size", data=np.array([3, 4, 2, 5]))
    group.create_array("max_pathlens_future", data=np.arange(20, dtype=np.float32).reshape(4, 5))
    group.create_array("manifold_like", data=np.array([0, 1, 0, 1]))


def test_zarr_reader_reads_named_arrays_and_builds_graphs(tmp_path, monkeypatch):
    _zarr_store(tmp_path)
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(tmp_path))
    from core.data.errors import DataError
    from core.data.zarr_arrays import dense_graph_set, read_arrays

    arrays = read_arrays("csets/data.zarr", ["adjacency_matrix", "cset_size",
                                             "max_pathlens_future", "manifold_like"])  # fmt: skip
    assert arrays["adjacency_matrix"].shape == (4, 5, 5)
    with pytest.raises(DataError, match=r"no array\(s\) \['adjacency'\].*holds adjacency_matrix"):
        read_arrays("csets/data.zarr", ["adjacency"])
    g = dense_graph_set(arrays["adjacency_matrix"], arrays["cset_size"],
                        [arrays["max_pathlens_future"]], arrays["manifold_like"])  # fmt: skip
    assert g.nodes_per_graph().tolist() == [3, 4, 2, 5]
    assert g.edges_per_graph().tolist() == [2, 1, 1, 4]
    assert g.edge_index[:, :2].tolist() == [[0, 1], [1, 2]]
    assert g.x[:3, 0].tolist() == [0, 1, 2] and g.x[3:7, 0].tolist() == [5, 6, 7, 8]
    gt = dense_graph_set(arrays["adjacency_matrix"], arrays["cset_size"], [],
                         arrays["manifold_like"], transpose=True)  # fmt: skip
    assert gt.edge_index[:, :2].tolist() == [[1, 2], [0, 1]]
    assert gt.x.tolist() == [[1.0]] * 14


def test_a_zarr_spec_trains(tmp_path, monkeypatch, one_thread):
    _zarr_store(tmp_path)
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("TRAINCTL_CACHE_DIR", str(tmp_path / "cache"))
    from core.run import train

    spec = load_spec(_spec(
        data={"format": "zarr", "path": "csets/data.zarr", "adjacency": "adjacency_matrix",
              "num_nodes": "cset_size", "node_features": ["max_pathlens_future"],
              "targets": ["manifold_like"], "transpose_adjacency": True,
              "split": {"kind": "fractions", "fractions": [0.5, 0.25, 0.25], "stratify": False}},
        model={"encoder": [{"layer": "sage", "out": 8}], "heads": [{"name": "manifold"}]},
    ))  # fmt: skip
    summary = train(spec, tmp_path / "run")
    assert summary["epochs_completed"] == 2
    assert "test_manifold_accuracy" in summary["best_metrics"]


def test_zinc_has_two_regression_targets_logp_and_sa(tmp_path, gt_env):
    from core.families.composed_gnn.task import load_targets

    spec = load_spec(_spec(task="graph_regression",
                           data={"format": "zinc", "max_graphs": 30, "targets": ["logp", "SA"]},
                           model={"encoder": [{"layer": "gine", "out": 8}],
                                  "heads": [{"name": "logp", "target": "logp"},
                                            {"name": "sa", "target": "SA"}]}))  # fmt: skip
    graphs, names, classes = load_targets(spec)
    assert names == ["logp", "SA"] and classes == [None, None]
    from core.data.roots import resolve_data_path

    path = resolve_data_path("ZINC/graphium_ZINC_bench_gnn") / "smiles_score.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    for g, (logp, sa) in zip(graphs.graph_ids.tolist(), graphs.y.tolist(), strict=True):
        assert logp == pytest.approx(float(rows[g]["logp"]), abs=1e-5)
        assert sa == pytest.approx(float(rows[g]["SA"]), abs=1e-5)


# --- a run and its outputs ----------------------------------------------------------------------


def test_a_run_writes_predictions_embeddings_and_the_test_report(tmp_path, gt_env, one_thread):
    from core.run import train

    spec = _spec(validation={"monitors": [
        {"head": "manifold", "monitor": "accuracy"},
        {"head": "manifold", "monitor": "f1", "average": "weighted", "name": "f1_weighted"},
        {"head": "manifold", "monitor": "roc_auc"}]})  # fmt: skip
    summary = train(load_spec(spec), tmp_path / "run")
    run = tmp_path / "run"
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epoch = [m for m in metrics if m.get("granularity") == "epoch"][-1]
    for key in (
        "train_loss",
        "train_manifold_loss",
        "val_loss",
        "val_manifold_loss",
        "val_manifold_accuracy",
        "val_manifold_f1_weighted",
        "val_manifold_roc_auc",
    ):
        assert key in epoch, key
    assert {"test_manifold_accuracy", "test_manifold_roc_auc"} <= set(summary["best_metrics"])
    with open(run / "predictions.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 188 and set(rows[0]) == {"graph_id", "split", "head", "target",
                                                 "prediction", "confidence"}  # fmt: skip
    emb = np.load(run / "embeddings.npy")
    assert emb.shape == (188, 64 + 32)
    with open(run / "graph_ids.csv", newline="") as fh:
        ids = list(csv.DictReader(fh))
    assert [int(r["graph_id"]) for r in ids] == list(range(1, 189))
    report = json.loads((run / "test_report.json").read_text())
    head = report["heads"]["manifold"]
    assert head["monitors"]["accuracy"] == pytest.approx(summary["best_metrics"]
                                                         ["test_manifold_accuracy"])  # fmt: skip
    cm = np.array(head["confusion_matrix"])
    assert cm.shape == (2, 2) and cm.sum() == report["graphs"]
    assert [c["support"] for c in head["per_class"]] == cm.sum(1).tolist()
    assert summary["quality"]["metric"] == "test_manifold_accuracy"


@pytest.mark.parametrize(
    "name",
    [
        "mutag-composed-gnn",
        "enzymes-composed-gnn",
        "imdb-composed-gnn",
        "zinc-composed-gnn",
    ],  # fmt: skip
)
def test_examples_load(name):
    spec = load_spec(EXAMPLES / f"{name}.yaml")
    assert spec.family == "composed_gnn"
