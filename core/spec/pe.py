"""Positional encodings of graph nodes: a list of scales, one variant per kind."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from core.spec.common import Section


class RwsePE(Section):
    """Random-walk structural encoding: return probabilities after 1..L steps, for every L in
    `walk_lengths`, concatenated (several lengths = several scales)."""

    kind: Literal["rwse"]
    walk_lengths: Annotated[list[Annotated[int, Field(ge=1, le=64)]], Field(min_length=1)] = Field(
        default_factory=lambda: [8, 16]
    )
    dim: Annotated[int, Field(ge=1, le=512, description="width after the encoder")] = 24

    @property
    def raw_dim(self) -> int:
        return sum(self.walk_lengths)


class LaplacianPE(Section):
    """The `k` eigenvectors of the symmetric normalised Laplacian after the trivial one (zero
    columns where a graph has fewer than k + 1 nodes)."""

    kind: Literal["laplacian"]
    k: Annotated[int, Field(ge=1, le=64)] = 8
    dim: Annotated[int, Field(ge=1, le=512, description="width after the encoder")] = 16
    random_sign_flip: bool = Field(
        default=True, description="flip each eigenvector's sign at random, anew every epoch"
    )

    @property
    def raw_dim(self) -> int:
        return self.k


PositionalEncoding = Annotated[RwsePE | LaplacianPE, Field(discriminator="kind")]
