"""DT-GCNN: an input projection, GCN layers over the texts' kNN graph and a linear output,
L2-normalised; the model owns its triplet objective (`loss`), with negatives mined from the
batch's distance matrix (`mine`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.registry import Registry

ACTIVATIONS: Registry[type[nn.Module]] = Registry("activation", {"gelu": nn.GELU, "relu": nn.ReLU})
MINING = ("none", "batch_hard", "semi_hard", "batch_all")


def pairwise_distance(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """[A, B] distances between the rows of a [A, D] and b [B, D]."""
    if distance == "cosine":
        return 1.0 - F.normalize(a, dim=1) @ F.normalize(b, dim=1).T
    if distance == "euclidean":
        return torch.cdist(a, b)
    raise ValueError(f"unknown distance {distance!r}; choose one of cosine, euclidean")


def rowwise_distance(a: Tensor, b: Tensor, distance: str) -> Tensor:
    """[N] distances between matching rows of a and b [N, D]."""
    if distance == "cosine":
        return 1.0 - F.cosine_similarity(a, b, dim=1)
    if distance == "euclidean":
        return (a - b).norm(dim=1)
    raise ValueError(f"unknown distance {distance!r}; choose one of cosine, euclidean")


def mine(
    d_ap: Tensor, d_an: Tensor, valid: Tensor, given: Tensor, margin: float, strategy: str
) -> tuple[Tensor, Tensor]:
    """Per-triplet hinge losses and their "active" mask from a batch's distances.

    `d_ap` [B]: anchor-positive distances; `d_an` [B, C]: anchor to every candidate of the
    batch; `valid` [B, C]: which candidates may be the anchor's negative; `given` [B]: the
    column of each triplet's own negative. Returns `(losses, counted)`: for `none`,
    `batch_hard`, `semi_hard` one loss per anchor [B]; for `batch_all` one per valid
    (anchor, candidate) [V]. `batch_all` averages over the active (loss > 0) ones."""
    rows = torch.arange(d_ap.size(0), device=d_ap.device)
    valid = valid.clone()
    valid[rows, given] = True  # the given negative is always a candidate
    d_given = d_an[rows, given]
    if strategy == "none":
        d_neg = d_given
    elif strategy == "batch_hard":
        d_neg = d_an.masked_fill(~valid, math.inf).min(1).values
    elif strategy == "semi_hard":
        # Farther than the positive, yet inside the margin; the closest such; else the given.
        semi = valid & (d_an > d_ap[:, None]) & (d_an < d_ap[:, None] + margin)
        closest = d_an.masked_fill(~semi, math.inf).min(1).values
        d_neg = torch.where(semi.any(1), closest, d_given)
    elif strategy == "batch_all":
        losses = F.relu(d_ap[:, None] - d_an + margin)[valid]  # [V]
        return losses, losses > 0
    else:
        raise ValueError(f"unknown mining strategy {strategy!r}; choose one of {', '.join(MINING)}")
    losses = F.relu(d_ap - d_neg + margin)
    return losses, losses > 0


def propagate(adj: Tensor, h: Tensor) -> Tensor:
    """`adj @ h` for a sparse CSR `adj` [N, N] and dense h [N, D]. Sparse CSR matmuls have no
    bf16/fp16 kernels, so under AMP the product is a gather and an `index_add` in h's dtype."""
    if h.dtype == torch.float32 and not torch.is_autocast_enabled(h.device.type):
        return adj @ h
    crow, col = adj.crow_indices(), adj.col_indices()
    row = torch.repeat_interleave(torch.arange(adj.size(0), device=h.device), crow.diff())
    weighted = h[col] * adj.values().to(h.dtype)[:, None]  # [E, D]
    return torch.zeros_like(h).index_add_(0, row, weighted)


class DTGCNN(nn.Module):
    """`forward(x, adj)`: features [N, in_dim] and the GCN propagation matrix (sparse [N, N],
    or None for the graph-free ablation) to embeddings [N, out_dim]. With `input_residual`
    the embeddings are x + the network's output (out_dim = in_dim), the output layer
    zero-initialised, so an untrained model embeds as its input features do."""

    def __init__(
        self,
        in_dim: int,
        *,
        projection_dim: int | None = None,
        gcn_layers: int = 2,
        hidden_dims: Sequence[int] = (256,),
        out_dim: int = 128,
        activation: str = "gelu",
        batch_norm: bool = True,
        dropout: float = 0.1,
        normalize: bool = True,
        residual: bool = False,
        input_residual: bool = False,
        graph_mix_init: float = 0.0,
        distance: str = "cosine",
        margin: float = 0.2,
        final_margin: float | None = None,
        reduction: str = "mean",
        focal_gamma: float = 0.0,
        mining: str = "none",
        aux_heads: dict[str, int] | None = None,
    ):
        super().__init__()
        if input_residual and in_dim != out_dim:
            raise ValueError(
                f"model.input_residual adds the {in_dim}-dim input features to the output: "
                f"model.out_dim must be {in_dim}, not {out_dim}"
            )
        act = ACTIVATIONS.get(activation)
        widths = list(hidden_dims) * gcn_layers if len(hidden_dims) == 1 else list(hidden_dims)
        proj = projection_dim or widths[0]

        def block(width: int) -> nn.Sequential:
            norm: nn.Module = nn.BatchNorm1d(width) if batch_norm else nn.Identity()
            return nn.Sequential(norm, act(), nn.Dropout(dropout))

        self.projection = nn.Linear(in_dim, proj)
        self.projection_post = block(proj)
        dims = [proj, *widths]
        self.gcn = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.gcn_post = nn.ModuleList(block(w) for w in widths)
        # Per layer, how much of the neighbours' average enters: (1 - g) H W + g Â H W, learned.
        self.graph_mix = nn.Parameter(torch.full((len(widths),), float(graph_mix_init)))
        self.output = nn.Linear(widths[-1], out_dim)
        # Auxiliary heads: `label` reads one embedding, the pair heads [|a - b|, a * b].
        self.aux = nn.ModuleDict(
            {
                kind: nn.Linear(out_dim if kind == "label" else 2 * out_dim, width)
                for kind, width in (aux_heads or {}).items()
            }
        )
        self.normalize = normalize
        self.residual = residual
        self.input_residual = input_residual
        self.distance = distance
        self.margin = margin
        self.final_margin = final_margin
        self.reduction = reduction
        self.focal_gamma = focal_gamma
        self.mining = mining
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights and zero biases (the seed's `init_weights`)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.input_residual:  # the branch starts at zero: z = normalize(x) at first
            nn.init.zeros_(self.output.weight)

    def parts(self) -> dict[str, list[nn.Parameter]]:
        """The parameters of each part a freeze stage may name (`spec.FREEZABLE`)."""
        return {
            "projection": [*self.projection.parameters(), *self.projection_post.parameters()],
            "gcn": [*self.gcn.parameters(), *self.gcn_post.parameters(), self.graph_mix],
            "output": list(self.output.parameters()),
            "aux_heads": list(self.aux.parameters()),
        }

    def part_modules(self) -> dict[str, list[nn.Module]]:
        """The modules of each part (their batch norms and dropout go to eval when frozen)."""
        return {
            "projection": [self.projection, self.projection_post],
            "gcn": [self.gcn, self.gcn_post],
            "output": [self.output],
            "aux_heads": [self.aux],
        }

    def aux_loss(self, kind: str, z: Tensor, target: Tensor, pairs: Tensor | None = None) -> Tensor:
        """The auxiliary head `kind`'s mean loss. `label`: z [N, out_dim] and class indices
        [N], cross-entropy. `relatedness`: pairs [P, 2] rows of z and scores scaled to [0, 1]
        [P], MSE. `entailment`: pairs and 0/1 targets [P], binary cross-entropy with logits."""
        head = self.aux[kind]
        if kind == "label":
            return F.cross_entropy(head(z), target)
        assert pairs is not None, f"the {kind} head needs pairs"
        a, b = z[pairs[:, 0]], z[pairs[:, 1]]
        out = head(torch.cat([(a - b).abs(), a * b], 1)).squeeze(1)  # [P]
        if kind == "relatedness":
            return F.mse_loss(out, target.to(out.dtype))
        if kind == "entailment":
            return F.binary_cross_entropy_with_logits(out, target.to(out.dtype))
        raise ValueError(f"unknown auxiliary head {kind!r}; choose one of label, relatedness, "
                         "entailment")  # fmt: skip

    def forward(self, x: Tensor, adj: Tensor | None) -> Tensor:
        h = self.projection_post(self.projection(x))  # [N, proj]
        for i, (lin, post) in enumerate(zip(self.gcn, self.gcn_post, strict=True)):
            out = lin(h)  # [N, width]
            if adj is not None:
                # GCN propagation D^-1/2 (A + I) D^-1/2 H W, mixed with the text's own H W.
                g = self.graph_mix[i]
                out = (1 - g) * out + g * propagate(adj, out)
            else:  # keep the parameter in the graph (DDP) without changing the output
                out = out + 0 * self.graph_mix[i]
            out = post(out)
            # A residual keeps each text's own signal beside its neighbours' average.
            h = out + h if self.residual and out.shape == h.shape else out
        z = self.output(h)  # [N, out_dim]
        if self.input_residual:
            z = x + z
        return F.normalize(z, dim=1) if self.normalize else z

    def margin_at(self, epoch: int, epochs: int) -> float:
        """The margin of `epoch` (1-based): linear from `margin` to `final_margin`."""
        if self.final_margin is None or epochs <= 1:
            return self.margin
        t = min(max(epoch - 1, 0) / (epochs - 1), 1.0)
        return self.margin + (self.final_margin - self.margin) * t

    def loss(
        self,
        z: Tensor,
        triplets: Tensor,
        candidates: Tensor | None = None,
        valid: Tensor | None = None,
        margin: float | None = None,
    ) -> dict[str, Tensor]:
        """The batch's triplet loss and its parts.

        `z` [N, out_dim] embeddings; `triplets` [B, 3] rows of z (anchor, positive, negative);
        `candidates` [C] rows of z that mining may pick negatives from, `valid` [B, C] which of
        them each anchor may take (default: the batch's own negatives, all valid). Parts:
        `active_fraction` (share of counted triplets with a positive loss), `pos_distance`
        and `neg_distance` (means over the given triplets)."""
        margin = self.margin if margin is None else margin
        anchor, positive, negative = z[triplets[:, 0]], z[triplets[:, 1]], z[triplets[:, 2]]
        d_ap = rowwise_distance(anchor, positive, self.distance)  # [B]
        d_given = rowwise_distance(anchor, negative, self.distance)  # [B]
        if self.mining == "none" or candidates is None:
            losses = F.relu(d_ap - d_given + margin)
            active = losses > 0
        else:
            assert valid is not None, "mining needs the valid-candidate mask"
            d_an = pairwise_distance(anchor, z[candidates], self.distance)  # [B, C]
            given = torch.searchsorted(candidates, triplets[:, 2].contiguous())
            losses, active = mine(d_ap, d_an, valid, given, margin, self.mining)
        if self.focal_gamma > 0:
            losses = (1 - torch.exp(-losses)) ** self.focal_gamma * losses
        if self.mining == "batch_all":
            count = active.sum().clamp(min=1)
            total = losses.sum() / count if self.reduction == "mean" else losses.sum()
        else:
            total = losses.mean() if self.reduction == "mean" else losses.sum()
        return {
            "loss": total,
            "active_fraction": active.float().mean() if active.numel() else total.new_zeros(()),
            "pos_distance": d_ap.mean(),
            "neg_distance": d_given.mean(),
        }


__all__ = [
    "ACTIVATIONS",
    "DTGCNN",
    "MINING",
    "mine",
    "pairwise_distance",
    "propagate",
    "rowwise_distance",
]
