"""The definition of a family: every registered family passes these tests.

A family is one package under `core/families/` plus one line in `FAMILY_PACKAGES`, an entry in
`tests/support/contract.py`, an example and its own tests (`docs/adding-a-family.md`). Here,
for each registered family: its tiny spec trains 2 epochs and reports the loss, its parts and
the gradient norm; a run stopped after epoch 2 and resumed equals the uninterrupted run; every
file it writes is registered as an artifact with the right size and digest (so the service can
serve it); two gloo ranks train like one process with the same global batch; a loss that turns
NaN stops the run with an error naming the epoch and step, before any checkpoint of that epoch.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from core.checkpoint import load_checkpoint, sha256_file
from core.families import FAMILY_PACKAGES, families
from core.report import ARTIFACT_KINDS, parse_artifact_line, parse_metrics_line
from core.run import main as run_main
from core.run import train
from core.spec import load_spec
from tests.support.contract import CONTRACT_SPECS, contract_spec
from tests.support.specs import stopped_and_resumed, torchrun

FAMILIES = sorted(families())
FAMILIES_DIR = Path(__file__).resolve().parents[2] / "core" / "families"
# Files a run directory holds that are not artifacts of the run.
RUN_FILES = {"spec.yaml", "metrics.jsonl", "artifacts.jsonl", "events.jsonl"}


def _epoch_rows(run: Path) -> list[dict[str, Any]]:
    records = [parse_metrics_line(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [{"epoch": r.epoch, **r.values} for r in records if r.granularity == "epoch"]


def _assert_same_run(full: Path, part: Path) -> None:
    a, b = _epoch_rows(full), _epoch_rows(part)
    assert [r["epoch"] for r in b] == [r["epoch"] for r in a]
    for x, y in zip(a, b, strict=True):
        assert y["train_loss"] == pytest.approx(x["train_loss"], rel=1e-5)
    sa = load_checkpoint(full / "checkpoints" / "last.pt")
    sb = load_checkpoint(part / "checkpoints" / "last.pt")
    assert sa["global_step"] == sb["global_step"]
    for key in sa["model"]:
        torch.testing.assert_close(sa["model"][key], sb["model"][key], rtol=1e-4, atol=1e-6)


def _strict_json(path: Path) -> Any:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path.name} holds {token}: not strict JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


# --- the registry -------------------------------------------------------------------------------


def test_every_family_package_is_registered_once_with_a_contract_spec():
    packages = {p.parent.name for p in FAMILIES_DIR.glob("*/__init__.py")}
    assert sorted(FAMILY_PACKAGES) == sorted(set(FAMILY_PACKAGES)), "a family registered twice"
    assert set(FAMILY_PACKAGES) == packages, "every family package, and only those, registered"
    assert set(CONTRACT_SPECS) == set(FAMILY_PACKAGES), "every family has a contract spec"
    for name, family in families().items():
        assert family.spec.family_name() == name
        assert family.task_class().__module__ == f"core.families.{name}.task"


def test_the_spec_union_and_task_lookup_derive_from_the_registry():
    from core.families import get_task_class
    from core.spec import SpecError, family_names

    assert family_names() == tuple(FAMILY_PACKAGES)
    with pytest.raises(SpecError) as err:
        load_spec({"family": "nope"})
    assert err.value.errors[0]["allowed"] == list(FAMILY_PACKAGES)
    with pytest.raises(ValueError, match="unknown family 'nope'; choose one of"):
        get_task_class("nope")


# --- the contract, per family ---------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
def test_trains_reports_loss_parts_and_registers_every_output(family, tmp_path, gt_env, one_thread):
    run = tmp_path / "run"
    summary = train(load_spec(contract_spec(family, epochs=2)), run)
    rows = _epoch_rows(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:
        assert math.isfinite(row["train_loss"])
        assert row["grad_norm"] >= 0 and row["grad_norm_max"] >= row["grad_norm"] - 1e-6
    # Every file in the run directory is an artifact, registered with its size and digest.
    events = [parse_artifact_line(x) for x in (run / "artifacts.jsonl").read_text().splitlines()]
    live: dict[str, Any] = {}
    for event in events:
        assert event.kind in ARTIFACT_KINDS, event
        if event.event == "created":
            live[event.path] = event
        else:
            live.pop(event.path, None)
    files = {
        str(p.relative_to(run))
        for p in run.rglob("*")
        if p.is_file() and not p.name.endswith(".sha256")
    } - RUN_FILES
    assert files == set(live), "files written but not registered, or registered but missing"
    for path, event in live.items():
        assert event.size == (run / path).stat().st_size, path
        assert event.sha256 == sha256_file(run / path), path
    kinds = {e.kind for e in live.values()}
    assert {"checkpoint", "summary"} <= kinds
    for event in live.values():
        if event.kind == "embeddings":  # its rows are keyed by a registered ids file ...
            ids = live[event.meta["ids"]]
            assert ids.kind == "ids" and ids.meta["id_column"]
            # ... and mapped to 2-D for the dashboard
            (projection,) = [
                p for p in live.values() if p.kind == "projection" and p.meta["of"] == event.path
            ]
            assert projection.meta["ids"] == ids.path
    stored = _strict_json(run / "summary.json")
    assert stored["family"] == family and stored["epochs_completed"] == 2
    assert stored["model"]["parameters"] > 0
    assert summary["best_checkpoint"] == stored["best_checkpoint"]


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_parts_are_reported_for_training_and_validation(family, tmp_path, gt_env, one_thread):
    from core.task import RunContext

    spec = load_spec(contract_spec(family, epochs=1))
    task = families()[family].task_class()(RunContext(spec, tmp_path, torch.device("cpu")))
    run = tmp_path / "run"
    train(spec, run)
    (row,) = _epoch_rows(run)
    for part in task.loss_parts():
        assert math.isfinite(row[f"train_{part}"]), part
        assert f"val_{part}" in row, part


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_equals_the_uninterrupted_run(family, tmp_path, gt_env, one_thread):
    full, part = stopped_and_resumed(contract_spec(family, epochs=3), tmp_path)
    assert [r["epoch"] for r in _epoch_rows(part)] == [1, 2, 3]
    _assert_same_run(full, part)


@pytest.mark.parametrize("family", FAMILIES)
def test_sigterm_mid_epoch_saves_at_the_next_step_and_resumes_exactly(
    family, tmp_path, gt_env, one_thread, monkeypatch
):
    from core.trainer import PREEMPT, Preempted

    spec = load_spec(contract_spec(family, epochs=3))
    full, part = tmp_path / "full", tmp_path / "part"
    train(spec, full)
    task_class = families()[family].task_class()
    original = task_class.training_loss
    calls: list[int] = []

    def signalled(self, model, batch):  # SIGTERM arrives during the 1st batch of epoch 2
        if self.epoch == 2 and not calls:
            calls.append(self.global_step)
            PREEMPT.set()
        return original(self, model, batch)

    monkeypatch.setattr(task_class, "training_loss", signalled)
    with pytest.raises(Preempted, match="stopped by SIGTERM at epoch 2"):
        train(spec, part)
    state = load_checkpoint(part / "checkpoints" / "last.pt")
    assert state["in_epoch"]["epoch"] == 2 and state["global_step"] == calls[0] + 1
    monkeypatch.setattr(task_class, "training_loss", original)
    train(spec, part, resume="auto")
    _assert_same_run(full, part)


@pytest.mark.parametrize("family", FAMILIES)
def test_two_gloo_ranks_train_like_one_process(family, tmp_path, gt_env):
    spec = contract_spec(family, epochs=2)
    torchrun({**spec, "resources": {"devices": 1}}, tmp_path / "one", 1)
    torchrun({**spec, "resources": {"devices": 2}}, tmp_path / "two", 2)
    a = load_checkpoint(tmp_path / "one" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "two" / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] > 0
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-3, atol=1e-4)
    assert [r["epoch"] for r in _epoch_rows(tmp_path / "two")] == [1, 2]  # rank 0 alone reports


@pytest.mark.parametrize("family", FAMILIES)
def test_a_nan_loss_stops_the_run_naming_epoch_and_step(
    family, tmp_path, gt_env, one_thread, monkeypatch
):
    task_class = families()[family].task_class()
    original = task_class.training_loss

    def poisoned(self, model, batch):  # the loss turns NaN at the first step of epoch 2
        out = original(self, model, batch)
        if self.epoch < 2:
            return out
        if isinstance(out, torch.Tensor):
            return out * float("nan")
        return {**out, "loss": out["loss"] * float("nan")}

    monkeypatch.setattr(task_class, "training_loss", poisoned)
    spec_path, run = tmp_path / "spec.yaml", tmp_path / "run"
    spec_path.write_text(yaml.safe_dump(contract_spec(family, epochs=3)))
    assert run_main([str(spec_path), "--out", str(run)]) == 1
    error = _strict_json(run / "error.json")
    assert error["type"] == "NonFiniteLossError"
    assert "at epoch 2, step" in error["message"] and "nan" in error["message"]
    # Epoch 1 was checkpointed; nothing of epoch 2 was.
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 1
    assert not list((run / "checkpoints").glob("*0002.pt"))
    assert [r["epoch"] for r in _epoch_rows(run)] == [1]
