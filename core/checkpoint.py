"""Checkpoints: one dict per file, written atomically, with its sha256 beside it.

The file and its digest become visible together: the sidecar first lists the new digest beside
the old one, then the file is renamed into place, then the sidecar keeps the new digest alone.
A kill at any point leaves a file whose digest the sidecar lists; a file that matches none of
them is corrupt (`CheckpointCorrupt`), and `core.run.find_resume_checkpoint` falls back to the
newest checkpoint that verifies.

A checkpoint holds the model, optimizer, scheduler, grad scaler and callback states, the epoch
and step, every RNG state and the spec; it contains only tensors and plain values, so it loads
with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> str:
    """Write `data` to `path` via a temp file, fsync and rename; return its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return hashlib.sha256(data).hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded(path: Path) -> list[str]:
    """The digests `<path>.sha256` lists (sha256sum format, one per line)."""
    sidecar = _sidecar(path)
    if not sidecar.exists():
        return []
    return [line.split()[0] for line in sidecar.read_text().splitlines() if line.strip()]


def save_checkpoint(state: dict[str, Any], path: Path) -> str:
    """Save `state` atomically at `path` with its digest in `<path>.sha256` (see the module
    docstring for the order that keeps them in step); return the sha256."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    line = f"{digest}  {path.name}\n"
    previous = [d for d in _recorded(path)[:1] if d != digest]
    both = line + "".join(f"{d}  {path.name}\n" for d in previous)
    atomic_write_bytes(_sidecar(path), both.encode())  # the new digest, still with the old one
    atomic_write_bytes(path, data)
    atomic_write_bytes(_sidecar(path), line.encode())
    return digest


class CheckpointCorrupt(RuntimeError):
    """A checkpoint whose bytes match none of the digests recorded beside it."""


def verify_checkpoint(path: Path) -> None:
    """Raise CheckpointCorrupt unless `path` matches a digest of its sidecar (if it has one)."""
    expected = _recorded(path)
    if expected:
        actual = sha256_file(path)
        if actual not in expected:
            raise CheckpointCorrupt(
                f"{path.name}: sha256 {actual} does not match the recorded {expected[0]}"
            )


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`, checking its recorded sha256 when present."""
    verify_checkpoint(path)
    return torch.load(path, map_location=map_location, weights_only=True)
