"""Jobs whose worker died: found by a stale heartbeat, given back to the queue.

A running job's worker refreshes `updated_at` every few seconds (`set_progress`). A job left
`running` with an `updated_at` older than `stale_after` seconds lost its worker (killed, out of
memory, machine gone): it is requeued and dispatched again, and its next attempt resumes from
the last checkpoint. A cancel requested meanwhile finishes it as `cancelled` instead. Should the
old worker still be alive after all, its next heartbeat sees the job is no longer its own and
stops its copy of the run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from store import queries
from store.db import session_scope
from store.models import utcnow

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
            if queries.requeue_job(session, job_id, stale_before=cutoff):
                requeued.append(job_id)
            else:
                queries.cancel_stale_job(session, job_id, stale_before=cutoff)
    for job_id in requeued:
        log.warning("job %s: its worker stopped reporting; requeued", job_id)
        dispatch(job_id)
    return requeued


def start_sweeper(
    sessions: sessionmaker[Session],
    dispatch: Callable[[str], None],
    stop: threading.Event,
    stale_after: float,
    every: float,
) -> threading.Thread:
    """A daemon thread that runs `requeue_orphans` now and every `every` seconds until `stop`."""

    def loop() -> None:
        while True:
            try:
                requeue_orphans(sessions, dispatch, stale_after)
            except Exception:
                log.exception("orphan sweep failed; trying again in %.0fs", every)
            if stop.wait(every):
                return

    thread = threading.Thread(target=loop, name="trainctl-orphan-sweep", daemon=True)
    thread.start()
    return thread
