"""Issue 11 items 1 and 2 end to end: a real Celery worker (the docker-compose command) whose
PostgreSQL is reached through a TCP proxy the test cuts, real Redis, the real core on Cora.

The issue's probe: stop the worker's database while jobs are queued. The claims used to fail
with `OperationalError`, their messages were acknowledged anyway and the jobs stayed `queued`
for good; a blip while a job trained failed its attempt at once. Here every job must run once
the database is back, and the job that was training when it went away must finish in its first
attempt, every epoch recorded.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.dispatch import CeleryDispatcher
from api.main import create_app
from store.db import make_engine, session_factory, session_scope
from store.keys import create_owner_key
from store.migrate import upgrade_head
from store.models import Job, Metric
from store.settings import Settings
from tests.service.test_reliability_worker import CuttableProxy
from tests.support.e2e import TINY_CORA, Proc, compose_command, service_env, wait_for
from tests.support.service import create_pg_database, drop_pg_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

REDIS_SERVER = "redis://127.0.0.1:6379"
REDIS_DB = 11  # the e2e tests' Redis database; this test has its own queue in it
OUTAGE_S = 8.0
JOBS = 3


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    try:
        redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_SERVER}: {exc}")
    db_url = create_pg_database("trainctl_outage")
    queue = f"trainctl-outage-{uuid.uuid4().hex[:8]}"
    home = tmp_path / "home"
    proxy = CuttableProxy()
    worker = None
    engine = None
    try:
        upgrade_head(db_url)
        env = service_env(
            DATABASE_URL=proxy.url(db_url),  # the worker's database goes through the proxy
            REDIS_URL=f"{REDIS_SERVER}/{REDIS_DB}",
            TRAINCTL_QUEUE=queue,
            TRAINCTL_HOME=str(home),
            TRAINCTL_WORKER_CONCURRENCY="1",
            TRAINCTL_HEARTBEAT_SECONDS="1",
            TRAINCTL_STALE_AFTER_SECONDS="10",
            TRAINCTL_CLAIM_RETRY_MAX_SECONDS="2",
        )
        worker = Proc("worker", compose_command("worker"), env, tmp_path)
        wait_for(lambda: "ready" in worker.log(200), 90, "the Celery worker to be ready", [worker])
        # The API reaches the database directly: the outage is the worker's.
        settings = Settings(
            DATABASE_URL=db_url,
            REDIS_URL=f"{REDIS_SERVER}/{REDIS_DB}",
            TRAINCTL_QUEUE=queue,
            TRAINCTL_HOME=str(home),
        )
        engine = make_engine(db_url)
        sessions = session_factory(engine)
        with session_scope(sessions) as session:
            key = create_owner_key(session, "outage")
        app = create_app(settings, dispatch=CeleryDispatcher(settings))
        with TestClient(app) as client:
            yield {
                "client": client,
                "auth": {"Authorization": f"Bearer {key}"},
                "proxy": proxy,
                "worker": worker,
                "sessions": sessions,
            }
    finally:
        proxy.restore()
        if worker is not None:
            worker.stop()
        proxy.close()
        if engine is not None:
            engine.dispose()
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{REDIS_DB}")
        client.delete(queue, f"_kombu.binding.{queue}")
        drop_pg_database(db_url)


def jobs(sessions) -> list[Job]:
    with sessions() as session:
        return list(session.scalars(select(Job).order_by(Job.created_at)))


def epochs(sessions, job_id: str) -> list[tuple[int, int]]:
    with sessions() as session:
        rows = session.execute(
            select(Metric.attempt, Metric.epoch)
            .where(Metric.job_id == job_id)
            .order_by(Metric.attempt, Metric.epoch)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_a_database_outage_strands_no_queued_job_and_a_running_one_rides_it_out(stack):
    client, auth, proxy, worker, sessions = (
        stack["client"],
        stack["auth"],
        stack["proxy"],
        stack["worker"],
        stack["sessions"],
    )
    # 1. The worker's database goes away; jobs are queued meanwhile.
    proxy.cut()
    ids = []
    for _ in range(JOBS):
        response = client.post("/jobs", json=TINY_CORA, headers=auth)
        assert response.status_code == 201, response.text
        ids.append(response.json()["id"])
    wait_for(
        lambda: "database unavailable" in worker.log(400),
        60,
        "the worker to try a claim while its database is down",
        [worker],
    )
    time.sleep(OUTAGE_S)
    assert [(j.status, j.attempt) for j in jobs(sessions)] == [("queued", 0)] * JOBS
    back_at = time.monotonic()
    proxy.restore()

    # 2. The first job trains; its database goes away again for a while.
    def training() -> bool:
        return any(a == 1 for a, _ in epochs(sessions, ids[0]))

    wait_for(training, 240, "the first job's first epoch", [worker], every=0.2)
    recovered_s = time.monotonic() - back_at
    proxy.cut()
    time.sleep(OUTAGE_S)
    proxy.restore()

    # 3. Every job runs, each in one attempt, every epoch recorded.
    def finished() -> list[Job] | None:
        rows = jobs(sessions)
        done = all(j.status in ("succeeded", "failed", "cancelled") for j in rows)
        return rows if done else None

    rows = wait_for(finished, 480, "every job to finish", [worker], every=0.5)
    assert [(j.status, j.attempt, j.error) for j in rows] == [("succeeded", 1, None)] * JOBS, (
        worker.log(80)
    )
    for job_id in ids:
        assert epochs(sessions, job_id) == [
            (1, e) for e in range(1, TINY_CORA["training"]["epochs"] + 1)
        ]
    print(f"first claim {recovered_s:.1f} s after the database came back")
