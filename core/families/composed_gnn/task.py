"""The composed GNN's Task: graph classification or regression with one or more heads on TU,
TU-upload, ZINC (score, logp, SA) or zarr graph sets.

Data: loaded through the shared readers, categorical node and edge types one-hot encoded (the
encoder's widths are inferred from them), filtered (`data.filters`), transformed once
(`data.transforms`, PyG transforms), split (fractions, k-fold, or ZINC's own). Each epoch
shuffles the training graphs with a generator seeded by (seed, epoch), every DDP rank takes its
share, and PyG's `DataLoader` batches them. Evaluation collects each head's outputs and
computes the spec's monitors (`core.evaluators`).

Outputs: `predictions.csv` (graph_id, split, head, target, prediction, confidence),
`embeddings.npy` (the graph vector: pooled nodes joined with the graph-feature network) keyed
by `graph_ids.csv`, and `test_report.json` (per head: test monitors, confusion matrix and
per-class precision / recall / F1 for classification).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core import distributed as D
from core.data.errors import DataError
from core.data.graphset import GraphSet
from core.data.splits import SPLITS, split_indices
from core.evaluators import Collector, Evaluator, HeadResult, Monitor, head_report
from core.families.composed_gnn.model import ComposedGNN, HeadPlan, graph_statistics
from core.families.composed_gnn.spec import (
    AddSelfLoops,
    ComposedGnnSpec,
    ComposedZincData,
    Constant,
    EvaluatorSpec,
    NormalizeFeatures,
    OneHotDegree,
    ShuffledFractionsSplit,
    ToUndirected,
    ZarrData,
)
from core.modelinfo import count_parameters
from core.report import strict_json
from core.task import Output, RunContext, Task, embeddings_outputs

log = logging.getLogger(__name__)


def _epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 9_176 + stream * 7_919) % (2**63 - 1)


# --- data -----------------------------------------------------------------------------------------


def load_targets(spec: ComposedGnnSpec) -> tuple[GraphSet, list[str], list[int | None]]:
    """The spec's graphs with y as [G, T] (one column per named target), the target names and
    each target's class count (None for regression targets)."""
    data = spec.data
    classification = spec.task == "graph_classification"
    if isinstance(data, ZarrData):
        from core.data.zarr_arrays import dense_graph_set, read_arrays

        names = [data.adjacency, data.num_nodes, *data.node_features, *data.targets]
        arrays = read_arrays(data.path, names)
        columns = [torch.as_tensor(arrays[t]).reshape(-1) for t in data.targets]
        classes: list[int | None] = []
        if classification:
            for t, col in zip(data.targets, columns, strict=True):
                if col.is_floating_point() and not bool((col == col.round()).all()):
                    raise DataError(
                        data.path,
                        f"target {t!r} holds non-integer values; classes must be integers "
                        "(or use task graph_regression)",
                    )
            remapped = [torch.unique(c, return_inverse=True) for c in columns]
            columns = [inv for _, inv in remapped]
            classes = [int(u.numel()) for u, _ in remapped]
            y = torch.stack(columns, 1).long()
        else:
            classes = [None] * len(columns)
            y = torch.stack(columns, 1).float()
        graphs = dense_graph_set(
            arrays[data.adjacency], arrays[data.num_nodes],
            [arrays[f] for f in data.node_features], y.numpy(),
            transpose=data.transpose_adjacency, label=data.path,
        )  # fmt: skip
        return graphs, list(data.targets), classes
    if isinstance(data, ComposedZincData):
        from core.data.zinc import load_zinc

        graphs, _ = load_zinc(data)
        table = _zinc_columns(data)
        y = torch.stack([table[t][graphs.graph_ids] for t in data.targets], 1)
        graphs.y = y
        return graphs, list(data.targets), [None] * y.size(1)
    from core.data.tu import load_tu

    graphs, _ = load_tu(data)
    if classification:
        if graphs.num_classes is None:
            raise ValueError("task 'graph_classification' needs class labels; the dataset has "
                             "regression targets: use task graph_regression")  # fmt: skip
        graphs.y = graphs.y.long().view(-1, 1)
        return graphs, ["label"], [graphs.num_classes]
    if graphs.num_classes is not None:
        raise ValueError(
            f"task 'graph_regression' needs numeric targets; the dataset has "
            f"{graphs.num_classes} classes: use task graph_classification"
        )
    y = graphs.y.float().view(graphs.num_graphs, -1)
    graphs.y = y
    missing = torch.isnan(y).any(1)
    if bool(missing.any()):
        ids = graphs.graph_ids[missing].tolist()
        shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
        if data.missing_targets == "error":
            raise DataError(
                getattr(data, "path", None) or data.name,  # type: ignore[union-attr]
                f"{len(ids)} graph(s) have no target (NaN): graph ids {shown}. Fix the "
                "targets, or set data.missing_targets: drop to leave those graphs out",
            )
        log.warning("left out %d graph(s) without a target: %s", len(ids), shown)
        graphs = graphs.select(torch.nonzero(~missing).view(-1))
    names = ["y"] if y.size(1) == 1 else [f"y{i}" for i in range(y.size(1))]
    return graphs, names, [None] * y.size(1)


def _zinc_columns(data: ComposedZincData) -> dict[str, Tensor]:
    """The score, logp and SA columns of ZINC's source CSV, indexed by row (= graph id)."""
    from core.data.roots import resolve_data_path
    from core.data.zinc import FULL_DIR, SMILES_FILE, SUBSET_DIR

    directory = resolve_data_path(SUBSET_DIR if data.subset else FULL_DIR, expect=SMILES_FILE)
    with open(directory / SMILES_FILE, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = {"score", "logp", "SA"} - set(rows[0] if rows else {})
    if missing:
        raise DataError(f"{SUBSET_DIR}/{SMILES_FILE}", f"missing columns {sorted(missing)}")
    return {
        name: torch.tensor([float(r[name]) for r in rows], dtype=torch.float32)
        for name in ("score", "logp", "SA")
    }


def one_hot_types(graphs: GraphSet) -> GraphSet:
    """Categorical node / edge types (ZINC atoms, MUTAG bonds) as one-hot float features, so
    every encoder layer takes float inputs whose width it can infer."""
    if graphs.num_node_types is not None and graphs.x.dim() == 1:
        graphs.x = nn.functional.one_hot(graphs.x.long(), graphs.num_node_types).float()
        graphs.num_node_types = None
    if graphs.edge_attr is not None and graphs.edge_attr.dim() == 1:
        count = graphs.num_edge_types or int(graphs.edge_attr.max()) + 1
        graphs.edge_attr = nn.functional.one_hot(graphs.edge_attr.long(), count).float()
        graphs.num_edge_types = None
    return graphs


def max_out_degree(data: list[Any]) -> int:
    """The largest out-degree over `data` (PyG `OneHotDegree` counts edge_index[0])."""
    degrees = [torch.bincount(d.edge_index[0], minlength=d.num_nodes) for d in data]
    return int(torch.cat(degrees).max()) if degrees else 0


def apply_transforms(data: list[Any], transforms: list[Any]) -> list[Any]:
    """The spec's transforms, in order, on every graph (PyG `torch_geometric.transforms`).
    `one_hot_degree` without `max_degree` uses the data's largest degree; with one smaller
    than the data's, a ValueError names the field and the largest degree."""
    import torch_geometric.transforms as T

    for i, t in enumerate(transforms):
        if isinstance(t, OneHotDegree):
            largest = max_out_degree(data)
            if t.max_degree is not None and t.max_degree < largest:
                raise ValueError(
                    f"data.transforms[{i}].max_degree is {t.max_degree} but a graph has degree "
                    f"{largest}; raise it or leave it out (default: the largest degree)"
                )
            fn: Any = T.OneHotDegree(t.max_degree or largest, cat=t.cat)
        elif isinstance(t, Constant):
            fn = T.Constant(t.value, cat=t.cat)
        elif isinstance(t, ToUndirected):
            fn = T.ToUndirected()
        elif isinstance(t, AddSelfLoops):
            fn = T.AddSelfLoops(attr="edge_attr", fill_value=0.0)
        elif isinstance(t, NormalizeFeatures):
            fn = T.NormalizeFeatures()
        else:  # pragma: no cover - the spec's union is closed
            raise ValueError(f"unknown transform {t!r}")
        data = [fn(d) for d in data]
    return data


def filter_graphs(graphs: GraphSet, min_nodes: int | None, max_nodes: int | None) -> Tensor:
    """[G] bool: the graphs whose node count is within [min_nodes, max_nodes]."""
    n = graphs.nodes_per_graph()
    keep = torch.ones_like(n, dtype=torch.bool)
    if min_nodes is not None:
        keep &= n >= min_nodes
    if max_nodes is not None:
        keep &= n <= max_nodes
    return keep


class ComposedGnnTask(Task):
    spec: ComposedGnnSpec

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.graphs: GraphSet | None = None
        self.data: list[Any] = []
        self.index: dict[str, Tensor] = {}
        self.target_names: list[str] = []
        self.target_classes: list[int | None] = []
        self.plans: list[HeadPlan] = []
        self.feature_stats: tuple[Tensor, Tensor] | None = None
        self.data_warnings: list[str] = []
        self._eval_cache: dict[str, list[Any]] = {}
        self._test_results: dict[str, HeadResult] = {}
        self._test_metrics: dict[str, float] = {}

    # --- data and model -------------------------------------------------------------------------

    def setup_data(self) -> None:
        spec = self.spec
        graphs, self.target_names, self.target_classes = load_targets(spec)
        graphs = one_hot_types(graphs)
        own = dict(graphs.splits)
        filters = spec.data.filters
        keep = filter_graphs(graphs, filters.min_nodes, filters.max_nodes)
        if not bool(keep.all()):
            dropped = int((~keep).sum())
            note = f"data.filters left out {dropped} of {graphs.num_graphs} graphs"
            self.data_warnings.append(note)
            log.warning("%s", note)
            new_position = torch.cumsum(keep.long(), 0) - 1
            own = {k: new_position[v[keep[v]]] for k, v in own.items()}
            graphs = graphs.select(torch.nonzero(keep).view(-1))
            graphs.splits = own
        if graphs.num_graphs == 0:
            raise ValueError("no graphs left after data.filters")
        self.graphs = graphs
        self.plans = self._plan_heads()
        data = apply_transforms(graphs.to_data_list(), spec.data.transforms)
        self.data = data
        self.index = self._split(graphs)
        empty = [name for name, idx in self.index.items() if idx.numel() == 0]
        if empty:
            raise ValueError(
                f"split(s) {empty} are empty with data.split {spec.data.split.model_dump()} "
                f"and {graphs.num_graphs} graphs"
            )
        gf = spec.model.graph_features
        if gf is not None and gf.standardize:
            self.feature_stats = self._feature_stats(gf.features)

    def _split(self, graphs: GraphSet) -> dict[str, Tensor]:
        split = self.spec.data.split
        first = self.plans[0]
        labels = graphs.y[:, first.column].long() if first.classification else None
        if isinstance(split, ShuffledFractionsSplit) and not split.shuffle:
            n = graphs.num_graphs
            a = round(n * split.fractions[0])
            b = round(n * (split.fractions[0] + split.fractions[1]))
            idx = torch.arange(n)
            return {"train": idx[:a], "val": idx[a:b], "test": idx[b:]}
        return split_indices(
            graphs.splits, graphs.num_graphs, split, self.spec.training.seed, labels
        )

    def _plan_heads(self) -> list[HeadPlan]:
        plans = []
        for i, head in enumerate(self.spec.model.heads):
            target = head.target or self.target_names[0]
            if target not in self.target_names:
                raise ValueError(
                    f"model.heads[{i}].target {target!r} is not a target of the data; choose "
                    f"one of {', '.join(self.target_names)}"
                )
            column = self.target_names.index(target)
            classes = self.target_classes[column]
            loss = head.loss or "cross_entropy"
            if loss == "bce_logits" and classes != 2:
                raise ValueError(f"model.heads[{i}].loss 'bce_logits' needs 2 classes, target "
                                 f"{target!r} has {classes}; use cross_entropy")  # fmt: skip
            out_dim = int(classes or 2) if loss == "cross_entropy" else 1
            plans.append(HeadPlan(head.name, column, loss, head.weight, out_dim,
                                  classes is not None))  # fmt: skip
        return plans

    def _feature_stats(self, names: list[str]) -> tuple[Tensor, Tensor]:
        """Mean and std of each graph statistic over the training graphs."""
        from torch_geometric.data import Batch

        batch = Batch.from_data_list([self.data[i] for i in self.index["train"].tolist()])
        stats = graph_statistics(names, batch.edge_index, batch.batch, batch.num_graphs)
        return stats.mean(0), stats.std(0, unbiased=False)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data_warnings": list(self.data_warnings)}
        if self._test_results:
            plan = self.plans[0]
            result = self._test_results[plan.name]
            if plan.classification:
                counts = torch.bincount(result.targets.long(), minlength=result.classes)
                baseline = float(counts.max()) / max(1, int(counts.sum()))
                value = self._test_metrics.get(f"test_{plan.name}_accuracy")
                metric = f"test_{plan.name}_accuracy"
            else:
                t = result.targets.float()
                baseline = float((t - t.median()).abs().mean()) if t.numel() else float("nan")
                metric = f"test_{plan.name}_mae"
                value = self._test_metrics.get(metric)
            if value is not None:
                out["quality"] = {"metric": metric, "value": value, "baseline": baseline}
        return out

    def build_model(self) -> nn.Module:
        assert self.data, "setup_data first"
        sample = self.data[0]
        in_dim = int(sample.x.size(1))
        edge_attr = getattr(sample, "edge_attr", None)
        edge_dim = (
            int(edge_attr.size(1)) if edge_attr is not None and edge_attr.dim() == 2 else None
        )
        model = ComposedGNN(self.spec.model, in_dim, edge_dim, self.plans, self.feature_stats)
        log.info(
            "composed_gnn: %d graphs (train %d, val %d, test %d), %d parameters",
            len(self.data), *(int(self.index[s].numel()) for s in SPLITS),
            count_parameters(model),
        )  # fmt: skip
        return model.to(self.ctx.device)

    # --- training -------------------------------------------------------------------------------

    def per_rank_batch_size(self) -> int:
        """`training.batch_size` is the global batch: each rank takes its share."""
        size = self.spec.training.batch_size // self.ctx.world_size
        if size == 0:
            raise ValueError(f"training.batch_size ({self.spec.training.batch_size}) is smaller "
                             f"than resources.devices ({self.ctx.world_size})")  # fmt: skip
        return size

    def _rank_order(self, epoch: int) -> Tensor:
        train = self.index["train"]
        if self.spec.training.shuffle:
            gen = torch.Generator().manual_seed(_epoch_seed(self.spec.training.seed, epoch))
            train = train[torch.randperm(train.numel(), generator=gen)]
        return D.shard_items(train, self.ctx.rank, self.ctx.world_size)

    def train_batches(self, epoch: int) -> D.RankBatches[Any]:
        order = self._rank_order(epoch)
        size = self.per_rank_batch_size()
        n = order.numel()
        count = n // size if self.spec.training.drop_last and n >= size else -(-n // size)
        return D.RankBatches(lambda: self._train_batches(epoch, order.tolist(), count), count)

    def _train_batches(self, epoch: int, order: list[int], count: int) -> Iterator[Any]:
        from torch_geometric.loader import DataLoader

        size = self.per_rank_batch_size()
        loader = DataLoader(
            [self.data[i] for i in order[: count * size]],
            batch_size=size,
            shuffle=False,
            generator=torch.Generator().manual_seed(_epoch_seed(self.spec.training.seed, epoch)),
        )  # its own generator: the global RNG (dropout's) must not move with the loader
        for batch in loader:
            yield batch.to(self.ctx.device)

    def training_loss(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        objective = getattr(model, "module", model).loss  # the model owns its objective
        return objective(model(batch), batch.y)

    def loss_parts(self) -> tuple[str, ...]:
        return tuple(f"{h.name}_loss" for h in self.spec.model.heads)

    # --- evaluation -----------------------------------------------------------------------------

    def _section(self, split: str) -> EvaluatorSpec:
        return self.spec.validation if split == "val" else self.spec.testing

    def _batches(self, index: Tensor, batch_size: int) -> Iterable[Any]:
        from torch_geometric.loader import DataLoader

        loader = DataLoader([self.data[i] for i in index.tolist()], batch_size=batch_size,
                            shuffle=False, generator=torch.Generator())  # fmt: skip
        for batch in loader:
            yield batch.to(self.ctx.device)

    def _eval_batches(self, split: str) -> list[Any]:
        """The split's batches, collated once and kept (on the device)."""
        if split not in self._eval_cache:
            size = self._section(split).batch_size
            self._eval_cache[split] = list(self._batches(self.index[split], size))
        return self._eval_cache[split]

    @torch.no_grad()
    def collect(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, HeadResult]:
        """Each head's outputs, targets and per-graph losses over `batches`."""
        model = getattr(model, "module", model)
        was_training = model.training
        model.eval()
        collector = Collector(
            {p.name: "classification" if p.classification else "regression" for p in self.plans},
            {p.name: self.target_classes[p.column] for p in self.plans},
        )
        for batch in batches:
            outputs = model(batch)
            losses = model.head_losses(outputs, batch.y)  # type: ignore[operator]
            y = batch.y.view(batch.num_graphs, -1)
            for p in self.plans:
                collector.update(p.name, outputs[p.name], y[:, p.column], losses[p.name])
        model.train(was_training)
        return collector.results()

    def predict(self, model: nn.Module, split: str) -> dict[str, Tensor]:
        results = self.collect(model, self._eval_batches(split))
        return {f"{h}_{k}": getattr(r, k) for h, r in results.items()
                for k in ("outputs", "targets")}  # fmt: skip

    def evaluate(self, model: nn.Module, split: str, epoch: int) -> dict[str, float]:
        results = self.collect(model, self._eval_batches(split))
        monitors = [
            Monitor(m.head, m.monitor, m.label, m.average)
            for m in self._section(split).monitors or []
        ]
        weights = {p.name: p.weight for p in self.plans}
        metrics = Evaluator(monitors).compute(results, split, weights)
        if split == "test":
            self._test_results, self._test_metrics = results, metrics
        return metrics

    def metric_names(self) -> set[str]:
        return set(self.spec.monitor_names("val"))

    # --- outputs --------------------------------------------------------------------------------

    @torch.no_grad()
    def write_outputs(self, model: nn.Module, run_dir: Path) -> list[Output]:
        model = getattr(model, "module", model)
        model.eval()
        assert self.graphs is not None
        split_of = np.full(len(self.data), "", dtype=object)
        for name, idx in self.index.items():
            split_of[idx.numpy()] = name
        everything = torch.arange(len(self.data))
        batches = list(self._batches(everything, self.spec.testing.batch_size))
        embeddings = torch.cat([model.embed(b).float().cpu() for b in batches]).numpy()  # type: ignore[operator]
        np.save(run_dir / "embeddings.npy", embeddings.astype(np.float32))  # [G, dim]
        graph_ids = self.graphs.graph_ids.numpy()
        with open(run_dir / "graph_ids.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "graph_id", "split"])
            writer.writerows(zip(range(len(graph_ids)), graph_ids, split_of, strict=True))
        results = self.collect(model, batches)
        with open(run_dir / "predictions.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["graph_id", "split", "head", "target", "prediction", "confidence"])
            for name, r in results.items():
                pred = r.predictions()
                if r.kind == "classification":
                    conf = r.probabilities().max(1).values.tolist()
                    targets = r.targets.long().tolist()
                else:
                    conf = [""] * len(graph_ids)
                    targets = r.targets.float().tolist()
                writer.writerows(zip(graph_ids.tolist(), split_of, [name] * len(graph_ids),
                                     targets, pred.tolist(), conf, strict=True))  # fmt: skip
        report = self.test_report()
        (run_dir / "test_report.json").write_text(strict_json(report, indent=2))
        return [
            *embeddings_outputs("embeddings.npy", embeddings.shape, "graph_ids.csv", "graph_id"),
            Output("predictions", "predictions.csv"),
            Output("report", "test_report.json"),
        ]

    def test_report(self) -> dict[str, Any]:
        """Per head: the test monitors, and for classification the confusion matrix and
        per-class precision / recall / F1 (from the last `evaluate("test")`)."""
        heads = {}
        for plan in self.plans:
            result = self._test_results.get(plan.name)
            if result is None:
                continue
            prefix = f"test_{plan.name}_"
            mine = {k.removeprefix(prefix): v for k, v in self._test_metrics.items()
                    if k.startswith(prefix)}  # fmt: skip
            heads[plan.name] = {"target": self.target_names[plan.column], "loss": plan.loss,
                                **head_report(result, mine)}  # fmt: skip
        return {"split": "test", "graphs": int(self.index["test"].numel()),
                "loss": self._test_metrics.get("test_loss"), "heads": heads}  # fmt: skip


__all__ = ["ComposedGnnTask", "apply_transforms", "filter_graphs", "load_targets"]
