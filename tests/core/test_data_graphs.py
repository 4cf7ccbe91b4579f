"""Graph loading: Planetoid raw files from the data root, user edge lists, clear misses."""

from __future__ import annotations

import pytest
import torch

from core.data.graphs import load_edge_list, load_planetoid
from core.data.roots import DatasetNotFound
from core.run import train
from core.spec import load_spec
from core.spec.data import EdgeListData
from tests.support.specs import tiny_cora


def test_cora_public_split():
    g = load_planetoid("Cora")
    assert g.num_nodes == 2708 and g.edge_index.shape == (2, 10556)
    assert g.x.shape == (2708, 1433)
    torch.testing.assert_close(g.x.sum(1)[g.x.sum(1) > 0], torch.ones(2708))
    assert [int(m.sum()) for m in g.masks.values()] == [140, 500, 1000]


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", f"{tmp_path / 'a'}:{tmp_path / 'b'}")
    with pytest.raises(DatasetNotFound) as err:
        load_planetoid("Cora")
    assert str(tmp_path / "a" / "Cora" / "raw") in str(err.value)
    assert str(tmp_path / "b" / "Cora" / "raw") in str(err.value)


@pytest.fixture
def edge_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "g").mkdir(parents=True)
    (root / "g" / "edges.csv").write_text(
        "src,dst\nalice,bob\nbob,carol\ncarol,alice\ndave,alice\n"
    )
    (root / "g" / "edges.tsv").write_text("alice\tbob\nbob\tcarol\n")
    (root / "g" / "feats.csv").write_text("node,f1,f2\nalice,1,0\nbob,0,1\ncarol,1,1\ndave,0,0\n")
    (root / "g" / "labels.csv").write_text("node,label\nalice,x\nbob,y\ncarol,x\ndave,y\n")
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(root))
    return root


def test_edge_list_with_features_and_labels(edge_root):
    spec = EdgeListData(
        format="edge_list",
        path="g/edges.csv",
        features_path="g/feats.csv",
        labels_path="g/labels.csv",
    )
    g = load_edge_list(spec)
    assert g.node_ids == ["alice", "bob", "carol", "dave"]
    assert g.edge_index.size(1) == 8  # undirected: both directions
    assert g.x.tolist() == [[1, 0], [0, 1], [1, 1], [0, 0]]
    assert g.y.tolist() == [0, 1, 0, 1]
    assert set(g.masks) == {"train", "val", "test"}


def test_edge_list_without_features(edge_root):
    learnable = load_edge_list(EdgeListData(format="edge_list", path="g/edges.tsv"))
    assert learnable.x is None and learnable.num_nodes == 3
    one_hot = load_edge_list(
        EdgeListData(format="edge_list", path="g/edges.tsv", features="one_hot", directed=True)
    )
    assert torch.equal(one_hot.x, torch.eye(3)) and one_hot.edge_index.size(1) == 2


def test_edge_list_job_trains_with_learnable_inputs(edge_root, tmp_path):
    spec = tiny_cora(
        walks={"walks_per_node": 5, "walk_length": 4, "window": 1},
        training={"batch_size": 16},
        probe={"enabled": False},
    )
    spec["data"] = {"format": "edge_list", "path": "g/edges.csv", "learnable_dim": 8}
    train(load_spec(spec), tmp_path / "run")
    lines = (tmp_path / "run" / "node_ids.csv").read_text().splitlines()
    assert lines == ["row,node_id", "0,alice", "1,bob", "2,carol", "3,dave"]
