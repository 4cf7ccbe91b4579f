"""Request and response bodies."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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
    # Of a member of a job group (`POST /groups`): the group, the member's index in the sweep's
    # expansion and the values the sweep set for it; null for a job submitted alone.
    group_id: str | None = None
    group_index: int | None = None
    sweep_values: dict[str, Any] | None = None


class JobsPublic(BaseModel):
    data: list[JobPublic]
    count: int


class MetricPublic(BaseModel):
    """One epoch's metrics; a value that was NaN or infinite is null."""

    epoch: int
    values: dict[str, Any]


class MetricsPublic(BaseModel):
    """Metric rows: the effective history across attempts (each epoch from the latest attempt
    that reached it), or one attempt's with `?attempt=N`; `status` tells a poller when to
    stop."""

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


# --- job groups (`POST /groups`, docs/sweeps.md) -------------------------------------------------


class GroupCreate(BaseModel):
    """The body of `POST /groups` (JSON, or YAML with `Content-Type: application/yaml`)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, min_length=1, max_length=200, description="default: the spec's `name`"
    )
    spec: dict[str, Any] | str = Field(
        description="the base spec: an object, or YAML/JSON text (as `POST /jobs` takes it)"
    )
    sweep: dict[str, Any] = Field(
        description="`{grid: {dotted.key: [values] | {range: [start, stop, step]}}, "
        "zip: [{key: [values], key2: [values]}]}`: the grid's cartesian product, crossed with "
        "each zip block (its lists taken item by item)"
    )
    metric: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="the metric `GET /groups/{id}` summarises; default: the spec's "
        "`metric_for_best.name` where the family has one",
    )


class GroupPublic(Public):
    id: str
    name: str
    family: str
    size: int  # the number of members
    metric: str | None
    created_at: datetime
    # Members by status (every status, zeros included).
    counts: dict[str, int] = Field(default_factory=dict)


class GroupsPublic(BaseModel):
    data: list[GroupPublic]
    count: int


class GroupMemberPublic(BaseModel):
    """A member job: its index in the expansion, the values the sweep set, its state and its
    value of the summarised metric (null while it has none)."""

    id: str
    index: int
    values: dict[str, Any]
    status: str
    phase: str | None
    progress: float
    attempt: int
    error: str | None
    value: float | None = None


class GroupSummaryPublic(BaseModel):
    """A metric over the members that have it: mean, sample standard deviation (n - 1), min,
    max, and the member with the best value."""

    metric: str
    mode: Literal["max", "min"]
    reduce: Literal["best", "last", "summary"]
    n: int  # members with a value
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    best_index: int | None


class GroupDetailPublic(GroupPublic):
    spec: dict[str, Any]  # the base spec as submitted
    sweep: dict[str, Any]  # ranges written out
    members: list[GroupMemberPublic]
    summary: GroupSummaryPublic | None = None
