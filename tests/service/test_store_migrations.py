"""Alembic is the only way the schema is made: up, down and up again on a fresh PostgreSQL
database, and the models agree with the migrations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.orm import Session

from store.db import make_engine
from store.migrate import downgrade, head_revision, upgrade, upgrade_head
from store.models import Artifact, Base, MetricStep
from tests.support.service import create_pg_database, drop_pg_database

TABLES = {
    "owners",
    "api_keys",
    "jobs",
    "job_groups",
    "metrics",
    "metric_steps",
    "artifacts",
    "datasets",
}
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade_on_postgresql():
    url = create_pg_database("trainctl_migrate")
    try:
        upgrade_head(url)
        assert _tables(url) == TABLES
        downgrade(url, "base")
        assert _tables(url) == set()
        upgrade_head(url)
        upgrade_head(url)  # already at head: nothing to do
        assert _tables(url) == TABLES
        engine = make_engine(url)
        with engine.connect() as conn:
            context = MigrationContext.configure(conn)
            assert context.get_current_revision() == head_revision()
            assert compare_metadata(context, Base.metadata) == []  # models == migrations
        engine.dispose()
    finally:
        drop_pg_database(url)


def test_upgrade_downgrade_on_sqlite(tmp_path):
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade_head(url)
    assert _tables(url) == TABLES
    downgrade(url)
    assert _tables(url) == set()
    upgrade_head(url)
    assert _tables(url) == TABLES
    engine = make_engine(url)
    with engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    engine.dispose()


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_0002_keeps_old_artifact_rows_with_empty_meta_and_goes_back(backend, tmp_path):
    """Rows recorded before `artifacts.meta` read as `{}`; down to 0001 and up again keeps them."""
    if backend == "postgresql":
        url = create_pg_database("trainctl_migrate")
    else:
        url = f"sqlite:///{tmp_path}/m.db"
    engine = make_engine(url)
    try:
        upgrade(url, "0001")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO owners (name, created_at) VALUES ('a', :t)"), {"t": NOW})
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner_id, family, name, spec, status, created_at, "
                    "updated_at, run_dir) VALUES ('j', 1, 'f', 'n', '{}', 'succeeded', :t, :t, 'j')"
                ),
                {"t": NOW},
            )
            conn.execute(
                text(
                    "INSERT INTO artifacts (job_id, kind, name, path, size, sha256, created_at) "
                    "VALUES ('j', 'node_ids', 'node_ids.csv', 'j/node_ids.csv', 3, '', :t)"
                ),
                {"t": NOW},
            )
        upgrade_head(url)
        with Session(engine) as session:
            (artifact,) = session.scalars(select(Artifact)).all()
            assert (artifact.kind, artifact.meta) == ("node_ids", {})
            session.add(MetricStep(job_id="j", attempt=1, step=10, epoch=1, values={"lr": 0.1}))
            session.commit()
        downgrade(url, "0001")
        assert "metric_steps" not in _tables(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM artifacts")).scalars().all() == [
                "node_ids.csv"
            ]
        upgrade_head(url)
        assert _tables(url) == TABLES
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_pg_database(url)


def test_0003_adds_the_job_phase_and_sqlite_keeps_rows_going_back(tmp_path):
    """0003 alters `jobs` in place: on SQLite a table rebuild would cascade-delete the jobs'
    metrics and artifacts."""
    url = f"sqlite:///{tmp_path}/m.db"
    upgrade_head(url)
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO owners (name, created_at) VALUES ('a', :t)"), {"t": NOW})
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner_id, family, name, spec, status, created_at, "
                    "updated_at, run_dir, phase) VALUES ('j', 1, 'f', 'n', '{}', 'running', :t, "
                    ":t, 'j', 'training')"
                ),
                {"t": NOW},
            )
            conn.execute(
                text(
                    'INSERT INTO metrics (job_id, attempt, epoch, "values", created_at) '
                    "VALUES ('j', 1, 1, '{}', :t)"
                ),
                {"t": NOW},
            )
        downgrade(url, "0002")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM metrics")).scalar() == 1
        upgrade_head(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT phase FROM jobs")).scalar() is None
            assert conn.execute(text("SELECT count(*) FROM metrics")).scalar() == 1
    finally:
        engine.dispose()
