"""Benchmark: the GraphGPS ZINC model trained through trainctl's loop (GraphTransformerTask +
core.trainer.Trainer) and through a plain PyG loop written straightforwardly, on the same
processed ZINC graphs with the same settings.

Prints ms per training step, seconds per epoch (train + validation) and their ratio
ours / plain (target <= 1.0), and the test MAE of each loop's best-validation model after the
same number of epochs (target: ours <= plain).

Model: 10 GPS layers x 64 channels (GINE + 4-head attention, attention dropout 0.5), RWSE of
20 steps encoded to 28 dims, add pooling, 3-layer head: 423,717 parameters. Training: batch 32,
AdamW lr 1e-3 wd 1e-5, cosine schedule with warmup, gradient clipping 1.0, L1 loss.

    python bench/bench_graph_transformer.py                       # 1,200 graphs, 3 epochs
    python bench/bench_graph_transformer.py --max-graphs 0 --epochs 100 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn


def bench_spec(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "family": "graph_transformer",
        "name": "bench-zinc-gps",
        "task": "graph_regression",
        "data": {"format": "zinc", "max_graphs": args.max_graphs or None},
        "positional_encodings": [{"kind": "rwse", "walk_lengths": [20], "dim": 28}],
        "model": {
            "layers": 10, "channels": 64, "heads": 4, "local_layer": "gine",
            "attention": "multihead", "attn_dropout": 0.5, "dropout": 0.0, "pooling": "add",
            "head_layers": 3,
        },
        "loss": "mae",
        "metrics": ["mae"],
        "training": {
            "epochs": args.epochs, "batch_size": args.batch_size, "gradient_clip": 1.0,
            "seed": args.seed,
        },
        "optimizer": {"name": "adamw", "lr": args.lr, "weight_decay": 1e-5},
        "scheduler": {"name": "cosine", "warmup_epochs": args.warmup, "min_lr": 0.0},
        "early_stopping": None,
        "resources": {"accelerator": args.device},
    }  # fmt: skip


# --- ours: the Task through the shared Trainer -------------------------------------------------


def run_ours(spec_dict: dict[str, Any], out: Path, device: torch.device) -> dict[str, Any]:
    from core.families.graph_transformer.task import GraphTransformerTask
    from core.modelinfo import count_parameters
    from core.spec import load_spec
    from core.task import RunContext
    from core.trainer import Trainer

    class TimedTrainer(Trainer):
        """The shared Trainer, timing the training part of every epoch."""

        train_seconds: list[float] = []
        steps: list[int] = []

        def train_epoch(self, epoch: int) -> dict[str, float]:
            _sync(device)
            t0, s0 = time.perf_counter(), self.global_step
            out = super().train_epoch(epoch)
            _sync(device)
            self.train_seconds.append(time.perf_counter() - t0)
            self.steps.append(self.global_step - s0)
            return out

    spec = load_spec(spec_dict)
    task = GraphTransformerTask(RunContext(spec, out, device))
    trainer = TimedTrainer(task)
    summary = trainer.fit()
    epochs = [r["seconds"] for r in trainer.history]
    return {
        "params": count_parameters(trainer.model),
        "train_seconds": trainer.train_seconds,
        "steps": trainer.steps,
        "epoch_seconds": epochs,
        "best_val_mae": summary["best_score"],
        "test_mae": summary["best_metrics"]["test_mae"],
    }


# --- plain: a straightforward PyG loop ----------------------------------------------------------


class PlainGPS(nn.Module):
    """GPS for ZINC written out directly (after PyG's examples/graph_gps.py)."""

    def __init__(self) -> None:
        super().__init__()
        from torch_geometric.nn import GINEConv, GPSConv

        self.node_emb = nn.Embedding(28, 64 - 28)
        self.pe_norm = nn.BatchNorm1d(20)
        self.pe_lin = nn.Linear(20, 28)
        self.edge_emb = nn.Embedding(4, 64)
        self.convs = nn.ModuleList()
        for _ in range(10):
            mlp = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64))
            self.convs.append(GPSConv(64, GINEConv(mlp), heads=4, attn_kwargs={"dropout": 0.5}))
        self.head = nn.Sequential(
            nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 1)
        )

    def forward(self, x, pe, edge_index, edge_attr, batch):  # type: ignore[no-untyped-def]
        from torch_geometric.nn import global_add_pool

        h = torch.cat([self.node_emb(x), self.pe_lin(self.pe_norm(pe))], 1)
        e = self.edge_emb(edge_attr)
        for conv in self.convs:
            h = conv(h, edge_index, batch, edge_attr=e)
        return self.head(global_add_pool(h, batch)).view(-1)


def run_plain(spec_dict: dict[str, Any], device: torch.device) -> dict[str, Any]:
    from torch_geometric.loader import DataLoader

    from core.families.graph_transformer.task import load_graph_set
    from core.spec import load_spec

    spec = load_spec(spec_dict)
    graphs = load_graph_set(spec)  # the same processed graphs and RWSE as ours
    data = graphs.to_data_list()
    for d in data:
        d.pe = d.pe_0
        del d.pe_0
    split = {k: [data[i] for i in v.tolist()] for k, v in graphs.splits.items()}
    torch.manual_seed(spec.training.seed)
    train_loader = DataLoader(split["train"], batch_size=spec.training.batch_size, shuffle=True)
    val_loader = DataLoader(split["val"], batch_size=256)
    test_loader = DataLoader(split["test"], batch_size=256)

    model = PlainGPS().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.optimizer.lr, weight_decay=1e-5)
    epochs, warmup = spec.training.epochs, spec.scheduler.warmup_epochs

    def lr_factor(epoch: int) -> float:
        if epoch < warmup:
            return (epoch + 1) / (warmup + 1)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch - warmup) / max(1, epochs - warmup))))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    def train() -> int:
        model.train()
        steps = 0
        for batch in train_loader:
            batch = batch.to(device)
            optimizer.zero_grad()
            out = model(batch.x, batch.pe, batch.edge_index, batch.edge_attr, batch.batch)
            loss = (out - batch.y).abs().mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            steps += 1
        return steps

    @torch.no_grad()
    def test(loader: DataLoader) -> float:
        model.eval()
        total_error = 0.0
        for batch in loader:
            batch = batch.to(device)
            out = model(batch.x, batch.pe, batch.edge_index, batch.edge_attr, batch.batch)
            total_error += (out - batch.y).abs().sum().item()
        return total_error / len(loader.dataset)

    train_seconds, epoch_seconds, steps = [], [], []
    best_val, best_state = float("inf"), None
    for _ in range(epochs):
        _sync(device)
        t0 = time.perf_counter()
        steps.append(train())
        _sync(device)
        train_seconds.append(time.perf_counter() - t0)
        val_mae = test(val_loader)
        scheduler.step()
        if val_mae < best_val:
            best_val, best_state = val_mae, copy.deepcopy(model.state_dict())
        epoch_seconds.append(time.perf_counter() - t0)
    assert best_state is not None
    model.load_state_dict(best_state)
    return {
        "params": sum(p.numel() for p in model.parameters()),
        "train_seconds": train_seconds,
        "steps": steps,
        "epoch_seconds": epoch_seconds,
        "best_val_mae": best_val,
        "test_mae": test(test_loader),
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-graphs", type=int, default=1200, help="0: all 12,000 graphs")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=1, help="warmup epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each loop, alternated")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    spec = bench_spec(args)

    from core.families.graph_transformer.task import load_graph_set
    from core.spec import load_spec

    load_graph_set(load_spec(spec))  # process and cache once, outside the timings
    # Repeats alternate which loop goes first, so drifting machine load hits both alike.
    runs: dict[str, list[dict[str, Any]]] = {"ours": [], "plain": []}
    for repeat in range(args.repeats):
        order = ["plain", "ours"] if repeat % 2 == 0 else ["ours", "plain"]
        for name in order:
            if name == "ours":
                with tempfile.TemporaryDirectory() as tmp:
                    runs["ours"].append(run_ours(spec, Path(tmp), device))
            else:
                runs["plain"].append(run_plain(spec, device))

    # The first epoch of a run includes one-off costs (allocator warm-up): skip it.
    def steady(values: list[float]) -> list[float]:
        return values[1:] if len(values) > 1 else values

    rows = {}
    for name, rs in runs.items():
        step_ms = [
            1000 * sum(steady(r["train_seconds"])) / max(1, sum(steady(r["steps"]))) for r in rs
        ]
        epoch_s = [statistics.mean(steady(r["epoch_seconds"])) for r in rs]
        rows[name] = {
            "params": rs[0]["params"],
            "ms_per_step": round(statistics.median(step_ms), 2),
            "epoch_s": round(statistics.median(epoch_s), 3),
            "best_val_mae": round(rs[0]["best_val_mae"], 4),
            "test_mae": round(rs[0]["test_mae"], 4),
        }
    ratio = rows["ours"]["epoch_s"] / rows["plain"]["epoch_s"]
    step_ratio = rows["ours"]["ms_per_step"] / rows["plain"]["ms_per_step"]
    print(f"ZINC graphs: {args.max_graphs or 12000}, epochs: {args.epochs}, device: {device}, "
          f"threads: {args.threads}, batch: {args.batch_size}, repeats: {args.repeats} "
          f"(timings: medians; MAEs: first repeat, seed {args.seed})")  # fmt: skip
    print(f"{'loop':6} {'params':>8} {'ms/step':>8} {'epoch s':>8} {'val MAE':>8} {'test MAE':>9}")
    for name, r in rows.items():
        print(f"{name:6} {r['params']:>8} {r['ms_per_step']:>8} {r['epoch_s']:>8} "
              f"{r['best_val_mae']:>8} {r['test_mae']:>9}")  # fmt: skip
    print(f"epoch-time ratio ours/plain: {ratio:.3f} (target <= 1.0); "
          f"step-time ratio: {step_ratio:.3f}")  # fmt: skip
    better = rows["ours"]["test_mae"] <= rows["plain"]["test_mae"]
    print(f"test MAE ours <= plain: {better}")
    if args.json:
        report = {"args": {**vars(args), "json": str(args.json)}, "rows": rows, "ratio": ratio}
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
