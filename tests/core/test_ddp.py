"""DDP on CPU: two gloo processes under torchrun train like one process with the same global
batch, and only rank 0 writes."""

from __future__ import annotations

import os
import subprocess

import torch
import yaml

from core.checkpoint import load_checkpoint
from core.launch import training_command
from tests.support.specs import metric_rows, tiny_cora


def _run(spec: dict, run_dir, devices: int) -> None:
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


def test_two_gloo_ranks_match_one_process(tmp_path):
    # SGD: its update is linear in the gradient, so all-reduce rounding stays rounding
    # (Adam divides near-zero gradients by their own size and magnifies it).
    spec = tiny_cora(
        training={"epochs": 2, "batch_size": 2048}, optimizer={"name": "sgd", "lr": 0.5}
    )
    one = {**spec, "resources": {"devices": 1}}
    two = {**spec, "resources": {"devices": 2}}
    _run(one, tmp_path / "one", 1)
    _run(two, tmp_path / "two", 2)
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] > 0
    assert len(b["rng"]) == 2  # every rank's RNG state, for an exact resume
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-3, atol=1e-5)
    rows = metric_rows(tmp_path / "two")
    assert [r["epoch"] for r in rows] == [1, 2]  # one line per epoch: rank 0 alone reports
    assert not list((tmp_path / "two").glob("error*.json"))
