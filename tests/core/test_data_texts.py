"""Text corpora (`core.data.texts`): SICK from the data root, scored pairs and triplet files
generated here; triplet derivation; every bad file names its file, line and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from core.data.texts import (
    SOURCE_PARTNER,
    SOURCE_RANDOM,
    TextDataError,
    derive_triplets,
    join_on_anchor,
    load_texts,
)
from core.spec.splits import OwnSplit
from core.spec.texts import ScoredPairsData, SickData, TripletDerivation, TripletsData


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root of files written by the test (the real root stays searched second)."""
    import os

    real = os.environ.get("TRAINCTL_DATA_ROOT", "")
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", os.pathsep.join(p for p in [str(tmp_path), real] if p))
    return tmp_path


def _pairs_csv(root: Path, name: str, rows: list[str], header: str = "a,b,score") -> str:
    (root / name).write_text("\n".join([header, *rows]) + "\n")
    return name


# --- SICK -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sick():
    return load_texts(SickData(format="sick"), seed=0)


def test_sick_uses_its_own_split_and_derives_triplets_by_the_rules(sick):
    assert [sick.split_pairs(s).numel() for s in ("train", "val", "test")] == [4500, 500, 4927]
    assert sick.num_texts == len(set(sick.texts.tolist())) == 6077
    assert sick.text_ids[0] == "t000000" and len(set(sick.text_ids.tolist())) == sick.num_texts
    cfg = TripletDerivation()
    # Every triplet lives in one split and its positive is a positive pair of that split.
    assert sick.pairs is not None and sick.scores is not None and sick.entailed is not None
    key = sick.pairs[:, 0] * sick.num_texts + sick.pairs[:, 1]
    rkey = sick.pairs[:, 1] * sick.num_texts + sick.pairs[:, 0]
    positive = sick.entailed | (sick.scores >= cfg.positive_min_score)
    for s in range(3):
        t = sick.triplets[sick.triplet_split == s]
        src = sick.triplet_source[sick.triplet_split == s]
        in_split = sick.pair_split == s
        pos_keys = torch.cat([key[in_split & positive], rkey[in_split & positive]])
        assert torch.isin(t[:, 0] * sick.num_texts + t[:, 1], pos_keys).all()
        low = in_split & (sick.scores <= cfg.negative_max_score) & ~positive
        low_keys = torch.cat([key[low], rkey[low]])
        partner = t[src == SOURCE_PARTNER]
        assert torch.isin(partner[:, 0] * sick.num_texts + partner[:, 2], low_keys).all()
        random = t[src == SOURCE_RANDOM]
        every = torch.cat([key, rkey])
        assert not torch.isin(random[:, 0] * sick.num_texts + random[:, 2], every).any()
        assert (random[:, 0] != random[:, 2]).all()
    # The anchor's own low partners alone are too few: random texts make up the rest.
    train = sick.triplet_split == 0
    assert (sick.triplet_source[train] == SOURCE_PARTNER).sum() < 1200
    assert train.sum() > 5000


def test_sick_derivation_is_seeded(sick):
    again = load_texts(SickData(format="sick"), seed=0)
    other = load_texts(SickData(format="sick"), seed=1)
    assert torch.equal(again.triplets, sick.triplets)
    assert not torch.equal(other.triplets, sick.triplets)


def test_sick_max_pairs_keeps_the_first_rows_of_each_split():
    small = load_texts(SickData(format="sick", max_pairs=200), seed=0)
    assert [small.split_pairs(s).numel() for s in ("train", "val", "test")] == [90, 20, 90]


# --- derivation on a hand-made example ---------------------------------------------------------


def test_derive_triplets_by_hand():
    # Texts 0..5, all train. 0-1 positive (4.5), 0-2 low (1.0), 3-4 entailed (3.0), 1-5 (3.0).
    pairs = torch.tensor([[0, 1], [0, 2], [3, 4], [1, 5]])
    scores = torch.tensor([4.5, 1.0, 3.0, 3.0])
    entailed = torch.tensor([False, False, True, False])
    split = torch.zeros(4, dtype=torch.long)
    cfg = TripletDerivation(random_negatives=0)
    t, s, src = derive_triplets(pairs, scores, entailed, split, 6, cfg, seed=0)
    # Only anchor 0 has a low partner (2): (0, 1, 2). No random negatives.
    assert t.tolist() == [[0, 1, 2]] and s.tolist() == [0] and src.tolist() == [SOURCE_PARTNER]
    cfg = TripletDerivation(random_negatives=4, negative_max_score=None)
    t, _, src = derive_triplets(pairs, scores, entailed, split, 6, cfg, seed=0)
    assert (src == SOURCE_RANDOM).all() and t.size(0) > 0
    # Anchors 0, 1, 3, 4 (both sides of 0-1 and 3-4); a random negative is never a partner.
    partners = {0: {1, 2}, 1: {0, 5}, 3: {4}, 4: {3}}
    for a, p, n in t.tolist():
        assert p in partners[a] and n not in partners[a] | {a}


def test_join_on_anchor_is_the_cartesian_product_per_anchor():
    left = torch.tensor([[0, 1], [2, 3], [0, 4]])
    right = torch.tensor([[0, 7], [1, 8], [0, 9], [2, 5]])
    li, rj = join_on_anchor(left, right, 10)
    got = sorted(zip(li.tolist(), rj.tolist(), strict=True))
    assert got == [(0, 0), (0, 2), (1, 3), (2, 0), (2, 2)]


# --- scored pairs and triplet files ------------------------------------------------------------


def test_scored_pairs_with_a_split_column(data_root):
    rows = [f"text {i} about cats,text {i + 1} about dogs,{i % 5},{s}"
            for i, s in enumerate(["train"] * 6 + ["val"] * 3 + ["test"] * 3)]  # fmt: skip
    path = _pairs_csv(data_root, "pairs.csv", rows, "a,b,score,part")
    spec = ScoredPairsData(
        format="scored_pairs",
        path=path,
        text_a_column="a",
        text_b_column="b",
        score_column="score",
        split_column="part",
        triplets=TripletDerivation(positive_min_score=3.0, negative_max_score=1.0),
    )
    corpus = load_texts(spec, seed=0)
    assert [corpus.split_pairs(s).numel() for s in ("train", "val", "test")] == [6, 3, 3]
    assert corpus.pair_ids is not None and corpus.pair_ids.tolist()[:2] == ["1", "2"]
    assert (corpus.triplet_split == 0).sum() > 0


def test_scored_pairs_split_by_fractions_tsv(data_root):
    rows = [f"sentence number {i}\tanother sentence {i * 7}\t{(i * 3) % 6}" for i in range(40)]
    (data_root / "pairs.tsv").write_text("x\ty\tsim\n" + "\n".join(rows) + "\n")
    spec = ScoredPairsData(
        format="scored_pairs", path="pairs.tsv", text_a_column="x", text_b_column="y",
        score_column="sim",
        split={"kind": "fractions", "fractions": [0.5, 0.25, 0.25]},
        triplets={"positive_min_score": 3.0, "negative_max_score": 0.0},
    )  # fmt: skip
    corpus = load_texts(spec, seed=3)
    assert [corpus.split_pairs(s).numel() for s in ("train", "val", "test")] == [20, 10, 10]


def test_triplets_json_and_csv(data_root):
    items = [{"anchor": f"a{i}", "positive": f"p{i}", "negative": f"n{i % 3}"} for i in range(20)]
    (data_root / "t.json").write_text(json.dumps({"triplets": items}, indent=2))
    corpus = load_texts(TripletsData(format="triplets", path="t.json"), seed=0)
    assert corpus.triplets.size(0) == 20 and corpus.num_texts == 43 and not corpus.has_pairs
    assert corpus.texts[corpus.triplets[0]].tolist() == ["a0", "p0", "n0"]
    lines = ["anchor,positive,negative"] + [f'"a {i}, x","p{i}",n{i}' for i in range(10)]
    (data_root / "t.csv").write_text("\n".join(lines) + "\n")
    corpus = load_texts(TripletsData(format="triplets", path="t.csv"), seed=0)
    assert corpus.texts[corpus.triplets[0]].tolist() == ["a 0, x", "p0", "n0"]


# --- bad files name the file, line and column -----------------------------------------------------


def _error(spec) -> TextDataError:
    with pytest.raises(TextDataError) as err:
        load_texts(spec, seed=0)
    return err.value


def _pairs_spec(path: str) -> ScoredPairsData:
    return ScoredPairsData(
        format="scored_pairs", path=path, text_a_column="a", text_b_column="b", score_column="score"
    )


def test_a_missing_column_names_file_line_and_column(data_root):
    _pairs_csv(data_root, "p.csv", ["x,y,1"], header="a,c,score")
    err = _error(_pairs_spec("p.csv"))
    assert (err.file, err.line, err.column) == ("p.csv", 1, "b")
    assert str(err).startswith("p.csv, line 1, column 'b': has no required column 'b'")
    assert "allowed: columns 'a', 'c', 'score'" in str(err)


def test_an_empty_text_names_file_line_and_column(data_root):
    (data_root / "sub").mkdir()
    _pairs_csv(data_root, "sub/p.csv", ["x,y,1", "z,w,2", "q,  ,3"])
    err = _error(_pairs_spec("sub/p.csv"))
    assert (err.file, err.line, err.column) == ("sub/p.csv", 4, "b")
    assert "empty" in str(err)


def test_a_non_numeric_score_names_file_line_and_column(data_root):
    _pairs_csv(data_root, "p.csv", ["x,y,1", "z,w,high"])
    err = _error(_pairs_spec("p.csv"))
    assert (err.line, err.column) == (3, "score") and "'high' is not a (finite) number" in str(err)
    _pairs_csv(data_root, "q.csv", ["x,y,nan"])
    assert _error(_pairs_spec("q.csv")).line == 2


def test_a_short_row_names_its_line_and_the_field_counts(data_root):
    _pairs_csv(data_root, "p.csv", ["x,y,1", "z"])
    err = _error(_pairs_spec("p.csv"))
    assert err.line == 3 and "has 1 fields but the header has 3" in str(err)


def test_a_bad_split_value_names_file_line_and_column(data_root):
    _pairs_csv(data_root, "p.csv", ["x,y,1,train", "z,w,2,holdout"], header="a,b,score,s")
    spec = ScoredPairsData(
        format="scored_pairs", path="p.csv", text_a_column="a", text_b_column="b",
        score_column="score", split_column="s",
    )  # fmt: skip
    err = _error(spec)
    assert (err.line, err.column) == (3, "s") and "holdout" in str(err)


def test_a_triplet_missing_a_field_names_file_line_and_field(data_root):
    items = [{"anchor": "a", "positive": "p", "negative": "n"}, {"anchor": "b", "positive": "q"}]
    (data_root / "t.json").write_text(json.dumps({"triplets": items}, indent=2))
    err = _error(TripletsData(format="triplets", path="t.json"))
    assert (err.file, err.line, err.column) == ("t.json", 8, "negative")
    assert "missing" in str(err)
    (data_root / "t.csv").write_text("anchor,positive,negative\na,p,n\nb,,n\n")
    err = _error(TripletsData(format="triplets", path="t.csv"))
    assert (err.line, err.column) == (3, "positive")
    (data_root / "bad.json").write_text('{"triplets": [\n  {"anchor": "a",}\n]}')
    assert _error(TripletsData(format="triplets", path="bad.json")).line == 2


def test_sick_file_errors_name_the_sick_file(data_root):
    sick = data_root / "MYSICK"
    sick.mkdir()
    header = "pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment"
    good = "1\tA man is here\tA man is there\t4.5\tENTAILMENT"
    for name in ("SICK_train.txt", "SICK_trial.txt"):
        (sick / name).write_text(f"{header}\n{good}\n")
    (sick / "SICK_test_annotated.txt").write_text(
        f"{header}\n{good}\n2\tA dog\tA cat\tfour\tNEUTRAL\n"
    )
    err = _error(SickData(format="sick", path="MYSICK"))
    assert (err.file, err.line, err.column) == ("MYSICK/SICK_test_annotated.txt", 3,
                                                "relatedness_score")  # fmt: skip


def test_texts_dedupe_in_first_appearance_order(data_root):
    rows = ["b text,a text,5,train", "a text,c text,1,train", " b text ,c text,4,train"]
    _pairs_csv(data_root, "p.csv", rows, header="a,b,score,s")
    spec = _pairs_spec("p.csv").model_copy(
        update={"split_column": "s", "split": OwnSplit(kind="own")}
    )
    corpus = load_texts(spec, seed=0)
    assert corpus.texts.tolist() == ["b text", "a text", "c text"]
    assert corpus.pairs is not None
    assert corpus.pairs.tolist() == [[0, 1], [1, 2], [0, 2]]
    assert corpus.text_split().tolist() == ["train", "train", "train"]
    # The relatedness gap: (a, b) scores 5, (a, c) 1 -> 4; unpaired negatives score min - 1.
    triplets, gaps = corpus.triplets.tolist(), corpus.triplet_gaps().tolist()
    gaps = dict(zip(map(tuple, triplets), gaps, strict=True))
    assert gaps[(1, 0, 2)] == pytest.approx(4.0)
    # Anchor a (row 1): positive b (5), own low partner c (1).
    assert [1, 0, 2] in corpus.triplets.tolist()


# --- labelled texts -------------------------------------------------------------------------------


def _labeled_spec(path: str, **fields):
    from core.families.dt_gcnn.spec import LabeledTextsData

    return LabeledTextsData.model_validate({"format": "labeled_texts", "path": path, **fields})


def test_label_triplets_keep_class_and_split_by_construction():
    from core.data.texts import label_triplets

    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (400,), generator=gen)
    split = torch.randint(0, 3, (400,), generator=gen)
    triplets, t_split = label_triplets(labels, split, 3, torch.Generator().manual_seed(1))
    a, p, n = triplets.T
    assert (labels[a] == labels[p]).all() and (labels[a] != labels[n]).all()
    assert (a != p).all()
    assert (split[a] == t_split).all() and (split[p] == t_split).all()
    assert (split[n] == t_split).all()
    # Every text with a classmate in its split anchors exactly 3 triplets.
    group = split * 7 + labels
    has_mate = torch.bincount(group, minlength=21)[group] >= 2
    assert torch.equal(torch.bincount(a, minlength=400), has_mate.long() * 3)
    # Positives and negatives are spread, not always the first of a block.
    assert torch.unique(p).numel() > 300 and torch.unique(n).numel() > 250
    again, _ = label_triplets(labels, split, 3, torch.Generator().manual_seed(1))
    assert torch.equal(triplets, again)


def test_labeled_texts_from_a_csv_with_a_split_column(data_root):
    rows = ["a red car,cars,train", "a blue car,cars,train", "the green car,cars,val",
            "a car again,cars,val", "a small dog,dogs,train", "a big dog,dogs,train",
            "the dog runs,dogs,val", "a dog sleeps,dogs,val", "one cat,cats,test",
            "two cats,cats,test", "a lone dog,dogs,test"]  # fmt: skip
    (data_root / "l.csv").write_text("text,label,split\n" + "\n".join(rows) + "\n")
    corpus = load_texts(_labeled_spec("l.csv", split_column="split"), seed=0)
    assert corpus.labels is not None and corpus.label_names is not None
    assert corpus.label_names.tolist() == ["cars", "cats", "dogs"]
    assert corpus.num_texts == 11 and corpus.pairs is None
    assert torch.bincount(corpus.triplet_split, minlength=3).tolist() == [8, 8, 4]  # lone dog
    a, p, n = corpus.triplets.T
    assert (corpus.labels[a] == corpus.labels[p]).all()
    assert (corpus.labels[a] != corpus.labels[n]).all()
    assert corpus.text_split().tolist()[:2] == ["train", "train"]


def test_labeled_texts_errors_name_file_line_and_column(data_root):
    (data_root / "l.csv").write_text("text,label\na,x\nb,y\na,y\n")
    err = _error(_labeled_spec("l.csv"))
    assert (err.file, err.line, err.column) == ("l.csv", 4, "label")
    assert "already has label 'x' (line 2)" in str(err)
    (data_root / "m.csv").write_text("text,label\na,x\nb,\n")
    err = _error(_labeled_spec("m.csv"))
    assert (err.line, err.column) == (3, "label") and "empty" in str(err)
    (data_root / "n.csv").write_text("sentence,label\na,x\n")
    err = _error(_labeled_spec("n.csv"))
    assert (err.line, err.column) == (1, "text")


def test_hard_label_negatives_are_the_most_similar_other_class_texts(data_root):
    from core.data.texts import SOURCE_HARD, hard_label_negatives

    rows = [f"text {i},{'abc'[i % 3]},train" for i in range(30)]
    (data_root / "l.csv").write_text("text,label,split\n" + "\n".join(rows) + "\n")
    corpus = load_texts(_labeled_spec("l.csv", split_column="split", triplets_per_anchor=2), 0)
    x = torch.randn(corpus.num_texts, 5, generator=torch.Generator().manual_seed(3))
    hard = hard_label_negatives(corpus, x, chunk_size=7)
    assert torch.equal(hard.triplets[:, :2], corpus.triplets[:, :2])
    assert (hard.triplet_source == SOURCE_HARD).all()
    unit = torch.nn.functional.normalize(x, dim=1)
    sim = unit @ unit.T
    labels = hard.labels
    assert labels is not None
    sim[labels[:, None] == labels[None, :]] = -torch.inf
    ranked = sim.argsort(1, descending=True)  # [T, T] other-class texts first
    a, _, n = hard.triplets.T
    j = torch.arange(a.numel()) % 2  # the anchor's first and second triplet
    assert torch.equal(n, ranked[a, j])
