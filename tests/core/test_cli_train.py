"""`trainctl train` as a user runs it: a real process, a progress bar, clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.support.specs import tiny_cora

TRAINCTL = [sys.executable, "-m", "cli.main"]


def test_train_writes_outputs_and_applies_overrides(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_cora()))
    out = tmp_path / "run"
    proc = subprocess.run(
        [*TRAINCTL, "train", str(spec), "--out", str(out), "--set", "training.epochs=2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["out"] == str(out) and "probe_test_acc" in result
    summary = json.loads((out / "summary.json").read_text())
    assert result["monitor"] == summary["monitor"] == "val_loss"  # the best score, by name
    assert result["best_val_loss"] == summary["best_score"] and result["best_epoch"] >= 1
    assert (result["epochs"], result["stopped_early"]) == (2, False)
    phases = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert [(p["phase"], p["total"]) for p in phases] == [
        ("loading data", None),
        ("generating walks", None),
        ("training", 2),
        ("writing outputs", None),
    ]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert "epoch" in proc.stderr  # the progress bar's unit
    assert (out / "embeddings.npy").exists() and (out / "summary.json").exists()


def test_bad_spec_and_bad_override_are_refused_before_training(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_cora(optimizer={"name": "rmsprop"})))
    proc = subprocess.run(
        [
            *TRAINCTL,
            "train",
            str(spec),
            "--out",
            str(tmp_path / "run"),
            "--set",
            "model.aggregator=median",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "optimizer.name" in proc.stderr and "'adam', 'adamw' or 'sgd'" in proc.stderr
    assert "model.aggregator" in proc.stderr
    assert not (tmp_path / "run").exists()


def test_missing_dataset_fails_with_where_it_looked(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tiny_cora()))
    env = {"TRAINCTL_DATA_ROOT": str(tmp_path / "nowhere"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [*TRAINCTL, "train", str(spec), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode != 0
    assert str(tmp_path / "nowhere" / "Cora" / "raw") in proc.stderr
    error = json.loads((tmp_path / "run" / "error.json").read_text())
    assert error["type"] == "DatasetNotFound"
