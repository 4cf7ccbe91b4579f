"""Shared pieces of the graph_transformer tests: tiny specs and a one-thread CPU fixture."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def tiny_gt(**sections: Any) -> dict[str, Any]:
    """A small graph_transformer spec on MUTAG that trains in well under a second per epoch."""
    spec: dict[str, Any] = {
        "family": "graph_transformer",
        "name": "tiny-gt",
        "task": "graph_classification",
        "data": {"format": "tu", "name": "MUTAG", "split": {"kind": "kfold", "k": 5, "fold": 0}},
        "model": {"layers": 2, "channels": 32, "heads": 4, "attn_dropout": 0.0, "pooling": "mean"},
        "positional_encodings": [
            {"kind": "rwse", "walk_lengths": [4, 8], "dim": 8},
            {"kind": "laplacian", "k": 4, "dim": 4},
        ],
        "training": {"epochs": 3, "batch_size": 32, "seed": 3},
        "optimizer": {"name": "adamw", "lr": 0.003},
    }
    for key, value in sections.items():
        merge = isinstance(value, dict) and key != "data"  # a data section replaces the default
        spec[key] = {**spec.get(key, {}), **value} if merge else value
    return spec


@pytest.fixture(scope="module", autouse=False)
def one_thread() -> Iterator[None]:
    """Intra-op threads = 1: on a shared 2-core CI box more threads spin and run far slower."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def gt_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A cache directory for processed datasets: `TRAINCTL_CACHE_DIR` if set (content-addressed,
    safe to share), else one per test session."""
    import os

    path = os.environ.get("TRAINCTL_CACHE_DIR") or str(tmp_path_factory.mktemp("trainctl-cache"))
    yield path


@pytest.fixture
def gt_env(gt_cache: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Processed datasets go to the session's cache directory."""
    monkeypatch.setenv("TRAINCTL_CACHE_DIR", gt_cache)
    return gt_cache
