"""How data readers report: one error type that names the file, line and column and what is
allowed, and the warnings a load collects (skipped lines, dropped rows) for the log and
`summary.json` (`data_warnings`). Every reader of every family uses these."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Input data that cannot be used as they are. `file` is the name the user knows (relative
    to the data root or their upload), `line` is 1-based, `column` a name or 1-based number."""

    def __init__(
        self,
        file: str,
        msg: str,
        *,
        line: int | None = None,
        column: str | int | None = None,
        allowed: str | None = None,
    ):
        self.file, self.line, self.column, self.allowed = file, line, column, allowed
        where = file
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}" if isinstance(column, str) else f", column {column}"
        text = f"{where}: {msg}"
        if allowed:
            text += f"; allowed: {allowed}"
        super().__init__(text)


class DataWarnings:
    """Warnings of one load: each is logged at WARNING as it is added and kept for the run's
    summary."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, file: str, msg: str) -> None:
        text = f"{file}: {msg}"
        log.warning("%s", text)
        self.items.append(text)

    def __bool__(self) -> bool:
        return bool(self.items)
