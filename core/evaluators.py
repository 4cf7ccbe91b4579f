"""Evaluators shared by the graph families: collect each head's outputs and targets over a
split, then compute named monitors from a closed registry (the seed's `Validator` / `Tester`
with `evaluator_tasks`, without callables in the config).

Naming: a monitor `m` of head `h` is reported as `<split>_<h>_<m>` (`val_class_accuracy`,
`test_logp_mae`), or `<split>_<h>_<name>` when the monitor has its own `name`
(`val_class_f1_weighted`). The total loss is `<split>_loss` and each head's loss part
`<split>_<h>_loss` (the mean of the head's per-graph loss, unweighted).

Monitors (`MONITORS`), all on the whole split at once:

| monitor | inputs | definition |
| --- | --- | --- |
| accuracy | classes | fraction of argmax predictions equal to the target |
| balanced_accuracy | classes | mean recall over the classes present in the targets (sklearn) |
| f1, precision, recall | classes | confusion matrix over the labels present (see below) |
| roc_auc, ap | class probabilities | sklearn `roc_auc_score` (ovr) / `average_precision_score` |
| mae, mse, rmse, r2 | values | on the head's values (r2: 1 - SSE / SST, sklearn's `r2_score`) |
| loss_mean | any | mean per-graph loss of the head (the seed's `numpy.mean` of the loss) |

f1 / precision / recall take `average` binary (class 1; the default for two classes), macro
(the default otherwise), micro or weighted, over the labels present in the targets or the
predictions, 0 where undefined (sklearn's `zero_division=0`). roc_auc / ap are NaN when the
split holds one class only.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from core.registry import Registry

log = logging.getLogger(__name__)

HeadKind = Literal["classification", "regression"]
Average = Literal["macro", "micro", "weighted", "binary"]


@dataclass
class HeadResult:
    """A head's collected outputs over a split (on the CPU).

    `outputs`: class logits [N, C] (cross-entropy), one logit [N] (binary logits), or values
    [N]; `targets`: class indices [N] (long) or values [N]; `losses`: the per-graph loss [N].
    """

    kind: HeadKind
    outputs: Tensor
    targets: Tensor
    losses: Tensor
    num_classes: int | None = None

    def probabilities(self) -> Tensor:
        """[N, C] class probabilities (classification)."""
        out = self.outputs.float()
        if out.dim() == 1 or out.size(-1) == 1:
            p = torch.sigmoid(out.view(-1))
            return torch.stack([1 - p, p], 1)
        return torch.softmax(out, -1)

    def predictions(self) -> Tensor:
        """[N] predicted classes (classification) or values (regression)."""
        if self.kind == "regression":
            return self.outputs.float().view(-1)
        return self.probabilities().argmax(1)

    @property
    def classes(self) -> int:
        return int(self.num_classes or self.probabilities().size(1))


class Collector:
    """Accumulates per-head batches (`update`) and concatenates them (`results`)."""

    def __init__(self, kinds: dict[str, HeadKind], num_classes: dict[str, int | None]):
        self.kinds, self.num_classes = kinds, num_classes
        self._parts: dict[str, dict[str, list[Tensor]]] = {
            h: {"outputs": [], "targets": [], "losses": []} for h in kinds
        }

    def update(self, head: str, outputs: Tensor, targets: Tensor, losses: Tensor) -> None:
        """One batch of `head`: outputs [B, ...], targets [B], per-graph losses [B]."""
        part = self._parts[head]
        part["outputs"].append(outputs.detach().float().cpu())
        part["targets"].append(targets.detach().cpu())
        part["losses"].append(losses.detach().float().cpu())

    def results(self) -> dict[str, HeadResult]:
        out = {}
        for head, part in self._parts.items():
            cat = {k: torch.cat(v) if v else torch.zeros(0) for k, v in part.items()}
            out[head] = HeadResult(self.kinds[head], cat["outputs"], cat["targets"],
                                   cat["losses"], self.num_classes[head])  # fmt: skip
        return out


# --- monitors -------------------------------------------------------------------------------------


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """[C, C] counts: rows are targets, columns predictions (sklearn's layout)."""
    index = target.long().view(-1) * num_classes + pred.long().view(-1)
    return torch.bincount(index, minlength=num_classes**2).view(num_classes, num_classes)


def per_class(result: HeadResult) -> dict[str, Tensor]:
    """Per-class precision, recall, F1 and support [C] (0 where undefined)."""
    cm = confusion_matrix(result.predictions(), result.targets, result.classes).double()
    tp = cm.diag()
    predicted, support = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), 0.0)
    recall = torch.where(support > 0, tp / support.clamp(min=1), 0.0)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-300), 0.0)
    present = (predicted + support) > 0  # the labels sklearn considers
    return {"precision": precision, "recall": recall, "f1": f1, "support": support,
            "present": present, "tp": tp, "predicted": predicted}  # fmt: skip


def _default_average(result: HeadResult) -> Average:
    return "binary" if result.classes == 2 else "macro"


def _prf(which: str) -> Callable[[HeadResult, Average | None], float]:
    def monitor(result: HeadResult, average: Average | None) -> float:
        average = average or _default_average(result)
        stats = per_class(result)
        if average == "binary":
            if result.classes != 2:
                raise ValueError(
                    f"average 'binary' needs 2 classes, the head has {result.classes}; "
                    "choose macro, micro or weighted"
                )
            return float(stats[which][1])
        if average == "micro":
            tp = float(stats["tp"].sum())
            n = float(stats["support"].sum())
            return tp / n if n else 0.0  # single-label: micro P = R = F1 = accuracy
        present = stats["present"]
        values = stats[which][present]
        if average == "macro":
            return float(values.mean()) if values.numel() else 0.0
        weights = stats["support"][present]
        total = float(weights.sum())
        return float((values * weights).sum() / total) if total else 0.0

    return monitor


def _accuracy(result: HeadResult, average: Average | None) -> float:
    if result.targets.numel() == 0:
        return math.nan
    return float((result.predictions() == result.targets.long().view(-1)).double().mean())


def _balanced_accuracy(result: HeadResult, average: Average | None) -> float:
    stats = per_class(result)
    supported = stats["support"] > 0
    return float(stats["recall"][supported].mean()) if bool(supported.any()) else math.nan


def _ranking(kind: str) -> Callable[[HeadResult, Average | None], float]:
    def monitor(result: HeadResult, average: Average | None) -> float:
        from sklearn.metrics import average_precision_score, roc_auc_score

        target = result.targets.long().view(-1).numpy()
        probs = result.probabilities().double().numpy()
        if len(set(target.tolist())) < 2:
            log.warning("%s is undefined on a split holding one class: NaN", kind)
            return math.nan
        average = average or _default_average(result)
        if probs.shape[1] == 2:
            scores = probs[:, 1]
            fn = roc_auc_score if kind == "roc_auc" else average_precision_score
            return float(fn(target, scores))
        if average == "binary":
            raise ValueError(f"{kind} average 'binary' needs 2 classes; choose macro or weighted")
        if kind == "roc_auc":
            if average == "micro":
                raise ValueError("roc_auc of several classes: average macro or weighted")
            labels = list(range(probs.shape[1]))
            present = sorted(set(target.tolist()))
            if present != labels:  # sklearn's ovr needs every class: score the present ones
                probs = probs[:, present] / probs[:, present].sum(1, keepdims=True)
                labels = present
            return float(
                roc_auc_score(target, probs, multi_class="ovr", average=average, labels=labels)
            )
        onehot = (target[:, None] == list(range(probs.shape[1]))).astype(float)
        keep = onehot.sum(0) > 0
        return float(average_precision_score(onehot[:, keep], probs[:, keep], average=average))

    return monitor


def _values(result: HeadResult) -> tuple[Tensor, Tensor]:
    return result.predictions().double(), result.targets.double().view(-1)


def _mae(result: HeadResult, average: Average | None) -> float:
    pred, target = _values(result)
    return float((pred - target).abs().mean())


def _mse(result: HeadResult, average: Average | None) -> float:
    pred, target = _values(result)
    return float(((pred - target) ** 2).mean())


def _rmse(result: HeadResult, average: Average | None) -> float:
    return math.sqrt(_mse(result, average))


def _r2(result: HeadResult, average: Average | None) -> float:
    pred, target = _values(result)
    sst = float(((target - target.mean()) ** 2).sum())
    sse = float(((target - pred) ** 2).sum())
    if sst == 0:
        return 1.0 if sse == 0 else 0.0  # sklearn's convention for constant targets
    return 1.0 - sse / sst


def _loss_mean(result: HeadResult, average: Average | None) -> float:
    return float(result.losses.double().mean()) if result.losses.numel() else math.nan


MonitorFn = Callable[[HeadResult, Average | None], float]
MONITORS: Registry[MonitorFn] = Registry(
    "monitor",
    {
        "accuracy": _accuracy,
        "balanced_accuracy": _balanced_accuracy,
        "f1": _prf("f1"),
        "precision": _prf("precision"),
        "recall": _prf("recall"),
        "roc_auc": _ranking("roc_auc"),
        "ap": _ranking("ap"),
        "mae": _mae,
        "mse": _mse,
        "rmse": _rmse,
        "r2": _r2,
        "loss_mean": _loss_mean,
    },
)


@dataclass(frozen=True)
class Monitor:
    """Monitor `monitor` of head `head`, reported under `label` (default: the monitor)."""

    head: str
    monitor: str
    label: str = ""
    average: Average | None = None

    def key(self, split: str) -> str:
        return f"{split}_{self.head}_{self.label or self.monitor}"


@dataclass
class Evaluator:
    """Computes `monitors` over collected head results; `compute` returns prefixed names."""

    monitors: Sequence[Monitor]
    fns: dict[str, MonitorFn] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.fns = {m.monitor: MONITORS.get(m.monitor) for m in self.monitors}  # unknown: error

    def compute(
        self, results: dict[str, HeadResult], split: str, weights: dict[str, float] | None = None
    ) -> dict[str, float]:
        """`{split}_loss` (weighted sum of head loss means), `{split}_<head>_loss` and every
        monitor."""
        out: dict[str, float] = {}
        total = 0.0
        for head, result in results.items():
            part = _loss_mean(result, None)
            out[f"{split}_{head}_loss"] = part
            total += (weights or {}).get(head, 1.0) * part
        out[f"{split}_loss"] = total
        for m in self.monitors:
            if m.head not in results:
                raise ValueError(f"monitor of head {m.head!r}; heads: {', '.join(results)}")
            out[m.key(split)] = float(self.fns[m.monitor](results[m.head], m.average))
        return out


def head_report(result: HeadResult, metrics: dict[str, float]) -> dict[str, Any]:
    """A head's part of `test_report.json`: its monitors, and for classification the
    confusion matrix (rows: targets, columns: predictions) and per-class precision, recall,
    F1 and support."""
    report: dict[str, Any] = {"kind": result.kind, "graphs": int(result.targets.numel()),
                              "monitors": metrics}  # fmt: skip
    if result.kind == "classification":
        stats = per_class(result)
        cm = confusion_matrix(result.predictions(), result.targets, result.classes)
        report["confusion_matrix"] = cm.tolist()
        report["per_class"] = [
            {
                "class": c,
                "precision": float(stats["precision"][c]),
                "recall": float(stats["recall"][c]),
                "f1": float(stats["f1"][c]),
                "support": int(stats["support"][c]),
            }
            for c in range(result.classes)
        ]
    return report


__all__ = [
    "MONITORS",
    "Collector",
    "Evaluator",
    "HeadResult",
    "Monitor",
    "confusion_matrix",
    "head_report",
    "per_class",
]
