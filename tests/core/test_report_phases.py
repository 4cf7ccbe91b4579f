"""Phase events of the run contract (`core.report`): written on rank 0 only, parsed strictly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.report import (
    EVENTS_FILE,
    PhaseEvent,
    RunEventError,
    parse_phase_line,
    report_phase,
    start_phases,
)


def test_phases_are_written_only_while_started(tmp_path: Path) -> None:
    report_phase("loading data")  # outside a run (or on rank > 0): nothing, no error
    start_phases(tmp_path)
    try:
        report_phase("loading data")
        report_phase("training", total=20, unit="epoch")
    finally:
        start_phases(None)
    report_phase("writing outputs")
    lines = (tmp_path / EVENTS_FILE).read_text().splitlines()
    assert [parse_phase_line(line) for line in lines] == [
        PhaseEvent("loading data"),
        PhaseEvent("training", 20, "epoch"),
    ]
    assert json.loads(lines[1]) == {
        "v": 1,
        "event": "phase",
        "phase": "training",
        "total": 20,
        "unit": "epoch",
    }


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        '{"event": "metric", "phase": "x"}',
        '{"event": "phase"}',
        '{"event": "phase", "phase": "  "}',
        '{"event": "phase", "phase": "x", "total": -1}',
        '{"event": "phase", "phase": "x", "total": true}',
        '{"v": 2, "event": "phase", "phase": "x"}',
    ],
)
def test_a_bad_phase_line_is_refused(line: str) -> None:
    with pytest.raises(RunEventError):
        parse_phase_line(line)
