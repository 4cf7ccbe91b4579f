"""A 2-D map of a run's embeddings for the dashboard's embedding map: PCA (exact, from the
covariance's top eigenvectors) at the end of every run that writes embeddings, and UMAP
(McInnes et al. 2018, the `umap-learn` library) beside it where the optional `umap` extra is
installed and the embeddings have at most `UMAP_MAX_ROWS` rows."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import numpy as np
import torch

from core.task import Output

log = logging.getLogger(__name__)

# UMAP's cost grows with the rows (about a minute for 20,000 on two cores); larger sets get PCA.
UMAP_MAX_ROWS = 20_000
UMAP_SEED = 0


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


def umap_available() -> bool:
    """Whether the optional `umap` extra (`umap-learn`) is installed and imports."""
    if importlib.util.find_spec("umap") is None:
        return False
    try:
        from umap import UMAP  # noqa: F401
    except ImportError:  # a broken or half-removed install: PCA only
        log.warning("the umap package does not import; embedding maps are PCA only")
        return False
    return True


def umap_2d(embeddings: np.ndarray, seed: int = UMAP_SEED) -> np.ndarray:
    """UMAP coordinates [rows, 2] float32 (cosine metric, 15 neighbours, seeded: the same
    embeddings give the same map). Needs the `umap` extra; ImportError without it."""
    import umap

    rows = embeddings.shape[0]
    if rows < 4:  # too few points for a neighbour graph
        return np.zeros((rows, 2), dtype=np.float32)
    reducer = umap.UMAP(
        n_components=2, n_neighbors=min(15, rows - 1), metric="cosine", random_state=seed
    )
    return reducer.fit_transform(np.asarray(embeddings, dtype=np.float32)).astype(np.float32)


def write_projections(outputs: list[Output], run_dir: Path) -> list[Output]:
    """For each embeddings output, `<name>.pca2d.npy` [rows, 2] beside it, and
    `<name>.umap2d.npy` [rows, 2] where UMAP is installed and the rows are few enough, as
    artifacts of kind `projection` whose meta names the embeddings, their ids and the method."""
    written = []
    for output in outputs:
        if output.kind != "embeddings" or not output.path.endswith(".npy"):
            continue
        embeddings = np.load(run_dir / output.path, mmap_mode="r")
        flat = np.asarray(embeddings).reshape(embeddings.shape[0], -1)  # [rows, dim]
        coords, ratio = pca_2d(flat)
        stem = output.path.removesuffix(".npy")
        np.save(run_dir / f"{stem}.pca2d.npy", coords)
        meta = {"of": output.path, "ids": output.meta.get("ids"), "method": "pca",
                "explained_variance_ratio": [round(r, 6) for r in ratio]}  # fmt: skip
        written.append(Output("projection", f"{stem}.pca2d.npy", meta=meta))
        if umap_available() and flat.shape[0] <= UMAP_MAX_ROWS:
            np.save(run_dir / f"{stem}.umap2d.npy", umap_2d(flat))
            meta = {"of": output.path, "ids": output.meta.get("ids"), "method": "umap"}
            written.append(Output("projection", f"{stem}.umap2d.npy", meta=meta))
        elif umap_available():
            rows = flat.shape[0]
            log.info("%s: %d rows, over %d: PCA map only", output.path, rows, UMAP_MAX_ROWS)
    return written
