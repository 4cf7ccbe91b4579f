"""Node-level graphs for the embedding families: Planetoid raw files and user edge lists.

Loading reads files under the data roots only; it never downloads and never writes there.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.data.roots import DatasetNotFound, resolve_data_path
from core.spec.data import EdgeListData, PlanetoidData

log = logging.getLogger(__name__)


@dataclass
class NodeGraph:
    """A graph with per-node inputs. `x` is None when the model learns node inputs itself."""

    edge_index: Tensor  # [2, E], both directions for undirected graphs
    num_nodes: int
    x: Tensor | None  # [N, F] float32
    node_ids: list[str]  # row i of every output is the input's node `node_ids[i]`
    y: Tensor | None = None  # [N] class labels, -1 where unknown
    masks: dict[str, Tensor] = field(default_factory=dict)  # train/val/test: [N] bool

    def to(self, device: torch.device) -> NodeGraph:
        return NodeGraph(
            edge_index=self.edge_index.to(device),
            num_nodes=self.num_nodes,
            x=None if self.x is None else self.x.to(device),
            node_ids=self.node_ids,
            y=None if self.y is None else self.y.to(device),
            masks={k: v.to(device) for k, v in self.masks.items()},
        )


def load_graph(spec: PlanetoidData | EdgeListData) -> NodeGraph:
    if isinstance(spec, PlanetoidData):
        return load_planetoid(spec.name, normalize=spec.normalize_features)
    return load_edge_list(spec)


def load_planetoid(name: str, normalize: bool = True) -> NodeGraph:
    """Cora/CiteSeer/PubMed from `<root>/<name>/raw/ind.<name>.*` with the public split."""
    from torch_geometric.io import read_planetoid_data

    raw = resolve_data_path(f"{name}/raw", expect=f"ind.{name.lower()}.graph")
    data = read_planetoid_data(str(raw), name.lower())
    x = data.x.float()
    if normalize:
        x = x / x.sum(1, keepdim=True).clamp_min(1.0)
    log.info("loaded %s: %d nodes, %d edges", name, data.num_nodes, data.edge_index.size(1))
    return NodeGraph(
        edge_index=data.edge_index,
        num_nodes=int(data.num_nodes),
        x=x,
        node_ids=[str(i) for i in range(int(data.num_nodes))],
        y=data.y,
        masks={"train": data.train_mask, "val": data.val_mask, "test": data.test_mask},
    )


def _read_table(path: Path) -> list[list[str]]:
    """Rows of a CSV/TSV/whitespace file; a header row of non-numeric names is skipped."""
    text = path.read_text()
    sample = text[:4096]
    delimiter = "\t" if "\t" in sample else "," if "," in sample else None
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if delimiter is None:
        rows = [ln.split() for ln in lines]
    else:
        rows = [[c.strip() for c in r] for r in csv.reader(lines, delimiter=delimiter)]
    if rows and rows[0] and rows[0][0].lower() in {"src", "source", "node", "node_id", "id"}:
        rows = rows[1:]
    return rows


def load_edge_list(spec: EdgeListData) -> NodeGraph:
    """A `src,dst` edge list with optional features (`node,f1,f2,...`) and labels (`node,label`)."""
    path = resolve_data_path(spec.path)
    rows = _read_table(path)
    bad = [i for i, r in enumerate(rows) if len(r) < 2]
    if bad:
        raise ValueError(f"{spec.path}: line {bad[0] + 1} has fewer than 2 columns (src,dst)")
    ends = np.asarray([r[:2] for r in rows], dtype=str)  # [E, 2]
    if ends.size == 0:
        raise ValueError(f"{spec.path}: no edges")

    feature_rows: list[list[str]] = []
    if spec.features_path:
        feature_rows = _read_table(resolve_data_path(spec.features_path))
    # Node ids: every id named by an edge or a feature row, in order of first appearance.
    names = np.concatenate([ends.reshape(-1), np.asarray([r[0] for r in feature_rows], dtype=str)])
    uniq, first, inverse = np.unique(names, return_index=True, return_inverse=True)
    order = np.argsort(first)  # rank of each unique id by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    index = rank[inverse]
    node_ids = uniq[order].tolist()
    num_nodes = len(node_ids)
    edges = torch.from_numpy(index[: ends.size].reshape(-1, 2).T.copy()).long()
    if not spec.directed:
        edges = torch.cat([edges, edges.flip(0)], 1)
    edges = torch.unique(edges, dim=1)  # drop duplicate edges

    x = None
    if spec.feature_source == "file":
        feats = np.asarray([r[1:] for r in feature_rows], dtype=np.float32)
        x = torch.zeros(num_nodes, feats.shape[1])
        x[torch.from_numpy(index[ends.size :])] = torch.from_numpy(feats)
        if spec.normalize_features:
            x = x / x.abs().sum(1, keepdim=True).clamp_min(1e-12)
    elif spec.feature_source == "one_hot":
        x = torch.eye(num_nodes)

    y = None
    masks: dict[str, Tensor] = {}
    if spec.labels_path:
        labels = np.asarray(
            [r[:2] for r in _read_table(resolve_data_path(spec.labels_path))], dtype=str
        ).reshape(-1, 2)
        ids = uniq[order]
        sorter = np.argsort(ids)
        pos = np.searchsorted(ids, labels[:, 0], sorter=sorter).clip(max=ids.size - 1)
        found = ids[sorter[pos]] == labels[:, 0]
        _, classes = np.unique(labels[found, 1], return_inverse=True)
        y = torch.full((num_nodes,), -1, dtype=torch.long)
        y[torch.from_numpy(sorter[pos[found]])] = torch.from_numpy(classes).long()
        masks = _seeded_split(y)
    log.info("loaded %s: %d nodes, %d edges", spec.path, num_nodes, edges.size(1))
    return NodeGraph(edges, num_nodes, x, node_ids, y, masks)


def _seeded_split(y: Tensor, fractions: tuple[float, float] = (0.6, 0.2)) -> dict[str, Tensor]:
    """A fixed 60/20/20 train/val/test split of the labelled nodes (seed 0)."""
    labelled = torch.nonzero(y >= 0).view(-1)
    perm = labelled[torch.randperm(labelled.numel(), generator=torch.Generator().manual_seed(0))]
    n_train = int(fractions[0] * perm.numel())
    n_val = int(fractions[1] * perm.numel())
    parts = {
        "train": perm[:n_train],
        "val": perm[n_train : n_train + n_val],
        "test": perm[n_train + n_val :],
    }
    masks = {}
    for name, idx in parts.items():
        mask = torch.zeros(y.numel(), dtype=torch.bool)
        mask[idx] = True
        masks[name] = mask
    return masks


__all__ = ["DatasetNotFound", "NodeGraph", "load_edge_list", "load_graph", "load_planetoid"]
