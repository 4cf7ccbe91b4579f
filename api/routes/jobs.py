"""Jobs: submit, list, inspect, cancel, retry, delete, and follow their metrics."""

from __future__ import annotations

import asyncio
import hashlib
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
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.datastructures import State

from api.coalesce import ReadCoalescer
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
from store.redact import known_places, redact
from store.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/jobs", tags=["jobs"])

QUEUE_UNAVAILABLE = "job queue unavailable; the job was not queued"
KEEPALIVE_SECONDS = 15.0
MAX_INT = 2**31 - 1  # epochs and attempts are 32-bit integers in the database
QUEUE_FAILED = "could not queue the job: the job queue was unavailable"  # stored in `error`
IDEMPOTENCY_REUSED = (
    "Idempotency-Key {key!r} was used for job {job} with another spec; send a new key for a "
    "new job, or the same spec to get that job"
)


class QuotaPublic(BaseModel):
    """The owner's queued and running jobs and their limits."""

    queued: int
    max_queued: int
    running: int
    max_running: int


class DryRunPublic(BaseModel):
    """`POST /jobs?dry_run=true`: the spec as it would run (every default filled in), checked
    as a submit checks it; nothing is stored or queued."""

    dry_run: bool = True
    family: str
    name: str
    spec: dict[str, object]
    quota: QuotaPublic


def _quota(session: Session, settings: Settings, owner_id: int) -> QuotaPublic:
    counts = queries.owner_job_counts(session, owner_id)
    return QuotaPublic(
        queued=counts[JobStatus.QUEUED],
        max_queued=settings.max_queued_per_owner,
        running=counts[JobStatus.RUNNING],
        max_running=settings.max_running_per_owner,
    )


def _check_queued_limit(session: Session, settings: Settings, owner_id: int) -> None:
    """429 with `Retry-After` if the owner's queued jobs are at `TRAINCTL_MAX_QUEUED_PER_OWNER`.
    (Two submits racing may both pass at the limit: a soft cap, off by at most the API's
    threads.)"""
    quota = _quota(session, settings, owner_id)
    if quota.queued >= quota.max_queued:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"you have {quota.queued} queued jobs; the limit is {quota.max_queued} "
            "queued jobs per owner (TRAINCTL_MAX_QUEUED_PER_OWNER); submit again once some "
            "have started, or cancel some",
            headers={"Retry-After": str(settings.quota_retry_after_seconds)},
        )


def public_job(job: Job, settings: Settings, owner: OwnerRef) -> JobPublic:
    """`JobPublic` of `job` with its `error` as a client may see it: file names relative to the
    owner's uploads, the data root or the run directory; no other server path, address or
    traceback (`store.redact`)."""
    public = JobPublic.model_validate(job)
    if public.error:
        places = known_places(
            settings,
            upload_dir=owner_upload_dir(settings, owner.name),
            run_dir=settings.artifact_root / job.run_dir,
            data_roots=_data_roots(settings),
        )
        public.error = redact(public.error, places)
    return public


def _spec_digest(spec_json: dict[str, object]) -> str:
    return hashlib.sha256(
        json.dumps(spec_json, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def _replay(job: Job, digest: str, key: str) -> None:
    if job.request_digest != digest:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": "header.Idempotency-Key",
                    "msg": IDEMPOTENCY_REUSED.format(key=key, job=job.id),
                }
            ],
        )


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=JobPublic | DryRunPublic,
    responses={
        200: {
            "model": JobPublic | DryRunPublic,
            "description": "`dry_run=true`: the checked spec, nothing stored; or the job an "
            "earlier submit with the same `Idempotency-Key` and spec made",
        },
        429: {"description": "the owner's queued jobs are at their limit (see `Retry-After`)"},
    },
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
    response: Response,
    dry_run: Annotated[
        bool,
        Query(
            description="check the spec as a submit does and answer it with every default "
            "filled in (200), storing and queueing nothing"
        ),
    ] = False,  # fmt: skip
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=255,
            description="a client's id for this submit: sent again with the same spec, the "
            "answer is the job the first one made (200), never a second job; with another "
            "spec, a 422",
        ),
    ] = None,
) -> JobPublic | DryRunPublic:
    """Submit a job spec (JSON, or YAML with `Content-Type: application/yaml`)."""
    spec_json = spec.model_dump(mode="json")
    digest = _spec_digest(spec_json)
    if idempotency_key is not None and not dry_run:
        earlier = queries.get_job_by_idempotency_key(session, owner.id, idempotency_key)
        if earlier is not None:
            _replay(earlier, digest, idempotency_key)
            response.status_code = status.HTTP_200_OK
            return public_job(earlier, settings, owner)
    _check_data_paths(session, settings, owner, spec_json)
    if dry_run:
        response.status_code = status.HTTP_200_OK
        quota = _quota(session, settings, owner.id)
        return DryRunPublic(family=spec.family, name=spec.name, spec=spec_json, quota=quota)
    _check_queued_limit(session, settings, owner.id)
    try:
        job = queries.create_job(
            session,
            owner.id,
            spec_json,
            family=spec.family,
            name=spec.name,
            idempotency_key=idempotency_key,
            request_digest=digest,
        )  # committed: API sessions autocommit, and a job is queued only once stored
    except IntegrityError:
        # The same key in a submit that raced this one: its job is the answer.
        session.rollback()
        earlier = (
            queries.get_job_by_idempotency_key(session, owner.id, idempotency_key)
            if idempotency_key is not None
            else None
        )
        if earlier is None:
            raise
        _replay(earlier, digest, idempotency_key)  # type: ignore[arg-type]
        response.status_code = status.HTTP_200_OK
        return public_job(earlier, settings, owner)
    try:
        dispatch(job.id)
    except Exception:
        log.exception("could not queue job %s", job.id)
        queries.fail_queued_job(session, job.id, QUEUE_FAILED)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=QUEUE_UNAVAILABLE) from None
    return public_job(job, settings, owner)


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
            if path is None or not _exists(path):
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
        if not roots or any(_exists(root / top) for root in roots):
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


def _exists(path: Path) -> bool:
    """Whether `path` exists; a name the file system refuses (too long, ...) is not there."""
    try:
        return path.exists()
    except OSError:
        return False


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
    settings: SettingsDep,
    status_: Annotated[JobStatus | None, Query(alias="status")] = None,
    family: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> JobsPublic:
    """The caller's jobs, newest first."""
    jobs, count = queries.list_jobs(
        session, owner.id, status=status_, family=family, offset=offset, limit=limit
    )
    return JobsPublic(data=[public_job(j, settings, owner) for j in jobs], count=count)


@router.get("/{job_id}")
def get_job(
    job: OwnedJob, session: SessionDep, settings: SettingsDep, owner: CurrentOwner
) -> JobPublic:
    """The job; a queued one with its `queue_position`; a finished one of an embedding family
    with the `quality` block of its summary (the embeddings' quality metric beside the
    untrained baseline)."""
    public = public_job(job, settings, owner)
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
def retry_job(
    job: OwnedJob,
    session: SessionDep,
    dispatch: DispatchDep,
    settings: SettingsDep,
    owner: CurrentOwner,
) -> JobPublic:
    """Queue a failed or cancelled job again as a new attempt; it resumes from the run's last
    checkpoint (if any), with the same spec, id and run directory. 429 (with `Retry-After`)
    if the owner's queued jobs are at their limit."""
    if job.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        _check_queued_limit(session, settings, owner.id)
    if not queries.retry_job(session, job.id):
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"job is {job.status}; only a failed or cancelled job can be retried",
        )
    try:
        dispatch(job.id)
    except Exception:
        log.exception("could not queue job %s", job.id)
        queries.fail_queued_job(session, job.id, QUEUE_FAILED)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail=QUEUE_UNAVAILABLE) from None
    session.refresh(job)
    public = public_job(job, settings, owner)
    public.queue_position = queries.queue_position(session, job)
    return public


@router.post("/{job_id}/cancel")
def cancel_job(
    job: OwnedJob, session: SessionDep, settings: SettingsDep, owner: CurrentOwner
) -> JobPublic:
    """Cancel a queued job now; ask the worker to stop a running one."""
    cancelled = queries.request_cancel(session, job.id)
    session.refresh(job)
    if not cancelled:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=f"job already finished ({job.status})")
    return public_job(job, settings, owner)


Granularity = Literal["epoch", "step"]
MAX_PAGE_ROWS = 10_000  # a metrics page's rows at most (and by default)
# The bounds of the metrics route's integer query parameters, declared once: the route's
# `Query` annotations and its fast path (`api.fastpoll`) both read them.
METRICS_QUERY_BOUNDS = {
    "after_epoch": (-1, MAX_INT),
    "after_step": (-1, MAX_INT),
    "attempt": (1, MAX_INT),
    "limit": (1, MAX_PAGE_ROWS),
}
GranularityQuery = Annotated[
    Granularity,
    Query(description="`epoch`: a row per epoch; `step`: the running training metrics every "
          "`training.log_every_n_steps` optimizer steps"),
]  # fmt: skip


def _bounds(name: str) -> dict[str, int]:
    """`ge` and `le` of a metrics query parameter, from `METRICS_QUERY_BOUNDS`."""
    low, high = METRICS_QUERY_BOUNDS[name]
    return {"ge": low, "le": high}


AfterEpochQuery = Annotated[
    int | None,
    Query(**_bounds("after_epoch"), description="granularity=epoch: rows after this epoch"),
]
AfterStepQuery = Annotated[
    int | None, Query(**_bounds("after_step"), description="granularity=step: rows after this step")
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
    limit: int = MAX_PAGE_ROWS,
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
async def get_metrics(
    job_id: str,
    request: Request,
    owner: CurrentOwner,
    granularity: GranularityQuery = "epoch",
    after_epoch: AfterEpochQuery = None,
    after_step: AfterStepQuery = None,
    attempt: Annotated[
        int | None,
        Query(
            **_bounds("attempt"),
            description="one attempt's rows; default: the job's effective history (each "
            "epoch from the attempt whose checkpoints the job went on from)",
        ),
    ] = None,
    limit: Annotated[int, Query(**_bounds("limit"))] = MAX_PAGE_ROWS,
    if_none_match: Annotated[
        str | None,
        Header(description="the `ETag` of the last answer: 304 (no body) if nothing changed"),
    ] = None,
) -> Response:
    """Metric rows of one attempt after `after_epoch` (or, with `granularity=step`, after
    `after_step`), for incremental polling: a `MetricsPublic` (a `StepMetricsPublic`).

    The answer carries an `ETag`; sent back as `If-None-Match`, it makes the answer a 304
    without a body while the job's attempt and status and the rows the page would hold are
    unchanged (read with one small query, without the rows).

    Identical requests that arrive together (many dashboards on one job) share their queries
    (`api.coalesce`); none gets an answer read before it arrived."""
    after = _after(granularity, after_epoch, after_step)
    answer = await metrics_answer(
        request.app.state, job_id, owner.id, granularity, after, attempt, limit, if_none_match
    )
    if answer is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=JOB_NOT_FOUND)
    return answer


async def metrics_answer(
    app_state: State,
    job_id: str,
    owner_id: int,
    granularity: Granularity,
    after: int,
    attempt: int | None,
    limit: int,
    if_none_match: str | None,
) -> Response | None:
    """The answer of `GET /jobs/{job_id}/metrics` for validated parameters (`after`: the
    polling index, see `_after`): the page with its `ETag`, or a 304; None if the owner has no
    such job. Shared by the route and its fast path (`api.fastpoll`)."""
    factory = app_state.session_factory
    reads = _metric_reads(app_state)
    page_of = (job_id, owner_id, granularity, after, attempt)

    def read(with_rows: bool) -> tuple[queries.MetricsState | None, str | None]:
        """The page's state and, `with_rows`, its body: one session, one worker-thread hop.
        The state is read first: rows are only added, so the body holds at least what the
        tag describes (a row landing between the two reads only costs the next poll a 200)."""
        with factory() as session:
            state = queries.metrics_state(
                session, job_id, owner_id, granularity, after=after, attempt=attempt
            )
            if state is None or not with_rows:
                return state, None
            found = _metric_rows(
                session, job_id, owner_id, granularity, after=after, attempt=attempt, limit=limit
            )
        if found is None:
            return None, None
        job_attempt, job_status, rows = found
        data = ",".join(row for _, row in rows)
        return state, (
            f'{{"data":[{data}],"count":{len(rows)},"attempt":{job_attempt},'
            f'"status":{json.dumps(job_status)}}}'
        )

    if if_none_match is not None:  # a small query without the rows first: most polls end here
        state, _ = await reads.read(("state", *page_of), lambda: read(False))
        if state is None:
            return None
        etag = metrics_etag(job_id, state)
        if etag_matches(if_none_match, etag):
            headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
            return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    state, body = await reads.read(("page", *page_of, limit), lambda: read(True))
    if state is None or body is None:
        return None
    headers = {"ETag": metrics_etag(job_id, state), "Cache-Control": "private, no-cache"}
    return Response(body, media_type="application/json", headers=headers)


def _metric_reads(app_state: State) -> ReadCoalescer:
    """The app's coalescer of metrics reads (made on first use, in the event loop)."""
    reads = getattr(app_state, "metric_reads", None)
    if reads is None:
        reads = app_state.metric_reads = ReadCoalescer()
    return reads


def metrics_etag(job_id: str, state: queries.MetricsState) -> str:
    """A weak entity tag of a metrics page: the job, its latest attempt and status, and the
    count, last index and newest write of the rows the page covers."""
    written = state.written_at.isoformat() if state.written_at is not None else ""
    text = f"{job_id}|{state.attempt}|{state.status}|{state.rows}|{state.last}|{written}"
    return f'W/"{hashlib.blake2b(text.encode(), digest_size=12).hexdigest()}"'


def etag_matches(if_none_match: str, etag: str) -> bool:
    """`If-None-Match` (`*`, or tags separated by commas) against `etag`, by the weak comparison
    RFC 9110 (13.1.2) prescribes for it."""
    opaque = etag.removeprefix("W/")
    for tag in if_none_match.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == opaque:
            return True
    return False


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
