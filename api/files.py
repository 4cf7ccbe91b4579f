"""Reading run files for download: log tails and embeddings converted to CSV."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

CSV_CHUNK_ROWS = 4096
_TAIL_BLOCK = 64 * 1024


def tail_lines(path: Path, lines: int) -> bytes:
    """The last `lines` lines of a file, read backwards block by block."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        pos, data = end, b""
        # One newline more than lines wanted: the first of the last `lines` lines is whole.
        while pos > 0 and data.count(b"\n") <= lines:
            step = min(_TAIL_BLOCK, pos)
            pos -= step
            f.seek(pos)
            data = f.read(step) + data
    return b"".join(data.splitlines(keepends=True)[-lines:])


def read_upto(path: Path, size: int, chunk_size: int = 1024 * 1024) -> Iterator[bytes]:
    """The first `size` bytes of a file that may still grow (a log being written), in chunks."""
    with path.open("rb") as f:
        while size > 0 and (data := f.read(min(chunk_size, size))):
            size -= len(data)
            yield data


def open_embeddings(npy_path: Path) -> np.ndarray:
    """The `.npy` memory-mapped, as [num_nodes, dim]."""
    emb = np.load(npy_path, mmap_mode="r", allow_pickle=False)
    if emb.ndim == 1:
        emb = emb.reshape(-1, 1)
    if emb.ndim != 2:
        raise ValueError(f"{npy_path.name}: expected a 2-D array, got shape {emb.shape}")
    return emb


def embeddings_csv(emb: np.ndarray, ids_path: Path | None, id_column: str) -> Iterator[bytes]:
    """`<id_column>,dim_0,...` then one row per embedded node (or graph), converted chunk by
    chunk from `emb` [rows, dim]. Ids come from the `id_column` column of `ids_path` (the
    embeddings' ids artifact), else the row index."""
    num_nodes, dim = emb.shape
    ids = _row_ids(ids_path, num_nodes, id_column)
    header = [id_column, *(f"dim_{i}" for i in range(dim))]
    yield (",".join(header) + "\n").encode()
    row_format = ",".join(["%.8g"] * dim)
    for start in range(0, num_nodes, CSV_CHUNK_ROWS):
        chunk = np.asarray(emb[start : start + CSV_CHUNK_ROWS], dtype=np.float64).tolist()
        yield "".join(f"{next(ids)},{row_format % tuple(row)}\n" for row in chunk).encode()


def _row_ids(path: Path | None, num_nodes: int, id_column: str) -> Iterator[str]:
    """Ids in row order: the `id_column` column of `path` (else its last column; CSV-quoted
    when needed), then the row index for rows it does not cover."""
    count = 0
    if path is not None and path.is_file():
        with path.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            column = header.index(id_column) if id_column in header else len(header) - 1
            for record in reader:
                yield _csv_field(record[column] if len(record) > column else str(count))
                count += 1
        if count < num_nodes:
            log.warning("%s has %d ids for %d embedding rows", path, count, num_nodes)
    yield from map(str, range(count, num_nodes))


def _csv_field(value: str) -> str:
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value
