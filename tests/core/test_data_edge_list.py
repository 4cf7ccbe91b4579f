"""Edge lists as people write them: headers of every spelling, ids that start with '#',
self-loops, short rows and bad feature cells. Each case names the file, line and column, or
loads what the user meant and says what it skipped."""

from __future__ import annotations

import json

import pytest

from core.data.errors import DataError
from core.data.graphs import load_edge_list
from core.run import train
from core.spec import load_spec
from core.spec.data import EdgeListData
from tests.support.specs import tiny_cora


@pytest.fixture
def root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    (root / "g").mkdir(parents=True)
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(root))
    return root


def _load(root, text: str, name: str = "edges.csv", **fields):
    (root / "g" / name).write_text(text)
    return load_edge_list(EdgeListData(format="edge_list", path=f"g/{name}", **fields))


@pytest.mark.parametrize(
    "header", ["from,to", "u,v", "node1,node2", "src_id,dst_id", "Source,Target", "a,b"]
)
def test_a_header_row_never_becomes_an_edge(root, header):
    g = _load(root, f"{header}\n1,2\n2,3\n3,1\n")
    assert sorted(g.node_ids) == ["1", "2", "3"]
    assert g.edge_index.size(1) == 6


def test_named_ends_are_a_header_even_over_named_nodes_and_header_false_keeps_the_row(root):
    assert _load(root, "from,to\nalice,bob\nbob,carol\n").node_ids == ["alice", "bob", "carol"]
    kept = _load(root, "from,to\nalice,bob\n", header=False)
    assert kept.node_ids == ["from", "to", "alice", "bob"]
    plain = _load(root, "alice,bob\nbob,carol\n")  # no header: the first row is an edge
    assert plain.node_ids == ["alice", "bob", "carol"]


def test_columns_are_chosen_by_name(root):
    g = _load(
        root, "weight,target,source\n0.5,b,a\n0.1,c,b\n", src_column="source", dst_column="target"
    )
    assert g.node_ids == ["a", "b", "c"]
    with pytest.raises(DataError) as err:
        _load(root, "weight,to,from\n1,b,a\n", src_column="source")
    assert str(err.value) == (
        "g/edges.csv, line 1: no column 'source' (data.src_column); allowed: weight, to, from"
    )


def test_ids_starting_with_hash_are_nodes_unless_comments_are_declared(root):
    text = "# a comment line\nalice,#python\nbob,#rust\nalice,bob\n#go,bob\ncarol,alice\n"
    g = _load(root, "alice,#python\nbob,#rust\nalice,bob\n#go,bob\ncarol,alice\n")
    assert {"#python", "#rust", "#go"} <= set(g.node_ids) and g.edge_index.size(1) == 10
    declared = _load(root, text, comment="#")
    assert declared.edge_index.size(1) == 8  # 4 edges kept (a line starting with '#' is not)
    assert "#python" in declared.node_ids and "#go" not in declared.node_ids
    assert declared.warnings == ["g/edges.csv: skipped 2 comment line(s) starting with '#'"]


def test_short_rows_empty_ids_and_bad_features_name_file_line_and_column(root):
    with pytest.raises(DataError, match=r"^g/edges.csv, line 3: 1 column\(s\); an edge needs"):
        _load(root, "a,b\nb,c\nd\n")
    with pytest.raises(DataError, match=r"^g/edges.csv, line 2, column 'dst': empty node id"):
        _load(root, "src,dst\na,\n")
    with pytest.raises(DataError, match="no edges"):
        _load(root, "src,dst\n")
    (root / "g" / "f.csv").write_text("node,f1,f2\na,1,0\nb,0,x\n")
    with pytest.raises(DataError) as err:
        _load(root, "a,b\n", features_path="g/f.csv")
    assert str(err.value) == (
        "g/f.csv, line 3, column 'f2': 'x' is not a number; allowed: numbers after the node id"
    )


def test_self_loops_only_fail_before_training_with_the_reason(root, tmp_path):
    (root / "g" / "loops.csv").write_text("a,a\nb,b\nc,c\n")
    spec = tiny_cora(probe={"enabled": False}, training={"batch_size": 16})
    spec["data"] = {"format": "edge_list", "path": "g/loops.csv", "learnable_dim": 4}
    with pytest.raises(DataError, match="g/loops.csv: no training pairs: .*only self-loops"):
        train(load_spec(spec), tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_probe_without_enough_labels_is_skipped_with_the_reason(root, tmp_path):
    (root / "g" / "e.csv").write_text("a,b\nb,c\nc,d\nd,e\ne,a\n")
    (root / "g" / "l.csv").write_text("a,x\nb,y\nc,x\n")
    spec = tiny_cora(training={"batch_size": 16, "epochs": 2}, probe={"every_n_epochs": 1})
    spec["data"] = {
        "format": "edge_list",
        "path": "g/e.csv",
        "labels_path": "g/l.csv",
        "learnable_dim": 4,
    }
    spec["walks"] = {"walks_per_node": 4, "walk_length": 4, "window": 1}
    spec["checkpoint"] = {"monitor": "val_loss"}
    spec["early_stopping"] = None
    summary = train(load_spec(spec), tmp_path / "run")
    assert summary["epochs_completed"] == 2
    stored = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert any("probe disabled: too few labelled nodes" in w for w in stored["data_warnings"])
    assert "probe_test_acc" not in stored["best_metrics"]


def test_isolated_nodes_from_the_feature_file_are_a_warning(root):
    (root / "g" / "f.csv").write_text("node,f1\na,1\nb,0\nlonely,1\n")
    g = _load(root, "a,b\n", features_path="g/f.csv")
    assert g.num_nodes == 3
    assert g.warnings == ["g/edges.csv: 1 node(s) have no edge (isolated): no walk leaves them"]
