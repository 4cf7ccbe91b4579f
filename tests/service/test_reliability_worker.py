"""Issue 11 in the worker, against real PostgreSQL reached through a TCP proxy the test can cut
(items 1, 2 and 8; `docs/reliability.md`): a claim during an outage is tried again, never
dropped; a run rides out an outage with its reports buffered; stranded queued jobs are sent
again; failures are classed and retried by the job's policy; `resources.max_duration` stops a
run. The fake training command of `test_worker.py` stands in for `core.run`."""

from __future__ import annotations

import contextlib
import select as selectmod
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from store import queries
from store.db import make_engine, session_factory, session_scope
from store.keys import get_or_create_owner
from store.models import Artifact, Job, utcnow
from store.settings import Settings
from tests.service.test_worker import (
    FAKE_TRAINING,
    SPEC,
    assert_all_gone,
    job_row,
    metric_epochs,
    run_in_thread,
    run_pids,
)
from tests.support.e2e import wait_for
from worker.policy import FailureClass, RetryPolicy, classify
from worker.recovery import redispatch_stranded, requeue_orphans
from worker.runner import DB_UNAVAILABLE, DEFERRED, RETRY, Later, RunnerOptions, WorkerContext
from worker.runner import run_job as run_job_now


class CuttableProxy:
    """A TCP proxy to PostgreSQL that the test can cut: `cut()` closes every connection through
    it and refuses new ones (accepted, then closed at once: the client sees the server go away,
    as in a restart); `restore()` lets connections through again."""

    def __init__(self, host: str = "127.0.0.1", port: int = 5432):
        self.target = (host, port)
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = self.listener.getsockname()[1]
        self.down = threading.Event()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="pg-proxy")
        self._thread.start()

    def url(self, database_url: str) -> str:
        """`database_url` with its host and port replaced by the proxy's."""
        head, _, database = database_url.rpartition("/")
        scheme, _, _ = head.rpartition("@")
        return f"{scheme}@127.0.0.1:{self.port}/{database}"

    def cut(self) -> None:
        self.down.set()
        with self._lock:
            for sock in list(self._open):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._open.clear()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.closing.set()
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while not self.closing.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while not self.down.is_set():
                ready, _, _ = selectmod.select([a, b], [], [], 0.2)
                for src in ready:
                    data = src.recv(65536)
                    if not data:
                        return
                    (b if src is a else a).sendall(data)
        except OSError:
            return
        finally:
            with self._lock:
                for sock in (a, b):
                    self._open.discard(sock)
                    sock.close()


@pytest.fixture
def proxy() -> Iterator[CuttableProxy]:
    p = CuttableProxy()
    yield p
    p.close()


@pytest.fixture
def settings(tmp_path: Path, pg_url: str) -> Settings:
    return Settings(DATABASE_URL=pg_url, TRAINCTL_HOME=str(tmp_path / "home"))


@pytest.fixture
def proxied(proxy: CuttableProxy, pg_url: str) -> Iterator[sessionmaker[Session]]:
    """Sessions of the worker under test, through the proxy."""
    engine = make_engine(proxy.url(pg_url), connect_args={"connect_timeout": 3})
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "fake_training.py"
    path.write_text(FAKE_TRAINING)
    return path


def new_job(sessions: sessionmaker[Session], spec: dict | None = None) -> str:
    spec = spec or SPEC
    with session_scope(sessions) as session:
        owner_id = get_or_create_owner(session, "alice").id
        return queries.create_job(session, owner_id, spec, family=spec["family"], name="x").id


def context(
    settings: Settings,
    sessions: sessionmaker[Session],
    script: Path,
    mode: str = "ok",
    delay: float = 0.05,
) -> WorkerContext:
    def command(spec: Path, out: Path, devices: int, resume: bool) -> list[str]:
        return [sys.executable, str(script), str(out), mode, "4", str(delay)]

    options = RunnerOptions(poll_seconds=0.05, heartbeat_seconds=0.2, cancel_grace_seconds=1.0)
    return WorkerContext(settings=settings, sessions=sessions, options=options, command=command)


# --- item 1: a claim during an outage; stranded queued jobs -------------------------------------


def test_a_claim_while_the_database_is_down_is_tried_again_not_dropped(
    settings, sessions, proxied, proxy, script
):
    job_id = new_job(sessions)
    ctx = context(settings, proxied, script)
    proxy.cut()
    started = time.monotonic()
    outcome = run_job_now(job_id, ctx)
    assert isinstance(outcome, Later) and outcome == DB_UNAVAILABLE
    assert time.monotonic() - started < 10  # fails fast, does not hang the worker
    job = job_row(sessions, job_id)
    assert (job.status, job.attempt) == ("queued", 0)
    proxy.restore()
    assert run_job_now(job_id, ctx) == "succeeded"  # the task's retry, once it is back
    assert metric_epochs(sessions, job_id) == [(1, 1), (1, 2), (1, 3), (1, 4)]


def test_the_task_retries_a_failed_claim_with_backoff(settings, sessions, monkeypatch):
    """The Celery task turns `DB_UNAVAILABLE` into `Task.retry` (a new message with a countdown
    of 1, 2, 4, ... s up to the cap), so the message is never acknowledged and lost."""
    from celery.exceptions import Retry

    from worker import tasks

    job_id = new_job(sessions)
    monkeypatch.setattr(tasks, "run_job", lambda job_id, ctx: Later(DB_UNAVAILABLE))
    ctx = WorkerContext(settings=settings.model_copy(update={"claim_retry_max_seconds": 4.0}),
                        sessions=sessions)  # fmt: skip
    monkeypatch.setattr(tasks, "context", lambda: ctx)
    sent: list[float] = []

    def fake_retry(self, *args, countdown=None, **kwargs):
        sent.append(countdown)
        raise Retry("retry", countdown)

    monkeypatch.setattr(tasks.run_job_task.__class__, "retry", fake_retry)
    for retries in range(5):
        tasks.run_job_task.push_request(retries=retries)
        try:
            with pytest.raises(Retry):
                tasks.run_job_task.run(job_id)
        finally:
            tasks.run_job_task.pop_request()
    assert sent == [1.0, 2.0, 4.0, 4.0, 4.0]
    assert tasks.claim_backoff(3, 30.0) == 8.0


def test_the_sweep_sends_again_a_job_queued_without_a_message(sessions):
    job_id = new_job(sessions)
    fresh = new_job(sessions)
    sent: list[str] = []
    assert redispatch_stranded(sessions, sent.append, after=60) == []  # both just sent
    with session_scope(sessions) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(dispatched_at=utcnow() - timedelta(minutes=5))
        )
        before = queries.get_job(session, job_id).updated_at
    assert redispatch_stranded(sessions, sent.append, after=60) == [job_id]
    assert sent == [job_id]
    assert redispatch_stranded(sessions, sent.append, after=60) == []  # once per period
    job = job_row(sessions, job_id)
    assert job.updated_at == before  # its place in the queue is kept
    assert job.dispatched_at > utcnow() - timedelta(seconds=30)
    assert job_row(sessions, fresh).status == "queued"


# --- item 2: a run rides out an outage ----------------------------------------------------------


def test_a_run_rides_out_a_database_outage_with_its_reports_buffered(
    settings, sessions, proxied, proxy, script
):
    job_id = new_job(sessions)
    ctx = context(settings, proxied, script, delay=0.6)
    thread, result = run_in_thread(job_id, ctx)
    try:
        wait_for(lambda: metric_epochs(sessions, job_id), 20, "the first epoch", every=0.05)
        proxy.cut()
        cut_at = time.monotonic()
        time.sleep(3.0)  # the run goes on: epochs 2-4 are written to metrics.jsonl meanwhile
        assert len(metric_epochs(sessions, job_id)) <= 2
        assert job_row(sessions, job_id).status == "running"  # not failed at the first error
        proxy.restore()
        thread.join(30)
    finally:
        proxy.restore()
        thread.join(30)
    assert result == ["succeeded"]
    job = job_row(sessions, job_id)
    assert (job.status, job.attempt, job.progress) == ("succeeded", 1, 1.0)
    assert metric_epochs(sessions, job_id) == [(1, 1), (1, 2), (1, 3), (1, 4)]
    with sessions() as session:
        names = session.scalars(select(Artifact.name).where(Artifact.job_id == job_id)).all()
    assert names == ["checkpoints/epoch-0004.pt"]  # created/deleted events applied in order
    assert time.monotonic() - cut_at < 30


def test_an_outage_longer_than_allowed_stops_the_run(settings, sessions, proxied, proxy, script):
    job_id = new_job(sessions)
    short = settings.model_copy(update={"db_outage_seconds": 1.0})
    ctx = context(short, proxied, script, mode="hang", delay=0.01)
    raised: list[BaseException] = []

    def run() -> None:
        try:
            run_job_now(job_id, ctx)
        except Exception as exc:  # the task fails; its message is acknowledged
            raised.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    wait_for(lambda: len(metric_epochs(sessions, job_id)) >= 4, 20, "4 epochs", every=0.05)
    pids = run_pids(settings.artifact_root / job_id)
    proxy.cut()
    thread.join(30)
    assert not thread.is_alive()
    assert [type(e).__name__ for e in raised] == ["OperationalError"]
    assert_all_gone(pids)  # no training process left behind
    assert job_row(sessions, job_id).status == "running"  # the orphan sweep requeues it


# --- item 8: failure classes, retry policy, max_duration ----------------------------------------


def test_failures_are_classed():
    assert classify("DatasetNotFound", "dataset 'x' not found") == FailureClass.USER
    assert classify("NonFiniteLossError", "the loss was nan") == FailureClass.USER
    assert classify("RuntimeError", "CUDA out of memory. Tried to allocate") == (
        FailureClass.OUT_OF_MEMORY
    )
    assert classify("RuntimeError", "connection reset by peer") == FailureClass.INFRASTRUCTURE
    assert classify(None, "Segmentation fault", 139) == FailureClass.INFRASTRUCTURE
    policy = RetryPolicy.of({"retry": {"max_attempts": 2, "on": ["infrastructure"]}})
    assert policy.retries("infrastructure", 1) and not policy.retries("infrastructure", 2)
    assert not policy.retries("user", 1)
    assert RetryPolicy.of({}).on == {"worker_lost"}  # a spec stored before `retry` existed


def with_retry(**retry) -> dict:
    return {**SPEC, "retry": {"backoff_seconds": 0.5, **retry}}


def test_an_infrastructure_failure_is_retried_a_user_error_is_not(settings, sessions, script):
    crash = new_job(sessions, with_retry(max_attempts=2, on=["infrastructure"]))
    ctx = context(settings, sessions, script, mode="crash")
    outcome = run_job_now(crash, ctx)
    assert isinstance(outcome, Later) and outcome == RETRY and outcome.delay == 0.5
    job = job_row(sessions, crash)
    assert (job.status, job.attempt, job.failure_class) == ("queued", 1, "infrastructure")
    assert "exited with code 139" in job.error
    assert run_job_now(crash, ctx) == "failed"  # attempt 2 of 2: no more
    job = job_row(sessions, crash)
    assert (job.status, job.attempt, job.failure_class) == ("failed", 2, "infrastructure")

    user = new_job(sessions, with_retry(max_attempts=5, on=["infrastructure"]))
    assert run_job_now(user, context(settings, sessions, script, mode="fail")) == "failed"
    job = job_row(sessions, user)
    assert (job.status, job.attempt, job.failure_class) == ("failed", 1, "user")


def test_a_lost_worker_is_retried_up_to_max_attempts(sessions):
    job_id = new_job(sessions, with_retry(max_attempts=2))
    sent: list[str] = []
    for attempt in (1, 2):
        with session_scope(sessions) as session:
            assert queries.claim_job(session, job_id, "gone") is not None
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(updated_at=utcnow() - timedelta(minutes=5))
            )
        requeue_orphans(sessions, sent.append, stale_after=60)
        job = job_row(sessions, job_id)
        if attempt == 1:
            assert (job.status, sent) == ("queued", [job_id])
    assert (job.status, job.failure_class, sent) == ("failed", "worker_lost", [job_id])
    assert "retry.max_attempts (2)" in job.error


def test_max_duration_stops_the_run_and_fails_the_job(settings, sessions, script):
    spec = {**SPEC, "resources": {"max_duration": 1}, "retry": {"max_attempts": 1}}
    job_id = new_job(sessions, spec)
    started = time.monotonic()
    outcome = run_job_now(job_id, context(settings, sessions, script, mode="hang", delay=0.01))
    assert outcome == "failed"
    assert time.monotonic() - started < 15
    job = job_row(sessions, job_id)
    assert job.failure_class == "timeout"
    assert "ran longer than resources.max_duration (1 s)" in job.error
    assert_all_gone(run_pids(settings.artifact_root / job_id))


def test_the_running_limit_defers_the_claim(settings, sessions, script):
    limited = settings.model_copy(update={"max_running_per_owner": 1})
    first, second = new_job(sessions), new_job(sessions)
    with session_scope(sessions) as session:
        assert queries.claim_job(session, first, "other-worker") is not None
    outcome = run_job_now(second, context(limited, sessions, script))
    assert isinstance(outcome, Later) and outcome == DEFERRED
    assert outcome.delay == limited.quota_retry_after_seconds
    assert job_row(sessions, second).status == "queued"


# --- item 11: stored errors without server internals --------------------------------------------

LEAKY_FAILURE = textwrap.dedent(
    """
    import json, os, sys
    out = sys.argv[1]
    root = os.environ["TRAINCTL_DATA_ROOT"].split(os.pathsep)[-1]
    with open(os.path.join(out, "error.json"), "w") as f:
        json.dump({"type": "DatasetNotFound", "message": f"dataset 'Nope' not found; looked in: "
                   f"{root}; wrote {out}/checkpoints/last.pt"}, f)
    sys.exit(1)
    """
)


def test_a_failed_jobs_stored_error_names_no_server_path(settings, sessions, tmp_path):
    script = tmp_path / "leaky.py"
    script.write_text(LEAKY_FAILURE)
    roots = Settings(
        DATABASE_URL=settings.database_url,
        TRAINCTL_HOME=str(settings.home),
        TRAINCTL_DATA_ROOT="/work/shared/data",
    )
    job_id = new_job(sessions)

    def command(spec: Path, out: Path, devices: int, resume: bool) -> list[str]:
        return [sys.executable, str(script), str(out)]

    ctx = WorkerContext(settings=roots, sessions=sessions, command=command,
                        options=RunnerOptions(poll_seconds=0.05))  # fmt: skip
    assert run_job_now(job_id, ctx) == "failed"
    error = job_row(sessions, job_id).error
    assert error == (
        "DatasetNotFound: dataset 'Nope' not found; looked in: the data root; "
        "wrote checkpoints/last.pt"
    )
