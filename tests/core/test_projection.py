"""The 2-D map of embeddings: PCA against numpy's SVD, deterministic signs, degenerate inputs."""

from __future__ import annotations

import numpy as np

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
    (proj,) = write_projections(embeddings_outputs("e.npy", (7, 3), "ids.csv", "id"), tmp_path)
    assert (
        proj.kind == "projection" and proj.meta["of"] == "e.npy" and proj.meta["ids"] == "ids.csv"
    )
    assert np.load(tmp_path / proj.path).shape == (7, 2)
