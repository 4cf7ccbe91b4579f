"""Graph Transformer (GPS) with multi-scale positional encodings: graph regression, graph
classification and link prediction on datasets of many small graphs (ZINC, TU collection).

Data are processed once (RDKit / TU reader, positional encodings, cached); each epoch shuffles
the training graphs with a generator seeded by (seed, epoch), so every DDP rank agrees on the
order and takes its own slice, and mini-batches them with PyG's `DataLoader`. Laplacian
eigenvector signs are re-drawn for every training batch; evaluation uses the stored signs.
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
from core.data.links import corrupt_tails, split_target_edges
from core.data.pe import add_positional_encodings, flip_laplacian_signs, pe_attr
from core.data.splits import SPLITS, split_indices
from core.families.graph_transformer.model import GPSModel, GraphInputs
from core.families.graph_transformer.spec import GraphTransformerSpec
from core.losses import loss_output_dim
from core.metrics import get_metrics, metric_inputs
from core.modelinfo import count_parameters
from core.spec.data import ZincData
from core.spec.pe import LaplacianPE
from core.task import Output, RunContext, Task, embeddings_outputs

log = logging.getLogger(__name__)

EVAL_BATCH_SIZE = 256  # graphs per evaluation batch (no gradients: larger is cheaper)


def load_graph_set(spec: GraphTransformerSpec) -> GraphSet:
    """The spec's dataset with link targets (link prediction) and positional encodings."""
    if isinstance(spec.data, ZincData):
        from core.data.zinc import load_zinc

        graphs, key = load_zinc(spec.data)
    else:
        from core.data.tu import load_tu

        graphs, key = load_tu(spec.data)
    if spec.task == "link_prediction":
        link = spec.link
        graphs = split_target_edges(
            graphs, link.target_fraction, link.negatives_per_positive, spec.training.seed
        )
        key = f"{key}-links-{link.target_fraction}-{link.negatives_per_positive}-"
        key += str(spec.training.seed)
    return add_positional_encodings(graphs, spec.positional_encodings, source_key=key)


def _epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A distinct, reproducible seed per (run seed, epoch, stream)."""
    return (seed * 1_000_003 + epoch * 9_176 + stream * 7_919) % (2**63 - 1)


class GraphTransformerTask(Task):
    spec: GraphTransformerSpec

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.task = self.spec.task
        self.link = self.task == "link_prediction"
        self.graphs: GraphSet | None = None
        self.data: list[Any] = []  # one PyG Data per graph, in GraphSet order
        self.index: dict[str, Tensor] = {}  # split -> graph indices
        self.num_classes: int | None = None
        self.pe_attrs = [pe_attr(i) for i in range(len(self.spec.positional_encodings))]
        self.flip_attrs = [
            pe_attr(i)
            for i, pe in enumerate(self.spec.positional_encodings)
            if isinstance(pe, LaplacianPE) and pe.random_sign_flip
        ]
        self._eval_cache: dict[str, list[Any]] = {}
        self.data_warnings: list[str] = []

    # --- data and model -------------------------------------------------------------------------

    def _check_targets(self, graphs: GraphSet) -> None:
        source = type(self.spec.data).__name__
        if self.task == "graph_classification" and graphs.num_classes is None:
            raise ValueError(
                f"task 'graph_classification' needs class labels; the {source} dataset has "
                "regression targets: use task graph_regression"
            )
        if self.task == "graph_regression" and graphs.num_classes is not None:
            raise ValueError(
                f"task 'graph_regression' needs numeric targets; the {source} dataset has "
                f"{graphs.num_classes} classes: use task graph_classification"
            )

    def _missing_targets(self, graphs: GraphSet) -> GraphSet:
        """Refuse or drop (`data.missing_targets`) graphs whose regression target is NaN."""
        if graphs.y.is_floating_point():
            missing = torch.isnan(graphs.y.view(graphs.num_graphs, -1)).any(1)
        else:
            missing = torch.zeros(graphs.num_graphs, dtype=torch.bool)
        if not bool(missing.any()):
            return graphs
        ids = graphs.graph_ids[missing].tolist()
        shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
        source = getattr(self.spec.data, "path", None) or getattr(self.spec.data, "name", "")
        if getattr(self.spec.data, "missing_targets", "error") == "error":
            raise DataError(
                str(source),
                f"{len(ids)} graph(s) have no target (NaN): graph ids {shown}. Fix the targets, "
                "or set data.missing_targets: drop to leave those graphs out",
            )
        self.data_warnings.append(
            f"{source}: left out {len(ids)} graph(s) without a target: {shown}"
        )
        log.warning("%s", self.data_warnings[-1])
        return graphs.select(torch.nonzero(~missing).view(-1))

    def summary(self) -> dict[str, Any]:
        return {"data_warnings": list(self.data_warnings)}

    def setup_data(self) -> None:
        spec = self.spec
        graphs = self._missing_targets(load_graph_set(spec))
        self._check_targets(graphs)
        self.graphs = graphs
        self.num_classes = graphs.num_classes
        labels = graphs.y if self.task == "graph_classification" else None
        self.index = split_indices(
            graphs.splits, graphs.num_graphs, spec.data.split, spec.training.seed, labels
        )
        empty = [name for name, idx in self.index.items() if idx.numel() == 0]
        if empty:
            raise ValueError(
                f"split(s) {empty} are empty with data.split {spec.data.split.model_dump()} "
                f"and {graphs.num_graphs} graphs"
            )
        if labels is not None:
            for name, idx in self.index.items():
                present = torch.unique(labels[idx]).numel()
                if present < 2 and name != "train":
                    note = f"the {name} split holds one class only ({idx.numel()} graphs)"
                    self.data_warnings.append(note)
                    log.warning("%s: accuracy there says little; check data.split", note)
        self.data = graphs.to_data_list()

    def build_model(self) -> nn.Module:
        spec, graphs = self.spec, self.graphs
        assert graphs is not None, "setup_data first"
        inputs = GraphInputs(
            num_node_types=graphs.num_node_types,
            node_dim=None if graphs.num_node_types is not None else int(graphs.x.size(1)),
            num_edge_types=graphs.num_edge_types,
            edge_dim=(
                int(graphs.edge_attr.size(1))
                if graphs.edge_attr is not None and graphs.edge_attr.dim() == 2
                else None
            ),
            pe_raw_dims=tuple(pe.raw_dim for pe in spec.positional_encodings),
            num_classes=self.num_classes,
        )
        model = GPSModel(
            inputs,
            task=self.task,
            out_dim=loss_output_dim(self.task, spec.loss or "", self.num_classes),
            loss=spec.loss,
            **spec.model.model_dump(),  # the spec's model fields are the constructor's keywords
            pe_dims=[pe.dim for pe in spec.positional_encodings],
            pe_attrs=self.pe_attrs,
        )
        log.info(
            "graph_transformer: %d graphs (train %d, val %d, test %d), %d parameters",
            graphs.num_graphs,
            *(int(self.index[s].numel()) for s in SPLITS),
            count_parameters(model),
        )
        return model.to(self.ctx.device)

    # --- training -------------------------------------------------------------------------------

    def _rank_order(self, epoch: int) -> Tensor:
        """This rank's training graphs for `epoch`: one seeded shuffle shared by every rank,
        then this rank's equal share of it."""
        train = self.index["train"]
        gen = torch.Generator().manual_seed(_epoch_seed(self.spec.training.seed, epoch))
        order = train[torch.randperm(train.numel(), generator=gen)]
        return D.shard_items(order, self.ctx.rank, self.ctx.world_size)

    def per_rank_batch_size(self) -> int:
        """`training.batch_size` is the global batch: each rank takes its share."""
        world = self.ctx.world_size
        size = self.spec.training.batch_size // world
        if size == 0:
            raise ValueError(
                f"training.batch_size ({self.spec.training.batch_size}) is smaller than "
                f"resources.devices ({world})"
            )
        return size

    def train_batches(self, epoch: int) -> D.RankBatches[Any]:
        order = self._rank_order(epoch)
        count = -(-order.numel() // self.per_rank_batch_size())
        return D.RankBatches(lambda: self._train_batches(epoch, order.tolist()), count)

    def _train_batches(self, epoch: int, order: list[int]) -> Iterator[Any]:
        from torch_geometric.loader import DataLoader

        # Sign flips and negatives: a stream per (seed, epoch, rank). The loader gets its own
        # generator too: iterating a DataLoader draws a base seed, which must not come from
        # the global RNG (dropout's), or a resumed run would drift from an uninterrupted one.
        gen = torch.Generator().manual_seed(
            _epoch_seed(self.spec.training.seed, epoch, 1 + self.ctx.rank)
        )
        loader = DataLoader(
            [self.data[i] for i in order],
            batch_size=self.per_rank_batch_size(),
            shuffle=False,
            generator=torch.Generator().manual_seed(_epoch_seed(self.spec.training.seed, epoch)),
        )
        for batch in loader:
            if self.flip_attrs:
                flip_laplacian_signs(batch, self.flip_attrs, gen)
            if self.link:
                batch.train_negative_index = self._train_negatives(batch, gen)
            yield batch.to(self.ctx.device)

    def _train_negatives(self, batch: Any, gen: torch.Generator) -> Tensor:
        pos = batch.target_edge_index  # [2, T] batch-global
        known = torch.cat([batch.edge_index, pos], 1)
        return corrupt_tails(
            pos,
            batch.batch[pos[0]],
            batch.ptr,
            known,
            self.spec.link.negatives_per_positive,
            gen,
        )

    def _link_pairs(self, batch: Any, negatives: Tensor) -> tuple[Tensor, Tensor]:
        pos = batch.target_edge_index
        pairs = torch.cat([pos, negatives], 1)
        labels = torch.cat([pos.new_ones(pos.size(1)), negatives.new_zeros(negatives.size(1))])
        return pairs, labels.float()

    def training_loss(self, model: nn.Module, batch: Any) -> Tensor:
        objective = getattr(model, "module", model).loss  # the model owns its objective
        if self.link:
            pairs, labels = self._link_pairs(batch, batch.train_negative_index)
            return objective(model(batch, pairs), labels)
        return objective(model(batch), batch.y)

    # --- evaluation -----------------------------------------------------------------------------

    def _batches(self, index: Tensor) -> Iterable[Any]:
        from torch_geometric.loader import DataLoader

        data = [self.data[i] for i in index.tolist()]
        loader = DataLoader(
            data, batch_size=EVAL_BATCH_SIZE, shuffle=False, generator=torch.Generator()
        )  # its own generator: evaluation must not consume the global RNG
        for batch in loader:
            yield batch.to(self.ctx.device)

    def _eval_batches(self, split: str) -> list[Any]:
        """The split's batches, collated once and kept (on the device) for every evaluation."""
        if split not in self._eval_cache:
            self._eval_cache[split] = list(self._batches(self.index[split]))
        return self._eval_cache[split]

    @torch.no_grad()
    def _predict(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, Tensor]:
        """Raw outputs, targets and row information over `batches` (on the CPU)."""
        model = getattr(model, "module", model)
        was_training = model.training
        model.eval()
        parts: dict[str, list[Tensor]] = {"out": [], "target": [], "graph": []}
        if self.link:
            parts |= {"src": [], "dst": []}
        for batch in batches:
            if self.link:
                pairs, labels = self._link_pairs(batch, batch.negative_edge_index)
                parts["out"].append(model(batch, pairs).float().cpu())
                parts["target"].append(labels.cpu())
                pair_graph = batch.batch[pairs[0]]
                parts["graph"].append(batch.graph_id[pair_graph].cpu())
                parts["src"].append((pairs[0] - batch.ptr[pair_graph]).cpu())
                parts["dst"].append((pairs[1] - batch.ptr[pair_graph]).cpu())
            else:
                parts["out"].append(model(batch).float().cpu())
                parts["target"].append(batch.y.cpu())
                parts["graph"].append(batch.graph_id.cpu())
        model.train(was_training)
        return {k: torch.cat(v) for k, v in parts.items()}

    def predict(self, model: nn.Module, split: str) -> dict[str, Tensor]:
        """`{"out", "target", "graph"}` (plus `src`, `dst` for links) over `split`."""
        return self._predict(model, self._eval_batches(split))

    def evaluate(self, model: nn.Module, split: str, epoch: int) -> dict[str, float]:
        pred = self._predict(model, self._eval_batches(split))
        out, target = pred["out"], pred["target"]
        metrics = get_metrics(
            self.task, self.spec.metrics, self.num_classes, self.spec.link.precision_k
        )
        kwargs = {"indexes": pred["graph"]} if self.link else {}
        labels = target if self.task == "graph_regression" else target.long()
        metrics.update(metric_inputs(self.task, out, self.num_classes), labels, **kwargs)
        objective = getattr(model, "module", model).loss
        result = {f"{split}_loss": float(objective(out, target))}
        result |= {f"{split}_{name}": float(value) for name, value in metrics.compute().items()}
        return result

    def metric_names(self) -> set[str]:
        return {"val_loss", *(f"val_{m}" for m in self.spec.metrics or ())}

    # --- outputs --------------------------------------------------------------------------------

    @torch.no_grad()
    def write_outputs(self, model: nn.Module, run_dir: Path) -> list[Output]:
        model = getattr(model, "module", model)
        model.eval()
        split_of = np.full(len(self.data), "", dtype=object)
        for name, idx in self.index.items():
            split_of[idx.numpy()] = name
        everything = torch.arange(len(self.data))
        embeddings = torch.cat(
            [model.embed(b).float().cpu() for b in self._batches(everything)]  # type: ignore[operator]
        ).numpy()  # [G, channels]
        np.save(run_dir / "embeddings.npy", embeddings.astype(np.float32))
        assert self.graphs is not None
        graph_ids = self.graphs.graph_ids.numpy()
        with open(run_dir / "graph_ids.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "graph_id", "split"])
            writer.writerows(zip(range(len(graph_ids)), graph_ids, split_of, strict=True))
        pred = self._predict(model, self._batches(everything))
        self._write_predictions(run_dir / "predictions.csv", pred, split_of, graph_ids)
        return [
            *embeddings_outputs("embeddings.npy", embeddings.shape, "graph_ids.csv", "graph_id"),
            Output("predictions", "predictions.csv"),
        ]

    def _write_predictions(
        self, path: Path, pred: dict[str, Tensor], split_of: np.ndarray, graph_ids: np.ndarray
    ) -> None:
        row_of_id = {int(g): i for i, g in enumerate(graph_ids)}
        graphs = pred["graph"].tolist()
        splits = [split_of[row_of_id[g]] for g in graphs]
        values = metric_inputs(self.task, pred["out"], self.num_classes)
        with open(path, "w", newline="") as fh:
            writer = csv.writer(fh)
            if self.link:
                writer.writerow(["graph_id", "split", "src", "dst", "target", "score"])
                link_rows = (pred["src"], pred["dst"], pred["target"].long(), values)
                rows = zip(graphs, splits, *(t.tolist() for t in link_rows), strict=True)
            elif self.task == "graph_classification":
                probs = values if values.dim() == 2 else torch.stack([1 - values, values], 1)
                classes = probs.argmax(1)
                writer.writerow(
                    ["graph_id", "split", "target", "prediction",
                     *(f"prob_{c}" for c in range(probs.size(1)))]
                )  # fmt: skip
                rows = (
                    (g, s, t, c, *p)
                    for g, s, t, c, p in zip(graphs, splits, pred["target"].tolist(),
                                             classes.tolist(), probs.tolist(), strict=True)
                )  # fmt: skip
            else:
                writer.writerow(["graph_id", "split", "target", "prediction"])
                rows = zip(graphs, splits, pred["target"].tolist(), values.tolist(), strict=True)
            writer.writerows(rows)


__all__ = ["GraphTransformerTask", "load_graph_set"]
