"""A 2-D map of a run's embeddings: PCA (exact, from the covariance's top eigenvectors), written
at the end of every run that writes embeddings, for the dashboard's embedding map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.task import Output


def pca_2d(embeddings: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """`(coordinates [rows, 2] float32, explained variance ratio of each axis)`; axes signed so
    the largest loading is positive (the same embeddings always give the same map)."""
    x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float64))  # [N, D]
    x = x - x.mean(0)
    if x.size(0) < 2 or x.size(1) == 0:
        return np.zeros((x.size(0), 2), dtype=np.float32), [0.0, 0.0]
    values, vectors = torch.linalg.eigh(x.T @ x)  # ascending
    top = vectors[:, values.argsort(descending=True)[:2]]  # [D, <=2]
    signs = torch.sign(top.gather(0, top.abs().argmax(0, keepdim=True))).clamp_min(0) * 2 - 1
    coords = (x @ (top * signs)).float().numpy()
    if coords.shape[1] < 2:  # one-dimensional embeddings: a flat second axis
        coords = np.concatenate([coords, np.zeros((coords.shape[0], 1), np.float32)], 1)
    total = float(values.clamp_min(0).sum())
    ratio = (values.sort(descending=True).values[:2].clamp_min(0) / max(total, 1e-12)).tolist()
    return coords.astype(np.float32), ratio + [0.0] * (2 - len(ratio))


def write_projections(outputs: list[Output], run_dir: Path) -> list[Output]:
    """For each embeddings output, `<name>.pca2d.npy` [rows, 2] beside it, as an artifact of
    kind `projection` whose meta names the embeddings and their ids."""
    written = []
    for output in outputs:
        if output.kind != "embeddings" or not output.path.endswith(".npy"):
            continue
        embeddings = np.load(run_dir / output.path, mmap_mode="r")
        coords, ratio = pca_2d(np.asarray(embeddings).reshape(embeddings.shape[0], -1))
        path = output.path.removesuffix(".npy") + ".pca2d.npy"
        np.save(run_dir / path, coords)
        meta = {"of": output.path, "ids": output.meta.get("ids"), "method": "pca",
                "explained_variance_ratio": [round(r, 6) for r in ratio]}  # fmt: skip
        written.append(Output("projection", path, meta=meta))
    return written
