"""GraphSAGE + skip-gram: unsupervised node embeddings from random-walk co-occurrence pairs.

Each step runs one full-graph forward and scores a large batch of (target, context) pairs
against degree-biased negatives, so a step costs the same whatever the batch size.
"""

from __future__ import annotations

import csv
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.utils import to_torch_csr_tensor

from core.data.errors import DataError
from core.data.graphs import NodeGraph, load_graph
from core.distributed import RankBatches
from core.families.graphsage_skipgram.model import GraphSAGE
from core.families.graphsage_skipgram.spec import GraphSageSkipGramSpec
from core.families.graphsage_skipgram.walks import (
    CSR,
    NegativeSampler,
    PairBatch,
    PairBatcher,
    StreamingPairBatcher,
    random_walks,
    window_pairs,
)
from core.probe import probe_accuracy, probe_problem
from core.report import report_phase
from core.spec.data import EdgeListData
from core.task import Output, RunContext, Task, embeddings_outputs

log = logging.getLogger(__name__)

_EVAL_CHUNK = 32_768  # pairs scored at once when evaluating


def _unwrapped(model: nn.Module) -> GraphSAGE:
    """The GraphSAGE model inside a DDP wrapper, or the model itself."""
    return getattr(model, "module", model)


class GraphSageSkipGramTask(Task):
    spec: GraphSageSkipGramSpec

    def __init__(self, ctx: RunContext):
        super().__init__(ctx)
        self.graph: NodeGraph | None = None
        self.val_batch: PairBatch | None = None

    # --- data and model -------------------------------------------------------------------------

    def setup_data(self) -> None:
        """The graph, its sparse adjacency, and the walk pairs (training and validation)."""
        spec, device = self.spec, self.ctx.device
        graph = load_graph(spec.data).to(device)
        self.graph = graph
        # Messages flow src -> dst, so the layers take the transposed adjacency; as a sparse CSR
        # matrix they aggregate with one sparse matmul instead of gathering every edge's row.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's "sparse CSR is beta"
            self.adj_t = to_torch_csr_tensor(
                graph.edge_index.flip(0), size=(graph.num_nodes, graph.num_nodes)
            )
            # Sparse features (bag-of-words) stay sparse: the model projects them first.
            self.x = graph.x
            if graph.x is not None and (graph.x != 0).float().mean() < 0.25:
                self.x = graph.x.to_sparse_csr()
        report_phase("generating walks")
        csr = CSR.from_edge_index(graph.edge_index, graph.num_nodes)
        sampler = NegativeSampler(csr.degree, spec.negatives.power)
        seed = spec.training.seed  # the same on every rank: ranks share the pair stream
        gen = torch.Generator(device=device).manual_seed(seed)
        w = spec.walks
        per_rank_check = spec.training.batch_size // self.ctx.world_size
        if per_rank_check == 0:
            raise ValueError(
                f"training.batch_size ({spec.training.batch_size}) is smaller than "
                f"resources.devices ({self.ctx.world_size})"
            )
        if w.mode == "materialized":
            starts = torch.arange(graph.num_nodes, device=device).repeat(w.walks_per_node)
            pairs = window_pairs(random_walks(csr, starts, w.walk_length, gen), w.window)
            pairs = pairs[torch.randperm(pairs.size(0), generator=gen, device=device)]
            n_val = min(
                int(pairs.size(0) * spec.validation.val_fraction), spec.validation.max_val_pairs
            )
            val_pairs, train_pairs = pairs[:n_val], pairs[n_val:]
            self._check_pairs(train_pairs.size(0))
            self.batcher: PairBatcher | StreamingPairBatcher = PairBatcher(
                train_pairs,
                sampler,
                spec.training.batch_size,
                spec.negatives.per_positive,
                seed,
                w.epoch_fraction,
            )
            log.info("%d training pairs, %d validation pairs", train_pairs.size(0), n_val)
        else:
            # Validation pairs come from one separate pass of walks, held fixed.
            starts = torch.arange(graph.num_nodes, device=device)
            pairs = window_pairs(random_walks(csr, starts, w.walk_length, gen), w.window)
            n_val = min(
                int(pairs.size(0) * spec.validation.val_fraction) or pairs.size(0),
                spec.validation.max_val_pairs,
            )
            self._check_pairs(pairs.size(0))
            val_pairs = pairs[torch.randperm(pairs.size(0), generator=gen, device=device)[:n_val]]
            self.batcher = StreamingPairBatcher(
                csr,
                sampler,
                walks_per_node=w.walks_per_node,
                walk_length=w.walk_length,
                window=w.window,
                batch_size=spec.training.batch_size,
                negatives_per_positive=spec.negatives.per_positive,
                seed=seed,
                epoch_fraction=w.epoch_fraction,
            )
        if spec.validation.val_fraction > 0 and val_pairs.size(0) > 0:
            negatives = sampler.sample((val_pairs.size(0), spec.negatives.per_positive), gen)
            self.val_batch = PairBatch(val_pairs[:, 0], val_pairs[:, 1], negatives)

    def _check_pairs(self, count: int) -> None:
        if count == 0:
            assert self.graph is not None
            source = getattr(self.spec.data, "path", None) or self.spec.data.format
            raise DataError(
                source,
                f"no training pairs: the random walks over {self.graph.num_nodes} node(s) never "
                "reach a second node (the graph has no edges between distinct nodes, e.g. only "
                "self-loops). Give the edge list edges between different nodes, or check that "
                "data.src_column / data.dst_column name the right columns",
            )

    def summary(self) -> dict[str, Any]:
        """`data_warnings`, and `quality`: the probe's test accuracy on the embeddings of the
        best checkpoint beside the same probe on the input features (what training bought)."""
        if self.graph is None:
            return {}
        out: dict[str, Any] = {"data_warnings": list(self.graph.warnings)}
        final = getattr(self, "_final_probe", None)
        if final is not None and self.graph.y is not None:
            baseline = None
            if self.graph.x is not None:  # learnable inputs have no untrained meaning
                x = self.graph.x.to_dense() if self.graph.x.is_sparse else self.graph.x
                baseline = probe_accuracy(x, self.graph.y, self.graph.masks)["probe_test_acc"]
            out["quality"] = {
                "metric": "probe_test_acc",
                "value": final["probe_test_acc"],
                "baseline": baseline,
                "baseline_of": "the same probe on the input features" if baseline else None,
            }
        return out

    def build_model(self) -> nn.Module:
        graph = self.graph
        assert graph is not None, "setup_data first"
        learnable = None
        in_dim = graph.x.size(1) if graph.x is not None else 0
        if graph.x is None:  # no features: the input is a trained table (edge lists only)
            assert isinstance(self.spec.data, EdgeListData)
            learnable = graph.num_nodes
            in_dim = self.spec.data.learnable_dim
        # The spec's model fields are the constructor's keywords, one for one.
        model = GraphSAGE(in_dim, **self.spec.model.model_dump(), num_learnable_nodes=learnable)
        return model.to(self.ctx.device)

    # --- the loop's side of the seam ----------------------------------------------------------

    def train_batches(self, epoch: int) -> RankBatches[PairBatch]:
        return self.batcher.batches(epoch, self.ctx.rank, self.ctx.world_size)

    def _forward(self, model: nn.Module) -> Tensor:
        """What the objective trains: [N, out_dim]."""
        assert self.graph is not None
        return model(self.x, self.adj_t)

    def _readout(self, model: nn.Module) -> Tensor:
        """The embeddings users get (probed, predicted, written): [N, readout width]."""
        return _unwrapped(model).embed(self.x, self.adj_t)

    def training_loss(self, model: nn.Module, batch: PairBatch) -> Tensor:
        z = self._forward(model)  # through DDP's forward; the objective is the model's own
        return _unwrapped(model).loss(z, batch.targets, batch.contexts, batch.negatives)

    def evaluate(self, model: nn.Module, split: str, epoch: int) -> dict[str, float]:
        if split != "val" or self.val_batch is None:
            return {}
        z = self._forward(model).float()
        loss_fn = _unwrapped(model).loss
        vb, total = self.val_batch, torch.zeros((), device=z.device)
        for start in range(0, len(vb), _EVAL_CHUNK):
            part = slice(start, start + _EVAL_CHUNK)
            loss = loss_fn(z, vb.targets[part], vb.contexts[part], vb.negatives[part])
            total += loss * vb.targets[part].numel()
        return {"val_loss": float(total / len(vb))}

    def _has_labels(self) -> bool:
        g = self.graph
        if not self.spec.probe.enabled or g is None or g.y is None:
            return False
        if not hasattr(self, "_probe_ok"):
            problem = probe_problem(g.y, g.masks)
            if problem:  # training goes on without the probe; the summary says why
                g.warnings.append(f"probe disabled: {problem}")
                log.warning("probe disabled: %s", problem)
            self._probe_ok = problem is None
        return self._probe_ok

    def metric_names(self) -> set[str]:
        names = {"val_loss"} if self.spec.validation.val_fraction > 0 else set()
        if self._has_labels():
            names |= {"probe_val_acc", "probe_test_acc"}
        return names

    def epoch_metrics(self, model: nn.Module, epoch: int, final: bool) -> dict[str, float]:
        if not self._has_labels() or not (final or epoch % self.spec.probe.every_n_epochs == 0):
            return {}
        assert self.graph is not None and self.graph.y is not None
        result = probe_accuracy(self._readout(model), self.graph.y, self.graph.masks)
        if final:
            self._final_probe = result
        return result

    def predict(self, model: nn.Module, split: str) -> dict[str, Tensor]:
        """`{"embeddings"}` [N, D] of every node (`split` names no subset here)."""
        return {"embeddings": self._readout(model).float()}

    def write_outputs(self, model: nn.Module, run_dir: Path) -> list[Output]:
        assert self.graph is not None
        z = self._readout(model).float().cpu().numpy().astype(np.float32)  # [N, D]
        np.save(run_dir / "embeddings.npy", z)
        with open(run_dir / "node_ids.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["row", "node_id"])
            writer.writerows(enumerate(self.graph.node_ids))
        return embeddings_outputs("embeddings.npy", z.shape, "node_ids.csv", "node_id")
