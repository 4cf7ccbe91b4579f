"""Apply the Alembic migrations programmatically (API and worker start-up, tests).

The migrations directory is found next to this package, so this works from any directory.
Concurrent start-ups are serialised: a PostgreSQL advisory lock, or a lock file beside a SQLite
database.
"""

from __future__ import annotations

import fcntl
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.pool import NullPool

from store.db import make_engine, normalize_url
from store.settings import get_settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_PG_LOCK_KEY = 0x7472_6E63  # "trnc": any constant shared by every trainctl process


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for `url` (default: `DATABASE_URL`) without an ini file."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    url = normalize_url(url or get_settings().database_url)
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest revision in `migrations/`."""
    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


def current_revision(connection: Connection) -> str | None:
    """The revision the database is at (None: not migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_head(url: str | None = None) -> None:
    """Bring the database at `url` (default: `DATABASE_URL`) to the newest revision."""
    upgrade(url, "head")


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Bring the database at `url` (default: `DATABASE_URL`) up to `revision`."""
    _run(url, lambda cfg: command.upgrade(cfg, revision))


def downgrade(url: str | None = None, revision: str = "base") -> None:
    """Take the database at `url` back to `revision` (default: empty)."""
    _run(url, lambda cfg: command.downgrade(cfg, revision))


def _run(url: str | None, step: Callable[[Config], None]) -> None:
    cfg = alembic_config(url)
    engine = make_engine(cfg.get_main_option("sqlalchemy.url"), poolclass=NullPool)
    try:
        with engine.connect() as conn, _migration_lock(engine, conn):
            cfg.attributes["connection"] = conn
            step(cfg)
            conn.commit()
    finally:
        engine.dispose()


@contextmanager
def _migration_lock(engine: Engine, conn: Connection) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_LOCK_KEY})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_LOCK_KEY})
            conn.commit()
        return
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lockfile:
        fcntl.flock(lockfile, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lockfile, fcntl.LOCK_UN)
