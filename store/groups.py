"""Queries of job groups (sweeps submitted at once; `store.models.JobGroup`).

A group's members are ordinary jobs (`store.queries.create_job`) that carry the group's id,
their index in the sweep's expansion (`Job.group_index`) and the values the sweep set for them
(`Job.sweep_values`). As in `store.queries`, functions take a session and leave committing to
the caller; `create_group` expects a session inside one transaction, so a group is stored with
all of its members or not at all.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, func, insert, select
from sqlalchemy.orm import Session

from store import queries
from store.models import FINISHED_STATUSES, Job, JobGroup, JobStatus, Metric, new_id, utcnow

log = logging.getLogger(__name__)

Mode = Literal["max", "min"]
Reduce = Literal["best", "last"]


@dataclass(frozen=True)
class NewMember:
    """A validated member to store: its index, sweep values and spec (`model_dump("json")`)."""

    index: int
    values: dict[str, Any]
    spec: dict[str, Any]
    name: str


def create_group(
    session: Session,
    owner_id: int,
    *,
    name: str,
    family: str,
    spec: Mapping[str, Any],
    sweep: Mapping[str, Any],
    metric: str | None,
    members: Sequence[NewMember],
) -> tuple[JobGroup, list[str]]:
    """Add a group and its queued member jobs; the group and the members' ids in member order.
    The caller commits once.

    The members are inserted in one statement (one row per member, as `store.queries.create_job`
    makes a job's row, plus the group's columns): a job at a time would be a round trip per
    member, seconds for a few hundred. `tests/service/test_groups.py` checks that a member's
    row and `create_job`'s agree on every other column."""
    group = JobGroup(
        id=new_id(),
        owner_id=owner_id,
        name=name,
        family=family,
        spec=dict(spec),
        sweep=dict(sweep),
        metric=metric,
        size=len(members),
    )
    session.add(group)
    session.flush()
    now = utcnow()
    rows = []
    for member in members:
        job_id = new_id()
        rows.append(
            {
                "id": job_id,
                "owner_id": owner_id,
                "family": family,
                "name": member.name,
                "spec": dict(member.spec),
                "status": JobStatus.QUEUED,
                "run_dir": job_id,
                "created_at": now,
                "updated_at": now,
                "dispatched_at": now,
                "group_id": group.id,
                "group_index": member.index,
                "sweep_values": dict(member.values),
            }
        )
    if rows:
        session.execute(insert(Job), rows)  # ORM bulk INSERT: one statement, column defaults
    return group, [row["id"] for row in rows]


def get_owned_group(session: Session, group_id: str, owner_id: int) -> JobGroup | None:
    """The group if `owner_id` owns it, else None (another owner's group is as missing)."""
    return session.scalar(
        select(JobGroup).where(JobGroup.id == group_id, JobGroup.owner_id == owner_id)
    )


def list_groups(
    session: Session, owner_id: int, *, offset: int = 0, limit: int = 50
) -> tuple[list[JobGroup], int]:
    """An owner's groups, newest first, and how many there are in all."""
    where = JobGroup.owner_id == owner_id
    count = session.scalar(select(func.count()).select_from(JobGroup).where(where)) or 0
    rows = session.scalars(
        select(JobGroup)
        .where(where)
        .order_by(JobGroup.created_at.desc(), JobGroup.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), count


def status_counts(session: Session, group_ids: Iterable[str]) -> dict[str, dict[str, int]]:
    """Per group, its members' count by status (every status present, zeros included)."""
    ids = list(group_ids)
    out = {gid: {str(s): 0 for s in JobStatus} for gid in ids}
    if not ids:
        return out
    rows = session.execute(
        select(Job.group_id, Job.status, func.count())
        .where(Job.group_id.in_(ids))
        .group_by(Job.group_id, Job.status)
    ).all()
    for group_id, status, n in rows:
        out[group_id][status] = n
    return out


def members(session: Session, group_id: str) -> list[Job]:
    """The group's member jobs in member order."""
    return list(
        session.scalars(select(Job).where(Job.group_id == group_id).order_by(Job.group_index))
    )


def member_metric(
    session: Session, group_id: str, metric: str, *, mode: Mode = "max", reduce: Reduce = "best"
) -> dict[str, float]:
    """Each member's value of `metric` over the epoch rows of its latest attempt: the best
    (`mode` max or min) or the last epoch's that has one; members without a value are absent.
    One query, aggregated in the database."""
    value = Metric.values[metric].as_float()
    latest = and_(Metric.job_id == Job.id, Metric.attempt == Job.attempt)
    base = (
        select(Job.id)
        .join(Metric, latest)
        .where(Job.group_id == group_id, value.is_not(None))
        .group_by(Job.id)
    )
    if reduce == "best":
        agg = func.max(value) if mode == "max" else func.min(value)
        rows = session.execute(base.add_columns(agg)).all()
    else:
        last = (
            base.add_columns(Job.attempt.label("attempt"), func.max(Metric.epoch).label("epoch"))
            .group_by(Job.attempt)
            .subquery()
        )
        rows = session.execute(
            select(last.c.id, value).join(
                last,
                and_(
                    Metric.job_id == last.c.id,
                    Metric.attempt == last.c.attempt,
                    Metric.epoch == last.c.epoch,
                ),
            )
        ).all()
    return {job_id: float(v) for job_id, v in rows if v is not None and math.isfinite(float(v))}


def cancel_members(session: Session, group_id: str) -> list[str]:
    """Cancel every member not finished (`store.queries.request_cancel`: a queued one now, a
    running one through its worker); the ids it cancelled or asked to stop."""
    finished = [str(s) for s in FINISHED_STATUSES]
    ids = session.scalars(
        select(Job.id).where(Job.group_id == group_id, Job.status.not_in(finished))
    ).all()
    return [job_id for job_id in ids if queries.request_cancel(session, job_id)]


@dataclass(frozen=True)
class Aggregate:
    """Mean and sample standard deviation (n - 1; 0 for one value) of members' values."""

    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


def aggregate(values: Iterable[float]) -> Aggregate:
    """Mean, sample std (Bessel's n - 1, as `numpy.std(ddof=1)`), min and max of `values`."""
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return Aggregate(0, None, None, None, None)
    mean = math.fsum(xs) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return Aggregate(n, mean, std, min(xs), max(xs))
