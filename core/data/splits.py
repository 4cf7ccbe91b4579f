"""Train/val/test splits of a graph dataset: the dataset's own, seeded fractions, or k-fold.

Every split is a deterministic function of the labels and the seed (same on every rank);
classification splits keep class proportions when `stratify` is on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.spec.splits import FractionsSplit, KFoldSplit, OwnSplit

SPLITS = ("train", "val", "test")


def split_indices(
    own: dict[str, Tensor],
    num_graphs: int,
    spec: OwnSplit | FractionsSplit | KFoldSplit,
    seed: int,
    labels: Tensor | None = None,
) -> dict[str, Tensor]:
    """Graph indices of train/val/test. `own` is the dataset's split (may be empty); `labels`
    are class labels for stratification (None for regression)."""
    if isinstance(spec, OwnSplit):
        if not all(name in own for name in SPLITS):
            raise ValueError(
                "data.split.kind 'own' needs a dataset with its own train/val/test split; "
                "choose one of fractions, kfold"
            )
        return {name: own[name] for name in SPLITS}
    if spec.seed is not None:
        seed = spec.seed
    strata = labels if (spec.stratify and labels is not None) else None
    gen = torch.Generator().manual_seed(seed)
    if isinstance(spec, FractionsSplit):
        train, val, _ = spec.fractions
        part = _fraction_parts(torch.arange(num_graphs), strata, (train, train + val), gen)
        return {name: torch.nonzero(part == i).view(-1) for i, name in enumerate(SPLITS)}
    return kfold_indices(num_graphs, spec.k, spec.fold, spec.val_fraction, strata, gen)


def _grouped_order(index: Tensor, strata: Tensor | None, gen: torch.Generator) -> Tensor:
    """`index` shuffled, then grouped by stratum (random order inside each stratum)."""
    shuffled = index[torch.randperm(index.numel(), generator=gen)]
    if strata is None:
        return shuffled
    return shuffled[torch.argsort(strata[shuffled], stable=True)]


def _rank_in_group(keys: Tensor) -> tuple[Tensor, Tensor]:
    """For sorted `keys`: each item's rank inside its run of equal keys, and the run's size."""
    _, counts = torch.unique_consecutive(keys, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    group = torch.repeat_interleave(torch.arange(counts.numel()), counts)
    return torch.arange(keys.numel()) - starts[group], counts[group]


def _fraction_parts(
    index: Tensor, strata: Tensor | None, cuts: tuple[float, float], gen: torch.Generator
) -> Tensor:
    """[len(index)] part 0/1/2 of each item of `index` (by position): the first `cuts[0]` of
    each stratum, up to `cuts[1]`, and the rest."""
    order = _grouped_order(torch.arange(index.numel()), None if strata is None else strata[index],
                           gen)  # fmt: skip
    keys = torch.zeros(index.numel(), dtype=torch.long) if strata is None else strata[index][order]
    rank, size = _rank_in_group(keys)
    first = torch.round(size * cuts[0]).long()
    second = torch.round(size * cuts[1]).long()
    part_sorted = (rank >= first).long() + (rank >= second).long()
    part = torch.empty_like(part_sorted)
    part[order] = part_sorted
    return part


def kfold_indices(
    num_graphs: int,
    k: int,
    fold: int,
    val_fraction: float,
    strata: Tensor | None,
    gen: torch.Generator,
) -> dict[str, Tensor]:
    """Fold `fold` of k as the test set; `val_fraction` of the other folds (stratified) as val."""
    if num_graphs < k:
        raise ValueError(f"data.split.k ({k}) is larger than the number of graphs ({num_graphs})")
    order = _grouped_order(torch.arange(num_graphs), strata, gen)
    fold_of = torch.empty(num_graphs, dtype=torch.long)
    fold_of[order] = torch.arange(num_graphs) % k  # deals each stratum round-robin over folds
    test = torch.nonzero(fold_of == fold).view(-1)
    rest = torch.nonzero(fold_of != fold).view(-1)
    part = _fraction_parts(rest, strata, (1.0 - val_fraction, 1.0), gen)
    return {"train": rest[part == 0], "val": rest[part == 1], "test": test}


__all__ = ["SPLITS", "kfold_indices", "split_indices"]
