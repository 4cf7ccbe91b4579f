"""Nearest-neighbour search and run comparison over a job's embeddings, in numpy (the API never
imports torch).

`EmbeddingIndex` holds a job's float32 embeddings `[rows, dim]` (L2-normalised once for cosine)
and answers exact top-k queries with one matrix product and `argpartition`: at 100,000 x 128 a
query costs a few milliseconds, so exact search is used throughout (recall 1.0); indexes are
built once per embeddings file (keyed by its sha256) and kept in a small LRU cache.

`compare` measures how much two runs over the same ids agree: linear CKA (Kornblith et al.
2019, "Similarity of Neural Network Representations Revisited") and the mean overlap of each
row's k nearest neighbours.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

Metric = Literal["cosine", "dot"]
CACHE_SIZE = 4  # indexes kept per API process
_QUERY_BLOCK = 65_536  # rows scored per block (bounds the score matrix of a batch of queries)


@dataclass
class Neighbor:
    row: int
    id: str
    score: float


class EmbeddingIndex:
    """Exact k-nearest-neighbour search over `vectors` [rows, dim] keyed by `ids` [rows]."""

    def __init__(self, vectors: np.ndarray, ids: list[str]):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)  # [N, D]
        norms = np.linalg.norm(self.vectors, axis=1, keepdims=True)
        self.unit = self.vectors / np.maximum(norms, 1e-12)  # [N, D] for cosine
        self.ids = ids
        self.row_of = {rid: i for i, rid in enumerate(ids)}

    @property
    def rows(self) -> int:
        return self.vectors.shape[0]

    @property
    def dim(self) -> int:
        return self.vectors.shape[1]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        metric: Metric = "cosine",
        exclude: list[int] | None = None,
    ) -> list[list[Neighbor]]:
        """The `k` best rows for each query [Q, dim], best first; `exclude[q]` (a row, or -1)
        is left out of query q's answers (the query row itself)."""
        queries = np.asarray(queries, dtype=np.float32).reshape(-1, self.dim)
        if metric == "cosine":
            queries = queries / np.maximum(np.linalg.norm(queries, axis=1, keepdims=True), 1e-12)
            matrix = self.unit
        else:
            matrix = self.vectors
        if queries.shape[0] == 1:  # one matrix-vector product
            scores = (matrix @ queries[0])[None, :]  # [1, N]
        else:
            scores = np.concatenate(
                [
                    queries @ matrix[s : s + _QUERY_BLOCK].T
                    for s in range(0, self.rows, _QUERY_BLOCK)
                ],
                axis=1,
            )  # [Q, N]
        if exclude is not None:
            mask = np.asarray(exclude) >= 0
            scores[np.flatnonzero(mask), np.asarray(exclude)[mask]] = -np.inf
        k = min(k, self.rows)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # [Q, k] unordered
        order = np.take_along_axis(scores, top, 1).argsort(1)[:, ::-1]
        best = np.take_along_axis(top, order, 1)
        return [
            [
                Neighbor(int(r), self.ids[r], float(scores[q, r]))
                for r in best[q]
                if np.isfinite(scores[q, r])
            ]
            for q in range(best.shape[0])
        ]


class IndexCache:
    """Indexes by key (an embeddings file's sha256), the `CACHE_SIZE` most recently used."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._items: OrderedDict[str, EmbeddingIndex] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, build: Callable[[], EmbeddingIndex]) -> EmbeddingIndex:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        index = build()  # outside the lock: a slow build does not hold other jobs' queries
        with self._lock:
            self._items[key] = index
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return index


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA of two representations of the same rows, x [N, Dx] and y [N, Dy]: 1 for
    representations equal up to rotation and isotropic scaling, near 0 for unrelated ones."""
    x = x.astype(np.float64) - x.mean(0)
    y = y.astype(np.float64) - y.mean(0)
    cross = np.linalg.norm(y.T @ x) ** 2
    denom = np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)
    return float(cross / denom) if denom > 0 else 0.0


def knn_overlap(a: EmbeddingIndex, b: EmbeddingIndex, rows: np.ndarray, k: int) -> float:
    """Mean share of each row's `k` cosine neighbours that two indexes over the same rows
    (aligned) agree on, over the query `rows`."""
    na = a.search(a.vectors[rows], k, "cosine", exclude=list(rows))
    nb = b.search(b.vectors[rows], k, "cosine", exclude=list(rows))
    shares = [len({n.row for n in x} & {n.row for n in y}) / k for x, y in zip(na, nb, strict=True)]
    return float(np.mean(shares)) if shares else 0.0
