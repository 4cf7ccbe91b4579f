"""Jobs: submit, list, inspect, cancel, retry, delete, and follow their metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.orm import Session

from api.deps import (
    JOB_NOT_FOUND,
    CurrentOwner,
    DispatchDep,
    OwnedJob,
    SessionDep,
    SettingsDep,
)
from api.routes.files import read_summary
from api.schemas import JobPublic, JobsPublic, MetricsPublic, StepMetricsPublic
from api.specs import read_spec
from core.spec import BaseJobSpec
from store import queries
from store.keys import OwnerRef
from store.models import FINISHED_STATUSES, Job, JobStatus
from store.paths import owner_upload_dir, resolve_inside
from store.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs", tags=["jobs"])

QUEUE_UNAVAILABLE = "job queue unavailable; the job was not queued"
KEEPALIVE_SECONDS = 15.0
MAX_INT = 2**31 - 1  # epochs and attempts are 32-bit integers in the database


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/yaml": {"schema": {"type": "string"}},
            },
        }
    },
)
def create_job(
    owner: CurrentOwner,
    spec: Annotated[BaseJobSpec, Depends(read_spec)],
    session: SessionDep,
    settings: SettingsDep,
    dispatch: DispatchDep,
) -> JobPublic:
    """Submit a job spec (JSON, or YAML with `Content-Type: application/yaml`)."""
    spec_json = spec.model_dump(mode="json")
    _check_data_paths(session, settings, owner, spec_json)
    job = queries.create_job(
        session, owner.id, spec_json, family=spec.family, name=spec.name
    )  # committed: API sessions autocommit, and a job is queued only once stored
    try:
        dispatch(job.id)
    except Exception as exc:
        log.exception("could not queue job %s", job.id)
        queries.fail_queued_job(session, job.id, f"could not queue the job: {exc}")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=QUEUE_UNAVAILABLE) from None
    return JobPublic.model_validate(job)


def _check_data_paths(
    session: Session, settings: Settings, owner: OwnerRef, spec: dict[str, object]
) -> None:
    """422 for a `data` path whose first part names no upload of the owner's and nothing in the
    data roots this API can see (or an upload without that file), so the mistake shows at
    submit, not after the job queued. Where the API sees no data root (docker-compose mounts
    /data in the workers only), such a path is left to the worker."""
    data = spec.get("data")
    if not isinstance(data, dict):
        return
    uploads = {d.name for d in queries.list_datasets(session, owner.id)}
    session.commit()  # the connection goes back to the pool (see api.deps.get_session)
    roots = [r for r in _data_roots(settings) if r.is_dir()]
    errors = []
    for key, value in data.items():
        if not ((key == "path" or key.endswith("_path")) and isinstance(value, str) and value):
            continue
        relative = PurePosixPath(value.replace("\\", "/"))
        if relative.is_absolute() or ".." in relative.parts:
            continue  # the spec's own validation refuses these
        top = relative.parts[0]
        if top in uploads:
            path = resolve_inside(owner_upload_dir(settings, owner.name), relative)
            if path is None or not path.exists():
                held = _upload_files(settings, owner, top)
                errors.append(
                    {
                        "loc": f"data.{key}",
                        "msg": f"upload {top!r} has no {str(relative)!r}; it holds: "
                        f"{', '.join(f'{top}/{h}' for h in held) or 'nothing'}",
                    }
                )
            continue
        # Only the first part: the API's view of the data roots may lag the workers'; what is
        # under a folder that is there is left to the worker (`DatasetNotFound`).
        if not roots or any((root / top).exists() for root in roots):
            continue
        yours = ", ".join(sorted(uploads)) or "none"
        errors.append(
            {
                "loc": f"data.{key}",
                "msg": f"no upload named {top!r} (your uploads: {yours}) and no {top!r} in the "
                f"data roots; upload the file first (`trainctl datasets upload {top} "
                f"FILE`, or POST /datasets with name={top}) and name it {top}/<file name>",
            }
        )
    if errors:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=errors)


def _data_roots(settings: Settings) -> list[Path]:
    if settings.data_roots:
        return settings.data_roots
    from core.data.roots import data_roots  # torch-free; the default beside the repository

    return data_roots()


def _upload_files(settings: Settings, owner: OwnerRef, name: str) -> list[str]:
    folder = owner_upload_dir(settings, owner.name) / name
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_file())
    except OSError:
        return []


@router.get("")
def list_jobs(
    session: SessionDep,
    owner: CurrentOwner,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    family: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> JobsPublic:
    """The caller's jobs, newest first."""
    jobs, count = queries.list_jobs(
        session, owner.id, status=status_, family=family, offset=offset, limit=limit
    )
    return JobsPublic(data=[JobPublic.model_validate(j) for j in jobs], count=count)


@router.get("/{job_id}")
def get_job(job: OwnedJob, session: SessionDep, settings: SettingsDep) -> JobPublic:
    """The job; a queued one with its `queue_position`; a finished one of an embedding family
    with the `quality` block of its summary (the embeddings' quality metric beside the
    untrained baseline)."""
    public = JobPublic.model_validate(job)
    public.queue_position = queries.queue_position(session, job)
    if job.status in FINISHED_STATUSES:
        summary = read_summary(session, settings, job.id)
        quality = summary.get("quality") if summary else None
        public.quality = quality if isinstance(quality, dict) else None
    return public


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_job(job: OwnedJob, session: SessionDep, settings: SettingsDep) -> Response:
    """Delete a finished job: its rows and its run directory (checkpoints, outputs, logs)."""
    if not queries.delete_finished_job(session, job.id):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"job is {job.status}; only a finished job can be deleted (cancel it first)",
        )
    run_dir = resolve_inside(settings.artifact_root, job.run_dir)
    if run_dir is not None and run_dir != settings.artifact_root.resolve():
        shutil.rmtree(run_dir, ignore_errors=True)
    log.info("job %s deleted", job.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{job_id}/retry")
def retry_job(job: OwnedJob, session: SessionDep, dispatch: DispatchDep) -> JobPublic:
    """Queue a failed or cancelled job again as a new attempt; it resumes from the run's last
    checkpoint (if any), with the same spec, id and run directory."""
    if not queries.retry_job(session, job.id):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"job is {job.status}; only a failed or cancelled job can be retried",
        )
    try:
        dispatch(job.id)
    except Exception as exc:
        log.exception("could not queue job %s", job.id)
        queries.fail_queued_job(session, job.id, f"could not queue the job: {exc}")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=QUEUE_UNAVAILABLE) from None
    session.refresh(job)
    public = JobPublic.model_validate(job)
    public.queue_position = queries.queue_position(session, job)
    return public


@router.post("/{job_id}/cancel")
def cancel_job(job: OwnedJob, session: SessionDep) -> JobPublic:
    """Cancel a queued job now; ask the worker to stop a running one."""
    cancelled = queries.request_cancel(session, job.id)
    session.refresh(job)
    if not cancelled:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"job already finished ({job.status})")
    return JobPublic.model_validate(job)


Granularity = Literal["epoch", "step"]
GranularityQuery = Annotated[
    Granularity,
    Query(description="`epoch`: a row per epoch; `step`: the running training metrics every "
          "`training.log_every_n_steps` optimizer steps"),
]  # fmt: skip
AfterEpochQuery = Annotated[
    int | None, Query(ge=-1, le=MAX_INT, description="granularity=epoch: rows after this epoch")
]
AfterStepQuery = Annotated[
    int | None, Query(ge=-1, le=MAX_INT, description="granularity=step: rows after this step")
]


def _after(granularity: Granularity, after_epoch: int | None, after_step: int | None) -> int:
    """The polling index to start after: `after_epoch` or `after_step`, whichever the
    granularity takes (the other one is a 422)."""
    other = "step" if granularity == "epoch" else "epoch"
    after = {"epoch": after_epoch, "step": after_step}
    if after[other] is not None:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[{"loc": f"query.after_{other}", "msg": f"applies to granularity={other} only"}],
        )
    start = after[granularity]
    return -1 if start is None else start


def _metric_rows(
    session: Session,
    job_id: str,
    owner_id: int,
    granularity: Granularity,
    *,
    after: int,
    attempt: int | None = None,
    limit: int = 10_000,
) -> tuple[int, str, list[tuple[int, str]]] | None:
    """(attempt, job status, [(polling index, row as JSON text)]) of the owner's job, the
    index being the epoch or the step; None if no such job.

    Every dashboard polls this: the stored JSON values are passed through as they are rather
    than parsed into objects and serialised again. Values are strict JSON (NaN is stored as
    null, see `store.queries._json_safe`)."""
    if granularity == "step":
        steps = queries.metric_steps_page(
            session, job_id, owner_id, attempt=attempt, after_step=after, limit=limit
        )
        if steps is None:
            return None
        rows = [
            (step, f'{{"step":{step},"epoch":{epoch},"values":{values}}}')
            for step, epoch, values in steps.rows
        ]
        return steps.attempt, steps.status, rows
    page = queries.metrics_page(
        session, job_id, owner_id, attempt=attempt, after_epoch=after, limit=limit
    )
    if page is None:
        return None
    rows = [(epoch, f'{{"epoch":{epoch},"values":{values}}}') for epoch, values in page.rows]
    return page.attempt, page.status, rows


@router.get("/{job_id}/metrics", response_model=MetricsPublic | StepMetricsPublic)
def get_metrics(
    job_id: str,
    session: SessionDep,
    owner: CurrentOwner,
    granularity: GranularityQuery = "epoch",
    after_epoch: AfterEpochQuery = None,
    after_step: AfterStepQuery = None,
    attempt: Annotated[
        int | None, Query(ge=1, le=MAX_INT, description="default: the latest")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> Response:
    """Metric rows of one attempt after `after_epoch` (or, with `granularity=step`, after
    `after_step`), for incremental polling: a `MetricsPublic` (a `StepMetricsPublic`)."""
    after = _after(granularity, after_epoch, after_step)
    found = _metric_rows(
        session, job_id, owner.id, granularity, after=after, attempt=attempt, limit=limit
    )
    if found is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=JOB_NOT_FOUND)
    job_attempt, job_status, rows = found
    data = ",".join(row for _, row in rows)
    body = (
        f'{{"data":[{data}],"count":{len(rows)},"attempt":{job_attempt},'
        f'"status":{json.dumps(job_status)}}}'
    )
    return Response(body, media_type="application/json")


@router.get("/{job_id}/metrics/stream", response_class=StreamingResponse)
async def stream_metrics(
    job: OwnedJob,
    request: Request,
    settings: SettingsDep,
    granularity: GranularityQuery = "epoch",
    after_epoch: AfterEpochQuery = None,
    after_step: AfterStepQuery = None,
    state: Annotated[
        bool, Query(description="also send `event: state` (status, phase, queue position)")
    ] = False,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events of the latest attempt: `event: metric` per epoch (`id` is the epoch;
    with `granularity=step`, per step row, `id` the step), then `event: end` once the job is
    finished. Resumes after the `Last-Event-ID` header. With `state=true`, `event: state`
    (`{status, phase, progress, queue_position, attempt}`) follows the first rows and every
    change of one of them."""
    after = _after(granularity, after_epoch, after_step)
    if last_event_id is not None:
        try:
            after = int(last_event_id)
        except ValueError:
            after = MAX_INT + 1
        if not -1 <= after <= MAX_INT:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=f"Last-Event-ID must be the {granularity} of the last event received",
            )
    events = _metric_events(
        request, job, granularity, after, settings.stream_poll_seconds, with_state=state
    )
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _metric_events(
    request: Request,
    job: Job,
    granularity: Granularity,
    after: int,
    poll_seconds: float,
    with_state: bool = False,
) -> AsyncIterator[str]:
    factory = request.app.state.session_factory
    job_id, owner_id = job.id, job.owner_id

    def poll(after: int) -> tuple[tuple[int, str, list[tuple[int, str]]] | None, str | None]:
        with factory() as session:
            # The state first: it is never newer than the rows sent before it.
            state = _state(session, job_id) if with_state else None
            # One statement: if it sees the job finished, it sees every row written before.
            found = _metric_rows(session, job_id, owner_id, granularity, after=after)
            return found, state

    last_sent = time.monotonic()
    last_state = None
    while True:
        found, state = await anyio.to_thread.run_sync(poll, after)
        if found is None:  # the job is gone
            return
        _, job_status, rows = found
        for index, row in rows:
            yield f"id: {index}\nevent: metric\ndata: {row}\n\n"
            after = index
            last_sent = time.monotonic()
        if state is not None and state != last_state:  # after the rows it read with it
            yield f"event: state\ndata: {state}\n\n"
            last_state = state
        if job_status in FINISHED_STATUSES:
            yield f"event: end\ndata: {json.dumps({'status': job_status})}\n\n"
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(poll_seconds)


def _state(session: Session, job_id: str) -> str | None:
    """The job's state as the stream's `state` event sends it (JSON text)."""
    job = queries.get_job(session, job_id)
    if job is None:
        return None
    return json.dumps(
        {
            "status": job.status,
            "phase": job.phase,
            "progress": job.progress,
            "attempt": job.attempt,
            "queue_position": queries.queue_position(session, job),
        }
    )
