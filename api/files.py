"""Reading run files for download: log tails and growing logs (the embeddings' formats are in
`store.exports`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

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
