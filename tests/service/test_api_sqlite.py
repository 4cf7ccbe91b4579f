"""The same route tests on the embedded SQLite database (one machine, no PostgreSQL)."""

from __future__ import annotations

import pytest

from tests.service.test_api import *  # noqa: F403
from tests.service.test_api_files import *  # noqa: F403


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    return sqlite_url
