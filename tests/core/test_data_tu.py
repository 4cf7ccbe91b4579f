"""TU raw reader (no writes into the data root, no network) and the data roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from core.data.roots import DatasetNotFound, data_roots, resolve_data_path
from core.data.tu import load_tu, read_tu
from core.spec.data import TUData, TUUploadData
from tests.support.graphs import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mutag_matches_pyg_reader():
    from torch_geometric.io import read_tu_data

    graphs, key = load_tu(TUData(format="tu", name="MUTAG"))
    assert graphs.num_graphs == 188 and graphs.num_classes == 2
    assert graphs.y.bincount().tolist() == [63, 125]  # -1/1 -> 0/1
    assert graphs.x.shape == (3371, 7) and graphs.num_edge_types == 4
    assert graphs.num_edges == 7442 and len(key) == 16
    raw = resolve_data_path("MUTAG/raw")
    ref, slices, _ = read_tu_data(str(raw), "MUTAG")
    assert torch.equal(graphs.x, ref.x) and torch.equal(graphs.y, ref.y)
    assert torch.equal(graphs.edge_ptr, slices["edge_index"])
    assert torch.equal(graphs.edge_index, ref.edge_index)
    assert torch.equal(graphs.edge_attr, ref.edge_attr.argmax(1))


def test_enzymes_and_imdb():
    enzymes, _ = load_tu(TUData(format="tu", name="ENZYMES"))
    assert enzymes.num_graphs == 600 and enzymes.num_classes == 6
    assert enzymes.y.bincount().tolist() == [100] * 6 and enzymes.x.size(1) == 3
    with_attrs, _ = load_tu(TUData(format="tu", name="ENZYMES", use_node_attributes=True))
    assert with_attrs.x.size(1) == 21 and enzymes.edge_attr is None
    imdb, _ = load_tu(TUData(format="tu", name="IMDB-BINARY"))
    assert imdb.num_graphs == 1000 and imdb.num_nodes == 19_773 and imdb.num_edges == 193_062
    assert torch.equal(imdb.x, torch.ones(19_773, 1))  # no node labels: a constant input


def _write_upload(directory: Path) -> None:
    """Two graphs; edges listed once, one self-loop, node lines not sorted by graph."""
    directory.mkdir(parents=True)
    (directory / "TOY_A.txt").write_text("1, 3\n3, 5\n2, 4\n4, 4\n")
    (directory / "TOY_graph_indicator.txt").write_text("1\n2\n1\n2\n1\n")
    (directory / "TOY_graph_labels.txt").write_text("3\n7\n")
    (directory / "TOY_node_labels.txt").write_text("0\n1\n2\n1\n0\n")
    (directory / "TOY_edge_labels.txt").write_text("1\n2\n1\n0\n")


def test_upload_is_read_without_writing(tmp_path, monkeypatch):
    root = tmp_path / "root"
    _write_upload(root / "uploads" / "toy" / "raw")
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", os.pathsep.join([str(tmp_path / "none"), str(root)]))
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    graphs, _ = load_tu(TUUploadData(format="tu_upload", path="uploads/toy"))
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # nothing written
    assert graphs.num_graphs == 2 and graphs.y.tolist() == [0, 1]
    assert graphs.nodes_per_graph().tolist() == [3, 2]
    # Graph 1: nodes 1, 3, 5 -> local 0, 1, 2; edges 0-1, 1-2 in both directions.
    data = graphs.to_data_list()
    assert data[0].edge_index.t().tolist() == [[0, 1], [1, 0], [1, 2], [2, 1]]
    assert data[0].edge_attr.tolist() == [1, 1, 2, 2]
    assert data[1].edge_index.t().tolist() == [[0, 1], [1, 0]]  # self-loop 4-4 dropped
    assert graphs.x.shape == (5, 3)


def test_read_tu_errors(tmp_path):
    (tmp_path / "BAD_A.txt").write_text("1, 2\n")
    with pytest.raises(DatasetNotFound, match="BAD_graph_indicator.txt"):
        read_tu(tmp_path, "BAD")
    (tmp_path / "BAD_graph_indicator.txt").write_text("1\n2\n")
    (tmp_path / "BAD_graph_labels.txt").write_text("0\n1\n")
    with pytest.raises(ValueError, match="two different graphs"):
        read_tu(tmp_path, "BAD")


def test_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", os.pathsep.join([str(tmp_path / "a"), "", "~/b"]))
    assert data_roots() == [tmp_path / "a", Path("~/b").expanduser()]
    with pytest.raises(DatasetNotFound) as err:
        resolve_data_path("MUTAG/raw")
    assert str(tmp_path / "a" / "MUTAG" / "raw") in str(err.value)
    assert str(Path("~/b").expanduser() / "MUTAG" / "raw") in str(err.value)
    for bad in ("/etc/passwd", "../x", "a/../../b", ""):
        with pytest.raises(ValueError, match="relative to the data root"):
            resolve_data_path(bad)
    monkeypatch.setenv("TRAINCTL_CACHE_DIR", str(tmp_path / "cache"))
    from core.data.roots import cache_dir

    assert cache_dir() == tmp_path / "cache" and cache_dir().is_dir()


def test_missing_tu_dataset_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(tmp_path))
    with pytest.raises(DatasetNotFound, match="NOPE_A.txt"):
        load_tu(TUData(format="tu", name="NOPE"))
