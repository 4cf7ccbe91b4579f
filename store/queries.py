"""Queries shared by the API and the workers.

Functions take a session and leave committing to the caller (`store.db.session_scope`). Every
state change is one conditional `UPDATE`, so two processes racing on a job cannot both win.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from numbers import Real
from typing import Any

from sqlalchemy import (
    Insert,
    Integer,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from store.models import (
    FINISHED_STATUSES,
    Artifact,
    Dataset,
    Job,
    JobStatus,
    Metric,
    MetricStep,
    Owner,
    new_id,
    utcnow,
)

log = logging.getLogger(__name__)


# --- jobs ---------------------------------------------------------------------------------------


def create_job(
    session: Session,
    owner_id: int,
    spec: Mapping[str, Any],
    *,
    family: str,
    name: str,
    idempotency_key: str | None = None,
    request_digest: str | None = None,
) -> Job:
    """Add a queued job for a validated spec (`spec.model_dump(mode="json")`); with
    `idempotency_key` (unique per owner: a second job with the same key is an
    `IntegrityError`) and the digest of the request that made it."""
    job_id = new_id()
    job = Job(
        id=job_id,
        owner_id=owner_id,
        family=family,
        name=name,
        spec=dict(spec),
        status=JobStatus.QUEUED,
        run_dir=job_id,
        dispatched_at=utcnow(),
        idempotency_key=idempotency_key,
        request_digest=request_digest,
    )
    session.add(job)
    session.flush()
    return job


_OWNED_JOB = select(Job).where(Job.id == bindparam("job_id"), Job.owner_id == bindparam("owner_id"))


def get_owned_job(session: Session, job_id: str, owner_id: int) -> Job | None:
    """The job if `owner_id` owns it, else None (another owner's job is as missing)."""
    return session.scalar(_OWNED_JOB, {"job_id": job_id, "owner_id": owner_id})


def get_job_by_idempotency_key(session: Session, owner_id: int, key: str) -> Job | None:
    """The owner's job submitted with `Idempotency-Key: key`, or None."""
    return session.scalar(select(Job).where(Job.owner_id == owner_id, Job.idempotency_key == key))


def owner_job_counts(session: Session, owner_id: int) -> dict[str, int]:
    """How many queued and running jobs the owner has: `{"queued": n, "running": m}`."""
    rows = session.execute(
        select(Job.status, func.count())
        .where(Job.owner_id == owner_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        .group_by(Job.status)
    ).all()
    counts = {str(JobStatus.QUEUED): 0, str(JobStatus.RUNNING): 0}
    counts.update({str(status): int(n) for status, n in rows})
    return counts


class RunningLimitReached(Exception):
    """The job's owner already runs as many jobs as allowed; the job stays queued."""

    def __init__(self, job_id: str, running: int, limit: int):
        super().__init__(
            f"job {job_id}: its owner runs {running} jobs (TRAINCTL_MAX_RUNNING_PER_OWNER="
            f"{limit}); it stays queued"
        )
        self.job_id, self.running, self.limit = job_id, running, limit


def get_job(session: Session, job_id: str) -> Job | None:
    """The job with this id, freshly read, or None."""
    return session.get(Job, job_id, populate_existing=True)


def claim_job(
    session: Session, job_id: str, worker: str, *, max_running: int | None = None
) -> Job | None:
    """Move a queued job to running for `worker`; None if it is not queued (already claimed,
    cancelled or gone), so a duplicate delivery does nothing.

    With `max_running`, raises `RunningLimitReached` (the job stays queued) if its owner already
    runs that many jobs; the owner's row is locked until the caller commits, so two workers
    claiming the same owner's jobs at once count each other's."""
    if max_running is not None:
        owner_id = session.scalar(
            select(Job.owner_id).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        )
        if owner_id is None:
            log.info("job %s not claimed by %s: not queued", job_id, worker)
            return None
        session.execute(select(Owner.id).where(Owner.id == owner_id).with_for_update())
        running = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.owner_id == owner_id, Job.status == JobStatus.RUNNING)
        )
        if (running or 0) >= max_running:
            raise RunningLimitReached(job_id, running or 0, max_running)
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            worker=worker,
            attempt=Job.attempt + 1,
            started_at=now,
            finished_at=None,
            error=None,
            failure_class=None,
            phase="starting",
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        log.info("job %s not claimed by %s: not queued", job_id, worker)
        return None
    return get_job(session, job_id)


def set_progress(session: Session, job_id: str, progress: float) -> None:
    """Record a running job's progress (clamped to 0..1); also its heartbeat (`updated_at`)."""
    progress = min(max(float(progress), 0.0), 1.0)
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(progress=progress, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def finish_job(
    session: Session,
    job_id: str,
    status: str,
    error: str | None = None,
    failure_class: str | None = None,
    *,
    stale_before: datetime | None = None,
) -> bool:
    """Move a running job to succeeded/failed/cancelled (a failure with its class, see
    `worker.policy`); False if it was not running (or, with `stale_before`, its worker has
    reported since then)."""
    status = JobStatus(status)
    if status not in FINISHED_STATUSES:
        raise ValueError(f"finish_job status {status!r}; allowed: {sorted(FINISHED_STATUSES)}")
    values: dict[str, Any] = {
        "status": status,
        "error": error,
        "finished_at": utcnow(),
        "phase": None,
        "failure_class": failure_class if status == JobStatus.FAILED else None,
    }
    if status == JobStatus.SUCCEEDED:
        values["progress"] = 1.0
    conditions = [Job.id == job_id, Job.status == JobStatus.RUNNING]
    if stale_before is not None:
        conditions.append(Job.updated_at < stale_before)
    result = session.execute(
        update(Job)
        .where(*conditions)
        .values(**values, updated_at=values["finished_at"])
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        log.warning("finish_job(%s, %s): the job was not running", job_id, status)
        return False
    return True


def requeue_job(session: Session, job_id: str, stale_before: datetime | None = None) -> bool:
    """Give a running job back to the queue for a retry; False if it is not running, a cancel
    was requested (finish it as cancelled instead) or, with `stale_before`, its worker has
    reported since then."""
    conditions = [
        Job.id == job_id,
        Job.status == JobStatus.RUNNING,
        Job.cancel_requested.is_(False),
    ]
    if stale_before is not None:
        conditions.append(Job.updated_at < stale_before)
    result = session.execute(
        update(Job)
        .where(*conditions)
        .values(
            status=JobStatus.QUEUED,
            worker=None,
            started_at=None,
            phase=None,
            updated_at=utcnow(),
            dispatched_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def requeue_failed_job(
    session: Session, job_id: str, error: str, failure_class: str, delay_seconds: float = 0.0
) -> bool:
    """Give a running job whose attempt failed back to the queue for an automatic retry
    (`worker.policy`) in `delay_seconds`, keeping the failure's error and class until the next
    claim; False if it is not running or a cancel was requested."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.cancel_requested.is_(False))
        .values(
            status=JobStatus.QUEUED,
            worker=None,
            started_at=None,
            phase=None,
            error=error,
            failure_class=failure_class,
            updated_at=now,
            # When its delayed message is due: the sweep does not send it again before then.
            dispatched_at=now + timedelta(seconds=delay_seconds),
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def set_phase(session: Session, job_id: str, phase: str) -> None:
    """Record what a running job is doing (`core.report.PhaseEvent`); also its heartbeat."""
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(phase=phase[: Job.__table__.c.phase.type.length], updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )


def queue_position(session: Session, job: Job) -> int | None:
    """1 for the next queued job to run, 2 for the one after, ...; None if `job` is not
    queued. Jobs run in the order they were queued (`updated_at` of a queued job: its
    submission, retry or requeue), whoever owns them."""
    if job.status != JobStatus.QUEUED:
        return None
    ahead = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.status == JobStatus.QUEUED,
            (Job.updated_at < job.updated_at)
            | (and_(Job.updated_at == job.updated_at, Job.id < job.id)),
        )
    )
    return (ahead or 0) + 1


def retry_job(session: Session, job_id: str) -> bool:
    """Queue a failed or cancelled job again; its next claim is a new attempt, which resumes
    from the run directory's checkpoints. False if the job is not failed or cancelled."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_([JobStatus.FAILED, JobStatus.CANCELLED]))
        .values(
            status=JobStatus.QUEUED,
            cancel_requested=False,
            error=None,
            failure_class=None,
            worker=None,
            started_at=None,
            finished_at=None,
            phase=None,
            updated_at=now,
            dispatched_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def delete_finished_job(session: Session, job_id: str) -> bool:
    """Delete a finished job; its metric and artifact rows go with it (`ON DELETE CASCADE`),
    its files stay (the caller removes the run directory). False if it is not finished."""
    finished = [str(s) for s in FINISHED_STATUSES]
    result = session.execute(
        delete(Job)
        .where(Job.id == job_id, Job.status.in_(finished))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def active_jobs_using(session: Session, owner_id: int, top: str) -> list[str]:
    """Ids of the owner's queued or running jobs whose spec's `data` section names a path
    under `top` (an upload's name: the first part of `data.path`)."""
    rows = session.execute(
        select(Job.id, Job.spec).where(
            Job.owner_id == owner_id, Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])
        )
    ).all()
    return [job_id for job_id, spec in rows if top in data_path_tops(spec)]


def data_path_tops(spec: Mapping[str, Any]) -> set[str]:
    """The first parts of the paths a spec's `data` section names (`path`, `features_path`,
    ...): the uploads (or data-root folders) a job reads."""
    data = spec.get("data") if isinstance(spec, Mapping) else None
    if not isinstance(data, Mapping):
        return set()
    tops = set()
    for key, value in data.items():
        if (key == "path" or key.endswith("_path")) and isinstance(value, str) and value:
            tops.add(value.replace("\\", "/").lstrip("/").split("/", 1)[0])
    return tops


def stale_running_jobs(session: Session, stale_before: datetime) -> list[str]:
    """Ids of running jobs whose worker has not reported (`updated_at`) since `stale_before`."""
    return list(
        session.scalars(
            select(Job.id).where(Job.status == JobStatus.RUNNING, Job.updated_at < stale_before)
        )
    )


def stranded_queued_jobs(session: Session, dispatched_before: datetime) -> list[str]:
    """Ids of queued jobs last sent to the broker before `dispatched_before` (a message that may
    be lost: a broker restart, a claim that failed and was acknowledged); oldest first."""
    sent = func.coalesce(Job.dispatched_at, Job.updated_at)
    return list(
        session.scalars(
            select(Job.id)
            .where(Job.status == JobStatus.QUEUED, sent < dispatched_before)
            .order_by(Job.updated_at, Job.id)
        )
    )


def mark_dispatched(
    session: Session, job_id: str, dispatched_before: datetime | None = None
) -> bool:
    """Record that a queued job was (about to be) sent to the broker now; with
    `dispatched_before`, only if it was last sent before then (two sweeps send it once).
    False if the job is not queued (or was sent since)."""
    conditions = [Job.id == job_id, Job.status == JobStatus.QUEUED]
    if dispatched_before is not None:
        conditions.append(func.coalesce(Job.dispatched_at, Job.updated_at) < dispatched_before)
    result = session.execute(
        update(Job)
        .where(*conditions)
        # `updated_at` kept: it orders the queue (`queue_position`).
        .values(dispatched_at=utcnow(), updated_at=Job.updated_at)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def cancel_stale_job(session: Session, job_id: str, stale_before: datetime) -> bool:
    """Finish as cancelled a running job whose cancel was requested and whose worker has not
    reported since `stale_before` (nobody is left to stop it)."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status == JobStatus.RUNNING,
            Job.cancel_requested.is_(True),
            Job.updated_at < stale_before,
        )
        .values(status=JobStatus.CANCELLED, finished_at=now, phase=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def request_cancel(session: Session, job_id: str) -> bool:
    """Cancel a queued job now, or ask the worker to stop a running one.

    False if the job is already finished (or gone).
    """
    now = utcnow()
    cancelled = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.CANCELLED,
            cancel_requested=True,
            finished_at=now,
            phase=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if cancelled.rowcount == 1:
        return True
    # Not queued (any more): a worker may have claimed it in between; ask it to stop.
    flagged = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.RUNNING)
        .values(cancel_requested=True, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return flagged.rowcount == 1


def fail_queued_job(session: Session, job_id: str, error: str) -> None:
    """Mark a job that never reached the queue as failed."""
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.FAILED, error=error, finished_at=now, phase=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )


def cancel_requested(session: Session, job_id: str) -> bool:
    """Whether the job should stop: a cancel was requested, or the job is gone."""
    flag = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return True if flag is None else bool(flag)


def list_jobs(
    session: Session,
    owner_id: int,
    *,
    status: str | None = None,
    family: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> tuple[list[Job], int]:
    """An owner's jobs, newest first, and how many match in all."""
    where = [Job.owner_id == owner_id]
    if status is not None:
        where.append(Job.status == status)
    if family is not None:
        where.append(Job.family == family)
    count = session.scalar(select(func.count()).select_from(Job).where(*where)) or 0
    rows = session.scalars(
        select(Job)
        .where(*where)
        .order_by(Job.created_at.desc(), Job.id.desc())
        .offset(offset)
        .limit(limit)
    ).all()
    return list(rows), count


# --- metrics ------------------------------------------------------------------------------------


def upsert_metric(
    session: Session, job_id: str, attempt: int, epoch: int, values: Mapping[str, Any]
) -> None:
    """Store one epoch's metrics; a retry of the same (attempt, epoch) replaces the row."""
    stmt = _insert(session, Metric.__table__).values(
        job_id=job_id, attempt=attempt, epoch=epoch, values=_json_safe(values), created_at=utcnow()
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "attempt", "epoch"],
        set_={"values": stmt.excluded["values"], "created_at": stmt.excluded.created_at},
    )
    session.execute(stmt)


def upsert_metric_step(
    session: Session, job_id: str, attempt: int, step: int, epoch: int, values: Mapping[str, Any]
) -> None:
    """Store the running metrics at optimizer step `step` (in epoch `epoch`); a retry of the
    same (attempt, step) replaces the row."""
    stmt = _insert(session, MetricStep.__table__).values(
        job_id=job_id,
        attempt=attempt,
        step=step,
        epoch=epoch,
        values=_json_safe(values),
        created_at=utcnow(),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "attempt", "step"],
        set_={key: stmt.excluded[key] for key in ("epoch", "values", "created_at")},
    )
    session.execute(stmt)


@dataclass
class MetricsPage:
    """A job's state and some of its metric rows; `values` stay JSON text, for responses."""

    attempt: int
    status: str
    rows: list[tuple[int, str]]  # (epoch, values as JSON text), in epoch order


@dataclass
class StepMetricsPage:
    """A job's state and some of its step metric rows; `values` stay JSON text."""

    attempt: int
    status: str
    rows: list[tuple[int, int, str]]  # (step, epoch, values as JSON text), in step order


def _attempt_rows(table: Any, key: Any) -> Any:
    """The rows of `:attempt`, or, with `:attempt` null, the job's effective history: each
    attempt's rows below the first index (epoch or step) of every later attempt. A resumed
    attempt starts at the epoch after its checkpoint, so what it redid replaces the earlier
    attempt's rows and what it has not reached yet shows the earlier ones; an attempt that
    wrote nothing (resumed after the last epoch) hides nothing. Each index then comes from one
    attempt: the lineage of the checkpoints the job's outputs come from."""
    later = aliased(table)
    later_key = getattr(later, key.key)
    # Attempts up to the job's own (rows of a later one cannot be, and change nothing).
    next_start = (
        select(func.min(later_key))
        .where(
            later.job_id == table.job_id,
            later.attempt > table.attempt,
            later.attempt <= Job.attempt,
        )
        .scalar_subquery()
    )
    requested = bindparam("attempt", type_=Integer)
    return or_(
        table.attempt == requested,
        and_(
            cast(requested, Integer).is_(None),
            table.attempt <= Job.attempt,
            or_(next_start.is_(None), key < next_start),
        ),
    )


def _page_statement(table: Any, key: Any, after: str, *columns: Any) -> Any:
    """The one-query page of a job's rows of `table` with `key` > `:after`, of `:attempt`
    (default: the job's effective history, `_attempt_rows`), with the job's attempt and status
    (the owner's job only).
    Built once per table: the hot polling path then only binds values (building and keying a
    statement on every call cost three times its execution)."""
    return (
        select(Job.attempt, Job.status, *columns, cast(table.values, Text))
        .outerjoin(
            table,
            and_(
                table.job_id == Job.id,
                _attempt_rows(table, key),
                key > bindparam(after),
            ),
        )
        .where(Job.id == bindparam("job_id"), Job.owner_id == bindparam("owner_id"))
        .order_by(key)
        .limit(bindparam("limit"))
    )


_METRICS_PAGE = _page_statement(Metric, Metric.epoch, "after_epoch", Metric.epoch)


def metrics_page(
    session: Session,
    job_id: str,
    owner_id: int,
    *,
    attempt: int | None = None,
    after_epoch: int = -1,
    limit: int = 10_000,
) -> MetricsPage | None:
    """The owner's job's status and its rows of `attempt` (default: the effective history of all
    attempts, `_attempt_rows`) with epoch > `after_epoch`, in one query (this is what every
    dashboard polls); None if no such job."""
    params = {"job_id": job_id, "owner_id": owner_id, "attempt": attempt,
              "after_epoch": after_epoch, "limit": limit}  # fmt: skip
    rows = session.execute(_METRICS_PAGE, params).all()
    if not rows:
        return None
    job_attempt, status = rows[0][0], rows[0][1]
    return MetricsPage(
        attempt=job_attempt if attempt is None else attempt,
        status=status,
        rows=[(epoch, values) for _, _, epoch, values in rows if epoch is not None],
    )


_STEPS_PAGE = _page_statement(
    MetricStep, MetricStep.step, "after_step", MetricStep.step, MetricStep.epoch
)


def metric_steps_page(
    session: Session,
    job_id: str,
    owner_id: int,
    *,
    attempt: int | None = None,
    after_step: int = -1,
    limit: int = 10_000,
) -> StepMetricsPage | None:
    """`metrics_page` for the step rows: those of `attempt` (default: the effective history)
    with step > `after_step`, in one query; None if the owner has no such job."""
    params = {"job_id": job_id, "owner_id": owner_id, "attempt": attempt,
              "after_step": after_step, "limit": limit}  # fmt: skip
    rows = session.execute(_STEPS_PAGE, params).all()
    if not rows:
        return None
    job_attempt, status = rows[0][0], rows[0][1]
    return StepMetricsPage(
        attempt=job_attempt if attempt is None else attempt,
        status=status,
        rows=[(step, epoch, values) for _, _, step, epoch, values in rows if step is not None],
    )


def _json_safe(values: Mapping[str, Any]) -> dict[str, Any]:
    """Plain, strict JSON values: numpy/torch scalars become floats/ints, NaN and inf become
    None, also inside lists and objects (PostgreSQL refuses NaN in JSON, and SQLite would store
    text no JSON parser reads)."""
    return {str(key): _json_value(value) for key, value in values.items()}


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | int):  # bool is an int
        return value
    if isinstance(value, Mapping):
        return _json_safe(value)
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, Real) or hasattr(value, "item"):
        number = float(value)
        return number if math.isfinite(number) else None
    return value


# --- artifacts ----------------------------------------------------------------------------------


def upsert_artifact(
    session: Session,
    job_id: str,
    *,
    kind: str,
    name: str,
    path: str,
    size: int,
    sha256: str,
    epoch: int | None = None,
    tag: str | None = None,
    meta: Mapping[str, Any] | None = None,
) -> None:
    """Record a file a run wrote (`path` relative to the artifact root), replacing a same-named
    one. `meta` holds kind-specific facts (`core.report.ArtifactEvent.meta`)."""
    row = {
        "kind": kind,
        "path": path,
        "size": size,
        "sha256": sha256,
        "epoch": epoch,
        "tag": tag,
        "meta": _json_safe(meta or {}),
    }
    stmt = _insert(session, Artifact.__table__).values(
        job_id=job_id, name=name, created_at=utcnow(), **row
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["job_id", "name"],
        set_={key: stmt.excluded[key] for key in [*row, "created_at"]},
    )
    session.execute(stmt)


def delete_artifact(session: Session, job_id: str, name: str) -> None:
    """Forget an artifact (e.g. a checkpoint rotated out of the top k)."""
    session.execute(delete(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def list_artifacts(session: Session, job_id: str, kind: str | None = None) -> list[Artifact]:
    """A job's artifacts, optionally of one kind, oldest first."""
    stmt = select(Artifact).where(Artifact.job_id == job_id)
    if kind is not None:
        stmt = stmt.where(Artifact.kind == kind)
    return list(session.scalars(stmt.order_by(Artifact.created_at, Artifact.id)))


def find_artifact(
    session: Session,
    job_id: str,
    *,
    name: str | None = None,
    kind: str | None = None,
    tag: str | None = None,
) -> Artifact | None:
    """The newest artifact of a job matching every given field."""
    stmt = select(Artifact).where(Artifact.job_id == job_id)
    if name is not None:
        stmt = stmt.where(Artifact.name == name)
    if kind is not None:
        stmt = stmt.where(Artifact.kind == kind)
    if tag is not None:
        stmt = stmt.where(Artifact.tag == tag)
    return session.scalars(stmt.order_by(Artifact.created_at.desc(), Artifact.id.desc())).first()


# --- datasets -----------------------------------------------------------------------------------


def list_datasets(session: Session, owner_id: int) -> list[Dataset]:
    """An owner's datasets by name."""
    return list(
        session.scalars(select(Dataset).where(Dataset.owner_id == owner_id).order_by(Dataset.name))
    )


def get_dataset(session: Session, owner_id: int, name: str) -> Dataset | None:
    return session.scalar(select(Dataset).where(Dataset.owner_id == owner_id, Dataset.name == name))


def _insert(session: Session, table: Table) -> Insert:
    """The dialect's INSERT, which has `on_conflict_do_update` (PostgreSQL and SQLite)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"upserts need PostgreSQL or SQLite, not {dialect}")
    return insert(table)


# --- polling state and service metrics ----------------------------------------------------------


@dataclass(frozen=True)
class MetricsState:
    """What a metrics page depends on, read without its rows (for an `ETag`): the job's latest
    attempt and status, and the count, last index (epoch or step) and newest `created_at` of the
    rows a page after `after` would hold. Rows are only added or replaced (a replaced row gets a
    new `created_at`), so a page read after this state holds at least what it describes."""

    attempt: int
    status: str
    rows: int
    last: int | None
    written_at: datetime | None


def _state_statement(table: Any, key: Any, after: str) -> Any:
    """Built once per table, like `_page_statement`; an index range of the rows after `:after`
    (none, for a poller that is up to date)."""
    return (
        select(Job.attempt, Job.status, func.count(key), func.max(key), func.max(table.created_at))
        .outerjoin(
            table,
            and_(
                table.job_id == Job.id,
                _attempt_rows(table, key),
                key > bindparam(after),
            ),
        )
        .where(Job.id == bindparam("job_id"), Job.owner_id == bindparam("owner_id"))
        .group_by(Job.id, Job.attempt, Job.status)
    )


_METRICS_STATE = {
    "epoch": _state_statement(Metric, Metric.epoch, "after"),
    "step": _state_statement(MetricStep, MetricStep.step, "after"),
}


def metrics_state(
    session: Session,
    job_id: str,
    owner_id: int,
    granularity: str,
    *,
    after: int = -1,
    attempt: int | None = None,
) -> MetricsState | None:
    """The `MetricsState` of the owner's job's `granularity` rows (`epoch` or `step`) of
    `attempt` (default: the effective history) after index `after`, in one query; None if no
    such job."""
    params = {"job_id": job_id, "owner_id": owner_id, "attempt": attempt, "after": after}
    row = session.execute(_METRICS_STATE[granularity], params).first()
    return None if row is None else MetricsState(*row)


def job_status_counts(session: Session) -> dict[str, int]:
    """How many jobs are in each status (statuses without jobs are absent)."""
    rows = session.execute(select(Job.status, func.count()).group_by(Job.status))
    return {status: count for status, count in rows}


def workers_seen_since(session: Session, since: datetime) -> int:
    """Distinct workers running a job whose heartbeat (`updated_at`) is newer than `since`."""
    stmt = select(func.count(func.distinct(Job.worker))).where(
        Job.status == JobStatus.RUNNING, Job.worker.is_not(None), Job.updated_at >= since
    )
    return session.scalar(stmt) or 0


def metric_row_counts(session: Session) -> dict[str, int]:
    """Metric rows stored: `{"epoch": n, "step": m}`."""
    epoch = session.scalar(select(func.count()).select_from(Metric)) or 0
    step = session.scalar(select(func.count()).select_from(MetricStep)) or 0
    return {"epoch": epoch, "step": step}
