"""DDP on CPU: two gloo processes under torchrun train like one process with the same global
batch, and only rank 0 writes."""

from __future__ import annotations

import torch

from core.checkpoint import load_checkpoint
from tests.support.specs import metric_rows, tiny_cora, torchrun


def test_two_gloo_ranks_match_one_process(tmp_path):
    # SGD: its update is linear in the gradient, so all-reduce rounding stays rounding
    # (Adam divides near-zero gradients by their own size and magnifies it).
    spec = tiny_cora(
        training={"epochs": 2, "batch_size": 2048}, optimizer={"name": "sgd", "lr": 0.5}
    )
    one = {**spec, "resources": {"devices": 1}}
    two = {**spec, "resources": {"devices": 2}}
    torchrun(one, tmp_path / "one", 1)
    torchrun(two, tmp_path / "two", 2)
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] > 0
    assert len(b["rng"]) == 2  # every rank's RNG state, for an exact resume
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-3, atol=1e-5)
    rows = metric_rows(tmp_path / "two")
    assert [r["epoch"] for r in rows] == [1, 2]  # one line per epoch: rank 0 alone reports
    assert not list((tmp_path / "two").glob("error*.json"))
