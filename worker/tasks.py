"""The Celery task: thin, by name, taking a job id; the logic lives in `worker.runner`."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from celery import shared_task
from celery.exceptions import Reject
from celery.signals import worker_ready, worker_shutting_down

from store.broker import TASK_NAME
from store.db import make_engine, session_factory
from store.settings import Settings, get_settings
from worker.recovery import start_sweeper
from worker.runner import DB_UNAVAILABLE, REQUEUED, Later, RunnerOptions, WorkerContext, run_job

log = logging.getLogger(__name__)

REJECT_PAUSE_S = 1.0


class RequeueWithoutTraceback(logging.Filter):
    """Celery logs a rejected task (`Reject`) at WARNING with the full traceback; our reject is
    the normal hand-back of a job on shutdown, so one line says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        data = getattr(record, "data", None)
        if isinstance(data, dict) and data.get("description") == "rejected":
            record.exc_info = None
            record.exc_text = None
        return True


logging.getLogger("celery.app.trace").addFilter(RequeueWithoutTraceback())

_context: WorkerContext | None = None
_context_lock = threading.Lock()


def configure(settings: Settings) -> WorkerContext:
    """Set this worker process's shared state from `settings` (before the worker starts)."""
    global _context
    with _context_lock:
        _context = _make_context(settings)
        return _context


def context() -> WorkerContext:
    """This worker process's shared state (from the environment's settings if not configured,
    as under `celery worker`)."""
    global _context
    with _context_lock:
        if _context is None:
            _context = _make_context(get_settings())
        return _context


def _make_context(settings: Settings) -> WorkerContext:
    return WorkerContext(
        settings=settings,
        sessions=session_factory(make_engine(settings.database_url)),
        options=RunnerOptions.from_settings(settings),
    )


def claim_backoff(retries: int, cap: float) -> float:
    """Seconds before the next try of a claim that found the database down: 1, 2, 4, ...
    up to `cap` (`TRAINCTL_CLAIM_RETRY_MAX_SECONDS`)."""
    return min(2.0 ** min(retries, 30), cap)


@shared_task(
    bind=True, name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, max_retries=None
)
def run_job_task(self: Any, job_id: str) -> str | None:
    """Run job `job_id`; a duplicate delivery does nothing. A claim the database could not take,
    a job held back by its owner's running-jobs limit and a failed attempt the retry policy runs
    again are sent again (`Task.retry`: a new message, then this one is acknowledged), never
    dropped."""
    ctx = context()
    outcome = run_job(job_id, ctx)
    if isinstance(outcome, Later):
        delay = outcome.delay
        if outcome == DB_UNAVAILABLE:
            delay = claim_backoff(self.request.retries, ctx.settings.claim_retry_max_seconds)
        log.info("job %s: %s; its message is sent again in %.0fs", job_id, outcome, delay)
        raise self.retry(countdown=delay, max_retries=None)
    if outcome == REQUEUED:
        # The worker is stopping: hand the message back for the next worker. The consumer
        # still takes messages until the worker has stopped; pause so it does not spin on this
        # one.
        time.sleep(REJECT_PAUSE_S)
        raise Reject(f"job {job_id} requeued: worker shutting down", requeue=True)
    return outcome


@worker_shutting_down.connect
def _on_shutdown(**_: Any) -> None:
    context().shutdown.set()


@worker_ready.connect
def _on_ready(sender: Any, **_: Any) -> None:
    ctx = context()
    app = sender.app

    def dispatch(job_id: str) -> None:
        app.send_task(TASK_NAME, args=[job_id], queue=ctx.settings.queue)

    stale_after = ctx.options.stale_after_seconds
    redispatch_after = ctx.settings.redispatch_after_seconds
    start_sweeper(
        ctx.sessions,
        dispatch,
        ctx.shutdown,
        stale_after,
        every=min(stale_after, redispatch_after) / 2,
        redispatch_after=redispatch_after,
    )
