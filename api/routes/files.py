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
NODE_IDS_FILE = "node_ids.csv"
CHECKPOINT_ALIASES = ("best", "last")


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
) -> FileResponse | StreamingResponse:
    """The embeddings as `.npy`, or as CSV (`node_id,dim_0,...`) with `?format=csv`."""
    artifact = queries.find_artifact(session, job.id, kind="embeddings")
    path = _artifact_file(settings, artifact, "embeddings")
    if format == "npy":
        return _download(path, "embeddings.npy")
    # Node embeddings come with node_ids.csv; graph-level ones (graph families) with graph_ids.
    ids = queries.find_artifact(session, job.id, kind="node_ids")
    id_column = "node_id"
    if ids is None and (graph_ids := queries.find_artifact(session, job.id, kind="graph_ids")):
        ids, id_column = graph_ids, "graph_id"
    ids_path = (
        resolve_inside(settings.artifact_root, ids.path)
        if ids is not None
        else _run_file(settings, job, NODE_IDS_FILE)
    )
    return StreamingResponse(
        embeddings_csv(open_embeddings(path), ids_path, id_column),
        media_type="text/csv",
        headers={"Content-Disposition": 'attachment; filename="embeddings.csv"'},
    )
