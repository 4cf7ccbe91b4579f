"""How a data set of items (graphs, texts, sites) is split into train / val / test: the data's
own split, seeded fractions, or a seeded k-fold. One variant per kind."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.spec.common import Section


class OwnSplit(Section):
    """The dataset's published split (ZINC: the benchmarking-gnns 10k/1k/1k split)."""

    kind: Literal["own"]


class FractionsSplit(Section):
    """A seeded random split of the graphs into train/val/test fractions."""

    kind: Literal["fractions"]
    fractions: tuple[
        Annotated[float, Field(gt=0, lt=1)],
        Annotated[float, Field(ge=0, lt=1)],
        Annotated[float, Field(ge=0, lt=1)],
    ] = (0.8, 0.1, 0.1)
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = Field(
        default=None, description="default: training.seed"
    )
    stratify: bool = Field(default=True, description="keep class proportions (classification)")

    @model_validator(mode="after")
    def _sums_to_one(self) -> FractionsSplit:
        total = sum(self.fractions)
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split.fractions {list(self.fractions)} must sum to 1, not {total:g}")
        return self


class KFoldSplit(Section):
    """Fold `fold` of a seeded k-fold split is the test set; `val_fraction` of the rest is
    held out for validation."""

    kind: Literal["kfold"]
    k: Annotated[int, Field(ge=2, le=100)] = 10
    fold: Annotated[int, Field(ge=0, le=99)] = 0
    val_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.1
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = Field(
        default=None, description="default: training.seed"
    )
    stratify: bool = Field(default=True, description="keep class proportions (classification)")

    @model_validator(mode="after")
    def _fold_in_range(self) -> KFoldSplit:
        if self.fold >= self.k:
            raise ValueError(f"split.fold ({self.fold}) must be in 0..{self.k - 1} (split.k - 1)")
        return self


AnySplit = Annotated[OwnSplit | FractionsSplit | KFoldSplit, Field(discriminator="kind")]
DerivedSplit = Annotated[FractionsSplit | KFoldSplit, Field(discriminator="kind")]
