"""Service metrics for Prometheus: `GET /metrics` in the text exposition format
(https://prometheus.io/docs/instrumenting/exposition_formats/), built with prometheus-client.

Series (all prefixed `trainctl_`):

- `http_requests_total{method, route, status}` and `http_request_duration_seconds{method, route}`
  (a histogram, seconds until the response headers are sent: a stream or a download is timed to
  its first byte, not its end). `route` is the route's template (`/jobs/{job_id}/metrics`),
  never the raw path; a path no route matches is `unmatched`. Counted by this process.
- `jobs{status}`: jobs in each status, read from the database at scrape time.
- `queue_depth{queue}`: messages waiting in the broker's queue (the Redis lists of the Celery
  queue, or the embedded file-system broker's message files); absent when the broker cannot be
  read.
- `workers_seen_alive`: distinct workers running a job whose heartbeat (`jobs.updated_at`) is
  newer than `TRAINCTL_STALE_AFTER_SECONDS`. Workers keep no heartbeat of their own, so an idle
  worker is not seen (Flower, `docs/observability.md`, shows every worker).
- `metric_rows{granularity}`: metric rows stored (`epoch` and `step` rows), counted in the
  database at scrape time (the workers write them, in other processes); it drops when jobs are
  deleted.

The endpoint needs no API key, like `/healthz`: it shows counts, never a job, an owner or a
name. Several uvicorn worker processes: set `PROMETHEUS_MULTIPROC_DIR` to an empty directory
before the API starts, and the request series are summed over the processes (prometheus-client's
multiprocess mode); without it each scrape sees the process that answered it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from store import queries
from store.broker import embedded_broker_dir
from store.models import JobStatus, utcnow
from store.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "trainctl_"
UNMATCHED_ROUTE = "unmatched"
# Seconds; the polling endpoints answer in milliseconds, uploads and first bytes of large
# downloads in seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# kombu's Redis transport keeps a queue's messages in one list per priority step
# (`kombu.transport.redis`: `PRIORITY_STEPS`, names `queue` and `queue\x06\x16<step>`).
REDIS_PRIORITY_STEPS = (0, 3, 6, 9)
REDIS_PRIORITY_SEP = "\x06\x16"
BROKER_TIMEOUT_CAP_S = 1.0  # a scrape waits at most this long for the broker


class RequestMetrics:
    """ASGI middleware counting and timing HTTP requests by route template."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self.app = app
        self.requests = requests
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        answered = False

        async def send_timed(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                # Counted when the headers go: a stream is counted as it starts, not as it ends.
                self._record(scope, message["status"], time.perf_counter() - start)
                answered = True
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        finally:
            if not answered:  # the app raised (the server answers 500) or the client left
                self._record(scope, 500, time.perf_counter() - start)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = _route(scope)
        self.latency.labels(scope["method"], route).observe(seconds)
        self.requests.labels(scope["method"], route, str(status)).inc()


def _route(scope: Scope) -> str:
    """The template of the route that served the request (set by the router in the scope)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class ServiceCollector(Collector):
    """The gauges read at scrape time: jobs by status, workers seen alive and metric rows (from
    the database), queue depth (from the broker). A source that cannot be read leaves its
    series out of that scrape (and says why in the log); the scrape itself still answers."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self._redis: Any = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            yield from self._database()
        except Exception as exc:  # the database is down: no database series this time
            log.warning("metrics: database unreadable: %s", exc)
        try:
            depth = self._queue_depth()
        except Exception as exc:  # the broker is down or unreadable
            log.warning("metrics: broker queue unreadable: %s", exc)
            depth = None
        if depth is not None:
            gauge = GaugeMetricFamily(
                PREFIX + "queue_depth",
                "Messages waiting in the broker queue (not yet taken by a worker).",
                labels=["queue"],
            )
            gauge.add_metric([self.settings.queue], depth)
            yield gauge

    def _database(self) -> Iterator[GaugeMetricFamily]:
        stale_before = utcnow() - timedelta(seconds=self.settings.stale_after_seconds)
        with self.sessions() as session:
            by_status = queries.job_status_counts(session)
            workers = queries.workers_seen_since(session, stale_before)
            rows = queries.metric_row_counts(session)
            session.commit()
        jobs = GaugeMetricFamily(
            PREFIX + "jobs", "Jobs in each status (from the database).", labels=["status"]
        )
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status.value, 0))
        yield jobs
        yield GaugeMetricFamily(
            PREFIX + "workers_seen_alive",
            "Workers running a job whose heartbeat is newer than TRAINCTL_STALE_AFTER_SECONDS "
            "(idle workers are not seen).",
            value=workers,
        )
        stored = GaugeMetricFamily(
            PREFIX + "metric_rows",
            "Metric rows stored by the workers (epoch rows and step rows).",
            labels=["granularity"],
        )
        for granularity, count in rows.items():
            stored.add_metric([granularity], count)
        yield stored

    def _queue_depth(self) -> int | None:
        url = self.settings.broker
        queue = self.settings.queue
        if url is None:  # the embedded broker: one file per waiting message
            folder = embedded_broker_dir(self.settings) / "queue"
            return _count_message_files(folder, queue)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            return None  # another transport: nothing this collector knows how to count
        if self._redis is None:
            import redis

            timeout = min(self.settings.broker_timeout_seconds, BROKER_TIMEOUT_CAP_S)
            self._redis = redis.Redis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        names = [queue] + [f"{queue}{REDIS_PRIORITY_SEP}{p}" for p in REDIS_PRIORITY_STEPS[1:]]
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
        return int(sum(pipe.execute()))


def _count_message_files(folder: Path, queue: str) -> int:
    """Messages of `queue` in kombu's file-system transport folder (`<time>_<uuid>.<queue>.msg`;
    a taken message is deleted, `store_processed` being off)."""
    suffix = f".{queue}.msg"
    try:
        return sum(1 for entry in os.scandir(folder) if entry.name.endswith(suffix))
    except FileNotFoundError:
        return 0


def install(app: FastAPI, settings: Settings) -> None:
    """Count and time every request of `app` and serve `GET /metrics` (no API key)."""
    registry = CollectorRegistry()
    requests = Counter(
        PREFIX + "http_requests",
        "HTTP requests answered, by method, route template and status code.",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        PREFIX + "http_request_duration_seconds",
        "Seconds from a request's arrival until its response headers are sent, by route.",
        ["method", "route"],
        buckets=LATENCY_BUCKETS,
        registry=registry,
    )
    app.add_middleware(RequestMetrics, requests=requests, latency=latency)
    service = ServiceCollector(settings, app.state.session_factory)
    app.state.metrics_registry = registry

    def scrape() -> bytes:
        target = CollectorRegistry()
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            from prometheus_client import multiprocess

            multiprocess.MultiProcessCollector(target)  # every process's request series
        else:
            target.register(_Forward(registry))
        target.register(service)
        return _generate_latest(target)

    @app.get("/metrics", tags=["health"], response_class=Response, include_in_schema=True)
    async def metrics(request: Request) -> Response:
        """Service metrics in the Prometheus text format (no API key needed; counts only)."""
        body = await run_in_threadpool(scrape)  # the database and the broker are read
        return Response(body, media_type=CONTENT_TYPE_LATEST)


class _Forward(Collector):
    """Another registry's series, collected into the scrape's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Any]:
        return self.registry.collect()
