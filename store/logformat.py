"""The service's log lines: plain text, or one JSON object per line (`TRAINCTL_LOG_FORMAT=json`)
for a log collector (Loki, Elasticsearch, CloudWatch) to parse without patterns.

A JSON line holds `time` (UTC, ISO 8601, milliseconds), `level`, `logger`, `message`, `job_id`
where the line concerns a job, and `exc_info` (the formatted traceback) where there is one. The
job id is the record's `job_id` attribute (`log.info(..., extra={"job_id": id})`), else the one
set with `job_context`, else the first job id (a UUID after the word "job") in the message: every
job-scoped line of the API and the workers names its job that way ("job %s: ...").

Standard library only: the CLI imports this before every command.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

LOG_FORMAT_ENV = "TRAINCTL_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_JOB_ID: ContextVar[str | None] = ContextVar("trainctl_job_id", default=None)
_JOB_IN_MESSAGE = re.compile(
    r"\bjob ([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\b"
)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Lines logged inside this block (in this thread or task) carry `job_id`."""
    token = _JOB_ID.set(job_id)
    try:
        yield
    finally:
        _JOB_ID.reset(token)


def job_id_of(record: logging.LogRecord, message: str) -> str | None:
    """The job a log record concerns, if any (see the module's docstring for the order)."""
    explicit = getattr(record, "job_id", None)
    if explicit:
        return str(explicit)
    current = _JOB_ID.get()
    if current:
        return current
    found = _JOB_IN_MESSAGE.search(message)
    return found.group(1) if found else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, job_id?, exc_info?."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        job_id = job_id_of(record, message)
        if job_id is not None:
            line["job_id"] = job_id
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_format(value: str | None = None) -> str:
    """The log format asked for (`value`, else `TRAINCTL_LOG_FORMAT`, else text); ValueError
    naming the variable and the allowed values for anything else."""
    chosen = (value if value is not None else os.environ.get(LOG_FORMAT_ENV) or "text").lower()
    if chosen not in LOG_FORMATS:
        raise ValueError(
            f"{LOG_FORMAT_ENV}={chosen!r} is not a log format; choose one of "
            f"{', '.join(LOG_FORMATS)}"
        )
    return chosen


def make_formatter(fmt: str | None = None) -> logging.Formatter:
    """The formatter of `fmt` (`text` or `json`; default: the environment's)."""
    return JsonFormatter() if log_format(fmt) == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: int, fmt: str | None = None) -> None:
    """Send the root logger's records to stderr at `level`, as text or JSON lines (`fmt`,
    default `TRAINCTL_LOG_FORMAT`). Uvicorn (run with `log_config=None`) and the Celery worker
    (`worker_hijack_root_logger=False`) log through the root logger, so both follow it."""
    chosen = log_format(fmt)
    handler = logging.StreamHandler()
    handler.setFormatter(make_formatter(chosen))
    logging.basicConfig(level=level, handlers=[handler])
    if chosen == "json":
        logging.captureWarnings(True)  # `warnings` go through logging: JSON lines too
