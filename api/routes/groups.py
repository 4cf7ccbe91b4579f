"""Job groups: a sweep over a base spec submitted at once (k-fold, seeds, a grid), its members'
states and a metric's mean and spread across them, and cancelling it (docs/sweeps.md).

Members are ordinary jobs: `/jobs/{id}` and its downloads, metrics, cancel and retry work on
each one. A group is validated whole before anything is stored, stored with all of its members
in one transaction, and its members are queued after the commit, as `POST /jobs` queues a job.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from sqlalchemy.orm import Session

from api.deps import CurrentOwner, DispatchDep, SessionDep, SettingsDep
from api.routes.files import read_summary
from api.routes.jobs import QUEUE_FAILED, QUEUE_UNAVAILABLE, _check_data_paths, _quota, public_job
from api.schemas import (
    GroupCreate,
    GroupDetailPublic,
    GroupMemberPublic,
    GroupPublic,
    GroupsPublic,
    GroupSummaryPublic,
)
from api.sweeps import PreparedGroup, invalid_members, read_group
from store import groups as store_groups
from store import queries
from store.keys import OwnerRef
from store.models import FINISHED_STATUSES, Job, JobGroup
from store.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/groups", tags=["groups"])

GROUP_NOT_FOUND = "group not found"
# Metrics where lower is better, when neither the request nor the spec says (`?mode=`).
_LOWER_IS_BETTER = ("loss", "mae", "mse", "rmse", "error", "perplexity")


def get_owned_group(group_id: str, session: SessionDep, owner: CurrentOwner) -> JobGroup:
    """The caller's group `group_id`; another owner's group is as missing as one never made."""
    group = store_groups.get_owned_group(session, group_id, owner.id)
    session.commit()  # the connection goes back to the pool (see api.deps.get_session)
    if group is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=GROUP_NOT_FOUND)
    return group


OwnedGroup = Annotated[JobGroup, Depends(get_owned_group)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    responses={
        429: {"description": "the members would take the owner's queued jobs over the limit"},
        503: {"description": "the job queue is unavailable; members not queued are failed"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": GroupCreate.model_json_schema()},
                "application/yaml": {"schema": {"type": "string"}},
            },
        }
    },
)
def create_group(
    request: Request,
    owner: CurrentOwner,
    prepared: Annotated[PreparedGroup, Depends(read_group)],
    session: SessionDep,
    settings: SettingsDep,
    dispatch: DispatchDep,
) -> GroupDetailPublic:
    """Submit a sweep as a job group: `{name?, spec, sweep: {grid?, zip?}, metric?}`. Every
    member is validated first; any invalid member is a 422 listing each one by index (with its
    values and field errors) and nothing is stored. Then the group and its members are stored in
    one transaction and each member is queued."""
    _check_members_data(session, settings, owner, prepared)
    _check_queued_limit(session, settings, owner.id, len(prepared.members))
    with _transaction(request) as tx:
        group, job_ids = store_groups.create_group(
            tx,
            owner.id,
            name=prepared.name,
            family=prepared.family,
            spec=prepared.spec,
            sweep=prepared.sweep.as_dict(),
            metric=prepared.metric,
            members=prepared.members,
        )
    log.info("group %s stored with %d members", group.id, len(job_ids))
    for queued, job_id in enumerate(job_ids):
        try:
            dispatch(job_id)
        except Exception:
            log.exception("could not queue job %s of group %s", job_id, group.id)
            for rest in job_ids[queued:]:
                queries.fail_queued_job(session, rest, QUEUE_FAILED)
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"{QUEUE_UNAVAILABLE}: group {group.id} has {queued} of "
                f"{len(job_ids)} members queued; the rest failed (retry them with "
                "POST /jobs/{id}/retry)",
            ) from None
    return _detail(session, settings, owner, group, prepared.metric, None, None)


def _check_queued_limit(session: Session, settings: Settings, owner_id: int, size: int) -> None:
    """429 with `Retry-After` if the members would take the owner's queued jobs over
    `TRAINCTL_MAX_QUEUED_PER_OWNER` (the limit of `POST /jobs`, counting every member)."""
    quota = _quota(session, settings, owner_id)
    session.commit()  # the connection goes back to the pool (see api.deps.get_session)
    if quota.queued + size > quota.max_queued:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            detail=f"the group has {size} members and you have {quota.queued} queued jobs; the "
            f"limit is {quota.max_queued} queued jobs per owner (TRAINCTL_MAX_QUEUED_PER_OWNER); "
            "submit it once some have started, cancel some, or sweep fewer members",
            headers={"Retry-After": str(settings.quota_retry_after_seconds)},
        )


@contextmanager
def _transaction(request: Request) -> Iterator[Session]:
    """A session in one transaction (API sessions autocommit each statement): a group is
    stored with all of its members, or not at all."""
    engine = request.app.state.engine
    with engine.connect() as conn:
        # Back to autocommit when the connection returns to the pool.
        conn.execution_options(isolation_level=engine.dialect.default_isolation_level)
        with Session(bind=conn, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise


def _check_members_data(
    session: Session, settings: Settings, owner: OwnerRef, prepared: PreparedGroup
) -> None:
    """The `data` paths check of `POST /jobs`, once per distinct `data` section; a member
    whose data is missing is an invalid member (422, nothing stored)."""
    errors_by_data: dict[str, list[dict[str, Any]]] = {}
    failures = []
    for member in prepared.members:
        key = json.dumps(member.spec.get("data"), sort_keys=True)
        if key not in errors_by_data:
            try:
                _check_data_paths(session, settings, owner, member.spec)
                errors_by_data[key] = []
            except HTTPException as exc:
                detail = exc.detail if isinstance(exc.detail, list) else [{"msg": exc.detail}]
                errors_by_data[key] = detail
        if errors_by_data[key]:
            failures.append(
                {"index": member.index, "values": member.values, "errors": errors_by_data[key]}
            )
    if failures:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=invalid_members(failures, len(prepared.members)),
        )


@router.get("")
def list_groups(
    session: SessionDep,
    owner: CurrentOwner,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
) -> GroupsPublic:
    """The caller's groups, newest first, with their members' counts by status."""
    rows, count = store_groups.list_groups(session, owner.id, offset=offset, limit=limit)
    counts = store_groups.status_counts(session, [g.id for g in rows])
    data = [GroupPublic.model_validate(g).model_copy(update={"counts": counts[g.id]}) for g in rows]
    return GroupsPublic(data=data, count=count)


Mode = Literal["max", "min"]
Reduce = Literal["best", "last", "summary"]


@router.get("/{group_id}")
def get_group(
    group: OwnedGroup,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    metric: Annotated[
        str | None,
        Query(min_length=1, max_length=128, description="default: the group's `metric`"),
    ] = None,
    mode: Annotated[
        Mode | None,
        Query(
            description="default: the spec's `metric_for_best.mode` for that metric, else "
            "`min` for losses and errors, `max` for the rest"
        ),
    ] = None,
    reduce: Annotated[
        Reduce | None,
        Query(
            description="a member's value: `best` over the epochs of its latest attempt, "
            "`last` epoch's, or `summary` (its summary.json: the test metrics of the best "
            "checkpoint); default: `summary` for `test_*` metrics, else `best`"
        ),
    ] = None,
) -> GroupDetailPublic:
    """The group: its members (index, sweep values, state, value of the metric), counts by
    status, and the metric's mean and sample standard deviation across the members that have
    it."""  # fmt: skip
    return _detail(session, settings, owner, group, metric or group.metric, mode, reduce)


@router.post("/{group_id}/cancel")
def cancel_group(
    group: OwnedGroup, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> GroupDetailPublic:
    """Cancel every member not finished (queued ones now; running ones are asked to stop, as
    `POST /jobs/{id}/cancel` does). 409 if every member had already finished."""
    cancelled = store_groups.cancel_members(session, group.id)
    if not cancelled:
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail="every member of the group already finished"
        )
    log.info("group %s: cancel of %d members", group.id, len(cancelled))
    return _detail(session, settings, owner, group, group.metric, None, None)


def _detail(
    session: Session,
    settings: Settings,
    owner: OwnerRef,
    group: JobGroup,
    metric: str | None,
    mode: Mode | None,
    reduce: Reduce | None,
) -> GroupDetailPublic:
    jobs = store_groups.members(session, group.id)
    counts = store_groups.status_counts(session, [group.id])[group.id]
    values: dict[str, float] = {}
    summary = None
    if metric is not None:
        mode = mode or _default_mode(jobs[0].spec if jobs else group.spec, metric)
        reduce = reduce or ("summary" if metric.startswith("test_") else "best")
        if reduce == "summary":
            values = _summary_values(session, settings, jobs, metric)
        else:
            values = store_groups.member_metric(session, group.id, metric, mode=mode, reduce=reduce)
        stats = store_groups.aggregate(values.values())
        best_index, best = None, None
        for job in jobs:  # in member order: a tie goes to the first member
            value = values.get(job.id)
            if value is None:
                continue
            if best is None or (value > best if mode == "max" else value < best):
                best_index, best = job.group_index, value
        summary = GroupSummaryPublic(
            metric=metric,
            mode=mode,
            reduce=reduce,
            n=stats.n,
            mean=stats.mean,
            std=stats.std,
            min=stats.min,
            max=stats.max,
            best_index=best_index,
        )
    session.commit()  # the connection goes back to the pool (see api.deps.get_session)
    order = group.sweep.get("keys") or []
    members = [
        GroupMemberPublic(
            id=job.id,
            index=job.group_index if job.group_index is not None else -1,
            values=_ordered(job.sweep_values or {}, order),
            status=job.status,
            phase=job.phase,
            progress=job.progress,
            attempt=job.attempt,
            # As `GET /jobs/{id}` shows it: no server paths (`public_job`).
            error=public_job(job, settings, owner).error if job.error else None,
            value=values.get(job.id),
        )
        for job in jobs
    ]
    return GroupDetailPublic(
        id=group.id,
        name=group.name,
        family=group.family,
        size=group.size,
        metric=group.metric,
        created_at=group.created_at,
        counts=counts,
        spec=group.spec,
        sweep={
            "grid": _ordered(group.sweep.get("grid") or {}, order),
            "zip": [_ordered(block, order) for block in group.sweep.get("zip") or []],
            "keys": order,
        },
        members=members,
        summary=summary,
    )


def _ordered(values: dict[str, Any], order: list[str]) -> dict[str, Any]:
    """`values` with its keys in the sweep's order (JSONB keeps objects' keys in its own)."""
    return {
        **{k: values[k] for k in order if k in values},
        **{k: v for k, v in values.items() if k not in order},
    }


def _default_mode(spec: dict[str, Any], metric: str) -> Mode:
    """The (validated) spec's `metric_for_best.mode` if it names this metric (or its val_/test_
    twin), else min for losses and errors, max for the rest."""
    best = spec.get("metric_for_best") if isinstance(spec, dict) else None
    if isinstance(best, dict) and best.get("mode") in ("max", "min"):
        name = str(best.get("name", ""))
        if _bare(name) == _bare(metric):
            return best["mode"]
    return "min" if any(word in metric for word in _LOWER_IS_BETTER) else "max"


def _bare(metric: str) -> str:
    for prefix in ("val_", "test_", "train_"):
        if metric.startswith(prefix):
            return metric.removeprefix(prefix)
    return metric


def _summary_values(
    session: Session, settings: Settings, jobs: list[Job], metric: str
) -> dict[str, float]:
    """Each finished member's `metric` from its summary.json (`best_metrics`, the test
    metrics of the best checkpoint, else `final_metrics`)."""
    out = {}
    for job in jobs:
        if job.status not in FINISHED_STATUSES:
            continue
        summary = read_summary(session, settings, job.id) or {}
        for section in ("best_metrics", "final_metrics"):
            block = summary.get(section)
            value = block.get(metric) if isinstance(block, dict) else None
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[job.id] = float(value)
                break
    return out
