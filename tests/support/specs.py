"""Small real specs the core tests train (Cora from the data root, a few seconds each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def tiny_cora(**sections: Any) -> dict[str, Any]:
    """A GraphSAGE skip-gram spec on Cora that trains in about a second per epoch on a CPU."""
    spec: dict[str, Any] = {
        "family": "graphsage_skipgram",
        "name": "tiny-cora",
        "data": {"format": "planetoid", "name": "Cora"},
        "training": {"epochs": 3, "batch_size": 2048, "seed": 7},
        "optimizer": {"name": "adam", "lr": 0.01},
        "walks": {"walks_per_node": 2, "walk_length": 8, "window": 2, "epoch_fraction": 0.1},
        "negatives": {"per_positive": 3},
        "validation": {"val_fraction": 0.05, "max_val_pairs": 5000},
        "model": {"layers": 2, "hidden_dim": 32, "out_dim": 16, "dropout": 0.0},
        "probe": {"every_n_epochs": 2},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


def metric_rows(run: Path) -> list[dict[str, Any]]:
    """The rows of a run directory's `metrics.jsonl`."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def stopped_and_resumed(spec: dict[str, Any], tmp_path: Path) -> tuple[Path, Path]:
    """Train `spec` uninterrupted into `full`, and into `part` stopped after epoch 2 then
    resumed from its epoch-2 checkpoint with the full epoch budget; (full, part)."""
    from core.run import train  # torch: only for the tests that train
    from core.spec import load_spec

    full, part = tmp_path / "full", tmp_path / "part"
    train(load_spec(spec), full)
    train(load_spec(spec, ["training.epochs=2"]), part)
    train(load_spec(spec), part, resume=str(part / "checkpoints" / "epoch-0002.pt"))
    return full, part


def torchrun(spec: dict[str, Any], run_dir: Path, devices: int) -> None:
    """Train `spec` into `run_dir` as the worker does: `devices` processes under
    `torch.distributed.run` (gloo on CPU), one intra-op thread each; assert it succeeded."""
    import os
    import subprocess

    import yaml

    from core.launch import training_command

    spec_path = run_dir.with_suffix(".yaml")
    spec_path.write_text(yaml.safe_dump(spec))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        training_command(spec_path, run_dir, devices),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
