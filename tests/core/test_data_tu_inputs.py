"""TU files as people upload them: trailing commas, no edges at all, per-node files of the
wrong length, single-node graphs in a batch of one, missing regression targets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.data.errors import DataError
from core.data.tu import read_tu
from core.run import train
from core.spec import load_spec
from tests.support.graphs import tiny_gt


def _write(directory: Path, **files: str) -> Path:
    """Three graphs of 2, 1 and 2 nodes; `files` replace or add `TOY_<name>.txt` contents."""
    directory.mkdir(parents=True, exist_ok=True)
    base = {
        "A": "1,2\n2,1\n4,5\n5,4\n",
        "graph_indicator": "1\n1\n2\n3\n3\n",
        "graph_labels": "0\n1\n0\n",
        "node_labels": "0\n1\n0\n1\n0\n",
    }
    for name, text in {**base, **files}.items():
        if text is not None:
            (directory / f"TOY_{name}.txt").write_text(text)
    return directory


def test_trailing_commas_are_tolerated(tmp_path):
    plain = read_tu(_write(tmp_path / "a"), "TOY")
    commas = read_tu(
        _write(
            tmp_path / "b", A="1, 2,\n2, 1,\n4, 5,\n5, 4,\n", graph_indicator="1,\n1,\n2,\n3,\n3,\n"
        ),
        "TOY",
    )
    assert torch.equal(plain.edge_index, commas.edge_index) and torch.equal(plain.x, commas.x)


def test_graphs_without_edges_load(tmp_path):
    graphs = read_tu(_write(tmp_path, A=""), "TOY")
    assert graphs.num_graphs == 3 and graphs.num_edges == 0 and graphs.num_nodes == 5


@pytest.mark.parametrize("rows", ["0\n1\n0\n1\n", "0\n1\n0\n1\n0\n1\n"])
def test_a_per_node_file_of_the_wrong_length_is_named(tmp_path, rows):
    with pytest.raises(DataError) as err:
        read_tu(_write(tmp_path, node_labels=rows), "TOY", label="uploads/toy")
    n = rows.count("\n")
    assert str(err.value) == (
        f"uploads/toy/TOY_node_labels.txt: {n} rows, but uploads/toy/TOY_graph_indicator.txt "
        "has 5: one row per node"
    )


def test_a_bad_cell_names_file_line_and_column(tmp_path):
    with pytest.raises(DataError, match=r"^TOY_A.txt, line 3, column 2: 'x' is not an integer"):
        read_tu(_write(tmp_path, A="1,2\n2,1\n4,x\n"), "TOY")
    with pytest.raises(DataError, match=r"^TOY_A.txt, line 2: node id out of range; allowed"):
        read_tu(_write(tmp_path, A="1,2\n2,9\n"), "TOY")


def _spec(path: str, **sections) -> dict:
    spec = tiny_gt(**sections)
    spec["data"] = {
        "format": "tu_upload",
        "path": path,
        "split": {"kind": "fractions", "fractions": [0.6, 0.2, 0.2], "stratify": False},
    }
    return spec


def test_a_batch_of_one_single_node_graph_trains(tmp_path, monkeypatch):
    root = tmp_path / "root"
    indicator = "".join(f"{g}\n" for g in range(1, 11))  # ten graphs of one node each
    _write(root / "ones", A="", graph_indicator=indicator, graph_labels="0\n1\n" * 5,
           node_labels="0\n1\n" * 5)  # fmt: skip
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(root))
    spec = _spec("ones", training={"batch_size": 1, "epochs": 2})
    summary = train(load_spec(spec), tmp_path / "run")
    assert summary["epochs_completed"] == 2


def test_missing_regression_targets_are_refused_with_graph_ids_or_dropped(tmp_path, monkeypatch):
    root = tmp_path / "root"
    indicator = "".join(f"{g}\n{g}\n" for g in range(1, 11))
    a = "".join(f"{2 * g - 1},{2 * g}\n" for g in range(1, 11))
    targets = "".join("nan\n" if g in (3, 7) else f"{g / 10}\n" for g in range(1, 11))
    _write(root / "reg", A=a, graph_indicator=indicator, graph_labels=None,
           graph_attributes=targets, node_labels="0\n1\n" * 10)  # fmt: skip
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(root))
    spec = _spec("reg", task="graph_regression", training={"epochs": 1})
    with pytest.raises(DataError, match="reg: 2 graph.s. have no target .NaN.: graph ids 3, 7"):
        train(load_spec(spec), tmp_path / "refused")
    spec["data"]["missing_targets"] = "drop"
    train(load_spec(spec), tmp_path / "run")
    text = (tmp_path / "run" / "summary.json").read_text()
    summary = json.loads(text, parse_constant=lambda t: pytest.fail(f"summary holds {t}"))
    assert summary["data_warnings"] == ["reg: left out 2 graph(s) without a target: 3, 7"]
    ids = (tmp_path / "run" / "graph_ids.csv").read_text()
    assert ",3," not in ids and ",7," not in ids
