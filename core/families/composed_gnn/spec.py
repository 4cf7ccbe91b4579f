"""Spec of the `composed_gnn` family (seed 003, QuantumGrav's config-driven `Trainer`): a GNN
composed layer by layer from the spec, pooled, joined with a small network over graph
statistics, and read out by one or more heads, each with its own target, loss and weight.

Every name resolves through a closed table here (layers, activations, poolings, graph
statistics, transforms, monitors): the seed's `!pyobject` imports and signature strings become
registry names and typed, allow-listed keyword arguments. Importable without torch.

Keys of the seed that make no sense in a service are refused with the reason
(`REFUSED_KEYS`); `docs/composed-gnn.md` maps the others to spec keys.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from core.spec.common import BaseJobSpec, Mode, Section, TrainingSpec
from core.spec.data import DataPath, TUData, TUUploadData, ZincData
from core.spec.splits import FractionsSplit, KFoldSplit, OwnSplit
from core.spec.tasks import MetricForBest, pick_metric_for_best

Width = Annotated[int, Field(ge=1, le=65_536)]
Rate = Annotated[float, Field(ge=0, lt=1)]
Input = Literal["x", "edge_index", "edge_attr"]
ActivationName = Literal["relu", "gelu", "elu", "leaky_relu", "tanh", "identity"]
HeadName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=40)]

# The seed's keys that a service cannot honour, refused with the reason (section -> key -> why).
REFUSED_KEYS: dict[str, dict[str, str]] = {
    "training": {
        "path": "the service owns the run directory (download outputs through the API)",
        "num_workers": "the service sizes data loading itself; worker counts are not a spec key",
        "pin_memory": "the service decides memory pinning for the device it picks",
        "device": "use resources.accelerator (auto, cpu, cuda)",
        "optimizer_type": "use optimizer.name (adam, adamw, sgd)",
        "optimizer_args": "use optimizer.lr / optimizer.weight_decay / optimizer.kwargs",
        "optimizer_kwargs": "use optimizer.lr / optimizer.weight_decay / optimizer.kwargs",
        "num_epochs": "use training.epochs",
        "checkpoint_at": "use checkpoint.every_n_epochs",
    },
    "data": {
        "files": "data are named relative to the data root: data.format with data.path/name",
        "output": "the service owns where processed data and outputs go",
        "reader": "readers are data.format values (tu, tu_upload, zinc, zarr), not Python",
        "pre_transform": "use data.transforms, names from a closed registry",
        "pre_filter": "use data.filters (min_nodes, max_nodes)",
        "n_processes": "the service sizes data processing itself; worker counts are not a key",
        "chunksize": "the service sizes data processing itself",
        "validate_data": "data are always validated",
    },
    "spec": {
        "criterion": "each model.heads entry names its loss from a registry",
        "apply_model": "the model's forward is fixed by model.encoder inputs; no custom calls",
    },
}


def _refuse(section: str, data: Any) -> Any:
    if isinstance(data, dict):
        found = [k for k in REFUSED_KEYS[section] if k in data]
        if found:
            where = "" if section == "spec" else f"{section}."
            raise ValueError(
                "; ".join(f"{where}{k} is refused: {REFUSED_KEYS[section][k]}" for k in found)
            )
    return data


# --- encoder layers: one model per kind, typed kwargs (extra keys are errors) --------------------


class _Kwargs(Section):
    pass


class GcnKwargs(_Kwargs):
    improved: bool = False
    add_self_loops: bool = True
    normalize: bool = True
    bias: bool = True


class SageKwargs(_Kwargs):
    aggr: Literal["mean", "max", "add", "sum"] = "mean"
    normalize: bool = False
    root_weight: bool = True
    project: bool = False
    bias: bool = True


class GinKwargs(_Kwargs):
    eps: Annotated[float, Field(ge=-10, le=10)] = 0.0
    train_eps: bool = False
    hidden: Width | None = Field(default=None, description="MLP hidden width (default: out)")
    batch_norm: bool = Field(default=False, description="BatchNorm1d inside the MLP (GIN paper)")


class GatKwargs(_Kwargs):
    heads: Annotated[int, Field(ge=1, le=64)] = 1
    concat: bool = True
    negative_slope: Annotated[float, Field(ge=0, le=1)] = 0.2
    dropout: Rate = 0.0
    add_self_loops: bool = True
    bias: bool = True


class GatV2Kwargs(GatKwargs):
    share_weights: bool = False


class GraphConvKwargs(_Kwargs):
    aggr: Literal["add", "mean", "max"] = "add"
    bias: bool = True


class TransformerConvKwargs(_Kwargs):
    heads: Annotated[int, Field(ge=1, le=64)] = 1
    concat: bool = True
    beta: bool = False
    dropout: Rate = 0.0
    root_weight: bool = True
    bias: bool = True


class LinearKwargs(_Kwargs):
    bias: bool = True


class NoKwargs(_Kwargs):
    pass


class GeluKwargs(_Kwargs):
    approximate: Literal["none", "tanh"] = "none"


class EluKwargs(_Kwargs):
    alpha: Annotated[float, Field(gt=0, le=10)] = 1.0


class LeakyReluKwargs(_Kwargs):
    negative_slope: Annotated[float, Field(ge=0, le=1)] = 0.01


class DropoutKwargs(_Kwargs):
    p: Rate = 0.5


class BatchNormKwargs(_Kwargs):
    eps: Annotated[float, Field(gt=0, le=1)] = 1e-5
    momentum: Annotated[float, Field(gt=0, le=1)] = 0.1
    affine: bool = True


class LayerNormKwargs(_Kwargs):
    eps: Annotated[float, Field(gt=0, le=1)] = 1e-5
    elementwise_affine: bool = True


class _Layer(Section):
    """One encoder entry. `inputs` are the tensors it is called with, in order (the seed's
    signature string "x, edge_index"); `in` (optional) must equal the inferred input width;
    `skip: true` adds the entry's input to its output (a residual; widths must agree)."""

    # `in` is a Python keyword: the field is `in_`, spelt `in` in specs and in spec.yaml.
    model_config = ConfigDict(serialize_by_alias=True, validate_by_alias=True)

    # What the kind accepts: the inputs it needs, those it may take, and whether it sets a width.
    REQUIRED: ClassVar[tuple[str, ...]] = ("x",)
    OPTIONAL: ClassVar[tuple[str, ...]] = ()
    HAS_OUT: ClassVar[bool] = False

    in_: Width | None = Field(default=None, alias="in", description="must match the inferred")
    inputs: list[Input] | None = Field(default=None, description="default: the required inputs")
    skip: bool = False

    def resolved_inputs(self) -> list[str]:
        return list(self.inputs) if self.inputs is not None else list(self.REQUIRED)

    def width_out(self, width_in: int | None) -> int | None:
        return getattr(self, "out", None) if self.HAS_OUT else width_in


class _Conv(_Layer):
    REQUIRED: ClassVar[tuple[str, ...]] = ("x", "edge_index")
    HAS_OUT: ClassVar[bool] = True
    out: Width


class GcnLayer(_Conv):
    layer: Literal["gcn"]
    kwargs: GcnKwargs = Field(default_factory=GcnKwargs)


class SageLayer(_Conv):
    layer: Literal["sage"]
    kwargs: SageKwargs = Field(default_factory=SageKwargs)


class GinLayer(_Conv):
    layer: Literal["gin"]
    kwargs: GinKwargs = Field(default_factory=GinKwargs)


class GineLayer(_Conv):
    REQUIRED: ClassVar[tuple[str, ...]] = ("x", "edge_index", "edge_attr")
    layer: Literal["gine"]
    kwargs: GinKwargs = Field(default_factory=GinKwargs)


class GatLayer(_Conv):
    OPTIONAL: ClassVar[tuple[str, ...]] = ("edge_attr",)
    layer: Literal["gat"]
    kwargs: GatKwargs = Field(default_factory=GatKwargs)


class GatV2Layer(_Conv):
    OPTIONAL: ClassVar[tuple[str, ...]] = ("edge_attr",)
    layer: Literal["gatv2"]
    kwargs: GatV2Kwargs = Field(default_factory=GatV2Kwargs)


class GraphConvLayer(_Conv):
    layer: Literal["graph_conv"]
    kwargs: GraphConvKwargs = Field(default_factory=GraphConvKwargs)


class TransformerConvLayer(_Conv):
    OPTIONAL: ClassVar[tuple[str, ...]] = ("edge_attr",)
    layer: Literal["transformer_conv"]
    kwargs: TransformerConvKwargs = Field(default_factory=TransformerConvKwargs)


class LinearLayer(_Layer):
    HAS_OUT: ClassVar[bool] = True
    layer: Literal["linear"]
    out: Width
    kwargs: LinearKwargs = Field(default_factory=LinearKwargs)


class ReluLayer(_Layer):
    layer: Literal["relu"]
    kwargs: NoKwargs = Field(default_factory=NoKwargs)


class GeluLayer(_Layer):
    layer: Literal["gelu"]
    kwargs: GeluKwargs = Field(default_factory=GeluKwargs)


class EluLayer(_Layer):
    layer: Literal["elu"]
    kwargs: EluKwargs = Field(default_factory=EluKwargs)


class LeakyReluLayer(_Layer):
    layer: Literal["leaky_relu"]
    kwargs: LeakyReluKwargs = Field(default_factory=LeakyReluKwargs)


class TanhLayer(_Layer):
    layer: Literal["tanh"]
    kwargs: NoKwargs = Field(default_factory=NoKwargs)


class DropoutLayer(_Layer):
    layer: Literal["dropout"]
    kwargs: DropoutKwargs = Field(default_factory=DropoutKwargs)


class BatchNormLayer(_Layer):
    layer: Literal["batch_norm"]
    kwargs: BatchNormKwargs = Field(default_factory=BatchNormKwargs)


class LayerNormLayer(_Layer):
    layer: Literal["layer_norm"]
    kwargs: LayerNormKwargs = Field(default_factory=LayerNormKwargs)


EncoderLayer = Annotated[
    GcnLayer
    | SageLayer
    | GinLayer
    | GineLayer
    | GatLayer
    | GatV2Layer
    | GraphConvLayer
    | TransformerConvLayer
    | LinearLayer
    | ReluLayer
    | GeluLayer
    | EluLayer
    | LeakyReluLayer
    | TanhLayer
    | DropoutLayer
    | BatchNormLayer
    | LayerNormLayer,
    Field(discriminator="layer"),
]
LAYER_NAMES: tuple[str, ...] = (
    "gcn", "sage", "gin", "gine", "gat", "gatv2", "graph_conv", "transformer_conv", "linear",
    "relu", "gelu", "elu", "leaky_relu", "tanh", "dropout", "batch_norm", "layer_norm",
)  # fmt: skip


def infer_widths(
    encoder: list[Any], width_in: int | None, edge_width: int | None = 1
) -> tuple[list[tuple[int | None, int | None]], list[str]]:
    """Each entry's (input, output) width from the node input width `width_in` (None: not known
    yet, as when the spec is validated without the data), and every error, naming
    `model.encoder[i].<field>`. `edge_width` None: the data have no edge features."""
    widths: list[tuple[int | None, int | None]] = []
    errors: list[str] = []
    width = width_in
    for i, entry in enumerate(encoder):
        where = f"model.encoder[{i}]"
        if entry.in_ is not None and width is not None and entry.in_ != width:
            source = "the node inputs give" if i == 0 else f"model.encoder[{i - 1}] gives"
            errors.append(f"{where}.in is {entry.in_} but {source} {width}")
        if width is None:
            width = entry.in_
        inputs = entry.resolved_inputs()
        allowed = (*entry.REQUIRED, *entry.OPTIONAL)
        missing = [r for r in entry.REQUIRED if r not in inputs]
        unknown = [x for x in inputs if x not in allowed]
        if missing or unknown or len(set(inputs)) != len(inputs) or inputs[0] != "x":
            errors.append(
                f"{where}.inputs {inputs} do not fit layer {entry.layer!r}: it takes "
                f"{list(entry.REQUIRED)} (x first)"
                + (f", optionally {list(entry.OPTIONAL)}" if entry.OPTIONAL else "")
            )
        if "edge_attr" in inputs and edge_width is None:
            errors.append(f"{where}.inputs name edge_attr but the data have no edge features")
        out = entry.width_out(width)
        heads = getattr(entry.kwargs, "heads", 1)
        if getattr(entry.kwargs, "concat", False) and out is not None and out % heads:
            errors.append(
                f"{where}.out ({out}) must be divisible by kwargs.heads ({heads}) with concat"
            )
        if entry.skip and width is not None and out is not None and out != width:
            errors.append(f"{where}.skip adds the input ({width}) to the output ({out}): "
                          "their widths must agree")  # fmt: skip
        widths.append((width, out))
        width = out
    return widths, errors


# --- pooling, graph features, heads -------------------------------------------------------------

PoolName = Literal["mean", "add", "max"]
GRAPH_FEATURES: tuple[str, ...] = (
    "num_nodes", "num_edges", "density", "mean_degree", "max_degree", "min_degree",
    "num_isolated", "log_num_nodes",
)  # fmt: skip
GraphFeatureName = Literal[
    "num_nodes", "num_edges", "density", "mean_degree", "max_degree", "min_degree",
    "num_isolated", "log_num_nodes",
]  # fmt: skip


class PoolingSpec(Section):
    """Graph readouts of the encoder's node outputs, combined (the seed's `pooling_layers` and
    `aggregate_pooling_type`): `cat` widens to len(ops) x width, `sum` / `mean` keep it."""

    ops: Annotated[list[PoolName], Field(min_length=1, max_length=3)] = Field(
        default_factory=lambda: ["mean"]
    )
    combine: Literal["cat", "sum", "mean"] = "cat"


class GraphFeaturesSpec(Section):
    """Named statistics of each graph (computed per batch, vectorised) through an MLP of
    `dims` with `activation` after every layer (the seed's graph_features_net), joined to the
    pooled vector. `standardize`: scale each statistic by the training graphs' mean and std."""

    features: Annotated[list[GraphFeatureName], Field(min_length=1, max_length=8)]
    dims: Annotated[list[Width], Field(min_length=1, max_length=8)] = Field(
        default_factory=lambda: [32]
    )
    activation: ActivationName = "relu"
    standardize: bool = True


LossName = Literal["cross_entropy", "bce_logits", "mse", "mae", "huber"]
TASK_HEAD_LOSSES: dict[str, tuple[str, ...]] = {
    "graph_classification": ("cross_entropy", "bce_logits"),
    "graph_regression": ("mse", "mae", "huber"),
}


class HeadSpec(Section):
    """A downstream head (the seed's `downstream_tasks` entry): an MLP over the graph vector
    with hidden `dims` and `activation` between layers (none after the last), its `target`, its
    `loss` and its `weight` in the total loss. Output width: the number of classes
    (cross_entropy), else 1."""

    name: HeadName
    dims: Annotated[list[Width], Field(max_length=8)] = Field(default_factory=list)
    activation: ActivationName = "relu"
    dropout: Rate = 0.0
    target: Annotated[str, Field(min_length=1, max_length=100)] | None = Field(
        default=None, description="a target of the data (default: the first)"
    )
    loss: LossName | None = Field(default=None, description="default: the task's first")
    weight: Annotated[float, Field(ge=0, le=1e6)] = 1.0


class ComposedModelSpec(Section):
    encoder: Annotated[list[EncoderLayer], Field(min_length=1, max_length=64)]
    pooling: PoolingSpec = Field(default_factory=PoolingSpec)
    graph_features: GraphFeaturesSpec | None = None
    heads: Annotated[list[HeadSpec], Field(min_length=1, max_length=16)]


# --- data ----------------------------------------------------------------------------------------


class OneHotDegree(Section):
    """PyG `OneHotDegree`: the one-hot node degree appended to x (or replacing it)."""

    name: Literal["one_hot_degree"]
    max_degree: Annotated[int, Field(ge=1, le=100_000)] | None = Field(
        default=None, description="default: the largest degree in the data"
    )
    cat: bool = True


class Constant(Section):
    """PyG `Constant`: a constant node feature appended to x (or replacing it)."""

    name: Literal["constant"]
    value: Annotated[float, Field(ge=-1e6, le=1e6)] = 1.0
    cat: bool = True


class ToUndirected(Section):
    name: Literal["to_undirected"]


class AddSelfLoops(Section):
    name: Literal["add_self_loops"]


class NormalizeFeatures(Section):
    """PyG `NormalizeFeatures`: each node's features sum to 1."""

    name: Literal["normalize_features"]


Transform = Annotated[
    OneHotDegree | Constant | ToUndirected | AddSelfLoops | NormalizeFeatures,
    Field(discriminator="name"),
]
TRANSFORM_NAMES = ("to_undirected", "add_self_loops", "one_hot_degree", "constant",
                   "normalize_features")  # fmt: skip


class FiltersSpec(Section):
    """Graphs left out before splitting (the seed's `pre_filter`), counted in data_warnings."""

    min_nodes: Annotated[int, Field(ge=0, le=10_000_000)] | None = None
    max_nodes: Annotated[int, Field(ge=1, le=10_000_000)] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> FiltersSpec:
        low, high = self.min_nodes, self.max_nodes
        if low is not None and high is not None and low > high:
            raise ValueError(f"data.filters.min_nodes ({low}) exceeds max_nodes ({high})")
        return self


class ShuffledFractionsSplit(FractionsSplit):
    """Seeded fractions; `shuffle: false` cuts the graphs in their stored order (the seed's
    `data.shuffle`), unstratified."""

    shuffle: bool = True


ComposedSplit = Annotated[ShuffledFractionsSplit | KFoldSplit, Field(discriminator="kind")]
ComposedAnySplit = Annotated[
    OwnSplit | ShuffledFractionsSplit | KFoldSplit, Field(discriminator="kind")
]


class _Prep(Section):
    transforms: Annotated[list[Transform], Field(max_length=16)] = Field(default_factory=list)
    filters: FiltersSpec = Field(default_factory=FiltersSpec)

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        return _refuse("data", data)


class ComposedTUData(TUData, _Prep):
    split: ComposedSplit = Field(default_factory=lambda: ShuffledFractionsSplit(kind="fractions"))


class ComposedTUUploadData(TUUploadData, _Prep):
    split: ComposedSplit = Field(default_factory=lambda: ShuffledFractionsSplit(kind="fractions"))


ZincTarget = Literal["score", "logp", "SA"]


class ComposedZincData(ZincData, _Prep):
    """ZINC 12k with the targets named in `targets` (`score` = logp - SA, `logp`, `SA`: all
    three columns of the source CSV), one column each of the multi-target y."""

    targets: Annotated[list[ZincTarget], Field(min_length=1, max_length=3)] = Field(
        default_factory=lambda: ["score"]
    )
    split: ComposedAnySplit = Field(default_factory=lambda: OwnSplit(kind="own"))


class ZarrData(_Prep):
    """Graphs from named arrays of a zarr group (the seed's reader, as keys): dense adjacency
    `[G, n, n]`, the node count of each graph `[G]`, node feature arrays `[G, n]` or
    `[G, n, f]`, and named graph targets `[G]` (classes: integers)."""

    format: Literal["zarr"]
    path: DataPath
    adjacency: Annotated[str, Field(min_length=1, max_length=200)]
    num_nodes: Annotated[str, Field(min_length=1, max_length=200)]
    node_features: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=64)] = (
        Field(default_factory=list, description="none: a constant 1 per node")
    )
    targets: Annotated[list[Annotated[str, Field(max_length=200)]], Field(min_length=1)]
    transpose_adjacency: bool = Field(
        default=False, description="adjacency[g, j, i] is the edge i -> j"
    )
    split: ComposedSplit = Field(default_factory=lambda: ShuffledFractionsSplit(kind="fractions"))


ComposedData = Annotated[
    ComposedTUData | ComposedTUUploadData | ComposedZincData | ZarrData,
    Field(discriminator="format"),
]


# --- evaluators ----------------------------------------------------------------------------------

# Must equal `core.evaluators.MONITORS` (a test checks it); here without torch for the API.
MonitorName = Literal[
    "accuracy", "balanced_accuracy", "f1", "precision", "recall", "roc_auc", "ap",
    "mae", "mse", "rmse", "r2", "loss_mean",
]  # fmt: skip
CLASSIFICATION_MONITORS = ("accuracy", "balanced_accuracy", "f1", "precision", "recall",
                           "roc_auc", "ap", "loss_mean")  # fmt: skip
REGRESSION_MONITORS = ("mae", "mse", "rmse", "r2", "loss_mean")


class MonitorSpec(Section):
    """One monitor of one head, reported as `val_<head>_<name>` / `test_<head>_<name>`
    (`name` defaults to the monitor). `average` applies to f1, precision, recall, roc_auc, ap."""

    head: HeadName
    monitor: MonitorName
    name: Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$", max_length=60)] | None = None
    average: Literal["macro", "micro", "weighted", "binary"] | None = Field(
        default=None, description="default: binary for two classes, else macro"
    )

    @property
    def label(self) -> str:
        return self.name or self.monitor


class EvaluatorSpec(Section):
    """The seed's `validation.validator` / `testing.tester`: batch size and monitors."""

    batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    monitors: Annotated[list[MonitorSpec], Field(max_length=64)] | None = Field(
        default=None,
        description="default: accuracy and f1 (classification) or mae and rmse "
        "(regression) of every head; testing: validation's",
    )

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in ("validator", "tester"):
                if key in data:
                    raise ValueError(
                        f"{key} is refused: put batch_size and monitors directly in this "
                        "section (criterion: each head's loss; device: resources.accelerator)"
                    )
        return data


class ComposedTrainingSpec(TrainingSpec):
    """The shared loop's settings with the seed's `shuffle` and `drop_last`."""

    batch_size: Annotated[int, Field(ge=1, le=1_000_000, description="graphs per batch")] = 32
    shuffle: bool = Field(default=True, description="reshuffle training graphs every epoch")
    drop_last: bool = Field(default=False, description="drop each rank's last short batch")

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        return _refuse("training", data)


class ComposedGnnSpec(BaseJobSpec):
    family: Literal["composed_gnn"]
    task: Literal["graph_classification", "graph_regression"]
    data: ComposedData
    model: ComposedModelSpec
    validation: EvaluatorSpec = Field(default_factory=EvaluatorSpec)
    testing: EvaluatorSpec = Field(default_factory=EvaluatorSpec)
    metric_for_best: MetricForBest | None = Field(
        default=None,
        description="default: val_<first head>_accuracy/max (classification), "
        "val_<first head>_mae/min (regression) when monitored, else val_loss/min; also the "
        "checkpoint and early-stopping monitor unless those are set",
    )
    training: ComposedTrainingSpec = Field(default_factory=ComposedTrainingSpec)

    @model_validator(mode="before")
    @classmethod
    def _refused(cls, data: Any) -> Any:
        return _refuse("spec", data)

    def default_monitors(self) -> list[MonitorSpec]:
        names = ("accuracy", "f1") if self.task == "graph_classification" else ("mae", "rmse")
        return [MonitorSpec(head=h.name, monitor=m) for h in self.model.heads for m in names]

    def monitor_names(self, split: str) -> list[str]:
        """Every metric `evaluate(split)` reports: the total loss, each head's loss part and
        each monitor."""
        section = self.validation if split == "val" else self.testing
        monitors = section.monitors or []
        heads = [h.name for h in self.model.heads]
        return [
            f"{split}_loss",
            *(f"{split}_{h}_loss" for h in heads),
            *(f"{split}_{m.head}_{m.label}" for m in monitors),
        ]

    @model_validator(mode="after")
    def _cross_fields(self) -> ComposedGnnSpec:
        errors: list[str] = []
        _, width_errors = infer_widths(self.model.encoder, None)
        errors += [e for e in width_errors if "edge features" not in e]
        heads = [h.name for h in self.model.heads]
        if len(set(heads)) != len(heads):
            errors.append(f"model.heads names must be unique, got {heads}")
        losses = TASK_HEAD_LOSSES[self.task]
        for i, head in enumerate(self.model.heads):
            if head.loss is None:
                head.loss = losses[0]
            elif head.loss not in losses:
                errors.append(
                    f"model.heads[{i}].loss {head.loss!r} does not fit task {self.task!r}; "
                    f"choose one of {', '.join(losses)}"
                )
        fitting = (
            CLASSIFICATION_MONITORS if self.task == "graph_classification" else REGRESSION_MONITORS
        )
        if self.validation.monitors is None:
            self.validation.monitors = self.default_monitors()
        if self.testing.monitors is None:
            self.testing.monitors = list(self.validation.monitors)
        for section in ("validation", "testing"):
            labels: set[str] = set()
            for i, m in enumerate(getattr(self, section).monitors or []):
                where = f"{section}.monitors[{i}]"
                if m.head not in heads:
                    errors.append(f"{where}.head {m.head!r} is not a head; choose one of "
                                  f"{', '.join(heads)}")  # fmt: skip
                if m.monitor not in fitting:
                    errors.append(f"{where}.monitor {m.monitor!r} does not fit task "
                                  f"{self.task!r}; choose one of {', '.join(fitting)}")  # fmt: skip
                if m.label == "loss" or (m.head, m.label) in labels:
                    errors.append(f"{where}: the name {m.label!r} of head {m.head!r} is taken; "
                                  "set a distinct monitors name")  # fmt: skip
                labels.add((m.head, m.label))  # type: ignore[arg-type]
        reported = self.monitor_names("val")
        first = heads[0]
        default: tuple[str, Mode] = (
            (f"val_{first}_accuracy", "max")
            if self.task == "graph_classification"
            else (f"val_{first}_mae", "min")
        )
        best, error = pick_metric_for_best(self.metric_for_best, default, reported)
        if best is not None:
            self._fill("metric_for_best", best)
        if error is not None:
            errors.append(error)
        if isinstance(self.data, ComposedZincData) and self.task != "graph_regression":
            errors.append("data.format 'zinc' has regression targets: use task graph_regression")
        if errors:
            raise ValueError("; ".join(errors))
        assert self.metric_for_best is not None
        self.monitor_by_default(self.metric_for_best.name, self.metric_for_best.mode)
        return self

    def _fill(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # no re-validation (we are inside the validator)
