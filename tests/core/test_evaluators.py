"""The shared evaluators' monitors against scikit-learn on hand-made data."""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from core.evaluators import (
    MONITORS,
    Collector,
    Evaluator,
    HeadResult,
    Monitor,
    confusion_matrix,
    head_report,
)

# 3 classes, 10 graphs: logits chosen so some predictions are wrong.
LOGITS = torch.tensor(
    [[2.0, 0.1, 0.3], [0.2, 1.5, 0.1], [0.1, 0.2, 3.0], [1.0, 0.9, 0.1], [0.1, 2.2, 0.3],
     [0.3, 0.2, 0.1], [0.5, 0.1, 1.1], [0.1, 0.4, 0.2], [1.3, 1.2, 1.0], [0.0, 0.1, 2.5]]
)  # fmt: skip
TARGETS = torch.tensor([0, 1, 2, 1, 1, 2, 2, 0, 0, 2])
LOSSES = torch.nn.functional.cross_entropy(LOGITS, TARGETS, reduction="none")


def _multi() -> HeadResult:
    return HeadResult("classification", LOGITS, TARGETS, LOSSES, 3)


def _binary() -> HeadResult:
    logit = torch.tensor([1.2, -0.3, 0.4, -2.0, 0.1, 0.9, -0.7, 0.05])
    target = torch.tensor([1, 0, 0, 0, 1, 1, 1, 0])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        logit, target.float(), reduction="none"
    )
    return HeadResult("classification", logit, target, loss, 2)


def test_the_monitor_registry_matches_the_spec_names():
    from core.families.composed_gnn.spec import MonitorName

    assert sorted(get_args(MonitorName)) == MONITORS.names()


@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_multiclass_precision_recall_f1_match_sklearn(average):
    r = _multi()
    pred, y = r.predictions().numpy(), TARGETS.numpy()
    for name, fn in [("f1", skm.f1_score), ("precision", skm.precision_score),
                     ("recall", skm.recall_score)]:  # fmt: skip
        expected = fn(y, pred, average=average, zero_division=0)
        assert MONITORS.get(name)(r, average) == pytest.approx(expected), (name, average)


def test_accuracy_balanced_accuracy_and_confusion_matrix_match_sklearn():
    r = _multi()
    pred, y = r.predictions().numpy(), TARGETS.numpy()
    assert MONITORS.get("accuracy")(r, None) == pytest.approx(skm.accuracy_score(y, pred))
    assert MONITORS.get("balanced_accuracy")(r, None) == pytest.approx(
        skm.balanced_accuracy_score(y, pred)
    )
    assert (
        confusion_matrix(r.predictions(), TARGETS, 3).tolist()
        == skm.confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    )


def test_multiclass_roc_auc_and_ap_match_sklearn():
    r = _multi()
    probs, y = torch.softmax(LOGITS, -1).numpy(), TARGETS.numpy()
    for average in ("macro", "weighted"):
        expected = skm.roc_auc_score(y, probs, multi_class="ovr", average=average)
        assert MONITORS.get("roc_auc")(r, average) == pytest.approx(expected)
    onehot = np.eye(3)[y]
    assert MONITORS.get("ap")(r, "macro") == pytest.approx(
        skm.average_precision_score(onehot, probs, average="macro")
    )


def test_binary_monitors_from_one_logit_match_sklearn():
    r = _binary()
    p = torch.sigmoid(r.outputs).numpy()
    y = r.targets.numpy()
    pred = (p > 0.5).astype(int)
    assert r.predictions().tolist() == pred.tolist()
    assert MONITORS.get("f1")(r, None) == pytest.approx(skm.f1_score(y, pred))  # binary default
    assert MONITORS.get("f1")(r, "macro") == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert MONITORS.get("roc_auc")(r, None) == pytest.approx(skm.roc_auc_score(y, p))
    assert MONITORS.get("ap")(r, None) == pytest.approx(skm.average_precision_score(y, p))
    assert MONITORS.get("loss_mean")(r, None) == pytest.approx(
        skm.log_loss(y, p)  # mean binary cross-entropy
    )


def test_roc_auc_of_one_class_is_nan_and_binary_average_needs_two_classes():
    r = HeadResult("classification", LOGITS[:3], torch.tensor([1, 1, 1]), LOSSES[:3], 3)
    assert math.isnan(MONITORS.get("roc_auc")(r, "macro"))
    with pytest.raises(ValueError, match="average 'binary' needs 2 classes"):
        MONITORS.get("f1")(_multi(), "binary")


def test_regression_monitors_match_sklearn():
    pred = torch.tensor([1.0, 2.5, -0.5, 4.0, 0.0])
    target = torch.tensor([1.5, 2.0, 0.0, 3.0, 0.5])
    r = HeadResult("regression", pred.view(-1, 1), target, (pred - target) ** 2)
    y, p = target.numpy(), pred.numpy()
    assert MONITORS.get("mae")(r, None) == pytest.approx(skm.mean_absolute_error(y, p))
    assert MONITORS.get("mse")(r, None) == pytest.approx(skm.mean_squared_error(y, p))
    assert MONITORS.get("rmse")(r, None) == pytest.approx(math.sqrt(skm.mean_squared_error(y, p)))
    assert MONITORS.get("r2")(r, None) == pytest.approx(skm.r2_score(y, p))
    assert MONITORS.get("loss_mean")(r, None) == pytest.approx(skm.mean_squared_error(y, p))


def test_unknown_monitor_lists_the_registry():
    with pytest.raises(ValueError, match="unknown monitor 'f2'; choose one of accuracy, ap"):
        Evaluator([Monitor("h", "f2")])


def test_evaluator_names_and_collector():
    collector = Collector({"cls": "classification"}, {"cls": 3})
    collector.update("cls", LOGITS[:6], TARGETS[:6], LOSSES[:6])
    collector.update("cls", LOGITS[6:], TARGETS[6:], LOSSES[6:])
    results = collector.results()
    evaluator = Evaluator(
        [Monitor("cls", "accuracy"), Monitor("cls", "f1", "f1_weighted", "weighted")]
    )
    out = evaluator.compute(results, "val", {"cls": 2.0})
    assert set(out) == {"val_loss", "val_cls_loss", "val_cls_accuracy", "val_cls_f1_weighted"}
    assert out["val_cls_loss"] == pytest.approx(float(LOSSES.mean()))
    assert out["val_loss"] == pytest.approx(2 * float(LOSSES.mean()))
    pred = LOGITS.argmax(1).numpy()
    assert out["val_cls_f1_weighted"] == pytest.approx(
        skm.f1_score(TARGETS.numpy(), pred, average="weighted")
    )
    report = head_report(results["cls"], {"accuracy": out["val_cls_accuracy"]})
    p, r, f, s = skm.precision_recall_fscore_support(TARGETS.numpy(), pred, zero_division=0)
    assert [c["precision"] for c in report["per_class"]] == pytest.approx(p.tolist())
    assert [c["recall"] for c in report["per_class"]] == pytest.approx(r.tolist())
    assert [c["f1"] for c in report["per_class"]] == pytest.approx(f.tolist())
    assert [c["support"] for c in report["per_class"]] == s.tolist()
    assert sum(map(sum, report["confusion_matrix"])) == 10
