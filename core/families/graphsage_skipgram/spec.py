"""Spec of the `graphsage_skipgram` family: node embeddings from random-walk co-occurrence.

Its data formats (`planetoid`, `edge_list`) are shared: `core.spec.data`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.spec.common import BaseJobSpec, Section
from core.spec.data import GraphData


class WalkSpec(Section):
    walks_per_node: Annotated[int, Field(ge=1, le=1000)] = 10
    walk_length: Annotated[int, Field(ge=2, le=1000)] = 20
    window: Annotated[int, Field(ge=1, le=100)] = 5
    mode: Literal["materialized", "streaming"] = Field(
        default="materialized",
        description="materialized: walks and pairs once; streaming: new walks every epoch, "
        "generated chunk by chunk so all pairs never sit in memory",
    )
    epoch_fraction: Annotated[float, Field(gt=0, le=1)] = Field(
        default=1.0, description="fraction of the training pairs one epoch visits"
    )

    @model_validator(mode="after")
    def _window_fits(self) -> WalkSpec:
        if self.window >= self.walk_length:
            raise ValueError(
                f"walks.window ({self.window}) must be smaller than walks.walk_length "
                f"({self.walk_length})"
            )
        return self


class NegativeSpec(Section):
    per_positive: Annotated[int, Field(ge=1, le=100)] = 5
    power: Annotated[float, Field(ge=0, le=2, description="degree exponent")] = 0.75


class ValidationSpec(Section):
    val_fraction: Annotated[float, Field(ge=0, lt=1)] = 0.1
    max_val_pairs: Annotated[int, Field(ge=1, le=100_000_000)] = 200_000


class SageModelSpec(Section):
    layers: Annotated[int, Field(ge=1, le=8)] = 2
    hidden_dim: Annotated[int, Field(ge=1, le=8192)] = 256
    out_dim: Annotated[int, Field(ge=1, le=8192)] = 128
    aggregator: Literal["mean", "max", "sum"] = "mean"
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    normalize: bool = Field(default=True, description="L2-normalise the output embeddings")
    temperature: Annotated[float, Field(gt=0, le=1000)] = Field(
        default=1.0, description="logits are dot products divided by this"
    )
    activation: Literal["relu", "gelu", "elu", "prelu"] = "relu"
    readout: Literal["last", "concat"] = Field(
        default="last",
        description="the embeddings users get: the last layer's (what the objective trains), "
        "or every layer's output, L2-normalised, side by side (probes better on Cora)",
    )


class ProbeSpec(Section):
    """Logistic-regression probe of the frozen embeddings (needs labels and splits)."""

    enabled: bool = True
    every_n_epochs: Annotated[int, Field(ge=1, le=100_000)] = 5


class GraphSageSkipGramSpec(BaseJobSpec):
    family: Literal["graphsage_skipgram"]
    data: GraphData
    walks: WalkSpec = Field(default_factory=WalkSpec)
    negatives: NegativeSpec = Field(default_factory=NegativeSpec)
    validation: ValidationSpec = Field(default_factory=ValidationSpec)
    model: SageModelSpec = Field(default_factory=SageModelSpec)
    probe: ProbeSpec = Field(default_factory=ProbeSpec)
