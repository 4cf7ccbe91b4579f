"""Delimited text tables (CSV, TSV, ...) read into arrays, with errors that name the file, the
line and the column and say what is allowed.

Two shapes of table:

- a *wide numeric table* (`read_table`): a header row, an optional id column, every other cell
  a finite number (a site x species matrix of counts or cover values);
- a *long table* of which a few named text columns are wanted (`read_columns`), e.g. one
  observation per row (eBird checklist records).

The delimiter is sniffed from the header line (comma, tab, semicolon or pipe) unless given.
Line endings may be `\\n`, `\\r\\n` or a bare `\\r` (vegan's `varespec` export). Blank lines are
skipped. Line numbers in errors are 1-based physical lines (the header is line 1), exact unless
a quoted cell spans lines. Files are read in chunks of rows and converted column-wise with
numpy: there is no Python loop over rows or cells, except to locate a bad cell once an error is
known.
"""

from __future__ import annotations

import csv
import itertools
import logging
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path

import numpy as np

from core.data.errors import DataError
from core.data.roots import DatasetNotFound, resolve_data_path

log = logging.getLogger(__name__)

DELIMITERS: tuple[str, ...] = (",", "\t", ";", "|")
DELIMITER_NAMES = "',' (comma), '\\t' (tab), ';' or '|'"
CHUNK_ROWS = 65_536  # rows converted at a time
_NEWLINE = re.compile(r"\r\n|\r|\n")


class TableError(DataError):
    """A table that cannot be read as asked: `file` (relative to the data root), `line`
    (1-based), `column` (its header name) and what is allowed."""


@dataclass(frozen=True)
class Table:
    """A wide numeric table. `values[i, j]` is row `ids[i]`, column `columns[j]`."""

    file: str  # the name errors use: the path relative to the data root
    columns: list[str]  # value columns, in file order (the id column excluded)
    values: np.ndarray  # float64 [rows, columns]
    ids: np.ndarray  # str [rows]: the id column's cells, or the 1-based row numbers
    lines: np.ndarray  # int64 [rows]: the physical line of each row
    id_column: str | None


@dataclass(frozen=True)
class Columns:
    """Some text columns of a long table: `columns[name][i]` is row i's stripped cell."""

    file: str
    columns: dict[str, np.ndarray]  # name -> str [rows]
    lines: np.ndarray  # int64 [rows]
    truncated: bool  # max_rows stopped the read before the end of the file


# --- reading --------------------------------------------------------------------------------------


def _resolve(relative: str) -> Path:
    try:
        path = resolve_data_path(relative)
    except DatasetNotFound as exc:
        where = str(exc).split("; ", 1)[-1]
        raise TableError(relative, f"file not found ({where})") from None
    if not path.is_file():
        raise TableError(relative, "is a directory, not a table file")
    return path


def sniff_delimiter(header: str) -> str:
    """The delimiter of a header line: the candidate that occurs most often outside quotes (a
    one-column table reads as comma-separated)."""
    unquoted = re.sub(r'"[^"]*"', "", header)
    counts = [unquoted.count(d) for d in DELIMITERS]
    best = int(np.argmax(counts))
    if counts[best] == 0:
        return ","
    return DELIMITERS[best]


def _open_rows(
    path: Path, file: str, delimiter: str | None
) -> tuple[Iterator[list[str]], list[str], str]:
    """A row iterator over the data rows, the stripped header and the delimiter used."""
    if delimiter is not None and delimiter not in DELIMITERS:
        raise TableError(file, f"unknown delimiter {delimiter!r}", allowed=DELIMITER_NAMES)
    try:
        fh = open(path, newline="", encoding="utf-8-sig")  # noqa: SIM115 (closed by the generator)
        sample = fh.read(65_536)
        fh.seek(0)
    except UnicodeDecodeError as exc:
        raise TableError(file, f"is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise TableError(file, f"cannot be read: {exc.strerror}") from None
    first = next((ln for ln in _NEWLINE.split(sample) if ln.strip()), "")
    if not first:
        fh.close()
        raise TableError(file, "is empty", allowed="a header row, then one row per record")
    delim = delimiter or sniff_delimiter(first)
    reader = csv.reader(fh, delimiter=delim)

    def rows() -> Iterator[list[str]]:
        try:
            yield from reader
        except csv.Error as exc:
            raise TableError(
                file, f"is not valid delimited text: {exc}", line=reader.line_num
            ) from None
        except UnicodeDecodeError as exc:
            raise TableError(file, f"is not UTF-8 text ({exc.reason})") from None
        finally:
            fh.close()

    iterator = rows()
    header: list[str] = []
    while not header:  # leading blank lines
        row = next(iterator, None)
        if row is None:
            raise TableError(file, "is empty", allowed="a header row, then one row per record")
        header = [h.strip() for h in row] if any(h.strip() for h in row) else []
    return iterator, header, delim


def _chunks(
    rows: Iterator[list[str]], width: int, file: str, max_rows: int | None
) -> Iterator[tuple[list[list[str]], np.ndarray]]:
    """Non-blank data rows in chunks, with their physical line numbers; a row whose field count
    is not the header's raises TableError naming its line."""
    line = 1  # the header's line (blank lines before it are not counted: rare, and harmless)
    taken = 0
    while True:
        limit = CHUNK_ROWS if max_rows is None else min(CHUNK_ROWS, max_rows - taken)
        if limit <= 0:
            return
        chunk = list(itertools.islice(rows, limit))
        if not chunk:
            return
        lengths = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
        lines = line + 1 + np.arange(len(chunk), dtype=np.int64)
        line += len(chunk)
        keep = lengths > 0  # csv yields [] for a blank line
        bad = np.flatnonzero(keep & (lengths != width))
        if bad.size:
            i = int(bad[0])
            raise TableError(
                file,
                f"has {lengths[i]} fields but the header has {width}",
                line=int(lines[i]),
                allowed="one field per header column in every row",
            )
        if not keep.all():
            chunk = list(itertools.compress(chunk, keep.tolist()))
            lines = lines[keep]
        taken += int(keep.sum()) if max_rows is not None else 0
        yield chunk, lines


def _column_index(header: Sequence[str], name: str, file: str, role: str) -> int:
    try:
        return list(header).index(name)
    except ValueError:
        shown = ", ".join(repr(h) for h in header[:12]) + (", ..." if len(header) > 12 else "")
        raise TableError(
            file, f"has no {role} column {name!r}", line=1, column=name, allowed=f"columns {shown}"
        ) from None


def _duplicate(names: Sequence[str]) -> str | None:
    uniq, counts = np.unique(np.asarray(names, dtype=str), return_counts=True)
    dup = uniq[counts > 1]
    return str(dup[0]) if dup.size else None


def to_numbers(
    cells: np.ndarray, file: str, columns: Sequence[str], lines: np.ndarray, allowed: str
) -> np.ndarray:
    """`cells` (str [rows, cols], stripped) as float64; the first cell that is not a finite
    number raises TableError naming its line and column."""
    try:
        values = cells.astype(np.float64)
    except ValueError:
        values = None
    if values is not None:
        bad = ~np.isfinite(values)
        if not bad.any():
            return values
        r, c = (int(i) for i in np.argwhere(bad)[0])
    else:  # locate the bad cell: column-wise, then within the one bad column (error path only)
        c = next(j for j in range(cells.shape[1]) if not _parses(cells[:, j]))
        r = next(i for i, cell in enumerate(cells[:, c]) if not _parses(cell))
    cell = str(cells[r, c])
    what = "an empty cell" if cell == "" else f"{cell!r} is not a finite number"
    raise TableError(file, what, line=int(lines[r]), column=columns[c], allowed=allowed)


def _parses(cells: np.ndarray | str) -> bool:
    try:
        return bool(np.isfinite(np.asarray(cells).astype(np.float64)).all())
    except ValueError:
        return False


def read_table(
    relative: str,
    id_column: str | None = None,
    delimiter: str | None = None,
    *,
    nonnegative: bool = False,
    allowed: str = "numbers",
) -> Table:
    """A wide numeric table under the data root: a header row; `id_column` (if given) holds row
    ids, every other cell is a finite number (>= 0 with `nonnegative`). `allowed` describes
    the values in errors (e.g. "counts or cover values >= 0")."""
    return parse_table(_resolve(relative), relative, id_column, delimiter, nonnegative, allowed)


def parse_table(
    path: Path,
    file: str,
    id_column: str | None = None,
    delimiter: str | None = None,
    nonnegative: bool = False,
    allowed: str = "numbers",
) -> Table:
    """`read_table` of a file at `path`, named `file` in errors (an upload, a test file)."""
    rows, header, _ = _open_rows(path, file, delimiter)
    dup = _duplicate(header)
    if dup is not None:
        raise TableError(
            file,
            "the header repeats a column name",
            line=1,
            column=dup,
            allowed="unique column names",
        )
    id_index = None if id_column is None else _column_index(header, id_column, file, "id")
    blocks, line_blocks = [], []
    for chunk, lines in _chunks(rows, len(header), file, None):
        blocks.append(np.char.strip(np.array(chunk, dtype=str).reshape(len(chunk), len(header))))
        line_blocks.append(lines)
    if not blocks:
        raise TableError(
            file,
            "has a header but no data rows",
            line=1,
            allowed="one row per site after the header",
        )
    cells = np.concatenate(blocks)  # [rows, header]
    lines = np.concatenate(line_blocks)
    if id_index is None:
        ids = (np.arange(cells.shape[0]) + 1).astype(str)
        value_cells, columns = cells, list(header)
    else:
        ids = cells[:, id_index]
        value_cells = np.delete(cells, id_index, axis=1)
        columns = [h for i, h in enumerate(header) if i != id_index]
        dup = _duplicate(ids)
        if dup is not None:
            line = int(lines[np.flatnonzero(ids == dup)[1]])
            raise TableError(
                file,
                f"the id {dup!r} is repeated",
                line=line,
                column=id_column,
                allowed="one row per id",
            )
    if not columns:
        raise TableError(file, "has no value columns", line=1, allowed="at least one column")
    values = to_numbers(value_cells, file, columns, lines, allowed)
    if nonnegative:
        negative = np.argwhere(values < 0)
        if negative.size:
            r, c = (int(i) for i in negative[0])
            raise TableError(
                file,
                f"negative value {value_cells[r, c]}",
                line=int(lines[r]),
                column=columns[c],
                allowed=allowed,
            )
    log.debug("read %s: %d rows x %d columns", file, *values.shape)
    return Table(file, columns, values, ids, lines, id_column)


def read_columns(
    relative: str,
    names: Sequence[str],
    delimiter: str | None = None,
    max_rows: int | None = None,
    roles: Sequence[str] | None = None,
) -> Columns:
    """The text columns `names` of a long table under the data root (at most `max_rows` data
    rows), each cell stripped. `roles` (one per name, e.g. "species") word the error when a
    column is missing."""
    return parse_columns(_resolve(relative), relative, names, delimiter, max_rows, roles)


def parse_columns(
    path: Path,
    file: str,
    names: Sequence[str],
    delimiter: str | None = None,
    max_rows: int | None = None,
    roles: Sequence[str] | None = None,
) -> Columns:
    """`read_columns` of a file at `path`, named `file` in errors."""
    rows, header, _ = _open_rows(path, file, delimiter)
    roles = roles or ["a"] * len(names)
    index = [_column_index(header, n, file, r) for n, r in zip(names, roles, strict=True)]
    getter = itemgetter(*index)
    picked: list[np.ndarray] = []
    line_blocks = []
    for chunk, lines in _chunks(rows, len(header), file, max_rows):
        part = list(map(getter, chunk)) if len(index) > 1 else [(x,) for x in map(getter, chunk)]
        picked.append(np.char.strip(np.array(part, dtype=str).reshape(len(chunk), len(index))))
        line_blocks.append(lines)
    truncated = max_rows is not None and next(rows, None) is not None
    if not picked:
        raise TableError(
            file,
            "has a header but no data rows",
            line=1,
            allowed="one row per record after the header",
        )
    cells = np.concatenate(picked)
    return Columns(
        file,
        {name: cells[:, j] for j, name in enumerate(names)},
        np.concatenate(line_blocks),
        truncated,
    )


__all__ = [
    "DELIMITERS",
    "Columns",
    "Table",
    "TableError",
    "parse_columns",
    "parse_table",
    "read_columns",
    "read_table",
    "sniff_delimiter",
    "to_numbers",
]
