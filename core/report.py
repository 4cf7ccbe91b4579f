"""How a run reports: one JSON line per epoch and per artifact event, in the run directory.

The worker tails these files and turns them into database rows; the training process never
talks to the database itself.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol


class Reporter(Protocol):
    def epoch(self, record: dict[str, Any]) -> None: ...

    def artifact(self, event: dict[str, Any]) -> None: ...


class NullReporter:
    """What ranks other than 0 use: they report nothing."""

    def epoch(self, record: dict[str, Any]) -> None:
        pass

    def artifact(self, event: dict[str, Any]) -> None:
        pass


class RunDirReporter:
    """Appends `metrics.jsonl` and `artifacts.jsonl` lines, flushed and fsynced one by one."""

    def __init__(self, run_dir: Path):
        self.metrics_path = run_dir / "metrics.jsonl"
        self.artifacts_path = run_dir / "artifacts.jsonl"

    @staticmethod
    def _append(path: Path, obj: dict[str, Any]) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps(obj, allow_nan=False, default=float) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def epoch(self, record: dict[str, Any]) -> None:
        self._append(self.metrics_path, record)

    def artifact(self, event: dict[str, Any]) -> None:
        self._append(self.artifacts_path, event)
