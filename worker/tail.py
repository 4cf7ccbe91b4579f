"""Incremental readers of the JSON-lines files a run appends to (`metrics.jsonl`, ...)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlTail:
    """Yields the complete lines appended to a JSON-lines file since the last `read()`.

    A partial last line (the writer has not flushed its newline yet) is left for the next read;
    a file that shrank (rewritten by a resumed run) is read again from the start.
    """

    def __init__(self, path: Path, offset: int = 0):
        self.path = path
        self.offset = offset

    @classmethod
    def from_end(cls, path: Path) -> JsonlTail:
        """A tail that skips what `path` holds now (the lines of an earlier attempt)."""
        try:
            return cls(path, path.stat().st_size)
        except FileNotFoundError:
            return cls(path)

    def read_lines(self) -> list[str]:
        """The complete, non-blank lines appended since the last read, undecoded."""
        try:
            with self.path.open("rb") as f:
                size = f.seek(0, 2)
                if size < self.offset:
                    log.info(
                        "%s shrank from %d to %d bytes; reading it again",
                        self.path,
                        self.offset,
                        size,
                    )
                    self.offset = 0
                f.seek(self.offset)
                data = f.read(size - self.offset)
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        lines = (line.decode(errors="replace") for line in data[:end].splitlines())
        return [line for line in lines if line.strip()]

    def read(self) -> list[dict[str, Any]]:
        """`read_lines` parsed as JSON objects; other lines are logged and skipped."""
        records = []
        for line in self.read_lines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                log.warning("%s: skipping a line that is not JSON: %.200r", self.path, line)
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                log.warning("%s: skipping a line that is not an object: %.200r", self.path, line)
        return records
