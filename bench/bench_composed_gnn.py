"""Benchmark: one training epoch of the composed MUTAG model (examples/mutag-composed-gnn.yaml:
SAGE 7->64, ReLU, SAGE 64->64, mean pooling, graph features 4->32, head 96->128->2) through
trainctl's loop (ComposedGnnTask + core.trainer.Trainer.train_epoch) and through a plain PyG
loop written straightforwardly with the same layers, data, batch size, optimizer and gradient
clipping. Prints the median seconds per epoch of each and the ratio ours / plain (target <= 1.0).

    python bench/bench_composed_gnn.py                 # 10 timed epochs each, alternating
    python bench/bench_composed_gnn.py --epochs 30 --threads 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch import nn


class PlainModel(nn.Module):
    """The example's architecture in plain PyG, graph statistics computed inline."""

    def __init__(self, in_dim: int, classes: int, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        from torch_geometric.nn import SAGEConv

        self.conv1 = SAGEConv(in_dim, 64, aggr="mean")
        self.conv2 = SAGEConv(64, 64, aggr="mean")
        self.features = nn.Sequential(nn.Linear(4, 32), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(96, 128), nn.ReLU(), nn.Linear(128, classes))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, data):  # noqa: ANN001, ANN201
        from torch_geometric.nn import global_mean_pool

        h = self.conv2(torch.relu(self.conv1(data.x, data.edge_index)), data.edge_index)
        g = global_mean_pool(h, data.batch, size=data.num_graphs)
        n = torch.bincount(data.batch, minlength=data.num_graphs).float()
        m = torch.bincount(data.batch[data.edge_index[0]], minlength=data.num_graphs).float()
        stats = torch.stack([n, m, m / (n * (n - 1)).clamp(min=1), m / n.clamp(min=1)], 1)
        return self.head(torch.cat([g, self.features((stats - self.mean) / self.std)], 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", type=Path, default=Path("examples/mutag-composed-gnn.yaml"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)

    from torch_geometric.loader import DataLoader

    from core.modelinfo import count_parameters
    from core.spec import load_spec
    from core.task import RunContext
    from core.trainer import Trainer

    spec = load_spec(args.spec, ["training.tensorboard=false"])
    with tempfile.TemporaryDirectory() as tmp:
        from core.families.composed_gnn.task import ComposedGnnTask

        task = ComposedGnnTask(RunContext(spec, Path(tmp), torch.device("cpu")))
        trainer = Trainer(task, callbacks=[])
        train_data = [task.data[i] for i in task.index["train"].tolist()]
        mean, std = task.feature_stats or (torch.zeros(4), torch.ones(4))
        classes = task.plans[0].out_dim
        plain = PlainModel(int(train_data[0].x.size(1)), classes, mean, std.clamp(min=1e-6))
        assert count_parameters(plain) == count_parameters(trainer.model), "same model size"
        opt = torch.optim.Adam(plain.parameters(), lr=spec.optimizer.lr,
                               weight_decay=spec.optimizer.weight_decay)  # fmt: skip
        clip = spec.training.gradient_clip
        loader = DataLoader(train_data, batch_size=spec.training.batch_size, shuffle=True)

        def plain_epoch() -> None:
            plain.train()
            for data in loader:
                opt.zero_grad()
                loss = nn.functional.cross_entropy(plain(data), data.y.view(-1))
                loss.backward()
                if clip > 0:
                    nn.utils.clip_grad_norm_(plain.parameters(), clip)
                opt.step()

        ours_s, plain_s = [], []
        trainer.train_epoch(1)  # warm-up: first collation, allocator
        plain_epoch()
        for epoch in range(2, args.epochs + 2):
            t0 = time.perf_counter()
            trainer.train_epoch(epoch)
            ours_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            plain_epoch()
            plain_s.append(time.perf_counter() - t0)
    ours, ref = statistics.median(ours_s), statistics.median(plain_s)
    print(f"composed MUTAG, {len(train_data)} training graphs, batch {spec.training.batch_size}, "
          f"{count_parameters(plain):,} parameters")  # fmt: skip
    print(f"ours  (Task + Trainer.train_epoch): {ours * 1000:.1f} ms / epoch (median)")
    print(f"plain (PyG loop)                  : {ref * 1000:.1f} ms / epoch (median)")
    print(f"ratio ours / plain: {ours / ref:.3f} (target <= 1.0)")


if __name__ == "__main__":
    main()
