"""A job's files: logs (whole, tailed or streamed), checkpoints, embeddings, the run's summary
and other artifacts.

Every file is looked up in the database first and served only from inside the artifact root:
a name the job did not record never reaches the file system.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, PlainTextResponse, Response, StreamingResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.deps import OwnedJob, SessionDep, SettingsDep
from api.files import read_upto, tail_lines
from api.schemas import ArtifactPublic, ArtifactsPublic
from store import queries
from store.exports import KEPT_FORMATS, cached_export, converted, export_path, ids_of
from store.models import FINISHED_STATUSES, Artifact, Job
from store.paths import resolve_inside
from store.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs/{job_id}", tags=["files"])

LOG_FILE = "logs.txt"
CHECKPOINT_ALIASES = ("best", "last")
EMBEDDING_MEDIA_TYPES = {
    "csv": "text/csv",
    "parquet": "application/vnd.apache.parquet",
    "safetensors": "application/octet-stream",
}


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


LOG_CHUNK_BYTES = 256 * 1024
KEEPALIVE_SECONDS = 15.0


@router.get("/logs/stream", response_class=StreamingResponse)
async def stream_logs(
    job: OwnedJob,
    request: Request,
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0, description="start at this byte of the log")] = 0,
    tail: Annotated[
        int | None, Query(ge=0, le=100_000, description="start at the last N lines instead")
    ] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events of the run's log as it grows: `event: log` with whole lines (one
    `data:` field per line; `id` is the byte offset after them), then `event: end` once the job
    is finished and the log read to its end. Resumes at the byte offset in `Last-Event-ID`
    (else `offset`)."""
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail="Last-Event-ID must be the byte offset of the last log event received",
            )
        offset = int(last_event_id)
    path = resolve_inside(settings.artifact_root, PurePosixPath(job.run_dir, LOG_FILE))
    if tail is not None and last_event_id is None and path is not None and path.is_file():
        offset = await anyio.to_thread.run_sync(_tail_offset, path, tail)
    events = _log_events(request, job, path, offset, settings.stream_poll_seconds)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _tail_offset(path: Path, lines: int) -> int:
    """The byte offset where the last `lines` lines of the file begin (as `GET /logs?tail`)."""
    with path.open("rb") as f:
        end = f.seek(0, 2)
        pos, data = end, b""
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(64 * 1024, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    kept = data.splitlines(keepends=True)[-lines:] if lines else []
    return end - sum(len(line) for line in kept)


async def _log_events(
    request: Request, job: Job, path: Path | None, offset: int, poll_seconds: float
) -> AsyncIterator[str]:
    factory = request.app.state.session_factory
    job_id = job.id

    def job_status() -> str | None:
        with factory() as session:
            return session.scalar(select(Job.status).where(Job.id == job_id))

    def read(offset: int, finished: bool) -> tuple[bytes, int]:
        """Whole lines from `offset` (a partial last line too once the job is finished)."""
        if path is None:
            return b"", offset
        try:
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read(LOG_CHUNK_BYTES)
        except OSError:
            return b"", offset
        if not finished or len(data) == LOG_CHUNK_BYTES:
            end = data.rfind(b"\n")
            if end < 0:
                # A line longer than a chunk goes out in pieces; a partial one waits.
                return (data, offset + len(data)) if len(data) == LOG_CHUNK_BYTES else (b"", offset)
            data = data[: end + 1]
        return data, offset + len(data)

    last_sent = time.monotonic()
    while True:
        status_ = await anyio.to_thread.run_sync(job_status)
        if status_ is None:  # the job is gone
            return
        finished = status_ in FINISHED_STATUSES  # read after this: the log is complete
        while True:
            data, offset = await anyio.to_thread.run_sync(read, offset, finished)
            if not data:
                break
            text = data.decode(errors="replace")
            lines = text[:-1].split("\n") if text.endswith("\n") else text.split("\n")
            body = "".join(f"data: {line.rstrip(chr(13))}\n" for line in lines)
            yield f"id: {offset}\nevent: log\n{body}\n"
            last_sent = time.monotonic()
        if finished:
            yield f"event: end\ndata: {json.dumps({'status': status_})}\n\n"
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(poll_seconds)


def read_summary(session: Session, settings: Settings, job_id: str) -> dict[str, Any] | None:
    """The run's `summary.json` as a dict; None until the run has written a readable one."""
    artifact = queries.find_artifact(session, job_id, kind="summary")
    if artifact is None:
        return None
    path = resolve_inside(settings.artifact_root, artifact.path)
    try:
        summary = json.loads(path.read_text()) if path is not None else None
    except (OSError, ValueError) as exc:
        log.warning("job %s: unreadable summary: %s", job_id, exc)
        return None
    return summary if isinstance(summary, dict) else None


@router.get("/summary")
def get_summary(job: OwnedJob, session: SessionDep, settings: SettingsDep) -> dict[str, Any]:
    """The run's `summary.json` (written when training ends): epochs run, whether it stopped
    early, best epoch, monitor and score, the best checkpoint, the test metrics of the best
    checkpoint (`best_metrics`), the `quality` block of an embedding family, outputs. 404 until
    the run has written it."""
    summary = read_summary(session, settings, job.id)
    if summary is None:
        raise _not_found("summary")
    return summary


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
    format: Literal["npy", "csv", "parquet", "safetensors"] = "npy",
    name: Annotated[
        str | None, Query(description="an embeddings artifact's name (default: the newest)")
    ] = None,
) -> FileResponse | StreamingResponse:
    """The embeddings as `.npy` (float32 [rows, dim]); as CSV (`<id column>,dim_0,...`);
    as Parquet (`<id column>` string, `embedding` fixed-size list of float32); or as
    safetensors (`embeddings` F32 [rows, dim], the ids in its metadata). Safetensors is the
    file's own bytes behind a header, streamed as read. The formats `TRAINCTL_EXPORT_FORMATS`
    names (default: Parquet) are written by the worker before the job succeeds and sent from
    disk like npy; CSV (and any conversion not kept yet) is converted chunk by chunk while the
    first download is sent, and kept beside the run's files (`exports/`) for the next ones."""
    artifact = queries.find_artifact(session, job.id, name=name, kind="embeddings")
    path = _artifact_file(settings, artifact, "embeddings")
    assert artifact is not None
    if format == "npy":
        return _download(path, "embeddings.npy")
    filename = f"embeddings.{format}"
    media_type = EMBEDDING_MEDIA_TYPES[format]
    kept = export_path(path, format) if format in KEPT_FORMATS else None
    if kept is not None and kept.is_file():
        return LargeFileResponse(kept, media_type=media_type, filename=filename)
    ids_path, id_column = ids_of(session, settings.artifact_root, artifact)
    body = converted(path, ids_path, id_column, format)
    if kept is not None:
        body = cached_export(body, kept)
    return StreamingResponse(
        body,
        media_type=media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
