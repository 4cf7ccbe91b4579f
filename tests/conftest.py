"""Fixtures every layer shares: `@pytest.mark.gpu` tests skip cleanly where CUDA is missing.

The core and family tests need only `pip install -e .` (no service extras); the service and
end-to-end fixtures live in `tests/service/conftest.py` and `tests/e2e/conftest.py`.
"""

from tests.support.gpu import pytest_collection_modifyitems  # noqa: F401
