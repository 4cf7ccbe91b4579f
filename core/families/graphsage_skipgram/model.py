"""GraphSAGE encoder with the skip-gram negative-sampling objective (PyG's Node2Vec habit:
the model owns its loss, so the shared loop stays generic)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import SAGEConv
from torch_geometric.utils import spmm

from core.registry import Registry

ACTIVATIONS: Registry[type[nn.Module]] = Registry(
    "activation", {"relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU, "prelu": nn.PReLU}
)


READOUTS = ("last", "concat")


class GraphSAGE(nn.Module):
    """`layers` SAGEConv layers over the full graph; optional learnable node inputs.

    `forward(x, edge_index)` returns [num_nodes, out_dim] embeddings (L2-normalised when
    `normalize`): the representation the objective trains. `embed` returns the readout users
    get: the same with `readout="last"`, or with `readout="concat"` every layer's output,
    each L2-normalised, side by side ([num_nodes, (layers - 1) * hidden_dim + out_dim]; the
    jumping-knowledge readout of Xu et al., 2018, taken after training). With
    `num_learnable_nodes`, `x` is ignored and a trained table is the input.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        layers: int = 2,
        aggregator: str = "mean",
        dropout: float = 0.0,
        normalize: bool = True,
        temperature: float = 1.0,
        activation: str = "relu",
        num_learnable_nodes: int | None = None,
        readout: str = "last",
    ):
        super().__init__()
        self.input_table = (
            nn.Embedding(num_learnable_nodes, in_dim) if num_learnable_nodes is not None else None
        )
        dims = [in_dim] + [hidden_dim] * (layers - 1) + [out_dim]
        self.convs = nn.ModuleList(
            SAGEConv(a, b, aggr=aggregator) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        act = ACTIVATIONS.get(activation)
        self.acts = nn.ModuleList(act() for _ in range(layers - 1))
        self.dropout = dropout
        self.normalize = normalize
        self.temperature = temperature
        if readout not in READOUTS:
            raise ValueError(f"unknown readout {readout!r}; allowed: {', '.join(READOUTS)}")
        self.readout = readout

    def forward(self, x: Tensor | None, adj: Tensor) -> Tensor:
        """Embeddings [N, out_dim] of inputs `x` [N, F] (dense, or sparse CSR for sparse
        features) over `adj`: an edge index [2, E] or the transposed adjacency as sparse CSR."""
        h = self._layer_outputs(x, adj)[-1]
        return F.normalize(h, dim=-1) if self.normalize else h

    def embed(self, x: Tensor | None, adj: Tensor) -> Tensor:
        """The readout of every node: `forward`'s output, or every layer's side by side."""
        if self.readout == "last":
            return self(x, adj)
        return torch.cat([F.normalize(h, dim=-1) for h in self._layer_outputs(x, adj)], -1)

    def _layer_outputs(self, x: Tensor | None, adj: Tensor) -> list[Tensor]:
        """Each layer's output, before its activation."""
        if self.input_table is not None:
            h = self.convs[0](F.dropout(self.input_table.weight, self.dropout, self.training), adj)
        elif x is not None and x.layout == torch.sparse_csr:
            h = self._sparse_first_layer(x, adj)
        else:
            h = self.convs[0](F.dropout(x, self.dropout, self.training), adj)
        outputs = [h]
        for i, conv in enumerate(self.convs[1:]):
            h = conv(F.dropout(self.acts[i](h), self.dropout, self.training), adj)
            outputs.append(h)
        return outputs

    def _sparse_first_layer(self, x: Tensor, adj: Tensor) -> Tensor:
        """The first SAGEConv on sparse inputs: project, then aggregate.

        For a linear aggregator `mean_j(x_j) W = mean_j(x_j W)`, so the sparse features are
        multiplied by the layer's own weights first and only `out_dim`-wide rows are
        aggregated: the same output as `conv(x.to_dense(), adj)`, a fraction of the work on
        bag-of-words inputs (Cora's are 1.3% nonzero). Dropout acts on the stored values.
        """
        conv = self.convs[0]
        if conv.aggr not in ("mean", "sum") or adj.layout != torch.sparse_csr:
            return conv(F.dropout(x.to_dense(), self.dropout, self.training), adj)
        if self.training and self.dropout > 0:
            x = torch.sparse_csr_tensor(
                x.crow_indices(),
                x.col_indices(),
                F.dropout(x.values(), self.dropout, True),
                x.shape,
            )
        weight = torch.cat([conv.lin_l.weight, conv.lin_r.weight], 0)  # [2 * out, in]
        # Sparse kernels have no reduced-precision versions: this product stays in fp32.
        with torch.autocast(x.device.type, enabled=False):
            h = torch.sparse.mm(x, weight.float().t())
        h_l, h_r = h.split(conv.out_channels, 1)  # [N, out] each
        out = spmm(adj, h_l, reduce=conv.aggr) + conv.lin_l.bias + h_r
        return F.normalize(out, dim=-1) if conv.normalize else out

    def loss(self, z: Tensor, targets: Tensor, contexts: Tensor, negatives: Tensor) -> Tensor:
        """Skip-gram loss of embeddings `z` [N, D] on pairs (targets, contexts [B]) against
        `negatives` [B, K]."""
        return skipgram_loss(
            gather_rows(z, targets),
            gather_rows(z, contexts),
            gather_rows(z, negatives),
            self.temperature,
        )


def skipgram_loss(
    target: Tensor, context: Tensor, negative: Tensor, temperature: float = 1.0
) -> Tensor:
    """Mean over pairs of `-log σ(z_t·z_c) - Σ_n log σ(-z_t·z_n)`.

    target, context: [B, D]; negative: [B, K, D].
    """
    pos = (target * context).sum(-1) / temperature  # [B]
    neg = torch.einsum("bd,bkd->bk", target, negative) / temperature  # [B, K]
    return -(F.logsigmoid(pos) + F.logsigmoid(-neg).sum(-1)).mean()


def gather_rows(z: Tensor, index: Tensor) -> Tensor:
    """`z[index]` for an index of any shape; `index_select`'s backward (an index_add) is much
    faster on CPU than advanced indexing's (an accumulating index_put)."""
    return z.index_select(0, index.reshape(-1)).view(*index.shape, z.size(-1))
