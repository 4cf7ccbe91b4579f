"""Service settings, read once from the environment."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where the service keeps its database, queue, runs and uploads.

    Each field is read from the environment variable named by its alias; paths left unset live
    under `TRAINCTL_HOME` (default `~/.trainctl`).
    """

    # Aliases only: a field named `home` must not be read from `$HOME`.
    model_config = SettingsConfigDict(extra="ignore")

    home: Path = Field(default=Path("~/.trainctl"), alias="TRAINCTL_HOME")
    database_url: str = Field(default="", alias="DATABASE_URL")
    redis_url: str | None = Field(default=None, alias="REDIS_URL")
    broker_url: str | None = Field(default=None, alias="BROKER_URL")
    queue: str = Field(default="trainctl", alias="TRAINCTL_QUEUE")
    artifact_root: Path = Field(default=Path(""), alias="TRAINCTL_ARTIFACT_ROOT")
    upload_root: Path = Field(default=Path(""), alias="TRAINCTL_UPLOAD_ROOT")
    data_root: str = Field(
        default="",
        alias="TRAINCTL_DATA_ROOT",
        description="read-only data roots, separated by os.pathsep",
    )
    max_upload_bytes: int = Field(default=2 * 1024**3, gt=0, alias="TRAINCTL_MAX_UPLOAD_BYTES")
    api_threads: int = Field(
        default=8,
        ge=1,
        alias="TRAINCTL_API_THREADS",
        description="threads per API process for blocking work (database, files); few threads "
        "contend less for the GIL than anyio's default 40",
    )
    broker_timeout_seconds: float = Field(
        default=3.0,
        gt=0,
        le=300,
        alias="TRAINCTL_BROKER_TIMEOUT_SECONDS",
        description="connect and send timeout of every broker call: a broker that accepts "
        "connections but never answers makes POST /jobs a 503 within a few of these",
    )
    export_formats: list[Literal["csv", "parquet"]] = Field(
        default=["parquet"],
        alias="TRAINCTL_EXPORT_FORMATS",
        description="embedding formats the worker converts a finished job's `.npy` to before "
        "marking it succeeded (a JSON list, e.g. '[\"parquet\", \"csv\"]'; '[]': none), so "
        "that their downloads are sent from disk; others are converted at the first download",
    )
    stream_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        alias="TRAINCTL_STREAM_POLL_SECONDS",
        description="how often the metrics stream polls the database",
    )
    # Observability (`docs/observability.md`).
    auth_cache_seconds: float = Field(
        default=1.0,
        ge=0,
        le=1.0,
        alias="TRAINCTL_AUTH_CACHE_SECONDS",
        description="how long an API process reuses an API key's owner before asking the "
        "database again; a revoked key stops working within this (at most 1 s; 0: no cache)",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        alias="TRAINCTL_LOG_FORMAT",
        description="`json`: the API and the workers log one JSON object per line (time, "
        "level, logger, message, job_id where known)",
    )
    # How a worker supervises a run (`worker.runner.RunnerOptions`).
    poll_seconds: float = Field(
        default=0.25,
        gt=0,
        alias="TRAINCTL_POLL_SECONDS",
        description="how often a worker reads a run's new metrics and checks for a cancel",
    )
    heartbeat_seconds: float = Field(
        default=5.0,
        gt=0,
        alias="TRAINCTL_HEARTBEAT_SECONDS",
        description="how often a worker refreshes its running job's heartbeat",
    )
    cancel_grace_seconds: float = Field(
        default=10.0,
        ge=0,
        alias="TRAINCTL_CANCEL_GRACE_SECONDS",
        description="how long a stopped run has between SIGTERM and SIGKILL",
    )
    stale_after_seconds: float = Field(
        default=60.0,
        gt=0,
        alias="TRAINCTL_STALE_AFTER_SECONDS",
        description="a running job whose heartbeat is older than this lost its worker and is "
        "requeued",
    )

    # Reliability and quotas (`docs/reliability.md`).
    max_queued_per_owner: int = Field(
        default=100,
        ge=1,
        alias="TRAINCTL_MAX_QUEUED_PER_OWNER",
        description="queued jobs one owner may have; a submit or retry beyond it is a 429",
    )
    max_running_per_owner: int = Field(
        default=8,
        ge=1,
        alias="TRAINCTL_MAX_RUNNING_PER_OWNER",
        description="running jobs one owner may have; a worker leaves the owner's next job "
        "queued (its message retried later) until one of them finishes",
    )
    quota_retry_after_seconds: int = Field(
        default=30,
        ge=1,
        alias="TRAINCTL_QUOTA_RETRY_AFTER_SECONDS",
        description="the Retry-After of a 429, and how long a worker waits before trying "
        "again a job held back by the running-jobs limit",
    )
    claim_retry_max_seconds: float = Field(
        default=30.0,
        gt=0,
        alias="TRAINCTL_CLAIM_RETRY_MAX_SECONDS",
        description="the longest back-off between a worker's tries to claim a job while the "
        "database is unreachable (1 s, 2 s, 4 s, ... up to this)",
    )
    redispatch_after_seconds: float = Field(
        default=900.0,
        gt=0,
        alias="TRAINCTL_REDISPATCH_AFTER_SECONDS",
        description="a job queued this long since it was last sent to the broker is sent "
        "again by the sweep (a lost message; a duplicate delivery is a no-op)",
    )
    db_outage_seconds: float = Field(
        default=300.0,
        ge=0,
        alias="TRAINCTL_DB_OUTAGE_SECONDS",
        description="how long a worker supervising a run rides out an unreachable database "
        "(metrics buffered, writes retried) before it gives the run up",
    )
    # Job groups (`docs/sweeps.md`).
    max_group_members: int = Field(
        default=256,
        ge=1,
        le=100_000,
        alias="TRAINCTL_MAX_GROUP_MEMBERS",
        description="the most members a sweep (POST /groups) may expand to; more is a 422",
    )

    @model_validator(mode="after")
    def _fill_paths(self) -> Settings:
        self.home = self.home.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.home / 'trainctl.db'}"
        self.artifact_root = (
            self.artifact_root.expanduser()
            if str(self.artifact_root) not in ("", ".")
            else self.home / "runs"
        )
        self.upload_root = (
            self.upload_root.expanduser()
            if str(self.upload_root) not in ("", ".")
            else self.home / "datasets"
        )
        return self

    @property
    def data_roots(self) -> list[Path]:
        """The read-only data roots, in search order."""
        return [Path(p).expanduser() for p in self.data_root.split(os.pathsep) if p]

    @property
    def broker(self) -> str | None:
        """The Celery broker URL: `BROKER_URL`, else `REDIS_URL`, else None (embedded)."""
        return self.broker_url or self.redis_url


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (read from the environment on first use)."""
    return Settings()
