"""Core speed on Cora, each figure a ratio against a plain implementation run in this script.

1. Walks + pairs + negatives (10 walks x length 20 per node, window 5, 5 negatives per pair):
   `core.families.graphsage_skipgram.walks` against the straightforward version (Python walks
   over neighbour lists, Python window loops, `torch.multinomial` negatives).
2. Training steps: `core.trainer.Trainer` on the GraphSAGE skip-gram task against a plain PyG
   loop (PyG's `GraphSAGE` model, Adam, clip, step) over the same pair batches.
3. Optionally (`--example`), the example spec end to end: seconds to its best probe accuracy.

    python bench/bench_core.py [--device cuda] [--steps 30] [--example]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from core.data.graphs import load_planetoid
from core.families.graphsage_skipgram.walks import CSR, NegativeSampler, random_walks, window_pairs

WALKS, LENGTH, WINDOW, NEG = 10, 20, 5, 5


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def ours_pipeline(edge_index: torch.Tensor, n: int, device: torch.device) -> int:
    gen = torch.Generator(device=device).manual_seed(0)
    csr = CSR.from_edge_index(edge_index, n)
    walks = random_walks(csr, torch.arange(n, device=device).repeat(WALKS), LENGTH, gen)
    pairs = window_pairs(walks, WINDOW)
    negatives = NegativeSampler(csr.degree).sample((pairs.size(0), NEG), gen)
    sync(device)
    return int(negatives.size(0))


def plain_pipeline(edge_index: torch.Tensor, n: int, device: torch.device) -> int:
    rng = random.Random(0)
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for s, d in edge_index.t().tolist():
        neighbours[s].append(d)
    walks = []
    for _ in range(WALKS):
        for start in range(n):
            walk = [start]
            for _ in range(LENGTH - 1):
                nb = neighbours[walk[-1]]
                walk.append(rng.choice(nb) if nb else walk[-1])
            walks.append(walk)
    pairs = []
    for walk in walks:
        for i, t in enumerate(walk):
            for j in range(max(0, i - WINDOW), min(len(walk), i + WINDOW + 1)):
                if j != i and walk[j] != t:
                    pairs.append((t, walk[j]))
    pair_t = torch.tensor(pairs, device=device)
    degree = torch.bincount(edge_index[0], minlength=n).float().pow(0.75)
    negatives = torch.multinomial(degree, pair_t.size(0) * NEG, replacement=True).view(-1, NEG)
    sync(device)
    return int(negatives.size(0))


def bench_pipeline(device: torch.device) -> dict[str, float]:
    graph = load_planetoid("Cora")
    ei = graph.edge_index.to(device)
    ours_pipeline(ei, graph.num_nodes, device)  # warm-up
    t0 = time.perf_counter()
    n_ours = ours_pipeline(ei, graph.num_nodes, device)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_plain = plain_pipeline(ei, graph.num_nodes, device)
    t_plain = time.perf_counter() - t0
    return {
        "pairs_ours": n_ours,
        "pairs_plain": n_plain,
        "seconds_ours": t_ours,
        "seconds_plain": t_plain,
        "speedup": t_plain / t_ours,
    }


def bench_steps(device: torch.device, steps: int, batch_size: int) -> dict[str, float]:
    from torch_geometric.nn.models import GraphSAGE as PygGraphSAGE

    from core.families.graphsage_skipgram.task import GraphSageSkipGramTask
    from core.spec import load_spec
    from core.task import RunContext
    from core.trainer import Trainer

    spec = load_spec(
        Path(__file__).resolve().parents[1] / "examples" / "cora-graphsage.yaml",
        [f"training.batch_size={batch_size}", "model.dropout=0.0"],
    )
    with tempfile.TemporaryDirectory() as tmp:
        task = GraphSageSkipGramTask(RunContext(spec, Path(tmp), device))
        trainer = Trainer(task, callbacks=[])
        batches = [b for _, b in zip(range(steps), task.train_batches(1), strict=False)]
        graph = task.graph
        assert graph is not None
        m = spec.model
        plain = PygGraphSAGE(graph.x.size(1), m.hidden_dim, m.layers, m.out_dim).to(device)
        opt = torch.optim.Adam(plain.parameters(), lr=spec.optimizer.lr)
        tau = m.temperature

        def plain_step(b) -> None:
            z = F.normalize(plain(graph.x, graph.edge_index), dim=-1)
            pos = (z[b.targets] * z[b.contexts]).sum(-1) / tau
            neg = (z[b.targets].unsqueeze(1) * z[b.negatives]).sum(-1) / tau
            loss = -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).mean()
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
            opt.step()

        task.train_batches = lambda epoch: iter(batches)  # type: ignore[method-assign]
        results = {}
        for name, run in (
            ("plain", lambda: [plain_step(b) for b in batches]),
            ("ours", lambda: trainer.train_epoch(1)),
        ):
            run()  # warm-up
            sync(device)
            t0 = time.perf_counter()
            run()
            sync(device)
            results[name] = (time.perf_counter() - t0) / len(batches)
    return {
        "ms_per_step_ours": 1e3 * results["ours"],
        "ms_per_step_plain": 1e3 * results["plain"],
        "pairs_per_s_ours": batch_size / results["ours"],
        "ratio_ours_over_plain": results["ours"] / results["plain"],
    }


def bench_example(device: torch.device) -> dict[str, float]:
    from core.run import train
    from core.spec import load_spec

    path = Path(__file__).resolve().parents[1] / "examples" / "cora-graphsage.yaml"
    spec = load_spec(path, [f"resources.accelerator={device.type}"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = train(spec, Path(tmp))
        wall = time.perf_counter() - t0
        rows = [json.loads(x) for x in (Path(tmp) / "metrics.jsonl").read_text().splitlines()]
    elapsed, best_at, best = 0.0, 0.0, -1.0
    for row in rows:
        elapsed += row["seconds"]
        if row.get("probe_val_acc", -1) > best:
            best, best_at = row["probe_val_acc"], elapsed
    return {
        "probe_test_acc": summary["best_metrics"].get("probe_test_acc", float("nan")),
        "best_epoch": summary["best_epoch"],
        "seconds_to_best": best_at,
        "seconds_total": wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--example", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device: {device}, torch threads: {torch.get_num_threads()}")
    p = bench_pipeline(device)
    print(
        f"walks+pairs+negatives: ours {p['seconds_ours']:.3f} s, plain {p['seconds_plain']:.3f}"
        f" s for {p['pairs_ours']:,} / {p['pairs_plain']:,} pairs -> {p['speedup']:.1f}x faster"
    )
    s = bench_steps(device, args.steps, args.batch_size)
    print(
        f"training step ({args.batch_size} pairs): ours {s['ms_per_step_ours']:.1f} ms, "
        f"plain PyG {s['ms_per_step_plain']:.1f} ms -> ratio ours/plain "
        f"{s['ratio_ours_over_plain']:.2f} ({s['pairs_per_s_ours']:,.0f} pairs/s)"
    )
    if args.example:
        e = bench_example(device)
        print(
            f"example: best probe test acc {e['probe_test_acc']:.3f} at epoch "
            f"{e['best_epoch']}, {e['seconds_to_best']:.1f} s of training to the best epoch "
            f"({e['seconds_total']:.1f} s wall in all)"
        )


if __name__ == "__main__":
    main()
