"""Fixtures of the family tests: a processed-data cache and one CPU thread per test process."""

from tests.support.graphs import gt_cache, gt_env, one_thread  # noqa: F401
