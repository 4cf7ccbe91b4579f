"""Embeddings in the formats other tools read: CSV, Parquet and safetensors, converted from the
run's `.npy` chunk by chunk (the whole array never sits in memory), and the conversions kept
beside the run's files (`exports/`) so that a download is sent from disk.

Shared by the API (a download converts what is not kept yet) and the worker (a finished job's
Parquet is written before the job is marked succeeded, so its first download is a file read).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
from sqlalchemy.orm import Session

from store import queries
from store.models import Artifact
from store.paths import resolve_inside

log = logging.getLogger(__name__)

CSV_CHUNK_ROWS = 4096


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


def row_ids(path: Path | None, rows: int, id_column: str) -> Any:
    """The ids of `rows` embedding rows in order, as a pyarrow string array (compact: no
    Python string per row): the `id_column` column of the ids CSV (read by pyarrow's C++ CSV
    reader); None when the rows are keyed by their index (made chunk by chunk where needed)."""
    import pyarrow as pa

    if path is not None and path.is_file():
        from pyarrow import csv as pacsv

        options = pacsv.ConvertOptions(column_types={id_column: pa.string()})
        try:
            table = pacsv.read_csv(path, convert_options=options)
        except Exception as exc:  # a malformed ids file: keyed by row, and said in the log
            log.warning("%s: unreadable ids (%s); rows keyed by index", path, exc)
            table = None
        if table is not None and id_column in table.column_names and table.num_rows == rows:
            return table.column(id_column).combine_chunks()
        log.warning("%s does not key %d rows by %r; rows keyed by index", path, rows, id_column)
    return None


def _index_ids(start: int, stop: int) -> Any:
    """The row indices `start..stop-1` as an Arrow string array (cast in Arrow: no Python
    strings)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pool = pa.system_memory_pool()
    return pc.cast(
        pa.array(np.arange(start, stop), memory_pool=pool), pa.string(), memory_pool=pool
    )


class NpyChunks:
    """A 2-D `.npy` read in row chunks with plain file reads (no memory map: what is sent is
    not kept mapped into the API process)."""

    def __init__(self, path: Path):
        self.path = path
        with path.open("rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0
                if major == 1
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if len(shape) == 1:
            shape = (shape[0], 1)
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise ValueError(f"{path.name}: expected a 2-D C-ordered numeric array, got {shape}")
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = dtype

    def raw(self, rows_per_chunk: int) -> Iterator[bytes]:
        """The data bytes, `rows_per_chunk` rows at a time."""
        step = rows_per_chunk * self.shape[1] * self.dtype.itemsize
        with self.path.open("rb") as f:
            f.seek(self.offset)
            while data := f.read(step):
                yield data

    def chunks(self, rows_per_chunk: int) -> Iterator[np.ndarray]:
        """Float32 arrays of up to `rows_per_chunk` rows [rows, dim]."""
        for data in self.raw(rows_per_chunk):
            block = np.frombuffer(data, dtype=self.dtype).reshape(-1, self.shape[1])
            yield block.astype(np.float32, copy=False)


class _Drain:
    """A write-only file object whose written bytes are taken out as they come."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.closed = False
        self.position = 0

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[bytes]:
        """What was written since the last take, as one chunk (the writer writes many small
        pieces; each chunk sent from a sync generator costs a worker-thread hop)."""
        parts, self.parts = self.parts, []
        return [b"".join(parts)] if parts else []


CHUNK_BYTES = 8 * 1024 * 1024  # embedding bytes per chunk sent
# Embedding bytes per Parquet row group: the writer holds a whole row group (and its copies)
# at once; 2 MB keeps a download's peak RSS growth near 40 MB at the same throughput as 8 MB.
ROW_GROUP_BYTES = 2 * 1024 * 1024


def _rows_per_chunk(dim: int, chunk_bytes: int = CHUNK_BYTES) -> int:
    return max(1, chunk_bytes // (4 * dim))


def embeddings_parquet(emb: NpyChunks, ids: Any, id_column: str) -> Iterator[bytes]:
    """A Parquet file with the columns `<id_column>` (string) and `embedding`
    (fixed-size list of float32 [dim]), both non-null, one row group per 2 MB of embeddings,
    produced as it is written. Uncompressed, PLAIN-encoded, version-2 data pages: float
    embeddings barely compress, and speed is the point (non-null fields and v2 pages write
    about 1.7x faster with pyarrow than nullable fields in v1 pages)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = emb.shape[1]
    vector = pa.list_(pa.field("element", pa.float32(), nullable=False), dim)
    schema = pa.schema(
        [pa.field(id_column, pa.string(), nullable=False), pa.field("embedding", vector, False)]
    )
    sink = _Drain()
    # The system allocator gives each row group's buffers back at once (mimalloc, pyarrow's
    # default, keeps ~100 MB of them in the API process after a large download).
    pool = pa.system_memory_pool()
    writer = pq.ParquetWriter(
        sink,
        schema,
        memory_pool=pool,
        compression="none",
        use_dictionary=False,
        write_statistics=False,
        data_page_version="2.0",
        column_encoding={id_column: "PLAIN", "embedding.list.element": "PLAIN"},
    )
    start = 0
    for block in emb.chunks(_rows_per_chunk(dim, ROW_GROUP_BYTES)):
        values = pa.FixedSizeListArray.from_arrays(
            pa.array(block.reshape(-1), memory_pool=pool), type=vector
        )
        stop = start + block.shape[0]
        names = ids[start:stop] if ids is not None else _index_ids(start, stop)
        writer.write_table(pa.Table.from_arrays([names, values], schema=schema))
        start += block.shape[0]
        yield from sink.take()
    writer.close()
    yield from sink.take()


def embeddings_safetensors(emb: NpyChunks, ids: Any, id_column: str) -> Iterator[bytes]:
    """A safetensors file (https://github.com/huggingface/safetensors, its documented layout:
    8-byte little-endian header size, JSON header, raw little-endian data) holding `embeddings`
    F32 [rows, dim]; the ids are in its metadata (`ids`: a JSON list, `id_column`; no `ids`
    when rows are keyed by their index). The header holds every id at once (the format puts
    metadata first); the data stream in chunks, as the file's own bytes where they are
    little-endian float32 already."""
    rows, dim = emb.shape
    metadata = {"id_column": id_column}
    if ids is not None:  # else the rows are keyed by their index
        metadata["ids"] = json.dumps(ids.to_pylist())
    header = {
        "__metadata__": metadata,
        "embeddings": {"dtype": "F32", "shape": [rows, dim], "data_offsets": [0, rows * dim * 4]},
    }
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data start 8-byte aligned
    yield len(text).to_bytes(8, "little") + text
    chunk_rows = _rows_per_chunk(dim)
    if emb.dtype == np.dtype("<f4"):  # the file's bytes are the tensor's bytes
        yield from emb.raw(chunk_rows)
    else:
        for block in emb.chunks(chunk_rows):
            yield block.astype("<f4").tobytes()


def export_path(source: Path, fmt: str) -> Path:
    """Where the `fmt` conversion of the embeddings file `source` is kept: `exports/` beside the
    run's files (deleted with the job), named by the source's name, size and modification time,
    so a rewritten source (a retried job) never serves a stale conversion."""
    stat = source.stat()
    key = f"{stat.st_size:x}-{stat.st_mtime_ns:x}"
    return source.parent / "exports" / f"{source.stem}.{key}.{fmt}"


def cached_export(body: Iterator[bytes], target: Path) -> Iterator[bytes]:
    """`body` as it is produced, written to `target` as well (via a part file renamed at the
    end: a concurrent request sees the whole file or none). A client that leaves early leaves
    no part file; older conversions of the same source are removed once this one is complete.
    A conversion that cannot be written (read-only or full disk) is still sent."""
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(f".{target.name}.{os.getpid()}.{id(body):x}.part")
    try:
        out = part.open("wb")
    except OSError as exc:
        log.warning("%s: conversion not kept (%s)", target, exc)
        yield from body
        return
    complete = False
    try:
        with out:
            for data in body:
                try:
                    if out is not None:
                        out.write(data)
                except OSError as exc:
                    log.warning("%s: conversion not kept (%s)", target, exc)
                    out = None
                yield data
        complete = out is not None
    finally:
        if complete:
            os.replace(part, target)
            stem = target.name.rsplit(".", 2)[0]  # <source stem>.<key>.<format>
            for old in target.parent.glob(f"{stem}.*{target.suffix}"):
                if old != target:
                    old.unlink(missing_ok=True)
        else:
            part.unlink(missing_ok=True)


# --- which ids key a job's embeddings, and the conversions a finished job keeps -----------------

# Runs recorded before artifacts had meta keyed embeddings with an artifact of one of these kinds
# (and this CSV column); newer ones name theirs in the embeddings' `meta.ids`.
LEGACY_ID_COLUMNS = {"node_ids": "node_id", "graph_ids": "graph_id"}
ROW_INDEX_COLUMN = "row"  # the first column when nothing keys the rows
KEPT_FORMATS = ("csv", "parquet")  # converted once and kept in `exports/`


def ids_of(session: Session, artifact_root: Path, embeddings: Artifact) -> tuple[Path | None, str]:
    """The CSV keying the rows of `embeddings` and its id column: the artifact its `meta.ids`
    names, with that artifact's `meta.id_column`. Runs recorded before artifacts had meta:
    the job's `node_ids` or `graph_ids` artifact. Without any: (None, "row"), rows keyed by
    their index."""
    ids_name = embeddings.meta.get("ids")
    if isinstance(ids_name, str) and ids_name:
        ids = queries.find_artifact(session, embeddings.job_id, name=ids_name)
        if ids is None:
            log.warning("job %s: ids artifact %r is not recorded", embeddings.job_id, ids_name)
            return None, ROW_INDEX_COLUMN
        id_column = ids.meta.get("id_column") or LEGACY_ID_COLUMNS.get(ids.kind, ROW_INDEX_COLUMN)
        return resolve_inside(artifact_root, ids.path), str(id_column)
    for kind, id_column in LEGACY_ID_COLUMNS.items():
        ids = queries.find_artifact(session, embeddings.job_id, kind=kind)
        if ids is not None:
            return resolve_inside(artifact_root, ids.path), id_column
    return None, ROW_INDEX_COLUMN


def converted(
    npy_path: Path,
    ids_path: Path | None,
    id_column: str,
    fmt: Literal["csv", "parquet", "safetensors"],
) -> Iterator[bytes]:
    """The embeddings of `npy_path` [rows, dim] in `fmt`, produced chunk by chunk, keyed by the
    `id_column` column of `ids_path` (else the row index)."""
    if fmt == "csv":
        return embeddings_csv(open_embeddings(npy_path), ids_path, id_column)
    emb = NpyChunks(npy_path)
    ids = row_ids(ids_path, emb.shape[0], id_column)
    make = embeddings_parquet if fmt == "parquet" else embeddings_safetensors
    return make(emb, ids, id_column)


class EmbeddingsSource(NamedTuple):
    """An embeddings artifact's file and what keys its rows."""

    npy_path: Path
    ids_path: Path | None
    id_column: str


def job_embeddings(session: Session, artifact_root: Path, job_id: str) -> list[EmbeddingsSource]:
    """Every embeddings artifact of the job whose file is there."""
    sources = []
    for artifact in queries.list_artifacts(session, job_id, kind="embeddings"):
        npy_path = resolve_inside(artifact_root, artifact.path)
        if npy_path.is_file():
            sources.append(EmbeddingsSource(npy_path, *ids_of(session, artifact_root, artifact)))
    return sources


def keep_exports(
    sources: Sequence[EmbeddingsSource],
    formats: Sequence[str],
    tick: Callable[[], object] = lambda: None,
) -> list[Path]:
    """Converts each source to each of `formats` (of `KEPT_FORMATS`) not kept yet, and answers
    the kept files' paths; `tick()` is called after each chunk written (a worker's heartbeat:
    a large conversion takes seconds per GB). A conversion that fails (an unreadable file, a
    full disk) is logged and skipped: a download converts it instead."""
    kept = []
    for source in sources:
        for fmt in formats:
            target = export_path(source.npy_path, fmt)
            try:
                if not target.is_file():
                    started = time.perf_counter()
                    body = converted(source.npy_path, source.ids_path, source.id_column, fmt)
                    for _ in cached_export(body, target):
                        tick()
                    log.info(
                        "%s as %s kept in %.1f s (%.1f MB)",
                        source.npy_path,
                        fmt,
                        time.perf_counter() - started,
                        target.stat().st_size / 1e6 if target.is_file() else 0.0,
                    )
            except (OSError, ValueError) as exc:
                log.warning("%s: not converted to %s ahead (%s)", source.npy_path, fmt, exc)
            if target.is_file():
                kept.append(target)
    return kept
