"""Linear probe of frozen node embeddings: multinomial logistic regression fit on the train
split for several L2 strengths at once, the strength chosen on the val split, accuracy
reported on val and test. Runs in torch on the embeddings' device."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 strength, as in scikit-learn


def probe_problem(y: Tensor, masks: dict[str, Tensor]) -> str | None:
    """Why the probe cannot run on these labels and splits, or None when it can: it needs two
    or more labelled training nodes of at least two classes, and one or more validation and
    test nodes."""
    missing = [s for s in ("train", "val", "test") if s not in masks]
    if missing:
        return f"no {'/'.join(missing)} split"
    train = masks["train"]
    counts = {s: int(masks[s].sum()) for s in ("train", "val", "test")}
    classes = int(torch.unique(y[train]).numel()) if counts["train"] else 0
    if counts["train"] < 2 or classes < 2 or counts["val"] < 1 or counts["test"] < 1:
        return (
            f"too few labelled nodes: train {counts['train']} ({classes} class(es)), val "
            f"{counts['val']}, test {counts['test']}; it needs >= 2 training nodes of >= 2 "
            "classes and >= 1 validation and test node"
        )
    return None


@torch.enable_grad()
def probe_accuracy(z: Tensor, y: Tensor, masks: dict[str, Tensor]) -> dict[str, float]:
    """`{"probe_val_acc", "probe_test_acc"}` of a logistic regression on `z` [N, D]."""
    x = z.detach().float()
    train, val, test = masks["train"], masks["val"], masks["test"]
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-6)
    x = (x - mean) / std  # standardised with the train split's statistics
    classes = int(y[train | val | test].max()) + 1
    c = torch.tensor(C_GRID, device=x.device)
    n = int(train.sum())
    # One weight matrix per C, fit jointly: the objectives are independent sums.
    w = torch.zeros(len(C_GRID), x.size(1) + 1, classes, device=x.device, requires_grad=True)
    xb = torch.cat([x, torch.ones(x.size(0), 1, device=x.device)], 1)  # [N, D + 1]
    xt, yt = xb[train], y[train]
    opt = torch.optim.LBFGS(
        [w], lr=1, max_iter=100, tolerance_grad=1e-5, line_search_fn="strong_wolfe"
    )

    def objective() -> Tensor:
        opt.zero_grad()
        logits = torch.einsum("nd,cdk->cnk", xt, w)  # [C, n, K]
        ce = (
            F.cross_entropy(logits.reshape(-1, classes), yt.repeat(len(C_GRID)), reduction="none")
            .view(len(C_GRID), n)
            .sum(1)
        )
        penalty = 0.5 * (w[:, :-1] ** 2).sum((1, 2)) / c  # the bias is not penalised
        loss = (ce + penalty).sum()
        loss.backward()
        return loss

    opt.step(objective)
    with torch.no_grad():
        pred = torch.einsum("nd,cdk->cnk", xb, w).argmax(-1)  # [C, N]
        correct = pred == y
        val_acc = correct[:, val].double().mean(1)
        test_acc = correct[:, test].double().mean(1)
        best = int(torch.argmax(val_acc))  # first of the ties: the strongest regularisation
    return {"probe_val_acc": float(val_acc[best]), "probe_test_acc": float(test_acc[best])}
