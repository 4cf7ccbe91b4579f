"""ZINC 12k from SMILES: the benchmarking-gnns atom vocabulary, bonds, split, target, cache."""

from __future__ import annotations

import csv
from collections import Counter

import pytest
import torch

from core.data.roots import resolve_data_path
from core.data.zinc import ATOM_VOCAB, NUM_ATOM_TYPES, SUBSET_DIR, load_zinc, smiles_to_graph
from core.spec.data import ZincData
from tests.support.graphs import gt_cache, gt_env, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread", "gt_env")


def tokens(smiles: str) -> list[str]:
    types, _, _, _ = smiles_to_graph(smiles)
    return [ATOM_VOCAB[t] for t in types]


def test_vocabulary_is_benchmarking_gnns():
    assert NUM_ATOM_TYPES == 28
    assert ATOM_VOCAB[:5] == ("C", "O", "N", "F", "C H1")
    assert ATOM_VOCAB[-1] == "P H1 +" and ATOM_VOCAB.index("N H3 +") == 10


@pytest.mark.parametrize(
    ("smiles", "expected"),
    [
        ("C[NH3+]", ["C", "N H3 +"]),
        ("C[C@@H](O)Cl", ["C", "C H1", "O", "Cl"]),
        ("C[C@](F)(Cl)Br", ["C", "C", "F", "Cl", "Br"]),  # chiral, no H: plain C
        ("CC(=O)[O-]", ["C", "C", "O", "O -"]),
        ("c1cc[nH]c1", ["C", "C", "C", "N", "C"]),  # pyrrole N is plain N in Kekulé form
        ("c1cc[nH+]cc1", ["C", "C", "C", "N H1 +", "C", "C"]),
        ("C[S@@](=O)c1ccccc1", ["C", "S", "O", "C", "C", "C", "C", "C", "C"]),
        ("C[N+](C)(C)C", ["C", "N +", "C", "C", "C"]),
        ("C[NH2+]C", ["C", "N H2 +", "C"]),
        ("[NH-]C", ["N H1 -", "C"]),
    ],
)
def test_atom_tokens(smiles, expected):
    assert tokens(smiles) == expected


def test_bonds_are_kekulised_and_typed():
    types, begin, end, bonds = smiles_to_graph("c1ccccc1C#N")
    assert len(types) == 8 and len(bonds) == 8
    assert Counter(bonds) == {1: 4, 2: 3, 3: 1}  # aromatic ring: 3 double + 3 single
    assert all(0 <= i < 8 for i in begin + end)


def test_unknown_tokens():
    unknown: Counter[str] = Counter()
    types, *_ = smiles_to_graph("C[CH2+]", unknown)  # 'C H2 +' is not in the vocabulary
    assert [ATOM_VOCAB[t] for t in types] == ["C", "C"] and unknown == {"C H2 +": 1}
    with pytest.raises(ValueError, match="outside the ZINC vocabulary"):
        smiles_to_graph("C[Si](C)(C)C")
    with pytest.raises(ValueError, match="cannot parse"):
        smiles_to_graph("C1CC")


def test_full_12k_statistics_split_and_target():
    graphs, key = load_zinc(ZincData(format="zinc"))
    assert graphs.num_graphs == 12_000
    assert graphs.num_nodes / 12_000 == pytest.approx(23.2, abs=0.05)
    assert graphs.num_edges / 2 / 12_000 == pytest.approx(24.9, abs=0.05)
    assert {k: v.numel() for k, v in graphs.splits.items()} == {
        "train": 10_000, "val": 1_000, "test": 1_000
    }  # fmt: skip
    assert torch.equal(graphs.graph_ids, torch.arange(12_000))
    assert int(graphs.x.max()) < 28 and set(graphs.edge_attr.unique().tolist()) == {1, 2, 3}
    # 'C H1' is exactly the chiral CH atoms written [C@H] / [C@@H] in the SMILES.
    text = (resolve_data_path(SUBSET_DIR) / "smiles_score.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    chiral_ch = sum(r["SMILES"].count("[C@H]") + r["SMILES"].count("[C@@H]") for r in rows)
    assert int((graphs.x == ATOM_VOCAB.index("C H1")).sum()) == chiral_ch
    score = torch.tensor([float(r["logp"]) - float(r["SA"]) for r in rows])
    assert torch.allclose(graphs.y, score, atol=1e-5)  # target = logP - SA, not normalised
    again, key2 = load_zinc(ZincData(format="zinc"))  # from the cache
    assert key2 == key and torch.equal(again.x, graphs.x) and torch.equal(again.y, graphs.y)


def test_subset_is_proportional_and_cached_separately(monkeypatch, tmp_path):
    monkeypatch.setenv("TRAINCTL_CACHE_DIR", str(tmp_path))
    graphs, key = load_zinc(ZincData(format="zinc", max_graphs=120))
    assert {k: v.numel() for k, v in graphs.splits.items()} == {"train": 100, "val": 10, "test": 10}
    assert graphs.graph_ids[100].item() == 10_000 and graphs.graph_ids[110].item() == 11_000
    cached = list((tmp_path / "zinc").glob("*.pt"))
    assert len(cached) == 1 and key in cached[0].name
    state = torch.load(cached[0], weights_only=True)  # tensors and plain values only
    assert torch.equal(state["x"], graphs.x)
    _, other = load_zinc(ZincData(format="zinc", max_graphs=60))
    assert other != key


def test_full_zinc_is_not_shipped_and_says_where_it_looked():
    from core.data.roots import DatasetNotFound

    with pytest.raises(DatasetNotFound, match=r"ZINC/full.*smiles_score.csv.*looked in"):
        load_zinc(ZincData(format="zinc", subset=False))
