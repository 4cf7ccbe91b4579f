"""Jobs whose worker died: found by a stale heartbeat, given back to the queue.

A running job's worker refreshes `updated_at` every few seconds (`set_progress`). A job left
`running` with an `updated_at` older than `stale_after` seconds lost its worker (killed, out of
memory, machine gone): it is requeued and dispatched again, and its next attempt resumes from
the last checkpoint. A cancel requested meanwhile finishes it as `cancelled` instead. Should the
old worker still be alive after all, its next heartbeat sees the job is no longer its own and
stops its copy of the run. A job whose retry policy (`worker.policy`) has no attempt left for a
lost worker is failed instead (class `worker_lost`).

The same sweep sends again the jobs left `queued` whose last message went out more than
`TRAINCTL_REDISPATCH_AFTER_SECONDS` ago (`redispatch_stranded`): a message the broker lost, or
one acknowledged by a worker that could not claim its job. A duplicate is harmless: the claim
is one conditional update, a second delivery does nothing.

After the database was unreachable, the sweep waits `stale_after` seconds before it judges
heartbeats again: the workers could not write theirs during the outage either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from store import queries
from store.db import session_scope
from store.models import JobStatus, utcnow
from worker.policy import FailureClass, RetryPolicy

log = logging.getLogger(__name__)


def requeue_orphans(
    sessions: sessionmaker[Session], dispatch: Callable[[str], None], stale_after: float
) -> list[str]:
    """Requeue running jobs whose heartbeat is older than `stale_after` seconds and dispatch
    them again; returns their ids."""
    cutoff = utcnow() - timedelta(seconds=stale_after)
    requeued: list[str] = []
    with session_scope(sessions) as session:
        # Each update re-checks the heartbeat: a worker that reported meanwhile keeps its job.
        for job_id in queries.stale_running_jobs(session, cutoff):
            job = queries.get_job(session, job_id)
            policy = RetryPolicy.of(job.spec if job is not None else None)
            if job is not None and not policy.retries(FailureClass.WORKER_LOST, job.attempt):
                _fail_lost(session, job_id, job.attempt, policy, cutoff)
            elif queries.requeue_job(session, job_id, stale_before=cutoff):
                requeued.append(job_id)
            else:
                queries.cancel_stale_job(session, job_id, stale_before=cutoff)
    for job_id in requeued:
        log.warning("job %s: its worker stopped reporting; requeued", job_id)
        dispatch(job_id)
    return requeued


def _fail_lost(
    session: Session, job_id: str, attempt: int, policy: RetryPolicy, cutoff: datetime
) -> None:
    if queries.cancel_stale_job(session, job_id, stale_before=cutoff):
        return
    error = (
        f"the worker running attempt {attempt} stopped reporting, and retry.max_attempts "
        f"({policy.max_attempts}) allows no further attempt after a lost worker"
    )
    failed = queries.finish_job(
        session, job_id, JobStatus.FAILED, error, FailureClass.WORKER_LOST, stale_before=cutoff
    )
    if failed:
        log.warning("job %s: %s; failed", job_id, error)


def redispatch_stranded(
    sessions: sessionmaker[Session], dispatch: Callable[[str], None], after: float
) -> list[str]:
    """Send again the queued jobs whose last message went out more than `after` seconds ago;
    returns their ids. A job is marked sent before it is sent: should the send fail, the next
    sweep after `after` seconds tries again."""
    cutoff = utcnow() - timedelta(seconds=after)
    sent: list[str] = []
    with session_scope(sessions) as session:
        stranded = queries.stranded_queued_jobs(session, cutoff)
    for job_id in stranded:
        with session_scope(sessions) as session:
            if not queries.mark_dispatched(session, job_id, dispatched_before=cutoff):
                continue  # claimed, cancelled or sent by another sweep meanwhile
        log.warning("job %s: queued with no message for over %.0fs; sent again", job_id, after)
        dispatch(job_id)
        sent.append(job_id)
    return sent


def start_sweeper(
    sessions: sessionmaker[Session],
    dispatch: Callable[[str], None],
    stop: threading.Event,
    stale_after: float,
    every: float,
    redispatch_after: float | None = None,
) -> threading.Thread:
    """A daemon thread that runs `requeue_orphans` (and, with `redispatch_after`,
    `redispatch_stranded`) now and every `every` seconds until `stop`."""

    def loop() -> None:
        db_failed_at: float | None = None  # monotonic time of the last failed sweep
        while True:
            try:
                if redispatch_after is not None:
                    redispatch_stranded(sessions, dispatch, redispatch_after)
                if db_failed_at is None or time.monotonic() - db_failed_at > stale_after:
                    requeue_orphans(sessions, dispatch, stale_after)
                else:
                    log.info("orphan sweep: waiting for heartbeats after a database outage")
            except OperationalError as exc:
                db_failed_at = time.monotonic()
                log.warning("sweep: database unreachable; trying again in %.0fs: %s", every, exc)
            except Exception:
                log.exception("orphan sweep failed; trying again in %.0fs", every)
            if stop.wait(every):
                return

    thread = threading.Thread(target=loop, name="trainctl-orphan-sweep", daemon=True)
    thread.start()
    return thread
