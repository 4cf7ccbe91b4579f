"""GPS graph transformer (Rampášek et al., GraphGPS): PyG `GPSConv` layers, each a local
message-passing layer plus global multi-head attention, over node inputs concatenated with
encoded positional encodings; a pooled graph head or a dot-product link decoder on top.

With the GraphGPS ZINC configuration (28 atom types, 4 bond types, RWSE of 20 steps encoded to
28 dims, 10 layers x 64 channels, GINE, 4 heads, add pooling, 3-layer head) the model has
423,717 parameters, the "about 424k" GraphGPS reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch_geometric.nn import (
    GCNConv,
    GINConv,
    GINEConv,
    GPSConv,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)
from torch_geometric.nn.conv import MessagePassing

from core.losses import get_loss_fn
from core.registry import Registry


def _mlp(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(channels, channels), nn.ReLU(), nn.Linear(channels, channels))


# Local message-passing layers; `None` is GPS without a local layer (a plain transformer).
LOCAL_LAYERS: Registry[Callable[[int], MessagePassing | None]] = Registry(
    "local layer",
    {
        "gine": lambda c: GINEConv(_mlp(c)),
        "gin": lambda c: GINConv(_mlp(c)),
        "gcn": lambda c: GCNConv(c, c),
        "none": lambda c: None,
    },
)
POOLINGS: Registry[Callable[..., Tensor]] = Registry(
    "pooling", {"mean": global_mean_pool, "add": global_add_pool, "max": global_max_pool}
)
ATTENTIONS: Registry[str] = Registry(
    "attention", {"multihead": "multihead", "performer": "performer"}
)


@dataclass(frozen=True)
class GraphInputs:
    """What the data give the model: node and edge input kinds and sizes, PE widths, classes."""

    num_node_types: int | None  # categorical node inputs (ZINC atoms) ...
    node_dim: int | None  # ... or float node features of this width
    num_edge_types: int | None  # categorical edge inputs ...
    edge_dim: int | None  # ... or float edge features; neither: one shared edge embedding
    pe_raw_dims: tuple[int, ...] = ()  # width of each positional-encoding scale
    num_classes: int | None = None


class SingleRowBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that normalises a batch of one row with its running statistics instead of
    failing (a training batch of one single-node graph), like PyG's
    `BatchNorm(allow_single_element=True)`; its state dict is BatchNorm1d's."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.size(0) == 1 and self.track_running_stats:
            return nn.functional.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def _raw_norm(kind: str, width: int) -> nn.Module:
    """The norm applied to raw positional encodings (GraphGPS `raw_norm_type`)."""
    if kind == "batch_norm":
        return SingleRowBatchNorm1d(width)
    if kind == "layer_norm":
        return nn.LayerNorm(width)
    return nn.Identity()


class InputEncoder(nn.Module):
    """Node inputs to `channels - sum(pe_dims)` dims, concatenated with one norm + Linear
    encoder per positional-encoding scale (GraphGPS `raw_norm_type: BatchNorm` by default)."""

    def __init__(
        self,
        inputs: GraphInputs,
        channels: int,
        pe_dims: Sequence[int],
        norm: str = "batch_norm",
    ):
        super().__init__()
        node_width = channels - sum(pe_dims)
        if node_width < 1:
            raise ValueError(
                f"positional encoding dims {list(pe_dims)} leave no room in {channels} channels"
            )
        if inputs.num_node_types is not None:
            self.node: nn.Module = nn.Embedding(inputs.num_node_types, node_width)
        else:
            self.node = nn.Linear(inputs.node_dim or 1, node_width)
        self.pe = nn.ModuleList(
            nn.Sequential(_raw_norm(norm, raw), nn.Linear(raw, dim))
            for raw, dim in zip(inputs.pe_raw_dims, pe_dims, strict=True)
        )

    def forward(self, x: Tensor, pes: Sequence[Tensor]) -> Tensor:
        h = self.node(x.view(-1) if isinstance(self.node, nn.Embedding) else x.float())
        return torch.cat([h, *(enc(pe.float()) for enc, pe in zip(self.pe, pes, strict=True))], 1)


class GPSModel(nn.Module):
    """GPS layers over encoded inputs. `forward(batch)` returns graph outputs [G, out_dim]; with
    `pairs` ([2, P] node pairs of the batch) it returns link scores [P]. The objective is the
    model's own `loss(outputs, targets)`: the task's loss from `core.losses` (default: the
    task's first)."""

    def __init__(
        self,
        inputs: GraphInputs,
        *,
        task: str,
        out_dim: int,
        loss: str | None = None,
        channels: int = 64,
        layers: int = 10,
        heads: int = 4,
        local_layer: str = "gine",
        attention: str = "multihead",
        attn_dropout: float = 0.5,
        dropout: float = 0.0,
        pooling: str = "add",
        head_layers: int = 3,
        norm: str = "batch_norm",
        pe_dims: Sequence[int] = (),
        pe_attrs: Sequence[str] = (),
    ):
        super().__init__()
        self.task = task
        self.loss_fn = get_loss_fn(task, loss, inputs.num_classes)
        self.pe_attrs = tuple(pe_attrs)
        self.encoder = InputEncoder(inputs, channels, pe_dims, norm)
        make_local = LOCAL_LAYERS.get(local_layer)
        self.uses_edges = local_layer == "gine"
        self.edge_encoder: nn.Module | None = None
        if self.uses_edges:  # only GINE reads edge features; no unused parameters under DDP
            if inputs.edge_dim is not None:
                self.edge_encoder = nn.Linear(inputs.edge_dim, channels)
            else:
                self.edge_encoder = nn.Embedding(inputs.num_edge_types or 1, channels)
        attn_type = ATTENTIONS.get(attention)
        self.layers = nn.ModuleList(
            GPSConv(
                channels,
                make_local(channels),
                heads=heads,
                dropout=dropout,
                attn_type=attn_type,
                attn_kwargs={"dropout": attn_dropout},
                norm=None if norm == "none" else norm,
                # a batch of one node (one single-node graph) must not stop training
                norm_kwargs={"allow_single_element": True} if norm == "batch_norm" else None,
            )
            for _ in range(layers)
        )
        self.pool = POOLINGS.get(pooling)
        if task == "link_prediction":
            self.head: nn.Module = nn.Linear(channels, channels)  # then dot products
        else:
            # GraphGPS `san_graph` head: widths halve, then the output layer.
            dims = [channels // 2**i for i in range(head_layers)]
            mods: list[nn.Module] = []
            for a, b in zip(dims[:-1], dims[1:], strict=False):
                mods += [nn.Linear(a, b), nn.ReLU()]
            mods.append(nn.Linear(dims[-1], out_dim))
            self.head = nn.Sequential(*mods)

    def node_representations(self, batch: object) -> Tensor:
        """[N, channels] after the last GPS layer."""
        x = batch.x  # type: ignore[attr-defined]
        edge_index = batch.edge_index  # type: ignore[attr-defined]
        node_graph = batch.batch  # type: ignore[attr-defined]
        h = self.encoder(x, [getattr(batch, a) for a in self.pe_attrs])
        kwargs = {}
        if self.edge_encoder is not None:
            edge_attr = getattr(batch, "edge_attr", None)
            if edge_attr is None:  # no edge inputs: every edge gets the one embedding
                edge_attr = edge_index.new_zeros(edge_index.size(1))
            if isinstance(self.edge_encoder, nn.Embedding):
                kwargs["edge_attr"] = self.edge_encoder(edge_attr.view(-1))
            else:
                kwargs["edge_attr"] = self.edge_encoder(edge_attr.float())
        for layer in self.layers:
            h = layer(h, edge_index, node_graph, **kwargs)
        return h

    def embed(self, batch: object) -> Tensor:
        """[G, channels] pooled graph representations."""
        h = self.node_representations(batch)
        return self.pool(h, batch.batch, size=batch.num_graphs)  # type: ignore[attr-defined]

    def forward(self, batch: object, pairs: Tensor | None = None) -> Tensor:
        if self.task == "link_prediction":
            if pairs is None:
                raise ValueError("link prediction needs `pairs` ([2, P] node pairs)")
            z = self.head(self.node_representations(batch))  # [N, channels]
            return (z[pairs[0]] * z[pairs[1]]).sum(-1)  # [P] logits
        return self.head(self.embed(batch))  # [G, out_dim]

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        """The batch's mean loss: outputs [G, out_dim] or link logits [P] against targets [G]
        (values or class indices) or 0/1 link labels [P]."""
        return self.loss_fn(outputs, targets)


__all__ = ["LOCAL_LAYERS", "POOLINGS", "GPSModel", "GraphInputs"]
