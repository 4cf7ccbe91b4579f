"""Where runs and uploads live on disk, and the one check every download goes through."""

from __future__ import annotations

from pathlib import Path

from store.models import Job
from store.settings import Settings


def resolve_inside(root: Path, relative: str | Path) -> Path | None:
    """`root / relative` resolved (symlinks too), or None if it lies outside `root`."""
    base = root.resolve()
    path = (base / relative).resolve()
    return path if path.is_relative_to(base) else None


def run_dir(settings: Settings, job: Job) -> Path:
    """The job's run directory (`job.run_dir` under the artifact root)."""
    return settings.artifact_root / job.run_dir


def owner_upload_dir(settings: Settings, owner_name: str) -> Path:
    """Where an owner's uploads live: a spec's `data.path` of an upload is relative to it."""
    return settings.upload_root / owner_name
