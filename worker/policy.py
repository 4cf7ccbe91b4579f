"""Which failures are retried: failure classes and the spec's `retry` section.

A failed attempt is put in one class:

- `user`: the job itself is wrong (a dataset that is not there or does not parse, a spec the
  core refuses, a monitored metric the family does not report, a NaN/Inf loss): running it
  again gives the same error, so it is never retried;
- `out_of_memory`: CUDA or host memory ran out;
- `timeout`: the attempt ran past `resources.max_duration`;
- `worker_lost`: the worker stopped reporting (killed, machine gone; `worker.recovery`);
- `infrastructure`: anything else on our side (a rank killed by a signal, a collective that
  lost its peer, the worker's own error).

A job's spec may carry `retry: {max_attempts, on, backoff_seconds}` (`core.spec.common.
RetrySpec`: by default up to 3 attempts after `worker_lost` and `infrastructure` failures);
a stored spec without one gets `DEFAULT_RETRY`. A preempted attempt (the worker shutting down,
SIGTERM) is always requeued: it is not a failure of the job.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class FailureClass(StrEnum):
    USER = "user"
    OUT_OF_MEMORY = "out_of_memory"
    TIMEOUT = "timeout"
    WORKER_LOST = "worker_lost"
    INFRASTRUCTURE = "infrastructure"


# `error.json` types (`core.run.write_error`: the exception's class name) that are the job's own
# fault. Names, not imports: the worker classifies what another process wrote.
USER_ERROR_TYPES = frozenset(
    {
        "SpecError",
        "DataError",
        "TableError",
        "TextDataError",
        "DatasetNotFound",
        "MonitorError",
        "NonFiniteLossError",
        "CheckpointCorrupt",
        "ValueError",  # the core's own config errors that are not one of the above
    }
)
OOM_MARKERS = ("out of memory", "outofmemoryerror", "cannot allocate memory", "memoryerror")


@dataclass(frozen=True)
class RetryPolicy:
    """How often a job is tried in all and after which failure classes."""

    max_attempts: int = 3
    on: frozenset[str] = frozenset({FailureClass.WORKER_LOST, FailureClass.INFRASTRUCTURE})
    backoff_seconds: float = 10.0

    @classmethod
    def of(cls, spec: Mapping[str, Any] | None) -> RetryPolicy:
        """The policy of a stored spec (its `retry` section, else the defaults)."""
        section = spec.get("retry") if isinstance(spec, Mapping) else None
        if not isinstance(section, Mapping):
            return DEFAULT_RETRY
        return cls(
            max_attempts=int(section.get("max_attempts", DEFAULT_RETRY.max_attempts)),
            on=frozenset(section.get("on", DEFAULT_RETRY.on)),
            backoff_seconds=float(section.get("backoff_seconds", DEFAULT_RETRY.backoff_seconds)),
        )

    def retries(self, failure: str, attempt: int) -> bool:
        """Whether attempt number `attempt` (1-based), which failed with `failure`, is followed
        by another."""
        return failure in self.on and attempt < self.max_attempts

    def delay(self, attempt: int) -> float:
        """Seconds before the attempt after `attempt`: `backoff_seconds * 2**(attempt - 1)`,
        at most an hour."""
        return min(self.backoff_seconds * 2 ** max(attempt - 1, 0), 3600.0)


# A spec stored without a `retry` section (submitted before there was one) keeps what the
# worker did then, bounded: only a lost worker makes it run again, at most 3 attempts in all.
# New specs get `core.spec.common.RetrySpec`'s defaults (also infrastructure failures).
DEFAULT_RETRY = RetryPolicy(on=frozenset({FailureClass.WORKER_LOST}))


def classify(error_type: str | None, message: str, exit_code: int | None = None) -> FailureClass:
    """The class of a failed attempt from its `error.json` (type and message) or, without one,
    its exit code."""
    text = f"{error_type or ''} {message}".lower()
    if any(marker in text for marker in OOM_MARKERS):
        return FailureClass.OUT_OF_MEMORY
    if error_type in USER_ERROR_TYPES:
        return FailureClass.USER
    return FailureClass.INFRASTRUCTURE
