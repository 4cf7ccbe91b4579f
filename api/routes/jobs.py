"""Jobs: submit, list, inspect, cancel, and follow their metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import Response, StreamingResponse

from api.deps import (
    JOB_NOT_FOUND,
    CurrentOwner,
    DispatchDep,
    OwnedJob,
    SessionDep,
    SettingsDep,
)
from api.schemas import JobPublic, JobsPublic, MetricsPublic
from api.specs import read_spec
from core.spec import BaseJobSpec
from store import queries
from store.models import FINISHED_STATUSES, Job, JobStatus

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
    dispatch: DispatchDep,
) -> JobPublic:
    """Submit a job spec (JSON, or YAML with `Content-Type: application/yaml`)."""
    job = queries.create_job(
        session, owner.id, spec.model_dump(mode="json"), family=spec.family, name=spec.name
    )  # committed: API sessions autocommit, and a job is queued only once stored
    try:
        dispatch(job.id)
    except Exception as exc:
        log.exception("could not queue job %s", job.id)
        queries.fail_queued_job(session, job.id, f"could not queue the job: {exc}")
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=QUEUE_UNAVAILABLE) from None
    return JobPublic.model_validate(job)


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
def get_job(job: OwnedJob) -> JobPublic:
    return JobPublic.model_validate(job)


@router.post("/{job_id}/cancel")
def cancel_job(job: OwnedJob, session: SessionDep) -> JobPublic:
    """Cancel a queued job now; ask the worker to stop a running one."""
    cancelled = queries.request_cancel(session, job.id)
    session.refresh(job)
    if not cancelled:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"job already finished ({job.status})")
    return JobPublic.model_validate(job)


@router.get("/{job_id}/metrics", response_model=MetricsPublic)
def get_metrics(
    job_id: str,
    session: SessionDep,
    owner: CurrentOwner,
    after_epoch: Annotated[int, Query(ge=-1, le=MAX_INT)] = -1,
    attempt: Annotated[
        int | None, Query(ge=1, le=MAX_INT, description="default: the latest")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> Response:
    """Metric rows with `epoch > after_epoch`, for incremental polling."""
    page = queries.metrics_page(
        session, job_id, owner.id, attempt=attempt, after_epoch=after_epoch, limit=limit
    )
    if page is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=JOB_NOT_FOUND)
    # Every dashboard polls this: the stored JSON values are passed through as they are
    # rather than parsed into objects and serialised again (the body is a `MetricsPublic`).
    data = ",".join(f'{{"epoch":{epoch},"values":{values}}}' for epoch, values in page.rows)
    body = (
        f'{{"data":[{data}],"count":{len(page.rows)},"attempt":{page.attempt},'
        f'"status":{json.dumps(page.status)}}}'
    )
    return Response(body, media_type="application/json")


@router.get("/{job_id}/metrics/stream", response_class=StreamingResponse)
async def stream_metrics(
    job: OwnedJob,
    request: Request,
    settings: SettingsDep,
    after_epoch: Annotated[int, Query(ge=-1, le=MAX_INT)] = -1,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events: `event: metric` per epoch (`id` is the epoch) of the latest attempt,
    then `event: end` once the job is finished. Resumes after the `Last-Event-ID` header."""
    if last_event_id is not None:
        try:
            after_epoch = int(last_event_id)
        except ValueError:
            after_epoch = MAX_INT + 1
        if not -1 <= after_epoch <= MAX_INT:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail="Last-Event-ID must be the epoch of the last event received",
            )
    events = _metric_events(request, job, after_epoch, settings.stream_poll_seconds)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _metric_events(
    request: Request, job: Job, after_epoch: int, poll_seconds: float
) -> AsyncIterator[str]:
    factory = request.app.state.session_factory
    job_id, owner_id = job.id, job.owner_id

    def poll(after: int) -> queries.MetricsPage | None:
        with factory() as session:
            # One statement: if it sees the job finished, it sees every row written before.
            return queries.metrics_page(session, job_id, owner_id, after_epoch=after)

    last_sent = time.monotonic()
    while True:
        page = await anyio.to_thread.run_sync(poll, after_epoch)
        if page is None:  # the job is gone
            return
        for epoch, values in page.rows:
            yield f'id: {epoch}\nevent: metric\ndata: {{"epoch": {epoch}, "values": {values}}}\n\n'
            after_epoch = epoch
            last_sent = time.monotonic()
        if page.status in FINISHED_STATUSES:
            yield f"event: end\ndata: {json.dumps({'status': page.status})}\n\n"
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(poll_seconds)
