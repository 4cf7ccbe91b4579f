"""Jobs: submit, list, inspect, cancel, and follow their metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
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
from api.schemas import JobPublic, JobsPublic, MetricsPublic, StepMetricsPublic
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
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events of the latest attempt: `event: metric` per epoch (`id` is the epoch;
    with `granularity=step`, per step row, `id` the step), then `event: end` once the job is
    finished. Resumes after the `Last-Event-ID` header."""
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
    events = _metric_events(request, job, granularity, after, settings.stream_poll_seconds)
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _metric_events(
    request: Request, job: Job, granularity: Granularity, after: int, poll_seconds: float
) -> AsyncIterator[str]:
    factory = request.app.state.session_factory
    job_id, owner_id = job.id, job.owner_id

    def poll(after: int) -> tuple[int, str, list[tuple[int, str]]] | None:
        with factory() as session:
            # One statement: if it sees the job finished, it sees every row written before.
            return _metric_rows(session, job_id, owner_id, granularity, after=after)

    last_sent = time.monotonic()
    while True:
        found = await anyio.to_thread.run_sync(poll, after)
        if found is None:  # the job is gone
            return
        _, job_status, rows = found
        for index, row in rows:
            yield f"id: {index}\nevent: metric\ndata: {row}\n\n"
            after = index
            last_sent = time.monotonic()
        if job_status in FINISHED_STATUSES:
            yield f"event: end\ndata: {json.dumps({'status': job_status})}\n\n"
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(poll_seconds)
