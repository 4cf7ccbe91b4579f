# --- core fixtures and the gpu marker: tests/conftest_core.py ------------------------------------
from tests.conftest_core import *  # noqa: E402, F403
from tests.conftest_core import pytest_collection_modifyitems  # noqa: F401

# --- service (store, API) fixtures: tests/conftest_service.py ------------------------------------
from tests.conftest_service import *  # noqa: E402, F403
