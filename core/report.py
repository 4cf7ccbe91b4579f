"""The run contract: how a training run reports, as typed, versioned events.

The training process appends one JSON line per event to its run directory: metric records to
`metrics.jsonl`, artifact events to `artifacts.jsonl`. The worker tails both files, parses each
line with `parse_metrics_line` / `parse_artifact_line` and turns it into database rows; the
training process never talks to the database itself. This module imports neither torch nor
anything of the service, so both sides share it.

Every line carries `"v": RUN_EVENTS_VERSION`. A metric value that is NaN or infinite is written
as JSON `null` (strict JSON everywhere; the API shows it as null).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

RUN_EVENTS_VERSION = 1

Granularity = Literal["epoch", "step"]
ArtifactKind = Literal[
    "checkpoint",  # a training state (`tag`: best | top_k | last | periodic)
    "embeddings",  # float32 .npy [rows, dim]; `meta.ids` names the ids artifact
    "ids",  # CSV keying the rows of an embeddings artifact (`meta.id_column`)
    "predictions",  # CSV of model outputs
    "summary",  # summary.json
    "report",  # other JSON reports (test_report.json, ...)
    "tensorboard",  # TensorBoard event files
    "plot",  # images
    "projection",  # float32 .npy [rows, 2]: a 2-D map of an embeddings artifact (`meta.of`)
    "data",  # data the run derived and trained on (e.g. triplets)
    "file",  # anything else
]
ARTIFACT_KINDS: tuple[str, ...] = get_args(ArtifactKind)


class RunEventError(ValueError):
    """A line of `metrics.jsonl` / `artifacts.jsonl` that is not a valid event."""


def finite_or_none(value: Any) -> Any:
    """`value` with NaN and +-Inf floats replaced by None (recursively in lists and dicts)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def strict_json(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` that writes NaN/Inf as null, so every JSON file the project writes parses
    with a strict parser."""
    return json.dumps(finite_or_none(obj), allow_nan=False, default=_default, **kwargs)


def _default(obj: Any) -> Any:
    try:  # numpy / torch scalars
        return finite_or_none(float(obj))
    except (TypeError, ValueError):
        raise TypeError(f"{type(obj).__name__} is not JSON serialisable") from None


@dataclass(frozen=True)
class MetricsRecord:
    """One epoch's metrics (`granularity="epoch"`), or the running training metrics every
    `training.log_every_n_steps` optimizer steps (`granularity="step"`).

    `values` maps metric names (`train_loss`, `val_loss`, `lr`, `grad_norm`, `seconds`, ...)
    to floats, None where a value was NaN or infinite.
    """

    epoch: int
    step: int
    values: dict[str, float | None]
    granularity: Granularity = "epoch"

    def to_json(self) -> str:
        reserved = {"v", "granularity", "epoch", "step"} & set(self.values)
        if reserved:
            raise RunEventError(f"metric names {sorted(reserved)} are reserved")
        return strict_json(
            {
                "v": RUN_EVENTS_VERSION,
                "granularity": self.granularity,
                "epoch": self.epoch,
                "step": self.step,
                **self.values,
            }
        )


@dataclass(frozen=True)
class ArtifactEvent:
    """A file of the run directory created (or deleted) by the run; `path` is relative to it.

    `meta` holds kind-specific facts: for embeddings `shape`, `dtype`, `ids` (the name of the
    ids artifact keying its rows); for ids `id_column` (the CSV column holding the row ids).
    """

    event: Literal["created", "deleted"]
    kind: str
    path: str
    size: int = 0
    sha256: str = ""
    epoch: int | None = None
    tag: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return strict_json(
            {
                "v": RUN_EVENTS_VERSION,
                "event": self.event,
                "kind": self.kind,
                "path": self.path,
                "size": self.size,
                "sha256": self.sha256,
                "epoch": self.epoch,
                "tag": self.tag,
                "meta": self.meta,
            }
        )


def _load(line: str) -> dict[str, Any]:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise RunEventError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RunEventError(f"an event is a JSON object, got {type(obj).__name__}")
    version = obj.get("v", RUN_EVENTS_VERSION)
    if version != RUN_EVENTS_VERSION:
        raise RunEventError(f"event version {version!r}; this reader knows {RUN_EVENTS_VERSION}")
    return obj


def parse_metrics_line(line: str | Mapping[str, Any]) -> MetricsRecord:
    """A `metrics.jsonl` line (or its parsed object) as a `MetricsRecord`; raise
    `RunEventError` if it is not one. Non-numeric values are dropped; NaN becomes None."""
    obj = dict(line) if isinstance(line, Mapping) else _load(line)
    epoch, step = obj.pop("epoch", None), obj.pop("step", 0)
    granularity = obj.pop("granularity", "epoch")
    obj.pop("v", None)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
        raise RunEventError(f"a metrics record needs an integer epoch >= 0, got {epoch!r}")
    if not isinstance(step, int) or isinstance(step, bool):
        raise RunEventError(f"a metrics record's step is an integer, got {step!r}")
    if granularity not in get_args(Granularity):
        raise RunEventError(f"granularity {granularity!r}; allowed: epoch, step")
    values = {
        str(k): finite_or_none(float(v)) if v is not None else None
        for k, v in obj.items()
        if v is None or (isinstance(v, int | float) and not isinstance(v, bool))
    }
    return MetricsRecord(epoch, step, values, granularity)


def parse_artifact_line(line: str | Mapping[str, Any]) -> ArtifactEvent:
    """An `artifacts.jsonl` line (or its parsed object) as an `ArtifactEvent`; raise
    `RunEventError` if it is not one."""
    obj = dict(line) if isinstance(line, Mapping) else _load(line)
    event, path = obj.get("event"), obj.get("path")
    if event not in ("created", "deleted"):
        raise RunEventError(f"artifact event {event!r}; allowed: created, deleted")
    if not isinstance(path, str) or not path:
        raise RunEventError("an artifact event needs a path")
    meta = obj.get("meta") or {}
    if not isinstance(meta, dict):
        raise RunEventError("an artifact event's meta is an object")
    epoch = obj.get("epoch")
    return ArtifactEvent(
        event=event,
        kind=str(obj.get("kind") or "file"),
        path=path,
        size=int(obj.get("size") or 0),
        sha256=str(obj.get("sha256") or ""),
        epoch=epoch if isinstance(epoch, int) else None,
        tag=obj.get("tag") if isinstance(obj.get("tag"), str) else None,
        meta=meta,
    )


class Reporter(Protocol):
    def metrics(self, record: MetricsRecord) -> None: ...

    def artifact(self, event: ArtifactEvent) -> None: ...


class NullReporter:
    """What ranks other than 0 use: they report nothing."""

    def metrics(self, record: MetricsRecord) -> None:
        pass

    def artifact(self, event: ArtifactEvent) -> None:
        pass


class RunDirReporter:
    """Appends `metrics.jsonl` and `artifacts.jsonl` lines, flushed and fsynced one by one."""

    def __init__(self, run_dir: Path):
        self.metrics_path = run_dir / "metrics.jsonl"
        self.artifacts_path = run_dir / "artifacts.jsonl"

    @staticmethod
    def _append(path: Path, line: str) -> None:
        with open(path, "a") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def metrics(self, record: MetricsRecord) -> None:
        self._append(self.metrics_path, record.to_json())

    def artifact(self, event: ArtifactEvent) -> None:
        self._append(self.artifacts_path, event.to_json())


# --- phases ---------------------------------------------------------------------------------------
# What a run is doing between epoch records (loading data, generating walks, training, writing
# outputs), so a user watching a job sees more than silence. Rank 0 appends one line per phase to
# `events.jsonl`; the worker tails it into the job's `phase`.

EVENTS_FILE = "events.jsonl"


@dataclass(frozen=True)
class PhaseEvent:
    """The run entered `phase` (free text, e.g. "loading data"); `total` is the number of
    `unit`s of work the phase has when known (a progress bar's total: epochs for "training")."""

    phase: str
    total: int | None = None
    unit: str | None = None

    def to_json(self) -> str:
        return strict_json(
            {
                "v": RUN_EVENTS_VERSION,
                "event": "phase",
                "phase": self.phase,
                "total": self.total,
                "unit": self.unit,
            }
        )


def parse_phase_line(line: str | Mapping[str, Any]) -> PhaseEvent:
    """An `events.jsonl` line (or its parsed object) as a `PhaseEvent`; raise `RunEventError`
    if it is not one."""
    obj = dict(line) if isinstance(line, Mapping) else _load(line)
    if obj.get("event") != "phase":
        raise RunEventError(f"event {obj.get('event')!r}; allowed: phase")
    phase, total, unit = obj.get("phase"), obj.get("total"), obj.get("unit")
    if not isinstance(phase, str) or not phase.strip():
        raise RunEventError("a phase event needs a phase name")
    if total is not None and (not isinstance(total, int) or isinstance(total, bool) or total < 0):
        raise RunEventError(f"a phase's total is an integer >= 0, got {total!r}")
    return PhaseEvent(phase, total, unit if isinstance(unit, str) else None)


class PhaseLog:
    """Appends `PhaseEvent` lines to `<run_dir>/events.jsonl` (flushed and fsynced)."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / EVENTS_FILE

    def __call__(self, event: PhaseEvent) -> None:
        RunDirReporter._append(self.path, event.to_json())


_phase_log: PhaseLog | None = None  # set on rank 0 of a run by `core.run` (`start_phases`)


def start_phases(run_dir: Path | None) -> None:
    """Make `report_phase` write to `run_dir`'s `events.jsonl` (None: report nothing, as on
    ranks other than 0 and outside a run)."""
    global _phase_log
    _phase_log = PhaseLog(run_dir) if run_dir is not None else None


def report_phase(phase: str, total: int | None = None, unit: str | None = None) -> None:
    """Tell whoever watches the run that it entered `phase` (a no-op outside rank 0 of a run).
    Any code of a run may call it, e.g. a family before its walks: `report_phase("generating
    walks")`."""
    if _phase_log is not None:
        _phase_log(PhaseEvent(phase, total, unit))
