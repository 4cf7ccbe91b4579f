"""A broker that accepts connections but never answers (a local listener this test starts):
`POST /jobs` answers 503 within seconds instead of hanging, other routes keep answering, the job
is not left queued without a message, and `/readyz` reports the queue unreachable."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.dispatch import CeleryDispatcher
from api.main import create_app
from store.models import Job
from store.settings import Settings
from tests.support.service import VALID_SPEC


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A TCP port on 127.0.0.1 that accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)  # kept open, never answered
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def hanging_client(tmp_path, db_url, engine, silent_broker) -> Iterator[TestClient]:
    settings = Settings(
        DATABASE_URL=db_url,
        TRAINCTL_HOME=str(tmp_path / "home"),
        REDIS_URL=f"redis://127.0.0.1:{silent_broker}/0",
        TRAINCTL_BROKER_TIMEOUT_SECONDS=1.0,
    )
    with TestClient(create_app(settings, dispatch=CeleryDispatcher(settings))) as client:
        yield client


def test_a_silent_broker_makes_submit_a_fast_503_and_fails_the_job(hanging_client, auth, sessions):
    done: list[float] = []

    def submit() -> None:
        started = time.monotonic()
        response = hanging_client.post("/jobs", json=VALID_SPEC, headers=auth)
        assert response.status_code == 503
        assert response.json()["detail"] == "job queue unavailable; the job was not queued"
        assert "127.0.0.1" not in response.text  # no broker address in what users see
        done.append(time.monotonic() - started)

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    assert hanging_client.get("/jobs", headers=auth).status_code == 200  # others still answer
    for t in threads:
        t.join(60)
    assert len(done) == 3 and max(done) < 30
    with sessions() as session:
        jobs = session.scalars(select(Job)).all()
    # Nothing waits in `queued` for a message that was never sent.
    assert [j.status for j in jobs] == ["failed"] * 3
    assert all("could not queue the job" in (j.error or "") for j in jobs)


def test_readyz_reports_a_silent_broker(hanging_client):
    response = hanging_client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["detail"] == "job queue unreachable"
