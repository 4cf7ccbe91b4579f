"""Node-level graphs for the embedding families: Planetoid raw files and user edge lists.

Loading reads files under the data roots only; it never downloads and never writes there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from core.data.edges import Table, node_header, read_edges, read_table
from core.data.errors import DataError, DataWarnings
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
    warnings: list[str] = field(default_factory=list)  # what the load skipped or changed

    def to(self, device: torch.device) -> NodeGraph:
        return NodeGraph(
            edge_index=self.edge_index.to(device),
            num_nodes=self.num_nodes,
            x=None if self.x is None else self.x.to(device),
            node_ids=self.node_ids,
            y=None if self.y is None else self.y.to(device),
            masks={k: v.to(device) for k, v in self.masks.items()},
            warnings=self.warnings,
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


def _node_table(path_name: str, what: str, warnings: DataWarnings, spec: EdgeListData) -> Table:
    return read_table(
        resolve_data_path(path_name),
        path_name,
        delimiter=spec.delimiter,
        comment=spec.comment,
        header=spec.header,
        is_header=node_header,
        warnings=warnings,
    )


def _features(table: Table) -> np.ndarray:
    """The numeric columns after the node id, [rows, F] float32; DataError at a bad cell."""
    widths = {len(r) for r in table.rows}
    if len(widths) > 1:
        expected = len(table.rows[0])
        i = next(i for i, r in enumerate(table.rows) if len(r) != expected)
        raise DataError(
            table.file,
            f"{len(table.rows[i])} columns where the first row has {expected}",
            line=table.lines[i],
        )
    try:
        return np.asarray([r[1:] for r in table.rows], dtype=np.float32)
    except ValueError:
        for i, row in enumerate(table.rows):
            for j, cell in enumerate(row[1:], 2):
                try:
                    float(cell)
                except ValueError:
                    name = table.header[j - 1] if table.header else j
                    raise DataError(
                        table.file,
                        f"{cell!r} is not a number",
                        line=table.lines[i],
                        column=name,
                        allowed="numbers after the node id",
                    ) from None
        raise


def load_edge_list(spec: EdgeListData) -> NodeGraph:
    """A `src,dst` edge list with optional features (`node,f1,f2,...`) and labels (`node,label`);
    a header row is declared or detected (`data.header`), comment lines only where
    `data.comment` says, and what the load skipped is logged and kept in `warnings`."""
    warnings = DataWarnings()
    ends = read_edges(spec, warnings)

    feature_rows: list[list[str]] = []
    feats_array: np.ndarray | None = None
    if spec.features_path:
        feature_table = _node_table(spec.features_path, "features", warnings, spec)
        feature_rows = feature_table.rows
        feats_array = _features(feature_table) if feature_rows else None
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
        if feats_array is None:
            raise DataError(spec.features_path or "", "no feature rows")
        x = torch.zeros(num_nodes, feats_array.shape[1])
        x[torch.from_numpy(index[ends.size :])] = torch.from_numpy(feats_array)
        missing = num_nodes - len(set(index[ends.size :].tolist()))
        if missing:
            warnings.add(spec.features_path or "", f"{missing} node(s) have no feature row: zeros")
        if spec.normalize_features:
            x = x / x.abs().sum(1, keepdim=True).clamp_min(1e-12)
    elif spec.feature_source == "one_hot":
        x = torch.eye(num_nodes)

    y = None
    masks: dict[str, Tensor] = {}
    if spec.labels_path:
        table = _node_table(spec.labels_path, "labels", warnings, spec)
        bad = next((i for i, r in enumerate(table.rows) if len(r) < 2 or not r[1]), None)
        if bad is not None:
            raise DataError(spec.labels_path, "a label row is node,label", line=table.lines[bad])
        labels = np.asarray([r[:2] for r in table.rows], dtype=str).reshape(-1, 2)
        ids = uniq[order]
        sorter = np.argsort(ids)
        pos = np.searchsorted(ids, labels[:, 0], sorter=sorter).clip(max=ids.size - 1)
        found = ids[sorter[pos]] == labels[:, 0]
        if not found.all():
            warnings.add(
                spec.labels_path,
                f"{int((~found).sum())} label row(s) name nodes that are in no edge: ignored",
            )
        _, classes = np.unique(labels[found, 1], return_inverse=True)
        y = torch.full((num_nodes,), -1, dtype=torch.long)
        y[torch.from_numpy(sorter[pos[found]])] = torch.from_numpy(classes).long()
        masks = _seeded_split(y)
    isolated = num_nodes - int(torch.unique(edges).numel()) if edges.numel() else num_nodes
    if isolated:
        warnings.add(spec.path, f"{isolated} node(s) have no edge (isolated): no walk leaves them")
    log.info("loaded %s: %d nodes, %d edges", spec.path, num_nodes, edges.size(1))
    return NodeGraph(edges, num_nodes, x, node_ids, y, masks, warnings.items)


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
