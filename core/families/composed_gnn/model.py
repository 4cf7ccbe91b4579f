"""A GNN composed from the spec (seed 003, QuantumGrav's `Sequential` + `GNNModel`): encoder
layers from a closed registry (PyG convolutions, linear layers, activations, norms, dropout),
each called with its declared inputs; graph readouts combined; an MLP over named graph
statistics joined to the pooled vector; one MLP head per target.

The seed's example (SAGE 12->64, ReLU, SAGE 64->64, mean pooling, graph features 4->32, head
96->128->3) builds 1,600 + 8,256 + 160 + 12,416 + 387 = 22,819 parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import (
    GATConv,
    GATv2Conv,
    GCNConv,
    GINConv,
    GINEConv,
    GraphConv,
    SAGEConv,
    TransformerConv,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)

from core.families.composed_gnn.spec import infer_widths
from core.registry import Registry

# --- the layer registry ---------------------------------------------------------------------------

# builder(width_in, width_out, kwargs, edge_dim) -> module; edge_dim is None unless the entry
# takes edge_attr.
LayerBuilder = Callable[[int, int, dict[str, Any], int | None], nn.Module]


def _gin_mlp(c_in: int, c_out: int, kw: dict[str, Any]) -> nn.Sequential:
    hidden = kw.pop("hidden", None) or c_out
    norm = kw.pop("batch_norm", False)
    mods: list[nn.Module] = [nn.Linear(c_in, hidden)]
    if norm:
        mods.append(nn.BatchNorm1d(hidden))
    mods += [nn.ReLU(), nn.Linear(hidden, c_out)]
    return nn.Sequential(*mods)


def _gin(c_in: int, c_out: int, kw: dict[str, Any], edge_dim: int | None) -> nn.Module:
    kw = dict(kw)
    return GINConv(_gin_mlp(c_in, c_out, kw), **kw)


def _gine(c_in: int, c_out: int, kw: dict[str, Any], edge_dim: int | None) -> nn.Module:
    kw = dict(kw)
    return GINEConv(_gin_mlp(c_in, c_out, kw), edge_dim=edge_dim, **kw)


def _heads(cls: type[nn.Module]) -> LayerBuilder:
    """GAT-like layers: `out` is the total width (heads x per-head width with concat)."""

    def build(c_in: int, c_out: int, kw: dict[str, Any], edge_dim: int | None) -> nn.Module:
        per_head = c_out // kw["heads"] if kw.get("concat", True) else c_out
        return cls(c_in, per_head, edge_dim=edge_dim, **kw)

    return build


LAYERS: Registry[LayerBuilder] = Registry(
    "layer",
    {
        "gcn": lambda i, o, kw, e: GCNConv(i, o, **kw),
        "sage": lambda i, o, kw, e: SAGEConv(i, o, **kw),
        "gin": _gin,
        "gine": _gine,
        "gat": _heads(GATConv),
        "gatv2": _heads(GATv2Conv),
        "graph_conv": lambda i, o, kw, e: GraphConv(i, o, **kw),
        "transformer_conv": _heads(TransformerConv),
        "linear": lambda i, o, kw, e: nn.Linear(i, o, **kw),
        "relu": lambda i, o, kw, e: nn.ReLU(),
        "gelu": lambda i, o, kw, e: nn.GELU(**kw),
        "elu": lambda i, o, kw, e: nn.ELU(**kw),
        "leaky_relu": lambda i, o, kw, e: nn.LeakyReLU(**kw),
        "tanh": lambda i, o, kw, e: nn.Tanh(),
        "dropout": lambda i, o, kw, e: nn.Dropout(**kw),
        "batch_norm": lambda i, o, kw, e: nn.BatchNorm1d(i, **kw),
        "layer_norm": lambda i, o, kw, e: nn.LayerNorm(i, **kw),
    },
)
ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry(
    "activation",
    {
        "relu": nn.ReLU,
        "gelu": nn.GELU,
        "elu": nn.ELU,
        "leaky_relu": nn.LeakyReLU,
        "tanh": nn.Tanh,
        "identity": nn.Identity,
    },
)
POOLINGS: Registry[Callable[..., Tensor]] = Registry(
    "pooling", {"mean": global_mean_pool, "add": global_add_pool, "max": global_max_pool}
)


# --- graph statistics, vectorised over a batch ----------------------------------------------------


def graph_statistics(
    names: Sequence[str], edge_index: Tensor, batch: Tensor, num_graphs: int
) -> Tensor:
    """[G, len(names)] statistics of each graph of a batch (float32), computed with scatter
    operations over the whole batch:

    num_nodes n; num_edges m = columns of edge_index (an undirected edge stored both ways
    counts twice); density m / (n (n - 1)) (0 for n < 2); mean_degree m / n; max_degree /
    min_degree of the out-degree; num_isolated: nodes without out-edges; log_num_nodes
    log(1 + n).
    """
    num_nodes = batch.numel()
    device = batch.device
    n = torch.bincount(batch, minlength=num_graphs).float()  # [G]
    m = torch.bincount(batch[edge_index[0]], minlength=num_graphs).float()  # [G]
    per_node = {"max_degree", "min_degree", "num_isolated"}
    degree = (  # [N] out-degree, only when a statistic needs it
        torch.bincount(edge_index[0], minlength=num_nodes).float()
        if per_node.intersection(names)
        else n
    )
    columns: dict[str, Callable[[], Tensor]] = {
        "num_nodes": lambda: n,
        "num_edges": lambda: m,
        "density": lambda: torch.where(n > 1, m / (n * (n - 1)).clamp(min=1), 0.0),
        "mean_degree": lambda: torch.where(n > 0, m / n.clamp(min=1), 0.0),
        "max_degree": lambda: torch.zeros(num_graphs, device=device).scatter_reduce(
            0, batch, degree, "amax", include_self=False
        ),
        "min_degree": lambda: torch.zeros(num_graphs, device=device).scatter_reduce(
            0, batch, degree, "amin", include_self=False
        ),
        "num_isolated": lambda: torch.bincount(batch[degree == 0], minlength=num_graphs).float(),
        "log_num_nodes": lambda: torch.log1p(n),
    }
    return torch.stack([columns[name]() for name in names], 1)


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HeadPlan:
    """A built head's facts: its target column in y, loss, weight, output width and kind."""

    name: str
    column: int
    loss: str
    weight: float
    out_dim: int
    classification: bool


def _mlp(
    width_in: int, dims: Sequence[int], activation: str, final_activation: bool, dropout: float = 0
) -> nn.Sequential:
    """Linear layers through `dims` with `activation` after each (after the last only with
    `final_activation`), dropout before each hidden linear layer after the first."""
    mods: list[nn.Module] = []
    widths = [width_in, *dims]
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if dropout and k > 0:
            mods.append(nn.Dropout(dropout))
        mods.append(nn.Linear(a, b))
        if k < len(dims) - 1 or final_activation:
            mods.append(ACTIVATIONS.get(activation)())
    return nn.Sequential(*mods)


def per_graph_loss(name: str, out: Tensor, target: Tensor) -> Tensor:
    """[B] loss of each graph: out [B, C] logits / [B, 1] logit or value, target [B]."""
    if name == "cross_entropy":
        return F.cross_entropy(out.float(), target.long(), reduction="none")
    if name == "bce_logits":
        return F.binary_cross_entropy_with_logits(
            out.float().view(-1), target.float(), reduction="none"
        )
    pred, target = out.float().view(-1), target.float()
    if name == "mse":
        return F.mse_loss(pred, target, reduction="none")
    if name == "mae":
        return F.l1_loss(pred, target, reduction="none")
    if name == "huber":
        return F.huber_loss(pred, target, reduction="none")
    raise ValueError(f"unknown loss {name!r}; choose one of cross_entropy, bce_logits, mse, "
                     "mae, huber")  # fmt: skip


class ComposedGNN(nn.Module):
    """The composed model. `forward(batch)` returns `{head: [G, out_dim]}`; `embed(batch)` the
    graph vector [G, pooled + graph-feature width]; `loss(outputs, y)` the weighted sum of the
    heads' mean losses with each head's part: `{"loss": total, "<head>_loss": part}`.

    `model_spec` is a `ComposedModelSpec`; `in_dim` the node input width, `edge_dim` the edge
    feature width (None: no edge features). Raises ValueError naming `model.encoder[i].<field>`
    when widths do not fit.
    """

    def __init__(
        self,
        model_spec: Any,
        in_dim: int,
        edge_dim: int | None,
        heads: Sequence[HeadPlan],
        feature_stats: tuple[Tensor, Tensor] | None = None,
    ):
        super().__init__()
        widths, errors = infer_widths(model_spec.encoder, in_dim, edge_dim)
        if errors:
            raise ValueError("; ".join(errors))
        self.layers = nn.ModuleList()
        self.calls: list[tuple[str, ...]] = []
        self.skips: list[bool] = []
        for entry, (w_in, w_out) in zip(model_spec.encoder, widths, strict=True):
            inputs = tuple(entry.resolved_inputs())
            kwargs = entry.kwargs.model_dump()
            e_dim = edge_dim if "edge_attr" in inputs else None
            assert w_in is not None and w_out is not None
            self.layers.append(LAYERS.get(entry.layer)(w_in, w_out, kwargs, e_dim))
            self.calls.append(inputs)
            self.skips.append(entry.skip)
        width = widths[-1][1] or in_dim
        pooling = model_spec.pooling
        self.pool_ops = [POOLINGS.get(p) for p in pooling.ops]
        self.combine = pooling.combine
        pooled = width * len(self.pool_ops) if self.combine == "cat" else width
        self.feature_names: tuple[str, ...] = ()
        self.features: nn.Module | None = None
        gf = model_spec.graph_features
        joined = pooled
        if gf is not None:
            self.feature_names = tuple(gf.features)
            self.features = _mlp(len(gf.features), gf.dims, gf.activation, final_activation=True)
            joined += gf.dims[-1]
            mean, std = feature_stats or (torch.zeros(len(gf.features)),
                                          torch.ones(len(gf.features)))  # fmt: skip
            self.register_buffer("feature_mean", mean.float().clone())
            self.register_buffer("feature_std", std.float().clamp(min=1e-6).clone())
        self.embedding_dim = joined
        self.plans = list(heads)
        specs = {h.name: h for h in model_spec.heads}
        self.heads = nn.ModuleDict(
            {
                p.name: _mlp(
                    joined,
                    [*specs[p.name].dims, p.out_dim],
                    specs[p.name].activation,
                    final_activation=False,
                    dropout=specs[p.name].dropout,
                )
                for p in self.plans
            }
        )

    def node_representations(self, batch: Any) -> Tensor:
        """[N, width] after the last encoder layer."""
        env = {"x": batch.x.float(), "edge_index": batch.edge_index,
               "edge_attr": getattr(batch, "edge_attr", None)}  # fmt: skip
        h = env["x"]
        for layer, inputs, skip in zip(self.layers, self.calls, self.skips, strict=True):
            env["x"] = h
            out = layer(*(env[name] for name in inputs))
            h = out + h if skip else out
        return h

    def graph_features(self, batch: Any) -> Tensor:
        """[G, len(features)] standardised statistics of each graph."""
        stats = graph_statistics(self.feature_names, batch.edge_index, batch.batch,
                                 batch.num_graphs)  # fmt: skip
        return (stats - self.feature_mean) / self.feature_std

    def embed(self, batch: Any) -> Tensor:
        """[G, embedding_dim] pooled node vectors joined with the graph-feature network's."""
        h = self.node_representations(batch)
        pooled = [pool(h, batch.batch, size=batch.num_graphs) for pool in self.pool_ops]
        if self.combine == "cat":
            g = torch.cat(pooled, 1) if len(pooled) > 1 else pooled[0]
        else:
            g = torch.stack(pooled).sum(0)
            if self.combine == "mean":
                g = g / len(pooled)
        if self.features is not None:
            g = torch.cat([g, self.features(self.graph_features(batch))], 1)
        return g

    def forward(self, batch: Any) -> dict[str, Tensor]:
        g = self.embed(batch)
        return {name: head(g) for name, head in self.heads.items()}

    def head_losses(self, outputs: dict[str, Tensor], y: Tensor) -> dict[str, Tensor]:
        """`{head: [B] per-graph loss}`; y [B, T] targets (column per target)."""
        y = y.view(y.size(0), -1)
        return {p.name: per_graph_loss(p.loss, outputs[p.name], y[:, p.column]) for p in self.plans}

    def loss(self, outputs: dict[str, Tensor], y: Tensor) -> dict[str, Tensor]:
        """`{"loss": sum of weight x mean head loss, "<head>_loss": mean head loss}`."""
        parts = {f"{name}_loss": v.mean() for name, v in self.head_losses(outputs, y).items()}
        total = sum(p.weight * parts[f"{p.name}_loss"] for p in self.plans)
        return {"loss": total, **parts}  # type: ignore[dict-item]


__all__ = ["ACTIVATIONS", "LAYERS", "POOLINGS", "ComposedGNN", "HeadPlan", "graph_statistics",
           "per_graph_loss"]  # fmt: skip
