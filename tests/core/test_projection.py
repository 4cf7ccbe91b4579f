"""The 2-D map of embeddings: PCA against numpy's SVD, deterministic signs, degenerate inputs;
UMAP beside it where the optional extra is installed."""

from __future__ import annotations

import numpy as np
import pytest

from core import projection
from core.projection import pca_2d, write_projections
from core.task import embeddings_outputs


def test_pca_matches_the_svd_up_to_sign_and_explains_the_variance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1])
    coords, ratio = pca_2d(x.astype(np.float32))
    centred = x - x.mean(0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    reference = u[:, :2] * s[:2]
    np.testing.assert_allclose(np.abs(coords), np.abs(reference), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(ratio, (s[:2] ** 2) / (s**2).sum(), rtol=1e-4)
    again, _ = pca_2d(x[::-1].copy().astype(np.float32))
    np.testing.assert_allclose(again[::-1], coords, rtol=1e-3, atol=1e-3)  # same signs


def test_degenerate_embeddings_still_map(tmp_path):
    assert pca_2d(np.ones((1, 4), np.float32))[0].shape == (1, 2)
    one_dim, _ = pca_2d(np.arange(5, dtype=np.float32).reshape(5, 1))
    assert one_dim.shape == (5, 2) and not one_dim[:, 1].any()
    np.save(tmp_path / "e.npy", np.random.default_rng(1).standard_normal((7, 3)).astype("f4"))
    outputs = embeddings_outputs("e.npy", (7, 3), "ids.csv", "id")
    proj = write_projections(outputs, tmp_path)[0]
    assert (
        proj.kind == "projection" and proj.meta["of"] == "e.npy" and proj.meta["ids"] == "ids.csv"
    )
    assert np.load(tmp_path / proj.path).shape == (7, 2)


def test_umap_map_beside_pca_where_the_extra_is_installed(tmp_path, monkeypatch):
    pytest.importorskip("umap", reason="the optional `umap` extra is not installed")
    rng = np.random.default_rng(2)
    # Two well-separated clusters [60, 8]: UMAP keeps them apart.
    x = np.concatenate([rng.normal(0, 0.1, (30, 8)), rng.normal(0, 0.1, (30, 8)) + 3.0])
    x[:, 0] += np.r_[np.zeros(30), np.ones(30)] * 5
    np.save(tmp_path / "e.npy", x.astype("f4"))
    outputs = embeddings_outputs("e.npy", (60, 8), "ids.csv", "id")
    pca, umap_map = write_projections(outputs, tmp_path)
    assert (pca.meta["method"], umap_map.meta["method"]) == ("pca", "umap")
    assert umap_map.path == "e.umap2d.npy" and umap_map.meta["ids"] == "ids.csv"
    coords = np.load(tmp_path / umap_map.path)
    assert coords.shape == (60, 2) and np.isfinite(coords).all()
    gap = np.linalg.norm(coords[:30].mean(0) - coords[30:].mean(0))
    assert gap > 3 * max(coords[:30].std(0).max(), coords[30:].std(0).max())
    monkeypatch.setattr(projection, "UMAP_MAX_ROWS", 10)  # over the cap: PCA only
    assert [o.meta["method"] for o in write_projections(outputs, tmp_path)] == ["pca"]
