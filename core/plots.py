"""Plots a run writes at the end (rank 0), drawn with matplotlib's Agg backend (no display).

`training_curves` reads the run's epoch rows from `metrics.jsonl` (what the trainer reported,
a resumed run's repeated epochs counted once, the last row winning) and draws one panel per
loss part, train against val (the seed's total / reconstruction / KL figure).

`embedding_map` draws 2-D coordinates of embeddings (PCA: `core.projection.pca_2d`; t-SNE:
`tsne_2d`; UMAP: `core.projection.umap_2d`) as a scatter coloured by class label.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.report import RunEventError, parse_metrics_line

log = logging.getLogger(__name__)


def epoch_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The run's epoch metric rows in epoch order, one per epoch (the last reported wins)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            record = parse_metrics_line(line)
        except RunEventError:
            continue
        if record.granularity == "epoch":
            rows[record.epoch] = {"epoch": record.epoch, **record.values}
    return [rows[e] for e in sorted(rows)]


def training_curves(
    run_dir: Path,
    path: str = "plots/training_curves.png",
    parts: Sequence[tuple[str, str]] = (("loss", "Total loss"),),
) -> str | None:
    """Draw `train_<part>` and `val_<part>` per epoch, one panel per `(part, title)`, into
    `run_dir / path`; `path`, or None (logged) when the run has no epoch rows yet."""
    rows = epoch_rows(run_dir)
    if not rows:
        log.warning("no epoch metrics in %s: %s not drawn", run_dir / "metrics.jsonl", path)
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 4), squeeze=False)
    for ax, (part, title) in zip(axes[0], parts, strict=True):
        for split in ("train", "val"):
            points = [
                (r["epoch"], r[f"{split}_{part}"])
                for r in rows
                if r.get(f"{split}_{part}") is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o" if len(points) < 30 else None, label=split.title())
        ax.set_xlabel("Epoch")
        ax.set_title(title)
        ax.legend()
    fig.tight_layout()
    out = run_dir / path
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return path


def tsne_2d(embeddings: np.ndarray, seed: int = 0) -> np.ndarray:
    """t-SNE coordinates [rows, 2] float32 of embeddings [rows, dim] (scikit-learn's
    `TSNE`, van der Maaten & Hinton 2008; cosine metric, PCA initialisation, seeded;
    perplexity at most (rows - 1) / 3, as scikit-learn requires it below the row count)."""
    from sklearn.manifold import TSNE

    x = np.asarray(embeddings, dtype=np.float32)
    rows = x.shape[0]
    if rows < 4:  # too few points for a neighbourhood
        return np.zeros((rows, 2), dtype=np.float32)
    perplexity = float(min(30.0, (rows - 1) / 3))
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca",
                random_state=seed)  # fmt: skip
    return tsne.fit_transform(x).astype(np.float32)


MAX_LEGEND = 20  # classes named in a legend; more are coloured without one


def embedding_map(
    run_dir: Path,
    coords: np.ndarray,
    path: str,
    labels: np.ndarray | None = None,
    label_names: Sequence[str] | np.ndarray | None = None,
    title: str = "Embeddings",
) -> str:
    """Draw `coords` [rows, 2] as a scatter into `run_dir / path` (PNG), coloured by `labels`
    [rows] (class indices into `label_names`) where given, with a legend up to `MAX_LEGEND`
    classes; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    if labels is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=6, alpha=0.6)
    else:
        classes = np.unique(labels)
        cmap = plt.get_cmap("tab20")
        colours = cmap(np.searchsorted(classes, labels) % 20)
        ax.scatter(coords[:, 0], coords[:, 1], s=6, alpha=0.7, c=colours)
        if len(classes) <= MAX_LEGEND:
            names = [str(label_names[c]) if label_names is not None else str(c) for c in classes]
            handles = [
                plt.Line2D([], [], marker="o", linestyle="", color=cmap(i % 20), label=name)
                for i, name in enumerate(names)
            ]
            ax.legend(handles=handles, fontsize="small", loc="best", markerscale=1.2)
        else:
            ax.text(0.01, 0.01, f"{len(classes)} classes (colours repeat)",
                    transform=ax.transAxes, fontsize="small")  # fmt: skip
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out = run_dir / path
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return path


__all__ = ["embedding_map", "epoch_rows", "training_curves", "tsne_2d"]
