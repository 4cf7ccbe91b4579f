"""Multi-task early stopping (`core.callbacks.EarlyStopping`): `any`/`all`, grace periods and
baselines against a sequence worked by hand, the combined improvement that
`checkpoint.monitor: early_stopping` follows, the spec's two forms, and a resumed run that
stops at the same epoch as an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.callbacks import EarlyStopping, ModelCheckpoint, MonitorError, StopTask
from core.spec import SpecError, load_spec
from core.spec.common import EarlyStoppingSpec, MultiTaskEarlyStoppingSpec
from tests.support.specs import metric_rows, stopped_and_resumed, tiny_cora

# The hand-worked sequence. Task A: val_loss, min, min_delta 0.1, grace_period 2.
# Task B: val_acc, max, baseline 0.5, grace_period 1. patience 2.
#
# epoch  loss  A: ref -> improved? wait   acc   B: ref -> improved? wait
#   1    1.00  none -> yes (1.00)   0     0.40  0.5 (baseline) -> no, in grace  0
#   2    1.05  0.90 -> no, in grace 0     0.45  0.5 -> no                       1
#   3    0.95  0.90 -> no           1     0.60  0.5 -> yes (0.60)               0
#   4    0.90  0.90 -> no (strict)  2 *   0.58  0.60 -> no                      1
#   5    0.86  0.90 -> yes (0.86)   0     0.61  0.60 -> yes (0.61)              0
#   6    0.84  0.76 -> no           1     0.62  0.61 -> yes (0.62)              0
#   7    0.83  0.76 -> no           2 *   0.62  0.62 -> no (not better)         1
#   8    0.70  0.76 -> yes (0.70)   0     0.60  0.62 -> no                      2 *
#   9    0.69  0.60 -> no           1     0.61  -> no                           3 *
#  10    0.68  0.60 -> no           2 *   0.61  -> no                           4 *
# (* stalled: wait >= patience)
#
# any: stops at epoch 4 (A stalls first). all: A and B are stalled together first at 10.
# Combined improvements: under `all` an epoch where some task improved: 1, 3, 5, 6, 8; under
# `any` an epoch where every task improved: 5 only.
LOSS = [1.00, 1.05, 0.95, 0.90, 0.86, 0.84, 0.83, 0.70, 0.69, 0.68]
ACC = [0.40, 0.45, 0.60, 0.58, 0.61, 0.62, 0.62, 0.60, 0.61, 0.61]
WAIT_A = [0, 0, 1, 2, 0, 1, 2, 0, 1, 2]
WAIT_B = [0, 1, 0, 1, 0, 0, 1, 2, 3, 4]


def two_tasks(aggregate: str) -> EarlyStopping:
    return EarlyStopping(
        tasks=[
            StopTask("val_loss", "min", min_delta=0.1, grace_period=2),
            StopTask("val_acc", "max", baseline=0.5, grace_period=1),
        ],
        aggregate=aggregate,
        patience=2,
    )


def run_sequence(stopper: EarlyStopping) -> tuple[list[bool], list[int | None]]:
    """Feed every epoch (ignoring the stop); (stop after each epoch, last improvement)."""
    stops, improved = [], []
    for epoch, (loss, acc) in enumerate(zip(LOSS, ACC, strict=True), start=1):
        stops.append(stopper.update(epoch, {"val_loss": loss, "val_acc": acc}))
        improved.append(stopper.last_improved_epoch)
    return stops, improved


def test_the_hand_worked_sequence_task_by_task():
    stopper = two_tasks("any")
    a, b = stopper.tasks
    for epoch, (loss, acc) in enumerate(zip(LOSS, ACC, strict=True), start=1):
        stopper.update(epoch, {"val_loss": loss, "val_acc": acc})
        assert (a.wait, b.wait) == (WAIT_A[epoch - 1], WAIT_B[epoch - 1]), epoch
        assert a.evals == b.evals == epoch
    assert (a.best, a.best_epoch) == (0.70, 8)
    assert (b.best, b.best_epoch) == (0.62, 6)


def test_any_stops_when_the_first_task_stalls():
    stops, improved = run_sequence(two_tasks("any"))
    assert stops.index(True) + 1 == 4
    # Every task improved together only at epoch 5.
    assert improved == [None, None, None, None, 5, 5, 5, 5, 5, 5]


def test_all_stops_when_every_task_has_stalled():
    stops, improved = run_sequence(two_tasks("all"))
    assert stops == [False] * 9 + [True]
    assert improved == [1, 1, 3, 3, 5, 6, 6, 8, 8, 8]


def test_a_stalled_task_unstalls_when_it_improves():
    stopper = two_tasks("all")
    run_sequence(stopper)
    a, _ = stopper.tasks
    assert a.stalled(2)
    stopper.update(11, {"val_loss": 0.5, "val_acc": 0.61})
    assert not a.stalled(2) and stopper.last_improved_epoch == 11


def test_a_baseline_not_beaten_stops_a_run_without_grace():
    """With no grace period, a task that never beats its baseline stalls after `patience`."""
    stopper = EarlyStopping(tasks=[StopTask("val_acc", "max", baseline=0.9)], patience=3)
    stops = [stopper.update(e, {"val_acc": 0.5 + e / 100}) for e in range(1, 5)]
    assert stops == [False, False, True, True]
    assert stopper.tasks[0].best is None and stopper.last_improved_epoch is None


def test_grace_period_counts_evaluations_not_epochs():
    """A monitor evaluated every other epoch: its grace period is its own evaluations."""
    stopper = EarlyStopping(tasks=[StopTask("val_loss", grace_period=2)], patience=1)
    stops = []
    for epoch in range(1, 9):
        metrics = {"train_loss": 1.0}
        if epoch % 2 == 0:
            metrics["val_loss"] = 1.0  # never improves after the first evaluation
        stops.append(stopper.update(epoch, metrics))
    # Evaluations at 2 (improves), 4 (grace), 6 (wait 1 = patience: stop).
    assert stops.index(True) + 1 == 6
    assert stopper.tasks[0].evals == 4


def test_nan_never_improves():
    stopper = EarlyStopping("val_loss", patience=2)
    assert [stopper.update(e, {"val_loss": float("nan")}) for e in (1, 2)] == [False, True]
    assert stopper.tasks[0].best is None


def test_the_single_form_is_unchanged():
    """Patience 2, min: 5, 4 improve; 4.5 and 4.2 do not: stop at epoch 4."""
    stopper = EarlyStopping("val_loss", "min", patience=2, min_delta=0.0)
    stops = [stopper.update(e, {"val_loss": v}) for e, v in enumerate([5, 4, 4.5, 4.2], 1)]
    assert stops == [False, False, False, True] and stopper.stopped_epoch == 4
    assert stopper.tasks[0].best == 4 and stopper.monitor == "val_loss"


def test_state_dict_round_trip_continues_identically():
    full = two_tasks("all")
    stops_full, _ = run_sequence(full)
    part = two_tasks("all")
    for epoch in range(1, 6):
        part.update(epoch, {"val_loss": LOSS[epoch - 1], "val_acc": ACC[epoch - 1]})
    resumed = two_tasks("all")
    resumed.load_state_dict(json.loads(json.dumps(part.state_dict())))  # as a checkpoint keeps it
    rest = [
        resumed.update(e, {"val_loss": LOSS[e - 1], "val_acc": ACC[e - 1]}) for e in range(6, 11)
    ]
    assert rest == stops_full[5:]
    assert resumed.state_dict() == full.state_dict()


def test_a_checkpoint_of_the_single_form_before_tasks_still_loads():
    stopper = EarlyStopping("val_loss", patience=3)
    stopper.load_state_dict({"best": 0.5, "wait": 2, "stopped_epoch": None})
    assert stopper.update(9, {"val_loss": 0.6}) and stopper.tasks[0].best == 0.5


def test_resume_with_other_monitors_is_refused():
    stopper = two_tasks("any")
    other = EarlyStopping("val_loss")
    with pytest.raises(ValueError, match="monitors .*val_acc.* differ"):
        other.load_state_dict(stopper.state_dict())


def test_bad_mode_and_aggregate_are_refused():
    with pytest.raises(ValueError, match="choose one of min, max"):
        StopTask("val_loss", "down")
    with pytest.raises(ValueError, match="choose one of any, all"):
        EarlyStopping("val_loss", aggregate="most")


# --- the checkpoint that follows the stopper -----------------------------------------------------


class Recorder:
    """The part of a Trainer the callbacks use: the callbacks, the stop flag, and files."""

    def __init__(self, callbacks: list[Any]):
        self.callbacks, self.should_stop = callbacks, False
        self.saved: list[tuple[str, str | None]] = []
        self.deleted: list[str] = []

    def save_checkpoint(self, path: Path, tag: str | None = None) -> None:
        self.saved.append((path.name, tag))

    def delete_checkpoint(self, path: Path) -> None:
        self.deleted.append(path.name)


def test_best_checkpoint_follows_the_combined_improvement(tmp_path):
    stopper = two_tasks("all")
    checkpoint = ModelCheckpoint(tmp_path, monitor="early_stopping", keep_top_k=2)
    trainer = Recorder([stopper, checkpoint])
    checkpoint.setup(trainer, {"val_loss", "val_acc"})  # type: ignore[arg-type]
    for epoch, (loss, acc) in enumerate(zip(LOSS, ACC, strict=True), start=1):
        for callback in trainer.callbacks:
            callback.on_epoch_end(trainer, epoch, {"val_loss": loss, "val_acc": acc})
    # Improvements at 1, 3, 5, 6, 8: each saved as "best"; the two latest kept.
    bests = [name for name, tag in trainer.saved if tag == "best"]
    assert bests == [f"best-epoch-{e:04d}.pt" for e in (1, 3, 5, 6, 8)]
    assert [e for _, e in checkpoint.top_k] == [8, 6]
    assert checkpoint.best_epoch == stopper.last_improved_epoch == 8
    assert checkpoint.best_path == "checkpoints/best-epoch-0008.pt"
    assert checkpoint.best_score is None
    assert trainer.deleted == [f"best-epoch-{e:04d}.pt" for e in (1, 3, 5)]
    assert trainer.should_stop  # stopped at 10


def test_following_needs_a_stopper_before_the_checkpoint(tmp_path):
    checkpoint = ModelCheckpoint(tmp_path, monitor="early_stopping")
    with pytest.raises(MonitorError, match="early_stopping is null"):
        checkpoint.setup(Recorder([checkpoint]), set())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must come before"):
        checkpoint.setup(Recorder([checkpoint, EarlyStopping("val_loss")]), set())  # type: ignore[arg-type]


# --- the spec --------------------------------------------------------------------------------


def test_both_forms_load_and_the_default_stays_the_single_form():
    assert isinstance(load_spec(tiny_cora()).early_stopping, EarlyStoppingSpec)
    single = load_spec(tiny_cora(early_stopping={"monitor": "val_loss", "patience": 3}))
    assert isinstance(single.early_stopping, EarlyStoppingSpec)
    multi = load_spec(
        tiny_cora(
            early_stopping={
                "tasks": [
                    {"monitor": "val_loss", "min_delta": 1e-4, "grace_period": 2},
                    {"monitor": "probe_val_acc", "mode": "max", "baseline": 0.3},
                ],
                "aggregate": "all",
                "patience": 5,
            }
        )
    )
    es = multi.early_stopping
    assert isinstance(es, MultiTaskEarlyStoppingSpec) and es.aggregate == "all"
    assert [t.monitor for t in es.tasks] == ["val_loss", "probe_val_acc"]
    assert load_spec(tiny_cora(early_stopping=None)).early_stopping is None


@pytest.mark.parametrize(
    "early_stopping, loc, words",
    [
        ({"tasks": [{"monitr": "x"}]}, "early_stopping.tasks.0.monitr", "allowed: baseline"),
        ({"tasks": [{"monitor": "val_loss"}], "aggregate": "most"}, "early_stopping.aggregate",
         "'any' or 'all'"),
        ({"tasks": [{"monitor": "val_loss", "grace_period": -1}]},
         "early_stopping.tasks.0.grace_period", "greater than or equal to 0"),
        ({"tasks": [], "monitor": "val_loss"}, "early_stopping.tasks", "at least 1"),
        ({"monitr": "val_loss"}, "early_stopping.monitr", "allowed: min_delta, mode, monitor"),
        ({"tasks": [{"monitor": "val_loss"}, {"monitor": "val_loss"}]}, "early_stopping",
         "['val_loss'] more than once"),
    ],
)  # fmt: skip
def test_bad_early_stopping_names_the_field(early_stopping, loc, words):
    with pytest.raises(SpecError) as err:
        load_spec(tiny_cora(early_stopping=early_stopping))
    assert any(e["loc"] == loc and words in e["msg"] for e in err.value.errors), err.value.errors


def test_checkpoint_following_a_null_stopper_is_refused():
    spec = tiny_cora(early_stopping=None, checkpoint={"monitor": "early_stopping"})
    with pytest.raises(SpecError, match="early_stopping is null"):
        load_spec(spec)


def test_every_task_monitor_is_checked_before_training(tmp_path):
    from core.run import train

    spec = tiny_cora(
        early_stopping={"tasks": [{"monitor": "val_loss"}, {"monitor": "val_acc"}]},
    )
    with pytest.raises(MonitorError, match=r"early_stopping.tasks.1.monitor 'val_acc'.*available"):
        train(load_spec(spec), tmp_path)
    assert not (tmp_path / "metrics.jsonl").exists()


# --- a real run --------------------------------------------------------------------------------

# Both tasks improve only at their first evaluation (min_delta far above any change in a loss):
# val_loss counts stalls after 3 evaluations, train_loss after 2, so with patience 2 under
# `all` train_loss is stalled from epoch 4, val_loss from epoch 5: the run stops at 5 of 6.
STOPPING = {
    "aggregate": "all",
    "patience": 2,
    "tasks": [
        {"monitor": "val_loss", "min_delta": 10.0, "grace_period": 3},
        {"monitor": "train_loss", "min_delta": 10.0, "grace_period": 2},
    ],
}


def test_a_resumed_run_stops_at_the_same_epoch(tmp_path):
    spec = tiny_cora(
        training={"epochs": 6},
        probe={"every_n_epochs": 100},
        early_stopping=STOPPING,
        checkpoint={"monitor": "early_stopping", "every_n_epochs": 1},
    )
    full, part = stopped_and_resumed(spec, tmp_path)
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((part / "summary.json").read_text())
    for summary in (a, b):
        assert (summary["stopped_early"], summary["stopped_epoch"]) == (True, 5)
        assert summary["epochs_completed"] == 5
        stop = summary["early_stopping"]
        assert [(t["monitor"], t["best_epoch"], t["stalled"]) for t in stop["tasks"]] == [
            ("val_loss", 1, True),
            ("train_loss", 1, True),
        ]
        # "best" follows the stopper: its last combined improvement, epoch 1.
        assert summary["monitor"] == "early_stopping" and summary["best_score"] is None
        assert summary["best_epoch"] == stop["last_improved_epoch"] == 1
        assert summary["best_checkpoint"] == "checkpoints/best-epoch-0001.pt"
    assert [r["epoch"] for r in metric_rows(part)] == [1, 2, 3, 4, 5]
    bests = [t["best"] for t in b["early_stopping"]["tasks"]]
    assert bests == pytest.approx([t["best"] for t in a["early_stopping"]["tasks"]], rel=1e-6)


def test_the_multi_task_form_survives_the_stored_spec():
    """What the API stores (`model_dump`) and a run writes (`spec.yaml`) load as the same spec."""
    from core.spec import dump_spec

    spec = load_spec(tiny_cora(early_stopping=STOPPING))
    assert load_spec(spec.model_dump(mode="json")) == spec
    assert load_spec(dump_spec(spec)) == spec
