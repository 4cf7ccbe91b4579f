"""Fixtures of the service tests (store and API): real PostgreSQL, SQLite, an app, API keys.

PostgreSQL: a throwaway database `trainctl_test_<random>` per test session, made through the
`postgres` maintenance database at `TRAINCTL_TEST_PG` (default
`postgresql://postgres@127.0.0.1:5432`), migrated once, dropped at the end. Each test starts
from empty tables.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvicorn
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from store.db import make_engine, session_factory, session_scope
from store.keys import create_owner_key
from store.migrate import upgrade_head
from store.models import Base
from store.settings import Settings

PG_SERVER = os.environ.get("TRAINCTL_TEST_PG", "postgresql://postgres@127.0.0.1:5432")

# A spec the API accepts; the smallest valid one.
VALID_SPEC = {
    "family": "graphsage_skipgram",
    "name": "t",
    "data": {"format": "planetoid", "name": "Cora"},
    "training": {"epochs": 2},
}


# --- databases ----------------------------------------------------------------------------------


def create_pg_database(prefix: str = "trainctl_test") -> str:
    """A new empty PostgreSQL database; its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {PG_SERVER}: {exc}")
    return f"{PG_SERVER}/{name}"


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A migrated throwaway PostgreSQL database for this test session."""
    url = create_pg_database()
    try:
        upgrade_head(url)
        yield url
    finally:
        drop_pg_database(url)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite file for this test session."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'trainctl.db'}"
    upgrade_head(url)
    return url


@pytest.fixture
def db_url(pg_url: str) -> str:
    """The database the service tests run against (a module may override it with SQLite)."""
    return pg_url


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on `db_url`; every table is emptied after the test."""
    engine = make_engine(db_url)
    yield engine
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return session_factory(engine)


# --- the API ------------------------------------------------------------------------------------


class RecordingDispatcher:
    """Records the job ids the API queues (the Celery path is tested end to end elsewhere)."""

    def __init__(self) -> None:
        self.job_ids: list[str] = []
        self.fail = False

    def __call__(self, job_id: str) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.job_ids.append(job_id)


@pytest.fixture
def service_settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        DATABASE_URL=db_url,
        TRAINCTL_HOME=str(tmp_path / "home"),
        TRAINCTL_MAX_UPLOAD_BYTES=64 * 1024,
        TRAINCTL_STREAM_POLL_SECONDS=0.02,
    )


@pytest.fixture
def dispatched() -> RecordingDispatcher:
    return RecordingDispatcher()


@pytest.fixture
def client(
    service_settings: Settings, dispatched: RecordingDispatcher, engine: Engine
) -> Iterator[TestClient]:
    """A client of an app on the test database (migrated at start-up, as in production)."""
    app = create_app(service_settings, dispatch=dispatched)
    with TestClient(app) as client:
        yield client


def owner_key(sessions: sessionmaker[Session], owner: str) -> str:
    with session_scope(sessions) as session:
        return create_owner_key(session, owner)


@pytest.fixture
def api_key(sessions: sessionmaker[Session]) -> str:
    """A key of the owner `alice`."""
    return owner_key(sessions, "alice")


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def other_auth(sessions: sessionmaker[Session]) -> dict[str, str]:
    """Headers of another owner, `mallory`."""
    return {"Authorization": f"Bearer {owner_key(sessions, 'mallory')}"}


# --- the API over HTTP, and the CLI against it -------------------------------------------------


@pytest.fixture
def api_url(
    service_settings: Settings, dispatched: RecordingDispatcher, engine: Engine
) -> Iterator[str]:
    """The API served over HTTP (uvicorn in a thread) on a free local port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(service_settings, dispatch=dispatched)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


@pytest.fixture
def cli(api_url: str, api_key: str) -> Any:
    """`cli("status", JOB)`: a `trainctl` command run in-process against `api_url` as alice."""
    from cli.main import main as trainctl

    def run(*args: str, input: str | None = None) -> Result:
        env = {"TRAINCTL_URL": api_url, "TRAINCTL_API_KEY": api_key, "TRAINCTL_HOME": None}
        return CliRunner().invoke(trainctl, list(args), env=env, input=input)

    return run
