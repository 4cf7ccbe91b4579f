"""Delimited text tables and edge lists, read and checked without torch (the API validates
uploads with the same code): headers declared or detected, comment lines only where the user
says, every error naming the file, line and column."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.data.errors import DataError, DataWarnings
from core.data.roots import resolve_data_path
from core.spec.data import EdgeListData

log = logging.getLogger(__name__)


# Header cells that name the two ends of an edge (`data.header: auto` recognises them).
_END_NAME = re.compile(
    r"^(src|dst|source|target|from|to|u|v|head|tail|start|end|origin|dest(ination)?|"
    r"node|nodes?[_ ]?[12ab]|id[_ ]?[12]|neighbou?r|left|right)([_ ]?(id|node|name))?$",
    re.IGNORECASE,
)
_NODE_COLUMN = re.compile(r"^(node|node[_ ]?id|id|vertex|name)$", re.IGNORECASE)
_INTEGER = re.compile(r"^[+-]?\d+$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(nan|inf)$", re.IGNORECASE)

HeaderRule = Callable[[list[str], list[list[str]]], bool]


def edge_header(first: list[str], rest: list[list[str]]) -> bool:
    """An edge list's first row is a header when both ends are column names (src,dst /
    from,to / u,v / node1,node2 / source_id,target_id ...), or when they are not integers
    while the ends of the rows below are."""
    ends = first[:2]
    if len(ends) == 2 and all(_END_NAME.match(c) for c in ends):
        return True
    below = [c for row in rest[:50] for c in row[:2]]
    return bool(below) and all(map(_INTEGER.match, below)) and not all(map(_INTEGER.match, ends))


def node_header(first: list[str], rest: list[list[str]]) -> bool:
    """A node table's (features, labels) first row is a header when its first cell names the
    node column, or when it has a non-numeric value column while the next row has none."""
    if first and _NODE_COLUMN.match(first[0]):
        return True
    values = first[1:]
    return (
        bool(rest)
        and bool(values)
        and not all(map(_NUMBER.match, values))
        and all(map(_NUMBER.match, rest[0][1:]))
    )


@dataclass
class Table:
    """Rows of a delimited text file with the 1-based line number of each."""

    file: str  # the name the user knows
    header: list[str] | None
    rows: list[list[str]]
    lines: list[int]


def _delimiter(sample: str, choice: str) -> str | None:
    if choice != "auto":
        return None if choice == " " else choice
    first = next((ln for ln in sample.splitlines() if ln.strip()), "")
    return "\t" if "\t" in first else "," if "," in first else ";" if ";" in first else None


def read_table(
    path: Path,
    file: str,
    *,
    delimiter: str = "auto",
    comment: str | None = None,
    header: bool | str = "auto",
    is_header: HeaderRule = edge_header,
    warnings: DataWarnings | None = None,
) -> Table:
    """A CSV / TSV / `;` / whitespace-separated file (any line endings) as rows of stripped
    cells. Lines starting with `comment` (only when given) and blank lines are skipped and
    counted in `warnings`. `header="auto"` takes the first row as a header when `is_header`
    says so; the decision is logged."""
    warnings = warnings if warnings is not None else DataWarnings()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(file, f"not UTF-8 text (byte {exc.start})") from None
    raw_lines = text.splitlines()
    kept: list[tuple[int, str]] = []
    blank = commented = 0
    for number, line in enumerate(raw_lines, 1):
        if not line.strip():
            blank += 1
        elif comment and line.lstrip().startswith(comment):
            commented += 1
        else:
            kept.append((number, line))
    if commented:
        warnings.add(file, f"skipped {commented} comment line(s) starting with {comment!r}")
    if blank:
        warnings.add(file, f"skipped {blank} blank line(s)")
    sep = _delimiter(kept[0][1] if kept else "", delimiter)
    if sep is None:
        rows = [line.split() for _, line in kept]
    else:
        reader = csv.reader(io.StringIO("\n".join(line for _, line in kept)), delimiter=sep)
        rows = [[c.strip() for c in row] for row in reader]
    lines = [n for n, _ in kept]
    head: list[str] | None = None
    if rows and header is True:
        head, rows, lines = rows[0], rows[1:], lines[1:]
    elif rows and header == "auto":
        if is_header(rows[0], rows[1:]):
            log.info("%s: first row %s taken as a header (data.header: auto)", file, rows[0])
            head, rows, lines = rows[0], rows[1:], lines[1:]
        else:
            log.info("%s: first row %s read as data (data.header: auto)", file, rows[0])
    return Table(file, head, rows, lines)


def _column(table: Table, name: str | None, default: int, what: str) -> int:
    """The index of column `name` in the header (or `default` without a name)."""
    if name is None:
        return default
    if table.header is None:
        raise DataError(
            table.file, f"{what} {name!r} names a column, but the file has no header row"
        )
    try:
        return table.header.index(name)
    except ValueError:
        raise DataError(
            table.file, f"no column {name!r} ({what})", line=1, allowed=", ".join(table.header)
        ) from None


def read_edges(spec: EdgeListData, warnings: DataWarnings, path: Path | None = None) -> np.ndarray:
    """The edge list's `[E, 2]` node ids (strings), validated: every row has both ends. `path`
    overrides where the file is (an upload being checked); errors name `spec.path`."""
    table = read_table(
        path or resolve_data_path(spec.path),
        spec.path,
        delimiter=spec.delimiter,
        comment=spec.comment,
        # naming a column implies a header row
        header=True
        if spec.header == "auto" and (spec.src_column or spec.dst_column)
        else spec.header,
        is_header=edge_header,
        warnings=warnings,
    )
    src = _column(table, spec.src_column, 0, "data.src_column")
    dst = _column(table, spec.dst_column, 1, "data.dst_column")
    if not table.rows:
        raise DataError(spec.path, "no edges (the file has no data rows)")
    widths = np.fromiter((len(r) for r in table.rows), dtype=np.int64, count=len(table.rows))
    short = np.flatnonzero(widths <= max(src, dst))
    if short.size:
        i = int(short[0])
        raise DataError(
            spec.path,
            f"{widths[i]} column(s); an edge needs a source and a target",
            line=table.lines[i],
        )
    ends = np.asarray([(r[src], r[dst]) for r in table.rows], dtype=str)  # [E, 2]
    empty = np.flatnonzero((ends == "").any(1))
    if empty.size:
        i = int(empty[0])
        column = (table.header or [])[src if ends[i, 0] == "" else dst :][:1] or [
            (src if ends[i, 0] == "" else dst) + 1
        ]
        raise DataError(spec.path, "empty node id", line=table.lines[i], column=column[0])
    loops = int((ends[:, 0] == ends[:, 1]).sum())
    if loops:
        warnings.add(spec.path, f"{loops} of {len(ends)} edges are self-loops (a node with itself)")
    return ends
