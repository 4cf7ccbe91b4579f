"""Request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class Public(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class JobPublic(Public):
    id: str
    name: str
    family: str
    status: str
    cancel_requested: bool
    attempt: int
    progress: float
    # What a running job is doing ("starting", "loading data", "training", "writing outputs");
    # null unless it is running.
    phase: str | None = None
    # Of a queued job: 1 if it runs next, 2 after that, ... (single-job responses only).
    queue_position: int | None = None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    worker: str | None
    error: str | None
    spec: dict[str, Any]
    # Of a finished job of an embedding family (single-job responses only): the summary's
    # `quality` block, its metric beside the untrained baseline.
    quality: dict[str, Any] | None = None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class MetricPublic(BaseModel):
    """One epoch's metrics; a value that was NaN or infinite is null."""

    epoch: int
    values: dict[str, Any]


class MetricsPublic(BaseModel):
    """Metric rows of one attempt; `status` tells a poller when to stop."""

    data: list[MetricPublic]
    count: int
    attempt: int
    status: str


class StepMetricPublic(BaseModel):
    """The running training metrics at one optimizer step (`training.log_every_n_steps`)."""

    step: int
    epoch: int
    values: dict[str, Any]


class StepMetricsPublic(BaseModel):
    """Step metric rows of one attempt (`?granularity=step`); `status` as in `MetricsPublic`."""

    data: list[StepMetricPublic]
    count: int
    attempt: int
    status: str


class ArtifactPublic(Public):
    name: str
    kind: str
    size: int
    sha256: str
    epoch: int | None
    tag: str | None
    meta: dict[str, Any]  # kind-specific: embeddings `shape`, `dtype`, `ids`; ids `id_column`
    created_at: datetime


class ArtifactsPublic(BaseModel):
    data: list[ArtifactPublic]
    count: int


class DatasetPublic(Public):
    """An upload; `path` is what a spec's `data.path` names (relative to the owner's uploads)."""

    name: str
    path: str
    size: int
    sha256: str
    created_at: datetime


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class Health(BaseModel):
    status: str
    revision: str | None = None
