"""MUTAG k-fold cross-validation of the graph_transformer example: trains every fold through
`core.run.train` and prints each fold's test accuracy (best-validation checkpoint) and the mean.

    python bench/mutag_kfold.py                                   # examples/mutag-... 10 folds
    python bench/mutag_kfold.py --set training.epochs=100 --set model.layers=4
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
    parser.add_argument("--spec", type=Path, default=Path("examples/mutag-graph-transformer.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from core.run import train
    from core.spec import load_spec

    accuracies, seconds = [], []
    for fold in range(args.folds):
        overrides = [*args.overrides, f"data.split.k={args.folds}", f"data.split.fold={fold}"]
        spec = load_spec(args.spec, overrides)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(spec, Path(tmp))
        seconds.append(time.perf_counter() - t0)
        acc = summary["best_metrics"]["test_accuracy"]
        accuracies.append(acc)
        print(f"fold {fold}: test accuracy {acc:.4f} (best epoch {summary['best_epoch']}, "
              f"{seconds[-1]:.1f} s)", flush=True)  # fmt: skip
    mean, std = statistics.mean(accuracies), statistics.pstdev(accuracies)
    print(f"MUTAG {args.folds}-fold test accuracy: {mean:.4f} +- {std:.4f} "
          f"({sum(seconds):.0f} s in all)")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"accuracies": accuracies, "mean": mean, "std": std}))


if __name__ == "__main__":
    main()
