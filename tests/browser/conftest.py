"""Fixtures of the browser tests: Debian's Chromium driven by the Python `playwright` package
(never a browser build of Playwright's own: no `playwright install`), the service fixtures of
`tests/support/service.py`, and screenshots saved under `$TRAINCTL_TEST_ARTIFACTS/browser`
(default `./test-artifacts/browser`, not committed).

Every test here skips, saying why, where Chromium or playwright is missing.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.service import *  # noqa: F403

CHROMIUM = os.environ.get("TRAINCTL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO = Path(__file__).resolve().parents[2]
REDIS_SERVER = "redis://127.0.0.1:6379"
REDIS_DB = 12  # the browser tests' own database number (the e2e tests use 11)


def artifacts_dir() -> Path:
    root = Path(os.environ.get("TRAINCTL_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path = root / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (`/usr/bin/chromium`), shared by a module's tests. Module scope, not
    session: Playwright's sync API runs an asyncio loop in the main thread while it is open,
    and a later module's `asyncio.run` fails beside it."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install -e '.[test]')")
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)) and not shutil.which(
        CHROMIUM
    ):
        pytest.skip(
            f"no Chromium at {CHROMIUM} (apt-get install -y --no-install-recommends chromium)"
        )
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh tab (its own sessionStorage); any uncaught page error fails the test. Ask for the
    server's fixture before this one: the tab (and its open streams) closes first."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.fixture
def shot(request: pytest.FixtureRequest) -> Callable[[Any, str], Path]:
    """`shot(page, "jobs")`: a full-page screenshot `<test>-jobs.png` in the artifacts folder."""
    folder = artifacts_dir()

    def take(page: Any, name: str) -> Path:
        path = folder / f"{request.node.name}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


# --- the production stack: API and Celery worker processes (as tests/e2e) ----------------------


@dataclass
class Stack:
    url: str
    key: str
    db_url: str
    api: Any  # tests.support.e2e.Api
    procs: list[Any]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`trainctl api` and `trainctl worker` (docker-compose.yml's commands) on a throwaway
    PostgreSQL database and a Redis queue of their own; an API key of the owner `ui`."""
    import redis

    from tests.support.e2e import (
        CLI,
        Api,
        Proc,
        compose_command,
        free_port,
        healthy,
        service_env,
        wait_for,
    )
    from tests.support.service import create_pg_database, drop_pg_database

    try:
        redis.Redis.from_url(REDIS_SERVER, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_SERVER}: {exc}")
    home = tmp_path_factory.mktemp("ui-home")
    db_url = create_pg_database("trainctl_ui")
    queue = f"trainctl-ui-{uuid.uuid4().hex[:8]}"
    port = free_port()
    env = service_env(
        DATABASE_URL=db_url,
        REDIS_URL=f"{REDIS_SERVER}/{REDIS_DB}",
        TRAINCTL_QUEUE=queue,
        TRAINCTL_HOME=str(home),
        TRAINCTL_API_HOST="127.0.0.1",
        TRAINCTL_API_PORT=str(port),
        TRAINCTL_WORKER_CONCURRENCY="2",
        TRAINCTL_CANCEL_GRACE_SECONDS="5",
    )
    procs: list[Any] = []
    api = None
    try:
        migrate = Proc("migrate", compose_command("migrate"), env, home)
        assert migrate.popen.wait(120) == 0, migrate.log()
        keys = Proc("keys", [*CLI, "keys", "create", "ui"], env, home)
        assert keys.popen.wait(60) == 0, keys.log()
        key = keys.log().splitlines()[-1].strip()
        procs.append(Proc("api", compose_command("api"), env, home))
        procs.append(Proc("worker", compose_command("worker"), env, home))
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(url), 60, "the API to answer /healthz", procs)
        wait_for(lambda: "ready" in procs[1].log(200), 60, "the Celery worker to be ready", procs)
        api = Api(url, key)
        yield Stack(url, key, db_url, api, procs)
    finally:
        if api is not None:
            api.close()
        for proc in reversed(procs):
            proc.stop()
        client = redis.Redis.from_url(f"{REDIS_SERVER}/{REDIS_DB}")
        client.delete(queue, f"_kombu.binding.{queue}")
        drop_pg_database(db_url)
