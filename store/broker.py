"""The Celery broker settings and task name, shared by the API (which sends) and the workers
(which consume): broker, serialization and delivery settings, nothing else.

Importing this module does not import Celery: `make_celery` does, when called.

The database is the source of truth for a job, so there is no result backend. Delivery is
"at least once": a task is acknowledged after it ran (`task_acks_late`) and given back if its
worker dies (`task_reject_on_worker_lost`); `store.queries.claim_job` makes a second delivery
of the same job a no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.settings import Settings, get_settings

if TYPE_CHECKING:
    from celery import Celery

# The one task: `trainctl.run_job(job_id)`. The API sends it by name, without its code.
TASK_NAME = "trainctl.run_job"

# Redis gives an unacknowledged message back after this many seconds (kombu's default is one
# hour). It must exceed no job's run time to avoid a spurious second delivery, which claim_job
# turns into a no-op anyway; it bounds how late a job whose worker died is picked up again.
REDIS_VISIBILITY_TIMEOUT_S = 3600


def embedded_broker_dir(settings: Settings) -> Path:
    """Where the embedded (file system) broker keeps its messages."""
    return settings.home / "broker"


def broker_url(settings: Settings) -> str:
    """`BROKER_URL`, else `REDIS_URL`, else a file-system broker under `TRAINCTL_HOME`."""
    return settings.broker or "filesystem://localhost//"


def transport_options(settings: Settings) -> dict[str, Any]:
    """Kombu transport options: Redis's visibility timeout, or the embedded broker's folders
    (created here, since the sender and the consumer both need them)."""
    if settings.broker:
        timeout = settings.broker_timeout_seconds
        return {
            "visibility_timeout": REDIS_VISIBILITY_TIMEOUT_S,
            # Every socket operation is bounded: a broker that accepts a connection and never
            # answers fails the call instead of hanging a thread for ever. (Kombu's blocking
            # reads poll for 1 s at a time, well within this.)
            "socket_timeout": max(timeout, 2.0),
            "socket_connect_timeout": timeout,
            "socket_keepalive": True,
        }
    folder = embedded_broker_dir(settings)
    for sub in ("queue", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0.1,
    }


def make_celery(settings: Settings | None = None, *, include: Sequence[str] = ()) -> Celery:
    """A Celery app for `settings` (default: the environment's) that routes `TASK_NAME` to the
    settings' queue. `include` names task modules a worker imports (the API needs none:
    `send_task` goes by name)."""
    from celery import Celery

    settings = settings or get_settings()
    app = Celery("trainctl", broker=broker_url(settings), include=list(include))
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        task_routes={TASK_NAME: {"queue": settings.queue}},
        broker_transport_options=transport_options(settings),
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=settings.broker_timeout_seconds,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        enable_utc=True,
    )
    return app


def broker_reachable(app: Celery, timeout: float) -> str | None:
    """None when the broker answers within `timeout` seconds, else why not (for /readyz)."""
    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
            if conn.transport.driver_type == "redis":
                conn.default_channel.client.ping()
    except Exception as exc:  # any transport error means: not ready
        return f"{type(exc).__name__}: {exc}"
    return None
