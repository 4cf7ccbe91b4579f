"""Positional encodings: PyG-equal values, multi-scale shapes, the k >= n guard, the cache, and
Laplacian sign flips re-drawn every epoch in the training path only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch_geometric.transforms import AddLaplacianEigenvectorPE, AddRandomWalkPE

from core.data.graphset import GraphSet, ptr_from_counts
from core.data.pe import add_positional_encodings, laplacian_pe, random_walk_pe
from core.data.tu import load_tu
from core.spec import load_spec
from core.spec.data import TUData
from core.spec.pe import LaplacianPE, RwsePE
from core.task import RunContext
from tests.support.graphs import gt_cache, gt_env, one_thread, tiny_gt  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread", "gt_env")


@pytest.fixture(scope="module")
def mutag() -> GraphSet:
    return load_tu(TUData(format="tu", name="MUTAG"))[0]


def test_rwse_equals_pyg(mutag):
    pe = random_walk_pe(mutag, 16)
    assert pe.shape == (mutag.num_nodes, 16)
    data = mutag.to_data_list()
    for g in (0, 17, 101, 187):
        rows = slice(int(mutag.node_ptr[g]), int(mutag.node_ptr[g + 1]))
        ref = AddRandomWalkPE(16, attr_name="pe")(data[g]).pe
        assert torch.allclose(pe[rows], ref, atol=1e-5)


def test_laplacian_equals_pyg_up_to_sign(mutag):
    k = 4
    pe = laplacian_pe(mutag, k)
    data = mutag.to_data_list()
    checked = 0
    for g in range(40):
        n = int(mutag.node_ptr[g + 1] - mutag.node_ptr[g])
        rows = slice(int(mutag.node_ptr[g]), int(mutag.node_ptr[g + 1]))
        ref = AddLaplacianEigenvectorPE(k, attr_name="pe", is_undirected=True)(data[g]).pe.float()
        # Eigenvectors are unique up to sign only where eigenvalues 1..k+1 are simple.
        adj = torch.zeros(n, n, dtype=torch.float64)
        adj[data[g].edge_index[0], data[g].edge_index[1]] = 1
        d = adj.sum(1).rsqrt()
        vals = torch.linalg.eigvalsh(torch.eye(n) - d[:, None] * adj * d[None, :])
        if (vals[: k + 2].diff().abs() < 1e-6).any():
            continue
        assert torch.allclose(pe[rows].abs(), ref.abs(), atol=1e-4)
        checked += 1
    assert checked >= 10


def _tiny_graphs() -> GraphSet:
    """A 1-node graph, a 2-node path and a 3-node path."""
    edges = torch.tensor([[0, 1, 0, 1, 1, 2], [1, 0, 1, 0, 2, 1]])
    return GraphSet(
        x=torch.ones(6, 1),
        edge_index=edges,
        edge_attr=None,
        y=torch.zeros(3),
        node_ptr=ptr_from_counts(torch.tensor([1, 2, 3])),
        edge_ptr=ptr_from_counts(torch.tensor([0, 2, 4])),
        graph_ids=torch.arange(3),
    )


def test_k_at_least_n_is_padded_not_an_error():
    graphs = _tiny_graphs()
    pe = laplacian_pe(graphs, 8)
    assert pe.shape == (6, 8) and torch.isfinite(pe).all()
    assert pe[0].abs().sum() == 0  # 1 node: no non-trivial eigenvector
    assert pe[1:3, 1:].abs().sum() == 0 and pe[1:3, 0].abs().sum() > 0  # 2 nodes: one column
    assert pe[3:6, 2:].abs().sum() == 0 and pe[3:6, :2].abs().sum() > 0  # 3 nodes: two
    rw = random_walk_pe(graphs, 3)
    assert rw[0].tolist() == [0.0, 0.0, 0.0]  # isolated node: no return
    assert rw[1].tolist() == [0.0, 1.0, 0.0]


def test_scales_concatenate_and_cache(tmp_path, monkeypatch, mutag):
    monkeypatch.setenv("TRAINCTL_CACHE_DIR", str(tmp_path))
    specs = [
        RwsePE(kind="rwse", walk_lengths=[8, 16]),
        LaplacianPE(kind="laplacian", k=3),
        RwsePE(kind="rwse", walk_lengths=[4]),
    ]
    graphs = add_positional_encodings(mutag.select(torch.arange(20)), specs, source_key="t1")
    shapes = {k: tuple(v.shape) for k, v in graphs.pe.items()}
    n = graphs.num_nodes
    assert shapes == {"pe_0": (n, 24), "pe_1": (n, 3), "pe_2": (n, 4)}
    assert torch.equal(graphs.pe["pe_0"][:, :8], graphs.pe["pe_0"][:, 8:16])  # steps 1..8 twice
    cached = list((tmp_path / "pe").glob("*.pt"))
    assert len(cached) == 1
    again = add_positional_encodings(mutag.select(torch.arange(20)), specs, source_key="t1")
    assert all(torch.equal(again.pe[k], graphs.pe[k]) for k in graphs.pe)
    # Encoder widths and the sign flip do not change the raw values: same cache entry.
    specs[1] = LaplacianPE(kind="laplacian", k=3, dim=2, random_sign_flip=False)
    add_positional_encodings(mutag.select(torch.arange(20)), specs, source_key="t1")
    assert len(list((tmp_path / "pe").glob("*.pt"))) == 1


def _first_graph_pe(task, epoch: int) -> torch.Tensor:
    batch = next(iter(task.train_batches(epoch)))
    first = batch.batch == 0
    return batch.graph_id[0].item(), batch.pe_1[first]


def test_sign_flip_redrawn_each_epoch_train_only(tmp_path):
    from core.families.graph_transformer.task import GraphTransformerTask

    spec = load_spec(tiny_gt())
    task = GraphTransformerTask(RunContext(spec, tmp_path, torch.device("cpu")))
    task.setup_data()
    task.build_model()
    stored = {int(d.graph_id): d.pe_1 for d in task.data}

    signs = []
    for epoch in (1, 2, 3, 4, 1):
        batch = next(iter(task.train_batches(epoch)))
        # Every graph's columns are the stored ones times +-1.
        flips = []
        for g in range(batch.num_graphs):
            got = batch.pe_1[batch.batch == g]
            ref = stored[int(batch.graph_id[g])]
            ratio = torch.where(ref.abs() > 1e-6, got / ref, torch.zeros_like(ref))
            col = ratio.abs().amax(0)
            assert torch.allclose(col[col > 0], torch.ones_like(col[col > 0]))
            flips.append(torch.sign(ratio.sum(0)))
        signs.append(torch.stack(flips))
    assert not torch.equal(signs[0], signs[1]) and not torch.equal(signs[1], signs[2])
    assert torch.equal(signs[0], signs[4])  # reproducible for a given (seed, epoch)
    # Evaluation batches carry the stored signs.
    val = next(iter(task._eval_batches("val")))
    for g in range(val.num_graphs):
        assert torch.equal(val.pe_1[val.batch == g], stored[int(val.graph_id[g])])


def test_no_flip_when_disabled(tmp_path):
    from core.families.graph_transformer.task import GraphTransformerTask

    pes = tiny_gt()["positional_encodings"]
    pes[1] = {**pes[1], "random_sign_flip": False}
    spec = load_spec(tiny_gt(positional_encodings=pes))
    task = GraphTransformerTask(RunContext(spec, Path(tmp_path), torch.device("cpu")))
    task.setup_data()
    task.build_model()
    stored = {int(d.graph_id): d.pe_1 for d in task.data}
    batch = next(iter(task.train_batches(1)))
    for g in range(batch.num_graphs):
        assert torch.equal(batch.pe_1[batch.batch == g], stored[int(batch.graph_id[g])])
