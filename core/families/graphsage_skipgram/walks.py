"""Random walks, co-occurrence pairs, degree-biased negatives and pair batches, all in torch.

Everything runs on the device of the graph tensors (the GPU when training there); no Python
loop runs over nodes, edges or pairs — loops run over walk steps and window offsets only.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import KW_ONLY, dataclass

import torch
from torch import Tensor

from core.distributed import RankBatches, shard_items


@dataclass(frozen=True)
class CSR:
    """Adjacency in compressed sparse rows: `v`'s neighbours are `col[rowptr[v]:rowptr[v+1]]`."""

    rowptr: Tensor  # [num_nodes + 1]
    col: Tensor  # [num_edges]

    @property
    def num_nodes(self) -> int:
        return self.rowptr.numel() - 1

    @property
    def degree(self) -> Tensor:  # [num_nodes]
        return self.rowptr[1:] - self.rowptr[:-1]

    @classmethod
    def from_edge_index(cls, edge_index: Tensor, num_nodes: int) -> CSR:
        """Build from a [2, E] edge index (sorted by source here; the input is left as it is)."""
        src, dst = edge_index
        order = torch.argsort(src * num_nodes + dst)
        counts = torch.bincount(src, minlength=num_nodes)
        rowptr = torch.zeros(num_nodes + 1, dtype=torch.long, device=edge_index.device)
        rowptr[1:] = torch.cumsum(counts, 0)
        return cls(rowptr=rowptr, col=dst[order].contiguous())


def random_walks(
    csr: CSR, starts: Tensor, walk_length: int, generator: torch.Generator | None = None
) -> Tensor:
    """Uniform random walks of `walk_length` nodes from each start; a node with no
    neighbours repeats itself (those steps make self-pairs, which `window_pairs` drops).

    Returns [len(starts), walk_length] node ids.
    """
    walks = torch.empty(starts.numel(), walk_length, dtype=torch.long, device=starts.device)
    current = starts.long()
    walks[:, 0] = current
    degree = csr.degree
    for step in range(1, walk_length):
        deg = degree[current]  # [num_walks]
        u = torch.rand(current.numel(), generator=generator, device=current.device)
        offset = (u * deg).long().clamp_max_(torch.clamp(deg - 1, min=0))
        nxt = csr.col[(csr.rowptr[current] + offset).clamp_max_(csr.col.numel() - 1)]
        current = torch.where(deg > 0, nxt, current)
        walks[:, step] = current
    return walks


def window_pairs(walks: Tensor, window: int) -> Tensor:
    """(target, context) pairs of nodes at most `window` steps apart on a walk, both directions,
    self-pairs dropped. Returns [num_pairs, 2]."""
    chunks = []
    for d in range(1, min(window, walks.size(1) - 1) + 1):
        a = walks[:, :-d].reshape(-1)
        b = walks[:, d:].reshape(-1)
        chunks.append(torch.stack([a, b], 1))
        chunks.append(torch.stack([b, a], 1))
    pairs = torch.cat(chunks, 0)
    return pairs[pairs[:, 0] != pairs[:, 1]]


class NegativeSampler:
    """Draws nodes with probability proportional to degree**power (word2vec's unigram^0.75)."""

    def __init__(self, degree: Tensor, power: float = 0.75):
        weights = degree.double().clamp_min(0).pow(power)
        if float(weights.sum()) == 0.0:
            weights = torch.ones_like(weights)
        cdf = torch.cumsum(weights, 0)
        self.cdf = (cdf / cdf[-1]).float()  # [num_nodes], ends at 1
        self.num_nodes = degree.numel()

    def sample(self, shape: tuple[int, ...], generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(shape, generator=generator, device=self.cdf.device)
        return (
            torch.searchsorted(self.cdf, u.reshape(-1), right=True)
            .clamp_max_(self.num_nodes - 1)
            .reshape(shape)
        )


@dataclass
class PairBatch:
    """One step's pairs: targets and contexts [B], negatives [B, K]."""

    targets: Tensor
    contexts: Tensor
    negatives: Tensor

    def __len__(self) -> int:
        return self.targets.numel()


def _epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The generator of one epoch's pair stream: the same on every rank."""
    return torch.Generator(device=device).manual_seed(seed * 100_003 + epoch)


def _batches(
    pairs: Tensor,
    sampler: NegativeSampler,
    batch_size: int,
    k: int,
    gen: torch.Generator,
    rank: int,
    world_size: int,
) -> Iterator[PairBatch]:
    """Consecutive global batches of `pairs` [P, 2] with `k` fresh negatives per pair; this
    rank keeps its equal share of each (`core.distributed.shard_items`)."""
    for start in range(0, pairs.size(0), batch_size):
        chunk = pairs[start : start + batch_size]  # [B, 2]
        negatives = sampler.sample((chunk.size(0), k), gen)  # [B, K]
        if world_size > 1:
            rows = torch.arange(chunk.size(0), device=chunk.device)
            rows = shard_items(rows, rank, world_size, layout="blocks")
            chunk, negatives = chunk[rows], negatives[rows]
        yield PairBatch(chunk[:, 0], chunk[:, 1], negatives)


@dataclass
class PairBatcher:
    """Shuffles a fixed set of pairs each epoch and yields pair batches with fresh negatives.

    Every rank builds the same global batch from the same seeded generator and keeps its own
    shard, so N ranks with batch B/N each train like one process with batch B.
    """

    pairs: Tensor  # [P, 2]
    sampler: NegativeSampler
    batch_size: int
    negatives_per_positive: int
    seed: int
    epoch_fraction: float = 1.0

    def num_batches(self) -> int:
        used = max(1, int(self.pairs.size(0) * self.epoch_fraction))
        return max(1, -(-used // self.batch_size))

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> RankBatches[PairBatch]:
        """This rank's share of every global batch of the epoch (the same count on every rank)."""
        return RankBatches(lambda: self._batches(epoch, rank, world_size), self.num_batches())

    def _batches(self, epoch: int, rank: int, world_size: int) -> Iterator[PairBatch]:
        gen = _epoch_generator(self.seed, epoch, self.pairs.device)
        order = torch.randperm(self.pairs.size(0), generator=gen, device=self.pairs.device)
        order = order[: max(1, int(order.numel() * self.epoch_fraction))]
        yield from _batches(
            self.pairs[order],
            self.sampler,
            self.batch_size,
            self.negatives_per_positive,
            gen,
            rank,
            world_size,
        )


@dataclass
class StreamingPairBatcher:
    """Generates new walks every epoch, a chunk of start nodes at a time, and yields batches
    from each chunk's pairs: all pairs of an epoch never sit in memory at once."""

    csr: CSR
    sampler: NegativeSampler
    _: KW_ONLY
    walks_per_node: int
    walk_length: int
    window: int
    batch_size: int
    negatives_per_positive: int
    seed: int
    walks_per_chunk: int = 65_536
    epoch_fraction: float = 1.0

    def num_batches(self) -> int:
        """An estimate of batches per epoch (self-pairs make the real count a little lower)."""
        walks = int(self.csr.num_nodes * self.walks_per_node * self.epoch_fraction)
        pairs_per_walk = sum(
            2 * (self.walk_length - d) for d in range(1, min(self.window, self.walk_length - 1) + 1)
        )
        return max(1, -(-walks * pairs_per_walk // self.batch_size))

    def batches(self, epoch: int, rank: int = 0, world_size: int = 1) -> RankBatches[PairBatch]:
        """This rank's share of every global batch; the count is not known in advance, but
        every rank draws the same walks from the same generator, so the counts agree."""
        return RankBatches(lambda: self._batches(epoch, rank, world_size), None)

    def _batches(self, epoch: int, rank: int, world_size: int) -> Iterator[PairBatch]:
        device = self.csr.rowptr.device
        gen = _epoch_generator(self.seed, epoch, device)
        starts = torch.arange(self.csr.num_nodes, device=device).repeat(self.walks_per_node)
        starts = starts[torch.randperm(starts.numel(), generator=gen, device=device)]
        starts = starts[: max(1, int(starts.numel() * self.epoch_fraction))]
        for begin in range(0, starts.numel(), self.walks_per_chunk):
            walks = random_walks(
                self.csr, starts[begin : begin + self.walks_per_chunk], self.walk_length, gen
            )
            pairs = window_pairs(walks, self.window)
            pairs = pairs[torch.randperm(pairs.size(0), generator=gen, device=device)]
            # Every rank draws the same walks from the same generator, so batch counts agree.
            yield from _batches(
                pairs,
                self.sampler,
                self.batch_size,
                self.negatives_per_positive,
                gen,
                rank,
                world_size,
            )
