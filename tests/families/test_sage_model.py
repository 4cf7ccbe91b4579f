"""The GraphSAGE encoder: the sparse-input fast path equals PyG's SAGEConv on dense inputs."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.utils import to_torch_csr_tensor

from core.data.graphs import load_planetoid
from core.families.graphsage_skipgram.model import GraphSAGE, skipgram_loss


@pytest.mark.parametrize("aggregator", ["mean", "sum", "max"])
def test_sparse_inputs_give_the_dense_output(aggregator):
    g = load_planetoid("Cora")
    adj_t = to_torch_csr_tensor(g.edge_index.flip(0), size=(g.num_nodes, g.num_nodes))
    torch.manual_seed(0)
    model = GraphSAGE(1433, 32, 16, layers=2, aggregator=aggregator).eval()
    dense = model(g.x, g.edge_index)
    sparse = model(g.x.to_sparse_csr(), adj_t)
    torch.testing.assert_close(sparse, dense, rtol=1e-4, atol=1e-5)


def test_sparse_dropout_keeps_the_expected_scale():
    g = load_planetoid("Cora")
    adj_t = to_torch_csr_tensor(g.edge_index.flip(0), size=(g.num_nodes, g.num_nodes))
    model = GraphSAGE(1433, 16, 8, layers=1, dropout=0.5, normalize=False)
    model.eval()
    reference = model(g.x.to_sparse_csr(), adj_t)
    model.train()
    torch.manual_seed(0)
    mean = torch.stack([model(g.x.to_sparse_csr(), adj_t) for _ in range(50)]).mean(0)
    assert (mean - reference).abs().mean() < 0.2 * reference.abs().mean()


def test_skipgram_loss_matches_its_formula():
    t, c, n = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 2, 3)
    expected = -(
        torch.log(torch.sigmoid((t * c).sum(-1)))
        + torch.log(torch.sigmoid(-(t.unsqueeze(1) * n).sum(-1))).sum(-1)
    ).mean()
    torch.testing.assert_close(skipgram_loss(t, c, n), expected)


def test_concat_readout_puts_every_normalised_layer_side_by_side():
    g = load_planetoid("Cora")
    torch.manual_seed(0)
    last = GraphSAGE(1433, 32, 16, layers=3).eval()
    concat = GraphSAGE(1433, 32, 16, layers=3, readout="concat").eval()
    concat.load_state_dict(last.state_dict())  # the readout adds no parameters
    z_last, z_cat = last.embed(g.x, g.edge_index), concat.embed(g.x, g.edge_index)
    assert z_cat.shape == (g.num_nodes, 32 + 32 + 16)
    torch.testing.assert_close(z_last, last(g.x, g.edge_index))
    torch.testing.assert_close(z_cat[:, -16:], z_last)  # the last part is what is trained
    torch.testing.assert_close(concat(g.x, g.edge_index), z_last)
    norms = torch.stack([p.norm(dim=1) for p in z_cat.split([32, 32, 16], 1)])
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_unknown_readout_is_refused():
    with pytest.raises(ValueError, match="allowed: last, concat"):
        GraphSAGE(8, 4, 2, readout="mean")
