"""Datasets of many small graphs held as concatenated tensors.

A `GraphSet` is what the graph-level loaders (ZINC, TU) produce and what positional encodings,
splits and caches work on: whole-dataset tensor operations instead of per-graph Python objects.
It becomes a list of PyG `Data` only at the end, for mini-batching.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)


@dataclass
class GraphSet:
    """Graphs stored back to back. Node and edge indices in `edge_index` are local to each graph."""

    x: Tensor  # [N] long node types, or [N, F] float node features
    edge_index: Tensor  # [2, E] long, local to each graph; both directions of undirected edges
    edge_attr: Tensor | None  # [E] long edge types, [E, D] float, or None
    y: Tensor  # [G] float targets or long class labels
    node_ptr: Tensor  # [G + 1] long: graph g owns nodes node_ptr[g]:node_ptr[g + 1]
    edge_ptr: Tensor  # [G + 1] long: graph g owns edges edge_ptr[g]:edge_ptr[g + 1]
    graph_ids: Tensor  # [G] long: each graph's id in its source (CSV row, TU graph number)
    num_node_types: int | None = None  # set when x holds categorical types
    num_edge_types: int | None = None  # set when edge_attr holds categorical types
    num_classes: int | None = None  # set for classification labels
    splits: dict[str, Tensor] = field(default_factory=dict)  # the dataset's own split: [G_s]
    pe: dict[str, Tensor] = field(default_factory=dict)  # positional encodings: [N, d]
    # Link prediction targets (edges taken out of edge_index) and fixed non-edges, [2, T] local.
    target_edge_index: Tensor | None = None
    target_ptr: Tensor | None = None  # [G + 1]
    negative_edge_index: Tensor | None = None
    negative_ptr: Tensor | None = None  # [G + 1]

    # --- sizes ---------------------------------------------------------------------------------

    @property
    def num_graphs(self) -> int:
        return int(self.node_ptr.numel() - 1)

    @property
    def num_nodes(self) -> int:
        return int(self.node_ptr[-1])

    @property
    def num_edges(self) -> int:
        return int(self.edge_ptr[-1])

    def nodes_per_graph(self) -> Tensor:
        return self.node_ptr.diff()

    def edges_per_graph(self) -> Tensor:
        return self.edge_ptr.diff()

    def node_graph(self) -> Tensor:
        """[N] the graph of every node."""
        return torch.repeat_interleave(torch.arange(self.num_graphs), self.nodes_per_graph())

    def edge_graph(self) -> Tensor:
        """[E] the graph of every edge."""
        return torch.repeat_interleave(torch.arange(self.num_graphs), self.edges_per_graph())

    def global_edge_index(self) -> Tensor:
        """[2, E] edges of the disjoint union of all graphs (global node indices)."""
        return self.edge_index + self.node_ptr[:-1][self.edge_graph()]

    # --- selection and conversion --------------------------------------------------------------

    def select(self, index: Tensor) -> GraphSet:
        """The graphs `index` (in that order) as a new set; the own split is dropped."""
        index = index.long()
        node_mask_idx = ranges(self.node_ptr, index)
        edge_mask_idx = ranges(self.edge_ptr, index)
        out = replace(
            self,
            x=self.x[node_mask_idx],
            edge_index=self.edge_index[:, edge_mask_idx],
            edge_attr=None if self.edge_attr is None else self.edge_attr[edge_mask_idx],
            y=self.y[index],
            node_ptr=_ptr(self.nodes_per_graph()[index]),
            edge_ptr=_ptr(self.edges_per_graph()[index]),
            graph_ids=self.graph_ids[index],
            splits={},
            pe={k: v[node_mask_idx] for k, v in self.pe.items()},
        )
        if self.target_ptr is not None and self.target_edge_index is not None:
            out.target_edge_index = self.target_edge_index[:, ranges(self.target_ptr, index)]
            out.target_ptr = _ptr(self.target_ptr.diff()[index])
        if self.negative_ptr is not None and self.negative_edge_index is not None:
            out.negative_edge_index = self.negative_edge_index[:, ranges(self.negative_ptr, index)]
            out.negative_ptr = _ptr(self.negative_ptr.diff()[index])
        return out

    def to_data_list(self) -> list[Any]:
        """One PyG `Data` per graph; `y` has shape [1] (or [1, ...]) so batches stack to [B]."""
        from torch_geometric.data import Data

        n_sizes = self.nodes_per_graph().tolist()
        e_sizes = self.edges_per_graph().tolist()
        columns: dict[str, list[Tensor]] = {
            "x": list(torch.split(self.x, n_sizes)),
            "edge_index": list(torch.split(self.edge_index, e_sizes, dim=1)),
            "y": list(self.y.split(1)),
            "graph_id": list(self.graph_ids.split(1)),
        }
        if self.edge_attr is not None:
            columns["edge_attr"] = list(torch.split(self.edge_attr, e_sizes))
        for name, pe in self.pe.items():
            columns[name] = list(torch.split(pe, n_sizes))
        if self.target_edge_index is not None and self.target_ptr is not None:
            t_sizes = self.target_ptr.diff().tolist()
            columns["target_edge_index"] = list(torch.split(self.target_edge_index, t_sizes, 1))
        if self.negative_edge_index is not None and self.negative_ptr is not None:
            neg_sizes = self.negative_ptr.diff().tolist()
            columns["negative_edge_index"] = list(
                torch.split(self.negative_edge_index, neg_sizes, 1)
            )
        keys = list(columns)
        return [
            Data(num_nodes=n, **dict(zip(keys, values, strict=True)))
            for n, *values in zip(n_sizes, *columns.values(), strict=True)
        ]

    # --- (de)serialisation: tensors and plain values only (torch.load(weights_only=True)) ------

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> GraphSet:
        return cls(**state)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")  # not torch RNG
        torch.save(self.to_dict(), tmp)
        tmp.replace(path)  # atomic: a concurrent reader never sees half a file

    @classmethod
    def load(cls, path: Path) -> GraphSet:
        return cls.from_dict(torch.load(path, map_location="cpu", weights_only=True))


def _ptr(sizes: Tensor) -> Tensor:
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)])


def ranges(ptr: Tensor, index: Tensor) -> Tensor:
    """Concatenated ranges ptr[i]:ptr[i + 1] for every i in `index` (vectorised)."""
    starts = ptr[:-1][index]
    sizes = ptr.diff()[index]
    offsets = torch.arange(int(sizes.sum())) - torch.repeat_interleave(_ptr(sizes)[:-1], sizes)
    return torch.repeat_interleave(starts, sizes) + offsets


def ptr_from_counts(sizes: Tensor) -> Tensor:
    """[G + 1] offsets from [G] sizes."""
    return _ptr(sizes.long())


def files_digest(paths: Iterable[Path], *extra: object) -> str:
    """A short hash of the bytes of `paths` and of `extra` values (a cache key)."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode())
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    for value in extra:
        h.update(repr(value).encode())
    return h.hexdigest()[:16]


__all__ = ["GraphSet", "files_digest", "ptr_from_counts", "ranges"]
