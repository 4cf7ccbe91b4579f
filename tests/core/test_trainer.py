"""The shared loop on a real (tiny) Cora run: outputs, checkpoints, resume, callbacks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.callbacks import MonitorError
from core.checkpoint import CheckpointCorrupt, load_checkpoint, sha256_file
from core.run import train
from core.spec import load_spec
from tests.support.specs import metric_rows, stopped_and_resumed, tiny_cora


def test_run_writes_every_output(tmp_path):
    summary = train(load_spec(tiny_cora()), tmp_path)
    rows = metric_rows(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"train_loss", "val_loss", "lr", "seconds", "step"} <= set(rows[0])
    assert "probe_test_acc" in rows[1] and "probe_test_acc" not in rows[0]
    emb = np.load(tmp_path / "embeddings.npy")
    assert emb.shape == (2708, 16) and emb.dtype == np.float32
    ids = (tmp_path / "node_ids.csv").read_text().splitlines()
    assert ids[0] == "row,node_id" and len(ids) == 2709
    assert load_spec((tmp_path / "spec.yaml").read_text()) == load_spec(tiny_cora())
    assert summary["epochs_completed"] == 3
    assert 0.3 < summary["best_metrics"]["probe_test_acc"] <= 1.0
    quality = summary["quality"]  # beside the same probe on the raw bag-of-words features
    assert quality["metric"] == "probe_test_acc" and 0.3 < quality["baseline"] < 1.0
    assert quality["value"] == summary["best_metrics"]["probe_test_acc"]
    assert (
        json.loads((tmp_path / "summary.json").read_text())["best_checkpoint"]
        == (summary["best_checkpoint"])
    )
    events = [json.loads(x) for x in (tmp_path / "artifacts.jsonl").read_text().splitlines()]
    kinds = {e["kind"] for e in events}
    assert {"checkpoint", "embeddings", "ids", "summary", "tensorboard"} <= kinds
    # The embeddings name their ids file, and the ids file its key column (the run contract).
    (emb_event,) = [e for e in events if e["kind"] == "embeddings"]
    (ids_event,) = [e for e in events if e["path"] == emb_event["meta"]["ids"]]
    assert ids_event["path"] == "node_ids.csv" and ids_event["meta"]["id_column"] == "node_id"
    assert list((tmp_path / "tensorboard").glob("events.*"))
    for e in events:
        if (
            e["event"] == "created"
            and (tmp_path / e["path"]).exists()
            and e["kind"] != "checkpoint"
        ):
            assert sha256_file(tmp_path / e["path"]) == e["sha256"]


def test_concat_readout_is_what_is_probed_and_written(tmp_path):
    spec = tiny_cora(training={"epochs": 2}, model={"readout": "concat"})
    summary = train(load_spec(spec), tmp_path)
    assert np.load(tmp_path / "embeddings.npy").shape == (2708, 32 + 16)
    assert 0.3 < summary["best_metrics"]["probe_test_acc"] <= 1.0


def test_loss_falls(tmp_path):
    train(load_spec(tiny_cora(training={"epochs": 4})), tmp_path)
    rows = metric_rows(tmp_path)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_checkpoints_are_complete_verified_and_pruned(tmp_path):
    spec = tiny_cora(checkpoint={"every_n_epochs": 2, "keep_top_k": 2})
    train(load_spec(spec), tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("*.pt"))
    assert "last.pt" in names and "epoch-0002.pt" in names
    assert len([n for n in names if n.startswith("best-")]) == 2
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert {
        "model",
        "optimizer",
        "scheduler",
        "scaler",
        "callbacks",
        "epoch",
        "global_step",
        "rng",
        "spec",
    } <= set(state)
    assert state["epoch"] == 3 and state["spec"]["family"] == "graphsage_skipgram"
    recorded = (tmp_path / "checkpoints" / "last.pt.sha256").read_text().split()[0]
    assert recorded == sha256_file(tmp_path / "checkpoints" / "last.pt")
    with open(tmp_path / "checkpoints" / "last.pt", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    with pytest.raises(CheckpointCorrupt):
        load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_resume_continues_exactly_like_the_uninterrupted_run(tmp_path):
    spec = tiny_cora(
        training={"epochs": 4},
        model={"dropout": 0.3},
        checkpoint={"every_n_epochs": 1, "keep_top_k": 1},
    )
    full, part = stopped_and_resumed(spec, tmp_path)
    a, b = metric_rows(full), metric_rows(part)
    assert [r["epoch"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):  # same up to float32 rounding of threaded CPU kernels
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-6)
        assert x["val_loss"] == pytest.approx(y["val_loss"], rel=1e-6)
    sa = load_checkpoint(full / "checkpoints" / "last.pt")["model"]
    sb = load_checkpoint(part / "checkpoints" / "last.pt")["model"]
    for k in sa:  # equal up to the order of CPU threads' scatter-adds
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-4, atol=1e-5)


def test_early_stopping_on_a_missing_metric_lists_the_available_ones(tmp_path):
    spec = load_spec(tiny_cora(early_stopping={"monitor": "val_acc"}))
    with pytest.raises(MonitorError, match="available: .*probe_val_acc.*val_loss"):
        train(spec, tmp_path)


def test_early_stopping_stops_and_is_recorded(tmp_path):
    spec = tiny_cora(
        training={"epochs": 30},
        early_stopping={"monitor": "val_loss", "patience": 1, "min_delta": 10.0},
    )
    summary = train(load_spec(spec), tmp_path)
    assert summary["stopped_early"] and summary["epochs_completed"] == 2


def test_gradient_accumulation_matches_the_larger_batch(tmp_path):
    # SGD: a step is linear in the gradient, so summation order stays rounding.
    sgd = {"name": "sgd", "lr": 0.5}
    one = tiny_cora(training={"epochs": 1, "batch_size": 2048}, optimizer=sgd)
    two = tiny_cora(
        training={"epochs": 1, "batch_size": 1024, "gradient_accumulation": 2}, optimizer=sgd
    )
    train(load_spec(one), tmp_path / "one")
    train(load_spec(two), tmp_path / "two")
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "scheduler",
    [
        {"name": "cosine", "warmup_epochs": 1, "min_lr": 0.001},
        {"name": "step", "step_size": 1, "gamma": 0.5},
        {"name": "plateau", "monitor": "val_loss", "patience": 0},
    ],
)
def test_schedulers_and_precision(tmp_path, scheduler):
    spec = tiny_cora(scheduler=scheduler, training={"precision": "bf16"})
    train(load_spec(spec), tmp_path)
    lrs = [r["lr"] for r in metric_rows(tmp_path)]
    assert len(set(lrs)) > 1 or scheduler["name"] == "plateau"
    if scheduler["name"] == "step":
        assert lrs == pytest.approx([0.01, 0.005, 0.0025])


def test_streaming_walks_train(tmp_path):
    spec = tiny_cora(walks={"mode": "streaming", "epoch_fraction": 0.2})
    summary = train(load_spec(spec), tmp_path)
    rows = metric_rows(tmp_path)
    assert summary["epochs_completed"] == 3 and rows[0]["step"] > 0
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_python_api_for_notebooks(tmp_path):
    from core.families import get_task_class
    from core.task import RunContext
    from core.trainer import Trainer

    spec = load_spec(tiny_cora(training={"epochs": 1}))
    trainer = Trainer(get_task_class(spec.family)(RunContext(spec, tmp_path, torch.device("cpu"))))
    assert trainer.train_epoch(1)["train_loss"] > 0
    assert "val_loss" in trainer.eval_epoch(1)
    trainer.save_checkpoint(tmp_path / "a.pt")
    before = trainer.predict()["embeddings"]
    trainer.train_epoch(2)
    assert not torch.equal(before, trainer.predict()["embeddings"])
    trainer.load_checkpoint(tmp_path / "a.pt", weights_only=True)
    torch.testing.assert_close(trainer.predict()["embeddings"], before)


def test_a_kill_between_file_and_digest_leaves_a_checkpoint_that_verifies(tmp_path, monkeypatch):
    from core import checkpoint as C

    path = tmp_path / "last.pt"
    C.save_checkpoint({"epoch": 1}, path)
    writes: list[Path] = []
    real = C.atomic_write_bytes

    def dies_after(n: int):
        def write(target: Path, data: bytes) -> str:
            if len(writes) == n:
                raise KeyboardInterrupt("killed")
            writes.append(target)
            return real(target, data)

        return write

    for n in (1, 2):  # killed after the two-digest sidecar, and after the rename
        writes.clear()
        monkeypatch.setattr(C, "atomic_write_bytes", dies_after(n))
        with pytest.raises(KeyboardInterrupt):
            C.save_checkpoint({"epoch": 1 + n}, path)
        monkeypatch.setattr(C, "atomic_write_bytes", real)
        assert C.load_checkpoint(path)["epoch"] == (1 if n == 1 else 3)


def test_resume_falls_back_to_the_newest_checkpoint_that_verifies(tmp_path, caplog):
    from core.checkpoint import save_checkpoint
    from core.run import find_resume_checkpoint

    ckpts = tmp_path / "checkpoints"
    save_checkpoint({"epoch": 2}, ckpts / "epoch-0002.pt")
    save_checkpoint({"epoch": 3}, ckpts / "last.pt")
    assert find_resume_checkpoint(tmp_path) == ckpts / "last.pt"
    data = bytearray((ckpts / "last.pt").read_bytes())
    data[-1] ^= 0xFF
    (ckpts / "last.pt").write_bytes(bytes(data))
    with caplog.at_level("WARNING"):
        assert find_resume_checkpoint(tmp_path) == ckpts / "epoch-0002.pt"
    assert "not resuming from a corrupt checkpoint: last.pt" in caplog.text


def test_sigterm_to_a_training_process_saves_at_the_next_step_and_exits_143(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    spec = tiny_cora(training={"epochs": 50, "batch_size": 256, "log_every_n_steps": 1})
    spec_path, run = tmp_path / "spec.yaml", tmp_path / "run"
    spec_path.write_text(yaml.safe_dump(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.run", str(spec_path), "--out", str(run)],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until a step of epoch 2 has been reported
        rows = metric_rows(run) if (run / "metrics.jsonl").exists() else []
        if any(r.get("granularity") == "step" and r["epoch"] == 2 for r in rows):
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["in_epoch"] is not None and state["in_epoch"]["epoch"] >= 2
    steps = [r["step"] for r in metric_rows(run) if r.get("granularity") == "step"]
    assert state["global_step"] >= max(steps)  # no step was lost
    assert not (run / "error.json").exists()
