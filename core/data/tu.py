"""Graph datasets in the TU collection's raw text layout, read without PyG's dataset classes
(which would write `processed/` into the read-only data root) and without network.

Files, for a dataset NAME in a directory: `NAME_A.txt` (edges, 1-based node ids),
`NAME_graph_indicator.txt` (graph of each node, 1-based), `NAME_graph_labels.txt` (classes) or
`NAME_graph_attributes.txt` (regression targets), and optional `NAME_node_labels.txt`
(one-hot encoded), `NAME_node_attributes.txt`, `NAME_edge_labels.txt`,
`NAME_edge_attributes.txt`.

Node inputs are the one-hot node labels (after the node attributes, when those are used); a
dataset with neither gets a constant 1 per node. Edge labels become categorical edge types;
with edge attributes, edges carry the attributes and the one-hot labels as floats. Edges are
made symmetric and deduplicated, self-loops are dropped. Class labels are remapped to 0..C-1 in
sorted order (MUTAG's -1/1 become 0/1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from core.data.graphset import GraphSet, files_digest, ptr_from_counts
from core.data.roots import DatasetNotFound, resolve_data_path
from core.spec.data import TUData, TUUploadData

log = logging.getLogger(__name__)


def tu_directory(spec: TUData | TUUploadData) -> tuple[Path, str]:
    """The directory holding the raw files and the dataset's NAME prefix."""
    if isinstance(spec, TUData):
        return resolve_data_path(f"{spec.name}/raw", expect=f"{spec.name}_A.txt"), spec.name
    directory = resolve_data_path(spec.path)
    if (directory / "raw").is_dir():
        directory = directory / "raw"
    names = sorted(p.name[: -len("_A.txt")] for p in directory.glob("*_A.txt"))
    if len(names) != 1:
        raise DatasetNotFound(
            spec.path,
            [directory],
            expect="exactly one <NAME>_A.txt" + (f" (found {names})" if names else ""),
        )
    return directory, names[0]


def source_files(directory: Path, name: str) -> list[Path]:
    return sorted(directory.glob(f"{name}_*.txt"))


def load_tu(spec: TUData | TUUploadData) -> tuple[GraphSet, str]:
    """The dataset as a `GraphSet` and a hash of its source files (a cache key)."""
    directory, name = tu_directory(spec)
    graphs = read_tu(directory, name, use_node_attributes=spec.use_node_attributes)
    key = files_digest(source_files(directory, name), spec.use_node_attributes)
    return graphs, key


def _read(path: Path, dtype: type) -> np.ndarray:
    """A comma-separated numeric table as a 2-D array ([rows, columns])."""
    return np.loadtxt(path, delimiter=",", dtype=dtype, ndmin=2)


def _one_hot_columns(labels: Tensor) -> Tensor:
    """[n, c] integer label columns -> [n, sum of classes] float one-hot."""
    labels = labels - labels.min(0).values
    parts = [torch.nn.functional.one_hot(col, int(col.max()) + 1) for col in labels.unbind(1)]
    return torch.cat(parts, 1).float()


def read_tu(directory: Path, name: str, use_node_attributes: bool = False) -> GraphSet:
    """Read `directory/NAME_*.txt` into a `GraphSet`."""

    def file(suffix: str) -> Path:
        return directory / f"{name}_{suffix}.txt"

    for required in ("A", "graph_indicator"):
        if not file(required).exists():
            raise DatasetNotFound(f"{name}_{required}.txt", [directory])
    edges = torch.from_numpy(_read(file("A"), np.int64)).t() - 1  # [2, m] global, 0-based
    node_graph = torch.from_numpy(_read(file("graph_indicator"), np.int64)[:, 0]) - 1  # [n]
    num_nodes = node_graph.numel()
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= num_nodes):
        raise ValueError(f"{file('A')}: node ids must be in 1..{num_nodes}")

    if file("graph_attributes").exists():
        y = torch.from_numpy(_read(file("graph_attributes"), np.float32)).squeeze(1)
        num_classes = None
    elif file("graph_labels").exists():
        raw = torch.from_numpy(_read(file("graph_labels"), np.int64)[:, 0])
        classes, y = torch.unique(raw, sorted=True, return_inverse=True)
        num_classes = int(classes.numel())
    else:
        raise DatasetNotFound(f"{name}_graph_labels.txt", [directory])
    num_graphs = int(y.size(0))
    if int(node_graph.max()) + 1 != num_graphs or int(node_graph.min()) < 0:
        raise ValueError(
            f"{file('graph_indicator')}: graph ids must be 1..{num_graphs} (one per graph label)"
        )

    # Node inputs: [attributes | one-hot labels], or a constant when there are neither.
    parts = []
    if use_node_attributes and file("node_attributes").exists():
        parts.append(torch.from_numpy(_read(file("node_attributes"), np.float32)))
    if file("node_labels").exists():
        parts.append(_one_hot_columns(torch.from_numpy(_read(file("node_labels"), np.int64))))
    x = torch.cat(parts, 1) if parts else torch.ones(num_nodes, 1)

    # Edge inputs: categorical labels, or float attributes (+ one-hot labels).
    edge_attr: Tensor | None = None
    num_edge_types = None
    labels = None
    if file("edge_labels").exists():
        labels = torch.from_numpy(_read(file("edge_labels"), np.int64))  # [m, c]
    if file("edge_attributes").exists():
        attrs = [torch.from_numpy(_read(file("edge_attributes"), np.float32))]
        if labels is not None:
            attrs.append(_one_hot_columns(labels))
        edge_attr = torch.cat(attrs, 1)
    elif labels is not None:
        _, edge_attr = torch.unique(labels, dim=0, return_inverse=True)  # [m] types
        num_edge_types = int(edge_attr.max()) + 1 if edge_attr.numel() else 1

    # Nodes grouped by graph (TU files are, but do not rely on it).
    order = torch.argsort(node_graph, stable=True)
    if not torch.equal(order, torch.arange(num_nodes)):
        new_id = torch.empty_like(order)
        new_id[order] = torch.arange(num_nodes)
        edges = new_id[edges]
        node_graph = node_graph[order]
        x = x[order]
    edges, edge_attr = _symmetric(edges, edge_attr, num_nodes)
    if bool((node_graph[edges[0]] != node_graph[edges[1]]).any()):
        raise ValueError(f"{file('A')}: an edge joins nodes of two different graphs")

    nodes_per_graph = torch.bincount(node_graph, minlength=num_graphs)
    node_ptr = ptr_from_counts(nodes_per_graph)
    edge_g = node_graph[edges[0]]
    edge_ptr = ptr_from_counts(torch.bincount(edge_g, minlength=num_graphs))
    log.info(
        "TU %s: %d graphs, %d nodes, %d directed edges, %s",
        name, num_graphs, num_nodes, edges.size(1),
        f"{num_classes} classes" if num_classes else "regression",
    )  # fmt: skip
    return GraphSet(
        x=x,
        edge_index=edges - node_ptr[edge_g],
        edge_attr=edge_attr,
        y=y,
        node_ptr=node_ptr,
        edge_ptr=edge_ptr,
        graph_ids=torch.arange(1, num_graphs + 1),  # TU graph numbers are 1-based
        num_edge_types=num_edge_types,
        num_classes=num_classes,
    )


def _symmetric(
    edges: Tensor, edge_attr: Tensor | None, num_nodes: int
) -> tuple[Tensor, Tensor | None]:
    """Both directions of every edge once, sorted by (source, target), no self-loops; an edge's
    attribute is that of its first listing."""
    both = torch.cat([edges, edges.flip(0)], 1)
    attr = None if edge_attr is None else torch.cat([edge_attr, edge_attr], 0)
    keep = both[0] != both[1]
    both = both[:, keep]
    attr = None if attr is None else attr[keep]
    key = both[0] * num_nodes + both[1]
    uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
    first = torch.full((uniq.numel(),), key.numel(), dtype=torch.long)
    first = first.scatter_reduce(0, inverse, torch.arange(key.numel()), reduce="amin")
    out = torch.stack([uniq // num_nodes, uniq % num_nodes])
    return out, (None if attr is None else attr[first])


__all__ = ["load_tu", "read_tu", "tu_directory"]
