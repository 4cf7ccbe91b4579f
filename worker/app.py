"""The worker's Celery application: the broker settings the API shares (`store.broker`), plus
this package's task module."""

from __future__ import annotations

from celery import Celery

from store import broker
from store.settings import Settings

TASK_MODULES = ("worker.tasks",)


def make_celery(settings: Settings | None = None) -> Celery:
    """The worker's Celery app for `settings` (default: the environment's), with
    `trainctl.run_job` (`store.broker.TASK_NAME`)."""
    return broker.make_celery(settings, include=TASK_MODULES)
