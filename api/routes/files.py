"""A job's files: logs, checkpoints, embeddings and other artifacts.

Every file is looked up in the database first and served only from inside the artifact root:
a name the job did not record never reaches the file system.
"""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from sqlalchemy.orm import Session

from api.deps import OwnedJob, SessionDep, SettingsDep
from api.files import embeddings_csv, open_embeddings, read_upto, tail_lines
from api.schemas import ArtifactPublic, ArtifactsPublic
from store import queries
from store.models import Artifact, Job
from store.paths import resolve_inside
from store.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs/{job_id}", tags=["files"])

LOG_FILE = "logs.txt"
CHECKPOINT_ALIASES = ("best", "last")
# Runs recorded before artifacts had meta keyed embeddings with an artifact of one of these kinds
# (and this CSV column); newer ones name theirs in the embeddings' `meta.ids`.
LEGACY_ID_COLUMNS = {"node_ids": "node_id", "graph_ids": "graph_id"}
ROW_INDEX_COLUMN = "row"  # the CSV's first column when nothing keys the rows


class LargeFileResponse(FileResponse):
    """A file response sent in 1 MiB chunks (fewer event-loop trips than Starlette's 64 KiB)."""

    chunk_size = 1024 * 1024


def _not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{what} not found")


def _artifact_file(settings: Settings, artifact: Artifact | None, what: str) -> Path:
    """The artifact's file under the artifact root, else 404."""
    if artifact is None:
        raise _not_found(what)
    path = resolve_inside(settings.artifact_root, artifact.path)
    if path is None:
        log.error("artifact %s of job %s points outside the root", artifact.name, artifact.job_id)
        raise _not_found(what)
    if not path.is_file():
        raise _not_found(f"{what} file")
    return path


def _run_file(settings: Settings, job: Job, name: str) -> Path | None:
    """A file the run directory holds by convention (not an artifact row), if present."""
    path = resolve_inside(settings.artifact_root, PurePosixPath(job.run_dir, name))
    return path if path is not None and path.is_file() else None


def _download(path: Path, name: str) -> FileResponse:
    return LargeFileResponse(
        path, media_type="application/octet-stream", filename=PurePosixPath(name).name
    )


@router.get("/logs", response_class=PlainTextResponse)
def get_logs(
    job: OwnedJob,
    settings: SettingsDep,
    tail: Annotated[int | None, Query(ge=1, le=100_000, description="last N lines")] = None,
) -> Response:
    """The run's log (`logs.txt`), empty until the run starts writing it."""
    path = _run_file(settings, job, LOG_FILE)
    if path is None:
        return PlainTextResponse("")
    if tail is not None:
        return Response(tail_lines(path, tail), media_type="text/plain; charset=utf-8")
    # Up to its size now: the run may be appending (a FileResponse would read on to the end
    # and send more than the Content-Length it declared).
    size = path.stat().st_size
    return StreamingResponse(read_upto(path, size), media_type="text/plain; charset=utf-8")


@router.get("/artifacts")
def list_artifacts(job: OwnedJob, session: SessionDep, kind: str | None = None) -> ArtifactsPublic:
    rows = queries.list_artifacts(session, job.id, kind)
    return ArtifactsPublic(data=[ArtifactPublic.model_validate(a) for a in rows], count=len(rows))


@router.get("/artifacts/{name:path}", response_class=FileResponse)
def download_artifact(
    job: OwnedJob, session: SessionDep, settings: SettingsDep, name: str
) -> FileResponse:
    artifact = queries.find_artifact(session, job.id, name=name)
    return _download(_artifact_file(settings, artifact, "artifact"), name)


@router.get("/checkpoints")
def list_checkpoints(job: OwnedJob, session: SessionDep) -> ArtifactsPublic:
    rows = queries.list_artifacts(session, job.id, "checkpoint")
    return ArtifactsPublic(data=[ArtifactPublic.model_validate(a) for a in rows], count=len(rows))


@router.get("/checkpoints/{name:path}", response_class=FileResponse)
def download_checkpoint(
    job: OwnedJob, session: SessionDep, settings: SettingsDep, name: str
) -> FileResponse:
    """A checkpoint by name; `best` and `last` name the checkpoint tagged so."""
    artifact = queries.find_artifact(session, job.id, name=name, kind="checkpoint")
    if artifact is None and name in CHECKPOINT_ALIASES:
        artifact = queries.find_artifact(session, job.id, kind="checkpoint", tag=name)
    path = _artifact_file(settings, artifact, "checkpoint")
    assert artifact is not None
    return _download(path, artifact.name)


@router.get("/embeddings", response_model=None)
def download_embeddings(
    job: OwnedJob,
    session: SessionDep,
    settings: SettingsDep,
    format: Literal["npy", "csv"] = "npy",
    name: Annotated[
        str | None, Query(description="an embeddings artifact's name (default: the newest)")
    ] = None,
) -> FileResponse | StreamingResponse:
    """The embeddings as `.npy`, or as CSV (`<id column>,dim_0,...`, one row per embedded
    node or graph) with `?format=csv`."""
    artifact = queries.find_artifact(session, job.id, name=name, kind="embeddings")
    path = _artifact_file(settings, artifact, "embeddings")
    assert artifact is not None
    if format == "npy":
        return _download(path, "embeddings.npy")
    ids_path, id_column = _ids_of(session, settings, artifact)
    return StreamingResponse(
        embeddings_csv(open_embeddings(path), ids_path, id_column),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="embeddings.csv"'},
    )


def _ids_of(session: Session, settings: Settings, embeddings: Artifact) -> tuple[Path | None, str]:
    """The CSV keying the rows of `embeddings` and its id column: the artifact its `meta.ids`
    names, with that artifact's `meta.id_column`. Runs recorded before artifacts had meta:
    the job's `node_ids` or `graph_ids` artifact. Without any: (None, "row"), rows keyed by
    their index."""
    ids_name = embeddings.meta.get("ids")
    if isinstance(ids_name, str) and ids_name:
        ids = queries.find_artifact(session, embeddings.job_id, name=ids_name)
        if ids is None:
            log.warning("job %s: ids artifact %r is not recorded", embeddings.job_id, ids_name)
            return None, ROW_INDEX_COLUMN
        id_column = ids.meta.get("id_column") or LEGACY_ID_COLUMNS.get(ids.kind, ROW_INDEX_COLUMN)
        return resolve_inside(settings.artifact_root, ids.path), str(id_column)
    for kind, id_column in LEGACY_ID_COLUMNS.items():
        ids = queries.find_artifact(session, embeddings.job_id, kind=kind)
        if ids is not None:
            return resolve_inside(settings.artifact_root, ids.path), id_column
    return None, ROW_INDEX_COLUMN
