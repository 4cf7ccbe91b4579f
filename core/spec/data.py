"""Data formats every family may read, one variant per `format`; paths are relative to the data
root (never absolute, never `..`).

Graph formats (one graph of nodes): `planetoid`, `edge_list`. Graph-set formats (many small
graphs): `zinc`, `tu`, `tu_upload`.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from core.spec.common import Section
from core.spec.splits import AnySplit, DerivedSplit, FractionsSplit, OwnSplit


def relative_path(value: str) -> str:
    """`value` if it is a path relative to the data root without `..`; else ValueError."""
    parts = PurePosixPath(value.replace("\\", "/")).parts
    if value.startswith(("/", "\\")) or ".." in parts or ":" in value:
        raise ValueError(
            "must be a path relative to the data root, without '..' (e.g. 'mygraph/edges.csv')"
        )
    return value


# A file or folder under the data root (checked by `relative_path`).
DataPath = Annotated[str, Field(min_length=1, max_length=500), AfterValidator(relative_path)]


class PlanetoidData(Section):
    """A Planetoid dataset in PyG's raw layout: `<data root>/<name>/raw/ind.<name>.*`."""

    format: Literal["planetoid"]
    name: Literal["Cora", "CiteSeer", "PubMed"] = "Cora"
    normalize_features: bool = Field(default=True, description="rows of x sum to 1")


class EdgeListData(Section):
    """A user edge list: CSV/TSV with `src,dst` columns, paths relative to the data root.

    Without `features_path`, nodes get `features: learnable` (a trained embedding table) or
    `one_hot` (identity features).
    """

    format: Literal["edge_list"]
    path: Annotated[str, Field(min_length=1)]
    features_path: str | None = None
    labels_path: str | None = None
    features: Literal["file", "learnable", "one_hot"] | None = Field(
        default=None, description="default: 'file' with features_path, else 'learnable'"
    )
    learnable_dim: Annotated[int, Field(ge=1, le=4096)] = 64
    directed: bool = False
    normalize_features: bool = False
    header: Literal["auto"] | bool = Field(
        default="auto",
        description="whether the first row names the columns; auto: when it names the ends "
        "(src,dst / from,to / u,v / node1,node2 / source_id,target_id ...) or is not "
        "numeric while the rows are",
    )
    src_column: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="the header's source column (default: the first)"
    )
    dst_column: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        default=None, description="the header's target column (default: the second)"
    )
    comment: Annotated[str, Field(min_length=1, max_length=3)] | None = Field(
        default=None,
        description="lines starting with this are comments (default: none; '#' starts a "
        "node id such as '#python' unless you say so)",
    )
    delimiter: Literal["auto", ",", "\t", ";", " "] = Field(
        default="auto", description="auto: tab, comma or ';' from the first line, else spaces"
    )

    @field_validator("path", "features_path", "labels_path")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        return None if value is None else relative_path(value)

    @model_validator(mode="after")
    def _features_source(self) -> EdgeListData:
        if (self.src_column or self.dst_column) and self.header is False:
            raise ValueError("data.src_column / data.dst_column name header columns; "
                             "data.header is false")  # fmt: skip
        if self.features == "file" and not self.features_path:
            raise ValueError("data.features is 'file' but data.features_path is not set")
        if self.features_path and self.features not in (None, "file"):
            raise ValueError(
                f"data.features is {self.features!r} but data.features_path is set; "
                "drop one of them"
            )
        return self

    @property
    def feature_source(self) -> Literal["file", "learnable", "one_hot"]:
        if self.features is not None:
            return self.features
        return "file" if self.features_path else "learnable"


GraphData = Annotated[PlanetoidData | EdgeListData, Field(discriminator="format")]


# --- graph sets -----------------------------------------------------------------------------------


class ZincData(Section):
    """ZINC 12k: `<root>/ZINC/graphium_ZINC_bench_gnn/` SMILES + score (= logP - SA, not
    normalised), graphs built with RDKit and the benchmarking-gnns atom vocabulary."""

    format: Literal["zinc"]
    subset: bool = Field(default=True, description="the 12k subset; the full 250k is not shipped")
    max_graphs: Annotated[int, Field(ge=3, le=100_000_000)] | None = Field(
        default=None,
        description="keep at most this many graphs, the first rows of each split in proportion "
        "(for quick runs and CI)",
    )
    split: AnySplit = Field(default_factory=lambda: OwnSplit(kind="own"))


class TUData(Section):
    """A TU collection dataset in its raw layout: `<root>/<name>/raw/<name>_A.txt` etc."""

    format: Literal["tu"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]*$", max_length=100)]
    use_node_attributes: bool = Field(
        default=False, description="append `<name>_node_attributes.txt` to the one-hot labels"
    )
    missing_targets: Literal["error", "drop"] = Field(
        default="error",
        description="graphs whose regression target is missing (NaN): refuse the dataset "
        "naming them, or leave those graphs out (logged, listed in data_warnings)",
    )
    split: DerivedSplit = Field(default_factory=lambda: FractionsSplit(kind="fractions"))


class TUUploadData(Section):
    """A user dataset in TU raw layout: a directory (relative to the data root) holding one
    `<NAME>_A.txt`, `<NAME>_graph_indicator.txt`, `<NAME>_graph_labels.txt`, ... (or a `raw/`
    subdirectory holding them)."""

    format: Literal["tu_upload"]
    path: DataPath
    use_node_attributes: bool = True
    missing_targets: Literal["error", "drop"] = Field(
        default="error",
        description="graphs whose regression target is missing (NaN): refuse the dataset "
        "naming them, or leave those graphs out (logged, listed in data_warnings)",
    )
    split: DerivedSplit = Field(default_factory=lambda: FractionsSplit(kind="fractions"))


GraphSetData = Annotated[ZincData | TUData | TUUploadData, Field(discriminator="format")]
