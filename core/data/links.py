"""Link prediction inside each graph: seeded target edges taken out of the message-passing
graph, and negative node pairs (pairs of one graph that are not edges)."""

from __future__ import annotations

import torch
from torch import Tensor

from core.data.graphset import GraphSet, ptr_from_counts


def _rank_in_group(keys: Tensor) -> tuple[Tensor, Tensor]:
    """For sorted `keys`: each item's rank within its run of equal keys, and the run's size."""
    _, counts = torch.unique_consecutive(keys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    group = torch.repeat_interleave(torch.arange(counts.numel(), device=keys.device), counts)
    return torch.arange(keys.numel(), device=keys.device) - starts[group], counts[group]


def corrupt_tails(
    pos: Tensor,
    pos_graph: Tensor,
    node_ptr: Tensor,
    known: Tensor,
    per_positive: int,
    generator: torch.Generator,
    tries: int = 4,
) -> Tensor:
    """[2, M] negatives (u, w): for every positive (u, v) of graph g, `per_positive` nodes w of
    g drawn uniformly, keeping pairs that are neither self pairs nor in `known` ([2, E]).
    All indices are global to `node_ptr`'s union; M <= per_positive * P (rejections dropped)."""
    num_nodes = int(node_ptr[-1])
    heads = pos[0].repeat(per_positive)  # [P * per_positive]
    graph = pos_graph.repeat(per_positive)
    start, size = node_ptr[graph], (node_ptr[graph + 1] - node_ptr[graph])
    known_keys = torch.cat([known[0] * num_nodes + known[1], known[1] * num_nodes + known[0]])
    tails = torch.full_like(heads, -1)
    todo = torch.ones_like(heads, dtype=torch.bool)
    for _ in range(tries):  # a few redraws for rejected pairs; vectorised over all pairs
        draw = torch.rand(heads.numel(), generator=generator).to(heads.device)
        cand = start + torch.minimum((draw * size).long(), size - 1)  # a node of g
        ok = (cand != heads) & ~torch.isin(heads * num_nodes + cand, known_keys)
        take = todo & ok
        tails[take] = cand[take]
        todo &= ~ok
        if not bool(todo.any()):
            break
    keep = tails >= 0
    return torch.stack([heads[keep], tails[keep]])


def split_target_edges(graphs: GraphSet, fraction: float, per_positive: int, seed: int) -> GraphSet:
    """`graphs` with `fraction` of each graph's undirected edges moved from `edge_index` to
    `target_edge_index` (one direction each), and fixed negatives in `negative_edge_index`."""
    gen = torch.Generator().manual_seed(seed)
    src, dst = graphs.edge_index
    edge_graph = graphs.edge_graph()
    undirected = torch.nonzero(src < dst).view(-1)  # each undirected edge once
    score = torch.rand(undirected.numel(), generator=gen)
    order = undirected[torch.argsort(score)]
    order = order[torch.argsort(edge_graph[order], stable=True)]  # by graph, random inside
    rank, size = _rank_in_group(edge_graph[order])
    targets = order[rank < torch.round(size * fraction).long()]
    targets = targets.sort().values  # keep graph order

    # Drop both directions of every target edge from the message-passing graph.
    offset = graphs.node_ptr[:-1][edge_graph]
    n = graphs.num_nodes
    gsrc, gdst = src + offset, dst + offset
    target_keys = gsrc[targets] * n + gdst[targets]
    keys = torch.minimum(gsrc, gdst) * n + torch.maximum(gsrc, gdst)
    keep = ~torch.isin(keys, target_keys)
    known = torch.stack([gsrc, gdst])  # every original edge is a non-negative

    target_graph = edge_graph[targets]
    target_global = torch.stack([gsrc[targets], gdst[targets]])
    negatives = corrupt_tails(
        target_global, target_graph, graphs.node_ptr, known, per_positive, gen
    )
    neg_graph = torch.searchsorted(graphs.node_ptr, negatives[0], right=True) - 1
    neg_order = torch.argsort(neg_graph, stable=True)
    negatives, neg_graph = negatives[:, neg_order], neg_graph[neg_order]

    out = graphs.select(torch.arange(graphs.num_graphs))
    out.splits = dict(graphs.splits)
    out.edge_index = graphs.edge_index[:, keep]
    out.edge_attr = None if graphs.edge_attr is None else graphs.edge_attr[keep]
    out.edge_ptr = ptr_from_counts(torch.bincount(edge_graph[keep], minlength=graphs.num_graphs))
    out.target_edge_index = torch.stack([src[targets], dst[targets]])
    out.target_ptr = ptr_from_counts(torch.bincount(target_graph, minlength=graphs.num_graphs))
    out.negative_edge_index = negatives - graphs.node_ptr[neg_graph]
    out.negative_ptr = ptr_from_counts(torch.bincount(neg_graph, minlength=graphs.num_graphs))
    return out


__all__ = ["corrupt_tails", "split_target_edges"]
