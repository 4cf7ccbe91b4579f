"""The texts' cosine kNN graph and its GCN normalisation, vectorised: similarities by matmul in
row chunks, neighbours by `topk`; no Python loop over texts."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def knn_graph(x: Tensor, k: int, min_similarity: float = -1.0, chunk_size: int = 4096) -> Tensor:
    """[2, E] directed edges (i, j): j is one of the `k` texts most cosine-similar to i (never
    i itself), kept when the similarity is at least `min_similarity`. `x` is [N, D]."""
    n = x.size(0)
    k = min(k, n - 1)
    if k <= 0:
        return torch.zeros(2, 0, dtype=torch.long, device=x.device)
    unit = torch.nn.functional.normalize(x.float(), dim=1)  # [N, D]
    rows: list[Tensor] = []
    cols: list[Tensor] = []
    for start in range(0, n, chunk_size):  # chunks of rows: memory [chunk, N]
        stop = min(start + chunk_size, n)
        sim = unit[start:stop] @ unit.T  # [c, N]
        local = torch.arange(stop - start, device=x.device)
        sim[local, local + start] = -float("inf")  # no self-loops
        values, index = sim.topk(k, dim=1)  # [c, k]
        keep = values >= min_similarity
        rows.append((local + start)[:, None].expand(-1, k)[keep])
        cols.append(index[keep])
    return torch.stack([torch.cat(rows), torch.cat(cols)])


def gcn_adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """The GCN propagation matrix D^-1/2 (A + I) D^-1/2 as a sparse CSR tensor [N, N], with A
    the kNN graph made symmetric (an edge either way is an edge both ways)."""
    device = edge_index.device
    both = torch.cat([edge_index, edge_index.flip(0)], 1)
    keys = torch.unique(both[0] * num_nodes + both[1])  # deduplicated, sorted by row
    loops = torch.arange(num_nodes, device=device) * (num_nodes + 1)
    keys = torch.unique(torch.cat([keys, loops]))
    row, col = keys // num_nodes, keys % num_nodes
    degree = torch.bincount(row, minlength=num_nodes).float()
    norm = degree.rsqrt()
    values = norm[row] * norm[col]
    crow = torch.zeros(num_nodes + 1, dtype=torch.long, device=device)
    crow[1:] = torch.cumsum(torch.bincount(row, minlength=num_nodes), 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch's "sparse CSR is beta"
        return torch.sparse_csr_tensor(crow, col, values, (num_nodes, num_nodes))


__all__ = ["gcn_adjacency", "knn_graph"]
