"""Text data formats any family may read, one variant per `format`; paths are relative to the
data root (never absolute, never `..`).

- `sick`: the SICK corpus as shipped (`SICK_train.txt`, `SICK_trial.txt`,
  `SICK_test_annotated.txt`; its own train / trial / test split used as train / val / test).
- `scored_pairs`: any CSV/TSV with two text columns and a numeric score.
- `triplets`: JSON `{"triplets": [{anchor, positive, negative}, ...]}` or CSV
  `anchor,positive,negative`.

Pair formats derive triplets (`TripletDerivation`): a positive is a pair that is entailed or
scores at least `positive_min_score`; its negatives are the anchor's own partners that score at
most `negative_max_score`, plus `random_negatives` seeded random texts of the same split that
were never paired with the anchor.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from core.spec.common import Section
from core.spec.data import DataPath
from core.spec.splits import FractionsSplit, OwnSplit


class TripletDerivation(Section):
    """How scored pairs become (anchor, positive, negative) triplets."""

    positive_min_score: Annotated[float, Field(ge=-1e9, le=1e9)] | None = Field(
        default=4.0,
        description="a pair scoring at least this is a positive; null: score alone "
        "never makes a positive",
    )
    entailment_positive: bool = Field(
        default=True, description="an entailed pair is a positive whatever its score (SICK)"
    )
    negative_max_score: Annotated[float, Field(ge=-1e9, le=1e9)] | None = Field(
        default=2.5,
        description="the anchor's own partners scoring at most this are negatives; null: none",
    )
    random_negatives: Annotated[int, Field(ge=0, le=50)] = Field(
        default=3,
        description="seeded random texts of the split, never paired with the anchor, per positive",
    )
    symmetric: bool = Field(
        default=True, description="each positive pair gives two triplets: a and b as anchor"
    )
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = Field(
        default=None, description="default: training.seed"
    )

    @model_validator(mode="after")
    def _some_positive(self) -> TripletDerivation:
        if self.positive_min_score is None and not self.entailment_positive:
            raise ValueError(
                "triplets.positive_min_score is null and triplets.entailment_positive is false: "
                "nothing would be a positive"
            )
        if (
            self.positive_min_score is not None
            and self.negative_max_score is not None
            and self.negative_max_score >= self.positive_min_score
        ):
            raise ValueError(
                f"triplets.negative_max_score ({self.negative_max_score}) must be below "
                f"triplets.positive_min_score ({self.positive_min_score})"
            )
        if self.negative_max_score is None and self.random_negatives == 0:
            raise ValueError(
                "triplets.negative_max_score is null and triplets.random_negatives is 0: "
                "no negatives"
            )
        return self


class SickData(Section):
    """SICK as shipped: `<data root>/<path>/SICK_{train,trial,test_annotated}.txt`."""

    format: Literal["sick"]
    path: DataPath = "SICK"
    triplets: TripletDerivation = Field(default_factory=TripletDerivation)
    max_pairs: Annotated[int, Field(ge=3, le=10**9)] | None = Field(
        default=None,
        description="keep at most this many pairs, the first rows of each split in proportion "
        "(quick runs and tests)",
    )


def check_split_source(data: Any) -> None:
    """A text data section's split comes from its `split_column` (kind `own`, set implicitly
    when only the column is given) or from `split`; ValueError where the two disagree."""
    if isinstance(data.split, OwnSplit) and data.split_column is None:
        raise ValueError("data.split.kind is 'own' but data.split_column is not set")
    if data.split_column is not None and not isinstance(data.split, OwnSplit):
        if "split" in data.model_fields_set:
            raise ValueError(
                "data.split_column is set: use data.split.kind 'own' (or drop split_column)"
            )
        data.__dict__["split"] = OwnSplit(kind="own")


class ScoredPairsData(Section):
    """A CSV (or TSV: `.tsv`/`.txt` or `delimiter`) of two text columns and a numeric score."""

    format: Literal["scored_pairs"]
    path: DataPath
    text_a_column: str = "sentence_a"
    text_b_column: str = "sentence_b"
    score_column: str = "score"
    id_column: str | None = Field(default=None, description="pair ids; default: the row number")
    entailment_column: str | None = Field(
        default=None, description="a column whose value `entailment_value` marks a positive"
    )
    entailment_value: str = "ENTAILMENT"
    delimiter: Literal[",", "\t", ";", "|"] | None = Field(
        default=None, description="default: tab for .tsv/.txt, else comma"
    )
    split_column: str | None = Field(
        default=None,
        description="a column of train/val/test per row (split.kind 'own'); else split.fractions",
    )
    split: Annotated[OwnSplit | FractionsSplit, Field(discriminator="kind")] = Field(
        default_factory=lambda: FractionsSplit(kind="fractions")
    )
    triplets: TripletDerivation = Field(default_factory=TripletDerivation)

    @model_validator(mode="after")
    def _split_source(self) -> ScoredPairsData:
        check_split_source(self)
        if self.entailment_column is None and self.triplets.positive_min_score is None:
            raise ValueError(
                "data.triplets.positive_min_score is null and data.entailment_column is not set: "
                "nothing would be a positive"
            )
        return self


class TripletsData(Section):
    """Ready-made triplets: JSON `{"triplets": [{anchor, positive, negative}]}` or CSV with
    `anchor,positive,negative` columns, split by seeded fractions of the triplets."""

    format: Literal["triplets"]
    path: DataPath
    split: FractionsSplit = Field(default_factory=lambda: FractionsSplit(kind="fractions"))


TextData = Annotated[SickData | ScoredPairsData | TripletsData, Field(discriminator="format")]

__all__ = ["ScoredPairsData", "SickData", "TextData", "TripletDerivation", "TripletsData"]
