"""Alembic is the only way the schema is made: up, down and up again on a fresh PostgreSQL
database, and the models agree with the migrations."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from store.db import make_engine
from store.migrate import downgrade, head_revision, upgrade_head
from store.models import Base
from tests.support.service import create_pg_database, drop_pg_database

TABLES = {"owners", "api_keys", "jobs", "metrics", "artifacts", "datasets"}


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
