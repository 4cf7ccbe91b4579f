"""Positional encodings of a whole `GraphSet`, computed once and cached, and the per-epoch
random sign flip of Laplacian eigenvectors (training path only).

The values are those of PyG's `AddRandomWalkPE` (diagonal of the random-walk matrix
`D^-1 A` to the powers 1..L) and `AddLaplacianEigenvectorPE` (eigenvectors 2..k+1 of the
symmetric normalised Laplacian, `is_undirected=True`). Instead of one transform call per graph,
graphs of equal size are stacked and processed as one dense batch (`bmm`, batched `eigh`);
graphs above `DENSE_MAX_NODES` nodes go through the PyG transforms one by one. Unlike PyG's
transform, a graph with k + 1 or fewer nodes gets zero columns past its n - 1 eigenvectors
instead of an error, and no sign is drawn at preprocessing: signs are re-drawn every epoch by
`flip_laplacian_signs`.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Sequence

import torch
from torch import Tensor

from core.data.graphset import GraphSet, files_digest, ranges
from core.data.roots import cache_dir
from core.spec.pe import LaplacianPE, RwsePE

log = logging.getLogger(__name__)

PE_VERSION = 1
DENSE_MAX_NODES = 2_000  # larger graphs: PyG's (sparse) transforms, one graph at a time


def pe_attr(i: int) -> str:
    """The `Data` attribute holding positional encoding scale `i` of the spec's list."""
    return f"pe_{i}"


def _size_groups(graphs: GraphSet) -> list[tuple[int, Tensor]]:
    """(n, graph indices) for every distinct node count n."""
    sizes = graphs.nodes_per_graph()
    return [(int(n), torch.nonzero(sizes == n).view(-1)) for n in torch.unique(sizes).tolist()]


def _dense_adjacency(graphs: GraphSet, index: Tensor, n: int, dtype: torch.dtype) -> Tensor:
    """[B, n, n] 0/1 adjacency of the graphs `index`, all of `n` nodes."""
    sub = graphs.select(index)
    edge_graph = sub.edge_graph()
    adj = torch.zeros(index.numel(), n, n, dtype=dtype)
    adj[edge_graph, sub.edge_index[0], sub.edge_index[1]] = 1.0
    return adj


def _node_rows(graphs: GraphSet, index: Tensor) -> Tensor:
    """Global node rows of the graphs `index`, graph by graph."""
    return ranges(graphs.node_ptr, index)


def random_walk_pe(graphs: GraphSet, walk_length: int) -> Tensor:
    """[N, walk_length] return probabilities after 1..walk_length random-walk steps."""
    out = torch.zeros(graphs.num_nodes, walk_length)
    for n, index in _size_groups(graphs):
        rows = _node_rows(graphs, index)
        if n > DENSE_MAX_NODES:
            out[rows] = _pyg_per_graph(graphs, index, "rwse", walk_length)
            continue
        adj = _dense_adjacency(graphs, index, n, torch.float32)  # PyG's RWSE is float32 too
        walk = adj / adj.sum(2, keepdim=True).clamp(min=1)  # D^-1 A: [B, n, n]
        power = walk
        steps = [torch.diagonal(power, dim1=1, dim2=2)]
        for _ in range(walk_length - 1):
            power = power @ walk
            steps.append(torch.diagonal(power, dim1=1, dim2=2))
        out[rows] = torch.stack(steps, -1).reshape(-1, walk_length).float()  # [B * n, L]
    return out


def laplacian_pe(graphs: GraphSet, k: int) -> Tensor:
    """[N, k] eigenvectors 2..k+1 of each graph's normalised Laplacian; zero-padded columns
    for graphs with fewer than k + 1 nodes."""
    out = torch.zeros(graphs.num_nodes, k)
    for n, index in _size_groups(graphs):
        rows = _node_rows(graphs, index)
        if n <= 1:
            continue  # a single node has no non-trivial eigenvector
        if n > DENSE_MAX_NODES:
            out[rows] = _pyg_per_graph(graphs, index, "laplacian", k)
            continue
        adj = _dense_adjacency(graphs, index, n, torch.float64)
        deg = adj.sum(2)
        inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-12).rsqrt(), torch.zeros_like(deg))
        lap = torch.eye(n, dtype=adj.dtype) - inv_sqrt.unsqueeze(2) * adj * inv_sqrt.unsqueeze(1)
        _, vecs = torch.linalg.eigh(lap)  # ascending eigenvalues; [B, n, n]
        take = min(k, n - 1)
        out[rows, :take] = vecs[:, :, 1 : take + 1].reshape(-1, take).float()
    return out


def _pyg_per_graph(graphs: GraphSet, index: Tensor, kind: str, width: int) -> Tensor:
    """The PyG transform on each (large) graph of `index`, rows stacked."""
    from torch_geometric.data import Data
    from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE

    parts = []
    for g in index.tolist():
        e0, e1 = int(graphs.edge_ptr[g]), int(graphs.edge_ptr[g + 1])
        n = int(graphs.node_ptr[g + 1] - graphs.node_ptr[g])
        data = Data(edge_index=graphs.edge_index[:, e0:e1], num_nodes=n)
        if kind == "rwse":
            parts.append(AddRandomWalkPE(width, attr_name="pe")(data).pe)
        else:
            take = min(width, n - 2)  # eigsh needs k + 1 < n
            pe = AddLaplacianEigenvectorPE(take, attr_name="pe", is_undirected=True)(data).pe
            parts.append(torch.nn.functional.pad(pe.float(), (0, width - take)))
    return torch.cat(parts).float()


def _raw(graphs: GraphSet, specs: Sequence[RwsePE | LaplacianPE]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    longest = max((max(s.walk_lengths) for s in specs if isinstance(s, RwsePE)), default=0)
    walks = random_walk_pe(graphs, longest) if longest else None
    laplacians: dict[int, Tensor] = {}
    for i, spec in enumerate(specs):
        if isinstance(spec, RwsePE):
            assert walks is not None
            # Several walk lengths = several scales, side by side: [N, sum(walk_lengths)].
            out[pe_attr(i)] = torch.cat([walks[:, :length] for length in spec.walk_lengths], 1)
        else:
            if spec.k not in laplacians:
                laplacians[spec.k] = laplacian_pe(graphs, spec.k)
            out[pe_attr(i)] = laplacians[spec.k]
    return out


def _settings(specs: Sequence[RwsePE | LaplacianPE]) -> list[dict[str, object]]:
    """What the raw values depend on (not the encoder widths or the sign flip)."""
    return [
        {"kind": "rwse", "walk_lengths": list(s.walk_lengths)}
        if isinstance(s, RwsePE)
        else {"kind": "laplacian", "k": s.k}
        for s in specs
    ]


def add_positional_encodings(
    graphs: GraphSet, specs: Sequence[RwsePE | LaplacianPE], source_key: str | None = None
) -> GraphSet:
    """`graphs` with `pe[pe_attr(i)]` set for every scale of `specs`; cached under
    `cache_dir()/pe/` when `source_key` identifies the graphs exactly."""
    if not specs:
        return graphs
    path = None
    if source_key is not None:
        key = files_digest([], source_key, PE_VERSION, json.dumps(_settings(specs)))
        path = cache_dir() / "pe" / f"{key}.pt"
        if path.exists():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if all(t.size(0) == graphs.num_nodes for t in cached.values()):
                graphs.pe.update(cached)
                log.info("positional encodings from cache %s", path)
                return graphs
    pe = _raw(graphs, specs)
    graphs.pe.update(pe)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}-{uuid.uuid4().hex[:8]}")  # not torch RNG
        torch.save(pe, tmp)
        tmp.replace(path)
    log.info("positional encodings computed: %s", {k: list(v.shape) for k, v in pe.items()})
    return graphs


def flip_laplacian_signs(batch: object, attrs: Sequence[str], generator: torch.Generator) -> None:
    """Multiply every eigenvector column of every graph of `batch` by a random +-1, in place
    (a fresh draw per call: per batch, hence per epoch)."""
    num_graphs = int(batch.num_graphs)  # type: ignore[attr-defined]
    node_graph = batch.batch  # type: ignore[attr-defined]
    for attr in attrs:
        pe = getattr(batch, attr)  # [N, k]
        draw = torch.randint(0, 2, (num_graphs, pe.size(1)), generator=generator)
        signs = (draw * 2 - 1).to(pe.device, pe.dtype)  # [G, k] of +-1
        setattr(batch, attr, pe * signs[node_graph])


__all__ = [
    "add_positional_encodings",
    "flip_laplacian_signs",
    "laplacian_pe",
    "pe_attr",
    "random_walk_pe",
]
