"""Plots a run writes at the end (rank 0), drawn with matplotlib's Agg backend (no display).

`training_curves` reads the run's epoch rows from `metrics.jsonl` (what the trainer reported,
a resumed run's repeated epochs counted once, the last row winning) and draws one panel per
loss part, train against val (the seed's total / reconstruction / KL figure).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


__all__ = ["epoch_rows", "training_curves"]
