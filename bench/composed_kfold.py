"""Stratified k-fold cross-validation of a composed_gnn example: trains every fold through
`core.run.train` (model selection on each fold's validation split: the best-validation
checkpoint is the one tested) and prints each fold's test metric and the mean +- std.

    python bench/composed_kfold.py                                        # MUTAG, 10 folds
    python bench/composed_kfold.py --spec examples/enzymes-composed-gnn.yaml
    python bench/composed_kfold.py --spec examples/imdb-composed-gnn.yaml --set training.epochs=50

The metric defaults to the test version of the spec's `metric_for_best`
(`val_<head>_accuracy` -> `test_<head>_accuracy`).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=Path("examples/mutag-composed-gnn.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--metric", default=None, help="default: test_ of metric_for_best")
    parser.add_argument(
        "--only", default=None, help="comma-separated folds to run (default: all), e.g. 0,1,2"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from core.run import train
    from core.spec import load_spec

    values, seconds = [], []
    metric = args.metric
    folds = [int(f) for f in args.only.split(",")] if args.only else range(args.folds)
    for fold in folds:
        overrides = [
            *args.overrides,
            "data.split.kind=kfold",
            f"data.split.k={args.folds}",
            f"data.split.fold={fold}",
            "training.tensorboard=false",
        ]
        spec = load_spec(args.spec, overrides)
        if metric is None:
            metric = "test_" + spec.metric_for_best.name.removeprefix("val_")  # type: ignore[attr-defined]
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(spec, Path(tmp))
        seconds.append(time.perf_counter() - t0)
        value = summary["best_metrics"][metric]
        values.append(value)
        print(f"fold {fold}: {metric} {value:.4f} (best epoch {summary['best_epoch']}, "
              f"{seconds[-1]:.1f} s)", flush=True)  # fmt: skip
    mean, std = statistics.mean(values), statistics.pstdev(values)
    print(f"{args.spec.name} {len(values)} of {args.folds} folds, {metric}: "
          f"{mean:.4f} +- {std:.4f} ({sum(seconds):.0f} s in all)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"metric": metric, "values": values, "mean": mean,
                                         "std": std}))  # fmt: skip


if __name__ == "__main__":
    main()
