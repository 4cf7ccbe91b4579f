"""Service fixtures (real PostgreSQL, SQLite, an app, API keys): `tests/support/service.py`."""

from tests.support.service import *  # noqa: F403
