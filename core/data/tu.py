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

from core.data.errors import DataError
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
    if isinstance(spec, TUData):
        label = f"{spec.name}/raw"
    else:
        label = spec.path + ("/raw" if directory.name == "raw" else "")
    graphs = read_tu(
        directory,
        name,
        use_node_attributes=spec.use_node_attributes,
        label=label,
    )
    key = files_digest(source_files(directory, name), spec.use_node_attributes)
    return graphs, key


def _read(path: Path, dtype: type, label: str = "") -> np.ndarray:
    """A comma-separated numeric table as a 2-D array ([rows, columns]); a trailing comma on a
    line is tolerated; a bad cell raises DataError naming the file, line and column."""
    name = f"{label}/{path.name}" if label else path.name
    text = path.read_text(encoding="utf-8-sig")
    lines = [ln.strip().rstrip(",").rstrip() for ln in text.splitlines()]
    numbers = [i for i, ln in enumerate(lines, 1) if ln]
    if not numbers:
        return np.zeros((0, 0), dtype=dtype)
    if len(numbers) != len(lines):
        raise DataError(name, "blank line", line=next(i for i, ln in enumerate(lines, 1) if not ln))
    try:
        return np.loadtxt(lines, delimiter=",", dtype=dtype, ndmin=2)
    except ValueError:
        width = lines[0].count(",") + 1
        for number, line in enumerate(lines, 1):
            cells = line.split(",")
            if len(cells) != width:
                raise DataError(
                    name, f"{len(cells)} values where line 1 has {width}", line=number
                ) from None
            for column, cell in enumerate(cells, 1):
                try:
                    dtype(cell.strip()) if dtype is not np.int64 else int(cell.strip())
                except ValueError:
                    kind = "an integer" if dtype is np.int64 else "a number"
                    raise DataError(
                        name, f"{cell.strip()!r} is not {kind}", line=number, column=column
                    ) from None
        raise


def _one_hot_columns(labels: Tensor) -> Tensor:
    """[n, c] integer label columns -> [n, sum of classes] float one-hot."""
    labels = labels - labels.min(0).values
    parts = [torch.nn.functional.one_hot(col, int(col.max()) + 1) for col in labels.unbind(1)]
    return torch.cat(parts, 1).float()


def read_tu(
    directory: Path,
    name: str,
    use_node_attributes: bool = False,
    label: str = "",
) -> GraphSet:
    """Read `directory/NAME_*.txt` into a `GraphSet`. Every per-node, per-edge and per-graph
    file must have one row per node, edge or graph (DataError naming the file otherwise); a
    graph without edges is valid. `label` is how errors name the directory."""

    def file(suffix: str) -> Path:
        return directory / f"{name}_{suffix}.txt"

    def shown(suffix: str) -> str:
        return f"{label}/{name}_{suffix}.txt" if label else f"{name}_{suffix}.txt"

    def read(suffix: str, dtype: type, rows: int | None = None, what: str = "") -> np.ndarray:
        table = _read(file(suffix), dtype, label)
        if rows is not None and table.shape[0] != rows:
            raise DataError(
                shown(suffix),
                f"{table.shape[0]} rows, but {shown(what)} has {rows}: one row per "
                f"{'edge' if what == 'A' else 'node' if what == 'graph_indicator' else 'graph'}",
            )
        return table

    for required in ("A", "graph_indicator"):
        if not file(required).exists():
            raise DatasetNotFound(f"{name}_{required}.txt", [directory])
    a = read("A", np.int64)
    if a.size and a.shape[1] != 2:
        raise DataError(shown("A"), f"{a.shape[1]} values per line; an edge is 'source, target'")
    edges = torch.from_numpy(a.reshape(-1, 2)).t() - 1  # [2, m] global, 0-based
    indicator = read("graph_indicator", np.int64)
    if indicator.size == 0:
        raise DataError(shown("graph_indicator"), "no nodes")
    node_graph = torch.from_numpy(indicator[:, 0]) - 1  # [n]
    num_nodes = node_graph.numel()
    if edges.numel() and (int(edges.min()) < 0 or int(edges.max()) >= num_nodes):
        bad = int(((edges < 0) | (edges >= num_nodes)).any(0).nonzero()[0])
        raise DataError(shown("A"), f"node id out of range; allowed: 1..{num_nodes}", line=bad + 1)

    if file("graph_attributes").exists():
        y = torch.from_numpy(read("graph_attributes", np.float32)).squeeze(1)
        num_classes = None
    elif file("graph_labels").exists():
        raw = torch.from_numpy(read("graph_labels", np.int64)[:, 0])
        classes, y = torch.unique(raw, sorted=True, return_inverse=True)
        num_classes = int(classes.numel())
    else:
        raise DatasetNotFound(f"{name}_graph_labels.txt", [directory])
    num_graphs = int(y.size(0))
    if int(node_graph.max()) + 1 != num_graphs or int(node_graph.min()) < 0:
        raise DataError(
            shown("graph_indicator"),
            f"graph ids must be 1..{num_graphs} (one per row of the graph labels)",
        )

    # Node inputs: [attributes | one-hot labels], or a constant when there are neither.
    parts = []
    per_node = {"rows": num_nodes, "what": "graph_indicator"}
    if use_node_attributes and file("node_attributes").exists():
        parts.append(torch.from_numpy(read("node_attributes", np.float32, **per_node)))
    if file("node_labels").exists():
        labels_n = torch.from_numpy(read("node_labels", np.int64, **per_node))
        parts.append(_one_hot_columns(labels_n))
    x = torch.cat(parts, 1) if parts else torch.ones(num_nodes, 1)

    # Edge inputs: categorical labels, or float attributes (+ one-hot labels).
    edge_attr: Tensor | None = None
    num_edge_types = None
    labels = None
    per_edge = {"rows": edges.size(1), "what": "A"}
    if file("edge_labels").exists():
        labels = torch.from_numpy(read("edge_labels", np.int64, **per_edge))  # [m, c]
    if file("edge_attributes").exists():
        attrs = [torch.from_numpy(read("edge_attributes", np.float32, **per_edge))]
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
        raise DataError(shown("A"), "an edge joins nodes of two different graphs")

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
