"""Service settings, read once from the environment."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

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
    stream_poll_seconds: float = Field(
        default=0.5,
        gt=0,
        alias="TRAINCTL_STREAM_POLL_SECONDS",
        description="how often the metrics stream polls the database",
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
