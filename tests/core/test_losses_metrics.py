"""Loss and metric registries: choices by task, errors that list them, and values."""

from __future__ import annotations

import pytest
import torch

from core.losses import get_loss_fn, loss_output_dim
from core.metrics import get_metrics, metric_inputs


def test_loss_registry_errors():
    with pytest.raises(ValueError, match="unknown loss 'focal'; choose one of bce_logits, "):
        get_loss_fn("graph_regression", "focal")
    with pytest.raises(ValueError, match="does not fit task 'graph_classification'; choose one"):
        get_loss_fn("graph_classification", "mse")
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        get_loss_fn("ranking")
    with pytest.raises(ValueError, match="needs 2 classes"):
        get_loss_fn("graph_classification", "bce_logits", num_classes=6)


def test_losses_by_task_with_seed_aliases():
    pred, target = torch.tensor([[1.0], [3.0]]), torch.tensor([0.0, 1.0])
    assert get_loss_fn("regression")(pred, target).item() == pytest.approx(1.5)  # default mae
    assert get_loss_fn("regression", "mse")(pred, target).item() == pytest.approx(2.5)
    assert get_loss_fn("regression", "huber")(pred, target).item() == pytest.approx(1.0)
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 2.0]]), torch.tensor([0, 1])
    ce = get_loss_fn("classification", num_classes=2)(logits, labels)
    assert ce.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    bce = get_loss_fn("classification", "bce_logits", 2)(torch.tensor([[0.0], [0.0]]), labels)
    assert bce.item() == pytest.approx(0.6931, abs=1e-4)
    edge = get_loss_fn("edge_prediction")(torch.zeros(4), torch.tensor([1.0, 0, 1, 0]))
    assert edge.item() == pytest.approx(0.6931, abs=1e-4)
    assert loss_output_dim("graph_classification", "cross_entropy", 6) == 6
    assert loss_output_dim("graph_classification", "bce_logits", 2) == 1


def test_metric_registry_errors():
    with pytest.raises(ValueError, match="unknown metric 'r2'; choose one of accuracy, ap, f1"):
        get_metrics("graph_regression", ["r2"])
    with pytest.raises(ValueError, match="'accuracy' does not fit task 'graph_regression'"):
        get_metrics("graph_regression", ["accuracy"])


def test_regression_metrics():
    m = get_metrics("graph_regression")
    m.update(
        metric_inputs("graph_regression", torch.tensor([[1.0], [2.0]])), torch.tensor([0.0, 4.0])
    )
    out = {k: float(v) for k, v in m.compute().items()}
    assert out == pytest.approx({"mae": 1.5, "mse": 2.5, "rmse": 2.5**0.5})


def test_classification_metrics_binary_and_multiclass():
    m = get_metrics("graph_classification", num_classes=2)
    logits = torch.tensor([[0.0, 2.0], [2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    m.update(metric_inputs("graph_classification", logits, 2), torch.tensor([1, 0, 0, 1]))
    out = {k: float(v) for k, v in m.compute().items()}
    assert out["accuracy"] == pytest.approx(0.5) and set(out) == {"accuracy", "f1", "roc_auc", "ap"}
    assert out["roc_auc"] == pytest.approx(0.75)
    m = get_metrics("graph_classification", ["accuracy", "f1"], num_classes=3)
    logits = torch.eye(3)[torch.tensor([0, 1, 2, 2])] * 5
    m.update(metric_inputs("graph_classification", logits, 3), torch.tensor([0, 1, 2, 1]))
    out = {k: float(v) for k, v in m.compute().items()}
    assert out["accuracy"] == pytest.approx(0.75)


def test_link_metrics_precision_at_k_per_graph():
    m = get_metrics("link_prediction", k=2)
    scores = torch.tensor([3.0, 2.0, -1.0, 0.0, 5.0, -2.0])
    target = torch.tensor([1, 0, 1, 1, 1, 0])
    graph = torch.tensor([0, 0, 0, 1, 1, 1])
    m.update(metric_inputs("link_prediction", scores), target, indexes=graph)
    out = {k: float(v) for k, v in m.compute().items()}
    # graph 0: top-2 = {3 (pos), 2 (neg)} -> 0.5; graph 1: top-2 = {5, 0} both positive -> 1.
    assert out["precision_at_k"] == pytest.approx(0.75)
    assert set(out) == {"roc_auc", "ap", "accuracy", "precision_at_k"}
    seed_names = get_metrics("edge_prediction", ["auroc", "precision@k"])
    assert set(seed_names.keys()) == {"roc_auc", "precision_at_k"}
