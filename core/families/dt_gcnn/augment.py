"""Model-free text augmentation on token id tensors: word dropout and adjacent word swap (the
seed's `TripletAugmenter` without its generative strategies, which need a model).

Texts are split on whitespace into words; a corpus becomes a padded token id tensor
[texts, max_words] (`PAD` past each text's end, or for a dropped word). Dropout and swap are
drawn for every text at once with a seeded generator, and variants are turned back into strings
by joining one word position at a time over all texts: no Python loop over texts.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

PAD = -1


# Marks a text's end in the joined corpus: a private-use character, not whitespace (str.split
# treats the ASCII separators \x1c-\x1f as whitespace). A text containing it is refused.
_SEP = "\ue000"


def tokenize(texts: np.ndarray) -> tuple[Tensor, np.ndarray]:
    """`(ids [T, L] long, vocabulary [V] str)`: each text's whitespace-separated words as
    indices into the vocabulary, padded with `PAD`; L is the longest text's word count. The
    corpus is split in one call (texts joined by a separator word), not text by text."""
    texts = np.asarray(texts, dtype=str)
    if np.char.find(texts, _SEP).max(initial=-1) >= 0:
        raise ValueError("a text contains the character U+E000, which word augmentation reserves")
    flat = np.array(f" {_SEP} ".join(texts.tolist()).split() + [_SEP])  # words, a _SEP per text
    ends = np.flatnonzero(flat == _SEP)  # [T]
    lengths = np.diff(np.concatenate([[-1], ends])) - 1  # [T] words per text
    words = np.delete(flat, ends)
    vocab, index = np.unique(words, return_inverse=True)
    width = int(lengths.max()) if lengths.size else 0
    ids = torch.full((len(texts), width), PAD, dtype=torch.long)
    row = torch.from_numpy(np.repeat(np.arange(len(texts)), lengths))
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    col = torch.arange(row.numel()) - torch.from_numpy(starts)
    ids[row, col] = torch.from_numpy(index.reshape(-1)).long()
    return ids, vocab


def word_dropout(ids: Tensor, rate: float, gen: torch.Generator) -> Tensor:
    """`ids` [T, L] with each word dropped (set to PAD) with probability `rate`; a text that
    would lose every word keeps its first."""
    present = ids != PAD
    drop = (torch.rand(ids.shape, generator=gen) < rate) & present
    emptied = ~(present & ~drop).any(1)  # [T]
    drop[emptied, 0] = False  # a text's first word is never PAD
    return ids.masked_fill(drop, PAD)


def word_swap(ids: Tensor, rate: float, gen: torch.Generator) -> Tensor:
    """`ids` [T, L] with adjacent words swapped: position i swaps with i + 1 with probability
    `rate` when both are words, unless position i - 1 drew a swap too (no overlaps)."""
    if ids.size(1) < 2:
        return ids.clone()
    present = ids != PAD
    can = present[:, :-1] & present[:, 1:]  # [T, L-1]
    draw = (torch.rand(can.shape, generator=gen) < rate) & can
    start = draw.clone()
    start[:, 1:] &= ~draw[:, :-1]  # drop a swap whose left neighbour also drew one
    source = torch.arange(ids.size(1)).expand_as(ids).clone()  # [T, L] where each word comes from
    source[:, :-1] += start.long()
    source[:, 1:] -= start.long()
    return ids.gather(1, source)


def detokenize(ids: Tensor, vocab: np.ndarray) -> np.ndarray:
    """[T] str: each text's remaining words joined by single spaces (one join over the
    corpus with a separator after each text, then one split)."""
    present = ids != PAD
    words = np.asarray(vocab, dtype=object)[ids[present].numpy()]  # [W] row-major
    ends = np.cumsum(present.sum(1).numpy())  # [T] where each text's words end
    joined = " ".join(np.insert(words, ends, _SEP).tolist())
    return np.char.strip(np.array(joined.split(_SEP)[:-1], dtype=str))


def variants(texts: np.ndarray, kind: str, rate: float, copies: int, seed: int) -> np.ndarray:
    """[copies, T] str: `copies` seeded augmented variants of every text (`kind`
    `word_dropout` or `word_swap`)."""
    fns = {"word_dropout": word_dropout, "word_swap": word_swap}
    if kind not in fns:
        raise ValueError(f"unknown text augmentation {kind!r}; choose one of {', '.join(fns)}")
    ids, vocab = tokenize(texts)
    gen = torch.Generator().manual_seed(seed)
    return np.stack([detokenize(fns[kind](ids, rate, gen), vocab) for _ in range(copies)])


__all__ = ["PAD", "detokenize", "tokenize", "variants", "word_dropout", "word_swap"]
