"""Walks, pairs, negatives and batches: checked against the graph they come from."""

from __future__ import annotations

import torch

from core.families.graphsage_skipgram.walks import (
    CSR,
    NegativeSampler,
    PairBatcher,
    StreamingPairBatcher,
    random_walks,
    window_pairs,
)


def _ring(n: int) -> tuple[torch.Tensor, int]:
    src = torch.arange(n)
    dst = (src + 1) % n
    return torch.stack([torch.cat([src, dst]), torch.cat([dst, src])]), n


def _edge_set(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    return torch.unique(edge_index[0] * n + edge_index[1])


def test_csr_matches_edge_index():
    ei, n = _ring(6)
    csr = CSR.from_edge_index(ei, n)
    assert csr.degree.tolist() == [2] * 6
    assert sorted(csr.col[csr.rowptr[0] : csr.rowptr[1]].tolist()) == [1, 5]


def test_walk_steps_follow_edges_and_isolated_nodes_stay():
    ei, n = _ring(50)
    csr = CSR.from_edge_index(ei, n + 1)  # node 50 has no edges
    gen = torch.Generator().manual_seed(0)
    walks = random_walks(csr, torch.arange(n + 1).repeat(4), 12, gen)
    assert walks.shape == (4 * (n + 1), 12)
    steps = torch.stack([walks[:, :-1].reshape(-1), walks[:, 1:].reshape(-1)])
    moving = steps[0] != n
    edges = _edge_set(ei, n + 1)
    assert torch.isin(steps[0, moving] * (n + 1) + steps[1, moving], edges).all()
    assert (walks[walks[:, 0] == n] == n).all()


def test_walks_are_uniform_over_neighbours():
    star = torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4], [1, 2, 3, 4, 0, 0, 0, 0]])
    csr = CSR.from_edge_index(star, 5)
    walks = random_walks(
        csr, torch.zeros(40_000, dtype=torch.long), 2, torch.Generator().manual_seed(1)
    )
    freq = torch.bincount(walks[:, 1], minlength=5)[1:].float() / 40_000
    assert torch.allclose(freq, torch.full((4,), 0.25), atol=0.02)


def test_window_pairs_both_directions_without_self_pairs():
    walks = torch.tensor([[0, 1, 2, 1]])
    pairs = {tuple(p) for p in window_pairs(walks, 2).tolist()}
    # offsets 1: (0,1),(1,2),(2,1) ; offset 2: (0,2),(1,1)->dropped ; plus reverses
    assert pairs == {(0, 1), (1, 0), (1, 2), (2, 1), (0, 2), (2, 0)}
    assert all(a != b for a, b in window_pairs(torch.randint(0, 3, (20, 9)), 4).tolist())


def test_negative_sampler_follows_degree_power():
    degree = torch.tensor([1.0, 4.0, 9.0, 0.0])
    sampler = NegativeSampler(degree, power=0.5)
    draws = sampler.sample((200_000,), torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / draws.numel()
    assert torch.allclose(freq, torch.tensor([1, 2, 3, 0]) / 6.0, atol=0.01)


def test_pair_batches_cover_the_pairs_once_and_shard_evenly():
    pairs = torch.stack([torch.arange(1000), torch.arange(1000) + 1], 1)
    sampler = NegativeSampler(torch.ones(1001))
    batcher = PairBatcher(pairs, sampler, batch_size=100, negatives_per_positive=3, seed=5)
    batches = list(batcher.batches(epoch=1))
    assert len(batches) == batcher.num_batches() == 10
    assert torch.cat([b.targets for b in batches]).sort().values.equal(torch.arange(1000))
    assert batches[0].negatives.shape == (100, 3)
    # Two ranks see disjoint halves of the same global batches.
    r0, r1 = (list(batcher.batches(1, rank, 2)) for rank in (0, 1))
    assert all(len(a) == len(b) == 50 for a, b in zip(r0, r1, strict=True))
    assert torch.cat([r0[0].targets, r1[0].targets]).equal(batches[0].targets)
    # A new epoch reshuffles; the same epoch repeats exactly.
    assert not next(batcher.batches(2)).targets.equal(batches[0].targets)
    assert next(batcher.batches(1)).targets.equal(batches[0].targets)


def test_streaming_batches_come_from_fresh_walks_each_epoch():
    ei, n = _ring(200)
    csr = CSR.from_edge_index(ei, n)
    batcher = StreamingPairBatcher(
        csr,
        NegativeSampler(csr.degree),
        walks_per_node=2,
        walk_length=6,
        window=2,
        batch_size=256,
        negatives_per_positive=2,
        seed=0,
        walks_per_chunk=64,
    )
    e1, e2 = list(batcher.batches(1)), list(batcher.batches(2))
    pairs = torch.cat([torch.stack([b.targets, b.contexts], 1) for b in e1])
    assert torch.isin(pairs[:, 0] * n + pairs[:, 1], _edge_set(ei, n)).float().mean() > 0.4
    assert abs(len(e1) - batcher.num_batches()) <= len(e1) * 0.2 + 1
    assert not e1[0].targets.equal(e2[0].targets)
