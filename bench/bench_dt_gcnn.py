"""DT-GCNN speed, as ratios measured in one run (issue: both <= 1.0):

1. the kNN graph rebuild (`core.families.dt_gcnn.graph.knn_graph`, cosine, k=10) over 10,000
   texts x 300 dims against scikit-learn `NearestNeighbors(algorithm="brute", metric="cosine")`
   asked for the same neighbours, with the share of edges both find;
2. one training epoch of the SICK example through the shared loop (`Trainer.train_epoch`)
   against a plain PyTorch loop over the same model, batches, optimizer and clipping;
3. word dropout and word swap variants of SICK's 6,077 sentences drawn on token id tensors
   (`core.families.dt_gcnn.augment.variants`) against a plain Python loop over the texts doing
   the same (split, draw per word, join); not a target of the issue, a check that the
   vectorised path is not slower.

    TRAINCTL_DATA_ROOT=../shared/data python bench/bench_dt_gcnn.py [--rows 10000 --dim 300]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def bench_knn(rows: int, dim: int, k: int, repeats: int) -> None:
    from sklearn.neighbors import NearestNeighbors

    from core.families.dt_gcnn.graph import knn_graph

    x = torch.from_numpy(np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32))
    ours, theirs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        edges = knn_graph(x, k)
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        nn = NearestNeighbors(n_neighbors=k + 1, algorithm="brute", metric="cosine").fit(x.numpy())
        _, ref = nn.kneighbors(x.numpy())
        theirs.append(time.perf_counter() - t0)
    mine = set(zip(edges[0].tolist(), edges[1].tolist(), strict=True))
    reference = {(i, int(j)) for i, row in enumerate(ref) for j in row if j != i}
    agree = len(mine & reference) / max(len(mine), 1)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"kNN graph {rows} x {dim}, k={k}: ours {a:.3f} s, scikit-learn brute {b:.3f} s -> "
        f"ratio {a / b:.2f}; edges in common {agree:.4f}"
    )


def bench_epoch(example: Path) -> None:
    from core.families.dt_gcnn.task import DtGcnnTask
    from core.spec import load_spec
    from core.task import RunContext
    from core.trainer import Trainer

    spec = load_spec(example.read_text(), ["training.tensorboard=false"])
    with tempfile.TemporaryDirectory() as tmp:
        task = DtGcnnTask(RunContext(spec, Path(tmp), torch.device("cpu")))
        trainer = Trainer(task)
        model = copy.deepcopy(trainer.model)  # the plain loop's own copy, same start
        opt = torch.optim.AdamW(
            model.parameters(), lr=spec.optimizer.lr, weight_decay=spec.optimizer.weight_decay
        )

        def plain_epoch(epoch: int) -> None:
            """The same batches, loss, AdamW and gradient clipping, without the loop."""
            task.model, task.epoch = model, epoch
            model.train()
            for batch in task.train_batches(epoch):
                loss = task.training_loss(model, batch)["loss"]
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.training.gradient_clip)
                opt.step()

        ours, plain = [], []
        for epoch in (1, 2, 2, 2):  # interleaved: warm-up and load fall on both alike
            task.model = trainer.model
            t0 = time.perf_counter()
            trainer.train_epoch(epoch)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain_epoch(epoch)
            plain.append(time.perf_counter() - t0)
        ours_s, plain_s = min(ours), min(plain)
        print(
            "epochs: shared loop",
            [round(t, 2) for t in ours],
            "plain",
            [round(t, 2) for t in plain],
        )
    print(
        f"one SICK epoch (best of 4): shared loop {ours_s:.2f} s, plain PyTorch loop "
        f"{plain_s:.2f} s -> ratio {ours_s / plain_s:.2f}"
    )


def bench_augment(copies: int, repeats: int) -> None:
    import random

    from core.data.texts import load_sick
    from core.families.dt_gcnn.augment import variants
    from core.spec.texts import SickData

    texts = load_sick(SickData(format="sick"), 0).texts

    def python_loop(kind: str) -> list[list[str]]:
        rng = random.Random(0)
        out = []
        for _ in range(copies):
            row = []
            for text in texts:  # the reference: one text at a time
                words = text.split()
                if kind == "word_dropout":
                    kept = [w for w in words if rng.random() >= 0.1] or words[:1]
                else:
                    kept, i = list(words), 0
                    while i < len(kept) - 1:
                        if rng.random() < 0.1:
                            kept[i], kept[i + 1] = kept[i + 1], kept[i]
                            i += 1
                        i += 1
                row.append(" ".join(kept))
            out.append(row)
        return out

    for kind in ("word_dropout", "word_swap"):
        ours, loop = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            variants(texts, kind, 0.1, copies, seed=0)
            ours.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            python_loop(kind)
            loop.append(time.perf_counter() - t0)
        a, b = statistics.median(ours), statistics.median(loop)
        print(
            f"{kind} x{copies} of {len(texts)} texts: token id tensors {a:.3f} s, Python loop "
            f"{b:.3f} s -> ratio {a / b:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--example", type=Path, default=REPO / "examples" / "sick-dt-gcnn.yaml")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--only", choices=["knn", "epoch", "augment"], default=None)
    args = parser.parse_args()
    if args.only in (None, "knn"):
        bench_knn(args.rows, args.dim, args.k, args.repeats)
    if args.only in (None, "epoch"):
        bench_epoch(args.example)
    if args.only in (None, "augment"):
        bench_augment(args.copies, args.repeats)


if __name__ == "__main__":
    main()
