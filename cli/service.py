"""Running the service: `trainctl up` (everything on one machine), or its parts for
production: `trainctl migrate`, `trainctl api`, `trainctl worker`; and `trainctl keys`.

`docker-compose.yml` runs exactly these commands; the end-to-end tests read them from there.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from store.settings import Settings

log = logging.getLogger(__name__)

SOURCE_ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_SPEC = SOURCE_ROOT / "examples" / "cora-graphsage.yaml"
CREDENTIALS_FILE = "credentials"
LOCAL_OWNER = "local"
STARTUP_TIMEOUT_S = 120.0
# How long `up` waits for its children after asking them to stop: a worker stops its training
# run within its cancel grace period, then requeues the job.
STOP_TIMEOUT_S = 30.0


def _quiet_logs(migrations: bool = False) -> None:
    """Keep the service's INFO log to what an operator reads (call before importing
    alembic, which logs as it loads its plugins); with `migrations`, no INFO lines of Alembic's
    at all (for commands whose output is their result: `up`, `keys`)."""
    names = ["alembic.runtime.plugins", "httpx"] + (["alembic"] if migrations else [])
    for name in names:
        logging.getLogger(name).setLevel(logging.WARNING)


# --- migrate, api, worker -----------------------------------------------------------------------


@click.command()
def migrate() -> None:
    """Bring the database (DATABASE_URL, default SQLite under TRAINCTL_HOME) to the newest
    schema."""
    _quiet_logs()
    from store.migrate import upgrade_head
    from store.settings import get_settings

    settings = get_settings()
    upgrade_head(settings.database_url)
    click.echo(f"database at the newest migration: {_redact(settings.database_url)}")


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="TRAINCTL_API_HOST")
@click.option("--port", default=8000, show_default=True, envvar="TRAINCTL_API_PORT")
@click.option("--workers", default=1, show_default=True, help="uvicorn worker processes")
def api(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API (applies migrations at start-up)."""
    import uvicorn

    _quiet_logs()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        proxy_headers=True,
        # Metric streams stay open; do not wait for them for ever on shutdown.
        timeout_graceful_shutdown=5,
        log_config=None,
    )


@click.command()
@click.option(
    "-Q",
    "--queue",
    default=None,
    envvar="TRAINCTL_QUEUE",
    help="Queue to consume (default: TRAINCTL_QUEUE, else 'trainctl'); the API sends to "
    "its TRAINCTL_QUEUE.",
)
@click.option(
    "-c",
    "--concurrency",
    default=1,
    show_default=True,
    envvar="TRAINCTL_WORKER_CONCURRENCY",
    help="Jobs run at once (each a training process group).",
)
@click.option("--loglevel", default="INFO", show_default=True)
def worker(queue: str | None, concurrency: int, loglevel: str) -> None:
    """Run a Celery worker that trains the queued jobs (applies migrations first)."""
    _quiet_logs()
    from store.migrate import upgrade_head
    from store.settings import get_settings
    from worker.app import make_celery
    from worker.tasks import configure

    settings = get_settings()
    if queue:
        settings = settings.model_copy(update={"queue": queue})
    upgrade_head(settings.database_url)
    configure(settings)  # the orphan sweep dispatches to this queue too
    app = make_celery(settings)
    app.worker_main(
        [
            "worker",
            "--queues",
            settings.queue,
            "--concurrency",
            str(concurrency),
            # Tasks only supervise a child process group: threads suffice, and they share the
            # worker's shutdown flag (a warm shutdown stops the runs and requeues their jobs).
            "--pool",
            "threads",
            "--hostname",
            f"trainctl-{os.getpid()}@{socket.gethostname()}",
            "--loglevel",
            loglevel,
            "--without-gossip",
            "--without-mingle",
        ]
    )


# --- keys ---------------------------------------------------------------------------------------


@click.group()
def keys() -> None:
    """API keys of the service."""


def _admin_settings() -> Settings:
    """The settings of an admin command (`keys ...`), whose output is its result only: the
    migrations it applies first log nothing below WARNING."""
    _quiet_logs(migrations=True)
    from store.settings import get_settings

    return get_settings()


@keys.command("create")
@click.argument("owner")
def create_key(owner: str) -> None:
    """Create an API key for OWNER (created if new); the key is shown once, on the last line."""
    settings = _admin_settings()
    try:
        key = _new_key(settings, owner)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"API key for {owner} (shown once; send it as 'Authorization: Bearer <key>'):")
    click.echo(key)


@keys.command("list")
@click.argument("owner", required=False)
def list_keys(owner: str | None) -> None:
    """List the API keys (of OWNER): prefix, owner, created, revoked. Keys are never shown."""
    from store.keys import list_keys as stored_keys

    with _admin_session() as session:
        rows = stored_keys(session, owner)
    if not rows:
        click.echo("no API keys" + (f" of {owner}" if owner else ""))
        return
    table = [
        (
            k.prefix,
            k.owner,
            k.created_at.isoformat()[:19],
            k.revoked_at.isoformat()[:19] if k.revoked_at else "",
        )
        for k in rows
    ]
    widths = [
        max(len(r[i]) for r in [("PREFIX", "OWNER", "CREATED", "REVOKED"), *table])
        for i in range(4)
    ]
    for row in [("PREFIX", "OWNER", "CREATED", "REVOKED"), *table]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@keys.command("revoke")
@click.argument("prefix")
def revoke(prefix: str) -> None:
    """Revoke the key starting with PREFIX (as `keys list` shows it; the whole key works too).
    Requests with it are refused from then on."""
    from store.keys import PREFIX_LEN, revoke_key

    if len(prefix) < PREFIX_LEN:
        raise click.BadParameter(
            f"give the key's first {PREFIX_LEN} characters, as `trainctl keys list` shows them",
            param_hint="PREFIX",
        )
    with _admin_session() as session:
        revoked = revoke_key(session, prefix)
    if not revoked:
        raise click.ClickException(f"no active key with prefix {prefix[:PREFIX_LEN]}")
    click.echo(f"revoked {prefix[:PREFIX_LEN]}")


@contextmanager
def _admin_session() -> Iterator[Session]:
    """A session on the migrated database, committed at the end."""
    from store.db import make_engine, session_factory, session_scope
    from store.migrate import upgrade_head

    settings = _admin_settings()
    upgrade_head(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(session_factory(engine)) as session:
            yield session
    finally:
        engine.dispose()


def _new_key(settings: Settings, owner: str) -> str:
    from store.db import make_engine, session_factory, session_scope
    from store.keys import create_owner_key
    from store.migrate import upgrade_head

    upgrade_head(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with session_scope(session_factory(engine)) as session:
            return create_owner_key(session, owner)
    finally:
        engine.dispose()


# --- up -----------------------------------------------------------------------------------------


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True)
@click.option("-c", "--concurrency", default=1, show_default=True, help="Jobs run at once.")
@click.option(
    "--example",
    is_flag=True,
    help="Once up, submit examples/cora-graphsage.yaml and follow its metrics.",
)
def up(host: str, port: int, concurrency: int, example: bool) -> None:
    """Run the whole service on this machine: the API and a worker, until Ctrl-C.

    Without DATABASE_URL and REDIS_URL/BROKER_URL it needs no server: SQLite and a file-system
    queue under TRAINCTL_HOME (default ~/.trainctl). A key for the owner 'local' is written to
    TRAINCTL_HOME/credentials, where the other commands find it.
    """
    _quiet_logs(migrations=True)
    from store.migrate import upgrade_head
    from store.settings import get_settings

    settings = get_settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    mode = "PostgreSQL/Redis" if settings.broker else "embedded (SQLite, file-system queue)"
    click.echo(f"trainctl: {mode}; database {_redact(settings.database_url)}")
    upgrade_head(settings.database_url)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    credentials, key = _write_credentials(settings, url)

    logs = settings.home / "logs"
    logs.mkdir(exist_ok=True)
    cli = [sys.executable, "-m", "cli.main"]
    children = {
        "api": _spawn([*cli, "api", "--host", host, "--port", str(port)], logs / "api.log"),
        "worker": _spawn([*cli, "worker", "--concurrency", str(concurrency)], logs / "worker.log"),
    }
    signals = 0

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal signals
        signals += 1
        if signals == 1:
            raise KeyboardInterrupt
        click.echo("trainctl: stopping now", err=True)  # a second Ctrl-C: do not wait
        for proc in children.values():
            if proc.poll() is None:
                proc.kill()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    code = 0
    try:
        _wait_healthy(url, children, logs)
        click.echo(f"trainctl is up at {url}; Ctrl-C stops it")
        click.echo(f"  API key in {credentials}; service logs in {logs}")
        if example:
            _run_example(url, key)
        while True:
            for name, proc in children.items():
                if proc.poll() is not None:
                    raise click.ClickException(_exited(name, proc, logs))
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except click.ClickException as exc:
        exc.show()
        code = 1
    finally:
        click.echo("trainctl: stopping (a running job goes back to the queue)", err=True)
        _stop_all(list(children.values()))
    sys.exit(code)


def _run_example(url: str, key: str) -> None:
    from cli.client import ApiClient, follow_job, submit_spec

    client = ApiClient(url, key)
    job = submit_spec(client, EXAMPLE_SPEC, ())
    click.echo(f"submitted {EXAMPLE_SPEC.name} as job {job['id']}")
    try:
        follow_job(client, job["id"])  # ends with the result block: what to download, and how
    except click.ClickException as exc:
        exc.show()


def _write_credentials(settings: Settings, url: str) -> tuple[Path, str]:
    """Reuse the local key if it is still valid, else create one; write URL and key to the
    credentials file. Returns the file and the key."""
    from store.db import make_engine, session_factory
    from store.keys import authenticate

    path = settings.home / CREDENTIALS_FILE
    key = None
    if path.is_file():
        try:
            key = json.loads(path.read_text()).get("api_key")
        except ValueError:
            key = None
    if key:
        engine = make_engine(settings.database_url)
        try:
            with session_factory(engine)() as session:
                if authenticate(session, key) is None:
                    key = None
        finally:
            engine.dispose()
    key = key or _new_key(settings, LOCAL_OWNER)
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    tmp.write_text(json.dumps({"url": url, "api_key": key}, indent=2) + "\n")
    tmp.replace(path)
    return path, key


def _spawn(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    from worker.process import die_with_parent

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SOURCE_ROOT), env.get("PYTHONPATH")) if p)
    with log_path.open("ab") as log:
        # Own process group: Ctrl-C reaches `up` alone, which stops the children in order.
        return subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=die_with_parent,
        )


def _exited(name: str, proc: subprocess.Popen[bytes], logs: Path) -> str:
    """Why a child of `up` is gone: its exit code and the end of its log."""
    log_path = logs / f"{name}.log"
    try:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
    except OSError:
        tail = ""
    return f"{name} exited with code {proc.returncode}; the end of {log_path}:\n{tail}"


def _wait_healthy(url: str, children: dict[str, subprocess.Popen[bytes]], logs: Path) -> None:
    """Return once the API answers `/healthz`; ClickException if a child exits first."""
    import httpx

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        for name, proc in children.items():
            if proc.poll() is not None:
                raise click.ClickException(_exited(name, proc, logs))
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise click.ClickException(f"the API did not answer at {url} in {STARTUP_TIMEOUT_S:.0f}s")


def _stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not stop in %.0fs; killing it", proc.pid, STOP_TIMEOUT_S)
            proc.kill()
            proc.wait()


def _redact(url: str) -> str:
    """`url` without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url
