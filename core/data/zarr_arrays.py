"""Named arrays of a zarr group, and graphs built from them (the seed's QuantumGrav reader as
configuration instead of a Python callable).

`read_arrays(path, names)` reads arrays of a zarr group (a directory relative to the data root)
and checks that they exist and agree on their first axis (one row per graph).
`dense_graph_set(...)` turns the seed's layout into a `GraphSet`: a padded dense adjacency
`[G, n_max, n_max]`, the node count of each graph `[G]`, per-node feature arrays `[G, n_max]`
or `[G, n_max, f]`, and graph targets `[G]` — with tensor operations over the whole set, no loop
over graphs or nodes.

Needs the optional `zarr` extra (`pip install trainctl[zarr]`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from core.data.errors import DataError
from core.data.graphset import GraphSet, files_digest, ptr_from_counts
from core.data.roots import resolve_data_path

log = logging.getLogger(__name__)


def _open_group(directory: Path, label: str):  # noqa: ANN202 (zarr.Group; zarr is optional)
    try:
        import zarr
    except ImportError:  # pragma: no cover - depends on the environment
        raise DataError(label, "reading zarr needs the optional extra: pip install "
                               "'trainctl[zarr]'") from None  # fmt: skip
    try:
        return zarr.open_group(str(directory), mode="r")
    except Exception as exc:  # zarr raises several kinds for a path that is not a group
        raise DataError(label, f"not a zarr group: {exc}") from None


def read_arrays(path: str, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The arrays `names` of the zarr group at `path` (relative to the data root) as numpy
    arrays. DataError names the array and lists those the group holds when one is missing, and
    when their first axes (graphs) disagree."""
    directory = resolve_data_path(path)
    group = _open_group(directory, path)
    available = sorted(name for name, _ in group.arrays())
    missing = [n for n in names if n not in available]
    if missing:
        raise DataError(path, f"no array(s) {missing} in the zarr group; it holds "
                              f"{', '.join(available) or 'no arrays'}")  # fmt: skip
    arrays = {n: np.asarray(group[n][...]) for n in dict.fromkeys(names)}
    rows = {n: (a.shape[0] if a.ndim else None) for n, a in arrays.items()}
    if len(set(rows.values())) > 1:
        raise DataError(path, f"arrays disagree on the number of graphs (first axis): {rows}")
    return arrays


def store_digest(path: str) -> str:
    """A hash of every file of the zarr store at `path` (a cache key)."""
    directory = resolve_data_path(path)
    return files_digest(sorted(p for p in directory.rglob("*") if p.is_file()))


def dense_graph_set(
    adjacency: np.ndarray,
    num_nodes: np.ndarray,
    node_features: Sequence[np.ndarray],
    targets: np.ndarray,
    *,
    transpose: bool = False,
    label: str = "zarr",
) -> GraphSet:
    """A GraphSet from padded dense adjacency [G, n, n] (nonzero = edge i -> j at [g, i, j],
    or at [g, j, i] with `transpose`), node counts [G], node features [G, n] / [G, n, f]
    (none: a constant 1 per node) and targets [G] or [G, T]. Entries beyond a graph's node
    count are ignored. Self-loops are kept as stored."""
    if adjacency.ndim != 3 or adjacency.shape[1] != adjacency.shape[2]:
        raise DataError(label, f"adjacency must be [graphs, n, n], got {list(adjacency.shape)}")
    g_count, n_max, _ = adjacency.shape
    sizes = torch.as_tensor(np.asarray(num_nodes).reshape(-1).astype(np.int64))
    if sizes.numel() != g_count or bool((sizes < 0).any()) or bool((sizes > n_max).any()):
        raise DataError(label, f"num_nodes must be {g_count} counts in 0..{n_max}")
    adj = torch.as_tensor(np.asarray(adjacency))
    if transpose:
        adj = adj.transpose(1, 2)
    valid = torch.arange(n_max) < sizes[:, None]  # [G, n]
    mask = (adj != 0) & valid[:, :, None] & valid[:, None, :]  # [G, n, n]
    g, src, dst = torch.nonzero(mask, as_tuple=True)  # sorted by graph, then source
    edge_index = torch.stack([src, dst])  # local to each graph
    edge_counts = torch.bincount(g, minlength=g_count)
    columns = []
    for feats in node_features:
        f = torch.as_tensor(np.asarray(feats)).float()
        if f.shape[:2] != (g_count, n_max):
            raise DataError(label, f"node features must be [graphs, {n_max}(, f)], got "
                                   f"{list(f.shape)}")  # fmt: skip
        columns.append(f.reshape(g_count, n_max, -1))
    x_dense = torch.cat(columns, 2) if columns else torch.ones(g_count, n_max, 1)
    x = x_dense[valid]  # [N, F], graphs back to back
    y = torch.as_tensor(np.asarray(targets))
    return GraphSet(
        x=x,
        edge_index=edge_index,
        edge_attr=None,
        y=y,
        node_ptr=ptr_from_counts(sizes),
        edge_ptr=ptr_from_counts(edge_counts),
        graph_ids=torch.arange(g_count),
    )


__all__ = ["dense_graph_set", "read_arrays", "store_digest"]
