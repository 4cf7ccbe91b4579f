"""The dt_gcnn family: mining against a hand-worked distance matrix, the kNN graph against a
brute-force reference, the featuriser registry and cache, the spec's rules, and tiny SICK runs
(training, outputs, resume across a graph rebuild). Data readers: `tests/core/test_data_texts.py`.
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

from core.families.dt_gcnn.features import FEATURIZERS, featurize
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


def test_minilm_is_refused_without_its_package_naming_the_allowed(gt_env):
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
