"""The job store on PostgreSQL and SQLite: claims race safely, upserts never duplicate, state
changes only happen from the states they are meant for, keys are stored hashed."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from store import queries
from store.db import make_engine, session_scope
from store.keys import authenticate, create_owner_key, get_or_create_owner, revoke_key
from store.models import ApiKey, Artifact, Job, Metric
from store.settings import Settings
from tests.support.service import VALID_SPEC


@pytest.fixture(params=["postgresql", "sqlite"])
def db_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")


def new_job(sessions: sessionmaker[Session], owner: str = "alice") -> str:
    with session_scope(sessions) as session:
        owner_id = get_or_create_owner(session, owner).id
        return queries.create_job(
            session, owner_id, VALID_SPEC, family="graphsage_skipgram", name="t"
        ).id


def claim(sessions: sessionmaker[Session], job_id: str, worker: str = "w1") -> Job | None:
    with session_scope(sessions) as session:
        return queries.claim_job(session, job_id, worker)


def test_claim_job_once(sessions):
    job_id = new_job(sessions)
    job = claim(sessions, job_id, "host-a")
    assert job is not None
    assert (job.status, job.attempt, job.worker) == ("running", 1, "host-a")
    assert job.started_at is not None
    assert claim(sessions, job_id, "host-b") is None  # a duplicate delivery does nothing
    with sessions() as session:
        assert queries.get_job(session, job_id).worker == "host-a"
    assert claim(sessions, "no-such-job") is None


def test_concurrent_claims_have_one_winner(sessions):
    job_id = new_job(sessions)
    barrier = threading.Barrier(8)
    results: list[Job | None] = []

    def worker(i: int) -> None:
        barrier.wait()
        results.append(claim(sessions, job_id, f"host-{i}"))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(results) == 8 and len(winners) == 1
    with sessions() as session:
        assert queries.get_job(session, job_id).attempt == 1


def test_upsert_metric_twice_keeps_one_row(sessions):
    job_id = new_job(sessions)
    for loss in (1.0, 0.5):
        with session_scope(sessions) as session:
            queries.upsert_metric(session, job_id, 1, 3, {"loss": loss, "bad": float("nan")})
    with sessions() as session:
        rows = session.scalars(select(Metric).where(Metric.job_id == job_id)).all()
        assert [(m.attempt, m.epoch, m.values) for m in rows] == [
            (1, 3, {"loss": 0.5, "bad": None})
        ]
        queries.upsert_metric(session, job_id, 2, 3, {"loss": 0.4})  # a retry is its own row
        session.commit()


def test_metrics_page_in_one_query(sessions):
    job_id = new_job(sessions)
    with session_scope(sessions) as session:
        owner_id = get_or_create_owner(session, "alice").id
        assert queries.metrics_page(session, job_id, owner_id + 1) is None  # not the owner's
        page = queries.metrics_page(session, job_id, owner_id)
        assert (page.attempt, page.status, page.rows) == (0, "queued", [])
    claim(sessions, job_id)
    with session_scope(sessions) as session:
        for epoch in (1, 2, 3):
            queries.upsert_metric(session, job_id, 1, epoch, {"loss": 1 / epoch, "n": epoch})
        queries.upsert_metric(session, job_id, 7, 1, {"loss": 9.0})  # another attempt
    with sessions() as session:
        page = queries.metrics_page(session, job_id, owner_id, after_epoch=1)
        assert (page.attempt, page.status) == (1, "running")
        assert [(e, json.loads(v)) for e, v in page.rows] == [
            (2, {"loss": 0.5, "n": 2}),
            (3, {"loss": 1 / 3, "n": 3}),
        ]
        assert len(queries.metrics_page(session, job_id, owner_id, limit=2).rows) == 2
        page = queries.metrics_page(session, job_id, owner_id, attempt=7)
        assert page.attempt == 7 and [e for e, _ in page.rows] == [1]


def test_step_metrics_upsert_and_page(sessions):
    job_id = new_job(sessions)
    claim(sessions, job_id)
    with session_scope(sessions) as session:
        owner_id = get_or_create_owner(session, "alice").id
        for step in (10, 20, 30):
            queries.upsert_metric_step(session, job_id, 1, step, step // 20, {"lr": step / 1e3})
        # A retry of the same step replaces it; NaN and inf, also nested, are stored as null.
        queries.upsert_metric_step(
            session, job_id, 1, 20, 1, {"lr": float("nan"), "hist": [float("inf"), 1.0]}
        )
        queries.upsert_metric_step(session, job_id, 2, 10, 0, {"lr": 9.0})  # another attempt
    with sessions() as session:
        page = queries.metric_steps_page(session, job_id, owner_id, after_step=10)
        assert (page.attempt, page.status) == (1, "running")
        assert [(s, e, json.loads(v)) for s, e, v in page.rows] == [
            (20, 1, {"lr": None, "hist": [None, 1.0]}),
            (30, 1, {"lr": 0.03}),
        ]
        assert [
            s for s, _, _ in queries.metric_steps_page(session, job_id, owner_id, limit=1).rows
        ] == [10]
        assert queries.metric_steps_page(session, job_id, owner_id, attempt=2).rows == [
            (10, 0, '{"lr": 9.0}')
        ]
        assert queries.metric_steps_page(session, job_id, owner_id + 1) is None


def test_upsert_artifact_replaces_and_delete_forgets(sessions):
    job_id = new_job(sessions)
    for size in (10, 20):
        with session_scope(sessions) as session:
            queries.upsert_artifact(
                session,
                job_id,
                kind="checkpoint",
                name="best.pt",
                path=f"{job_id}/best.pt",
                size=size,
                sha256="0" * 64,
                epoch=size,
                tag="best",
            )
    with session_scope(sessions) as session:
        (art,) = queries.list_artifacts(session, job_id, "checkpoint")
        assert (art.size, art.epoch, art.tag, art.meta) == (20, 20, "best", {})
        queries.upsert_artifact(
            session,
            job_id,
            kind="checkpoint",
            name="best.pt",
            path=f"{job_id}/best.pt",
            size=20,
            sha256="0" * 64,
            epoch=20,
            tag="best",
            meta={"monitor": "val_loss", "score": float("nan")},
        )
    with session_scope(sessions) as session:
        (art,) = queries.list_artifacts(session, job_id, "checkpoint")
        assert art.meta == {"monitor": "val_loss", "score": None}
        assert queries.find_artifact(session, job_id, kind="checkpoint", tag="best").id == art.id
        queries.delete_artifact(session, job_id, "best.pt")
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Artifact)) == 0


def test_finish_job_only_from_running(sessions):
    job_id = new_job(sessions)
    with session_scope(sessions) as session:
        assert queries.finish_job(session, job_id, "failed", "boom") is False  # still queued
        with pytest.raises(ValueError, match="allowed"):
            queries.finish_job(session, job_id, "running")
    claim(sessions, job_id)
    with session_scope(sessions) as session:
        queries.set_progress(session, job_id, 0.5)
        assert queries.finish_job(session, job_id, "succeeded") is True
        assert queries.finish_job(session, job_id, "failed", "late") is False
    with sessions() as session:
        job = queries.get_job(session, job_id)
        assert (job.status, job.progress, job.error) == ("succeeded", 1.0, None)
        assert job.finished_at >= job.started_at


def test_set_progress_is_clamped(sessions):
    job_id = new_job(sessions)
    claim(sessions, job_id)
    for value, expected in ((1.7, 1.0), (-3, 0.0), (0.25, 0.25)):
        with session_scope(sessions) as session:
            queries.set_progress(session, job_id, value)
        with sessions() as session:
            assert queries.get_job(session, job_id).progress == expected


def test_cancel_queued_running_and_finished(sessions):
    queued = new_job(sessions)
    with session_scope(sessions) as session:
        assert queries.request_cancel(session, queued) is True
        assert queries.get_job(session, queued).status == "cancelled"
    assert claim(sessions, queued) is None  # a cancelled job is never started

    running = new_job(sessions)
    claim(sessions, running)
    with session_scope(sessions) as session:
        assert queries.cancel_requested(session, running) is False
        assert queries.request_cancel(session, running) is True
        assert queries.cancel_requested(session, running) is True
        assert queries.get_job(session, running).status == "running"
        assert queries.requeue_job(session, running) is False  # cancelled, not retried
        assert queries.finish_job(session, running, "cancelled") is True
        assert queries.request_cancel(session, running) is False
        assert queries.cancel_requested(session, "gone") is True


def test_requeue_then_claim_is_the_next_attempt(sessions):
    job_id = new_job(sessions)
    claim(sessions, job_id, "host-a")
    with session_scope(sessions) as session:
        assert queries.requeue_job(session, job_id) is True
        assert queries.get_job(session, job_id).worker is None
    job = claim(sessions, job_id, "host-b")
    assert (job.attempt, job.worker) == (2, "host-b")


def test_list_jobs_newest_first_with_filters(sessions):
    ids = [new_job(sessions) for _ in range(5)]
    new_job(sessions, owner="bob")
    claim(sessions, ids[0])
    with sessions() as session:
        owner_id = get_or_create_owner(session, "alice").id
        jobs, count = queries.list_jobs(session, owner_id, offset=1, limit=2)
        assert count == 5 and [j.id for j in jobs] == ids[::-1][1:3]
        jobs, count = queries.list_jobs(session, owner_id, status="running")
        assert count == 1 and jobs[0].id == ids[0]
        assert queries.list_jobs(session, owner_id, family="other")[1] == 0


def test_keys_are_stored_hashed_and_can_be_revoked(sessions):
    with session_scope(sessions) as session:
        key = create_owner_key(session, "alice")
        second = create_owner_key(session, "alice")
    assert key.startswith("tc_") and len(key) > 40 and key != second
    with session_scope(sessions) as session:
        assert authenticate(session, key).name == "alice"
        assert authenticate(session, second).name == "alice"
        assert authenticate(session, key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert authenticate(session, "nonsense") is None
        stored = session.execute(select(ApiKey.prefix, ApiKey.key_hash)).all()
        assert all(key not in (prefix, digest) for prefix, digest in stored)
        assert revoke_key(session, key) is True
    with sessions() as session:
        assert authenticate(session, key) is None
        assert authenticate(session, second) is not None
    with sessions() as session, pytest.raises(ValueError, match="owner name"):
        get_or_create_owner(session, "../evil")


def test_sqlite_engine_uses_wal_and_foreign_keys(tmp_path: Path):
    engine = make_engine(f"sqlite:///{tmp_path}/sub/dir/x.db")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert conn.execute(text("PRAGMA busy_timeout")).scalar() > 0
    engine.dispose()


def test_settings_defaults_live_under_trainctl_home(monkeypatch, tmp_path):
    for var in (
        "DATABASE_URL",
        "TRAINCTL_ARTIFACT_ROOT",
        "TRAINCTL_UPLOAD_ROOT",
        "BROKER_URL",
        "REDIS_URL",
        "TRAINCTL_DATA_ROOT",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TRAINCTL_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", "/nonexistent")  # a field named `home` must not read $HOME
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path}/trainctl.db"
    assert settings.artifact_root == tmp_path / "runs"
    assert settings.upload_root == tmp_path / "datasets"
    assert settings.broker is None and settings.queue == "trainctl"
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", "/a:/b")
    monkeypatch.setenv("REDIS_URL", "redis://r:6379/0")
    settings = Settings()
    assert settings.data_roots == [Path("/a"), Path("/b")]
    assert settings.broker == "redis://r:6379/0"


def test_requeue_of_a_stale_job_spares_one_that_just_reported(sessions):
    from datetime import timedelta

    from store.models import utcnow

    job_id = new_job(sessions)
    claim(sessions, job_id)
    cutoff = utcnow() - timedelta(seconds=60)  # the heartbeat (claim) is newer than this
    with session_scope(sessions) as session:
        assert queries.stale_running_jobs(session, cutoff) == []
        assert not queries.requeue_job(session, job_id, stale_before=cutoff)
        assert not queries.cancel_stale_job(session, job_id, stale_before=cutoff)
    later = utcnow() + timedelta(seconds=1)  # now the worker counts as silent
    with session_scope(sessions) as session:
        assert queries.stale_running_jobs(session, later) == [job_id]
        assert queries.requeue_job(session, job_id, stale_before=later)
        assert queries.get_job(session, job_id).status == "queued"
