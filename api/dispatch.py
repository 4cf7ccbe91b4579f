"""Handing a committed job to the workers.

A dispatcher is any `(job_id) -> None` callable; `create_app(dispatch=...)` takes one (tests
record ids). The default sends the Celery task `trainctl.run_job` by name.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from store.broker import TASK_NAME, broker_reachable, make_celery
from store.settings import Settings

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger(__name__)

Dispatcher = Callable[[str], None]


class CeleryDispatcher:
    """Sends `trainctl.run_job(job_id)` to the settings' queue; Celery is set up on first use."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._celery: Celery | None = None
        self._lock = threading.Lock()

    def __call__(self, job_id: str) -> None:
        self._app().send_task(
            TASK_NAME,
            args=[job_id],
            queue=self.settings.queue,
            retry=True,
            # With the transport's socket timeouts (`store.broker`), a broker that never
            # answers fails this call in about 2 x TRAINCTL_BROKER_TIMEOUT_SECONDS.
            retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
        )
        log.info("queued job %s on %r", job_id, self.settings.queue)

    def ready(self) -> str | None:
        """None when the broker answers in time, else why not (for /readyz)."""
        return broker_reachable(self._app(), self.settings.broker_timeout_seconds)

    def _app(self) -> Celery:
        with self._lock:
            if self._celery is None:
                # Celery is imported here, on first use, which keeps the API's import free of
                # it. `send_task` needs no task code: the API never imports the worker.
                self._celery = make_celery(self.settings)
            return self._celery
