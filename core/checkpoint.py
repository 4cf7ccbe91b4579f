"""Checkpoints: one dict per file, written atomically, with its sha256 beside it.

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


def save_checkpoint(state: dict[str, Any], path: Path) -> str:
    """Save `state` atomically at `path`, write `<path>.sha256`, return the sha256."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    digest = atomic_write_bytes(path, buffer.getvalue())
    atomic_write_bytes(path.with_name(path.name + ".sha256"), f"{digest}  {path.name}\n".encode())
    return digest


class CheckpointCorrupt(RuntimeError):
    pass


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`, checking its recorded sha256 when present."""
    sidecar = path.with_name(path.name + ".sha256")
    if sidecar.exists():
        expected = sidecar.read_text().split()[0]
        actual = sha256_file(path)
        if actual != expected:
            raise CheckpointCorrupt(f"{path}: sha256 {actual} does not match recorded {expected}")
    return torch.load(path, map_location=map_location, weights_only=True)
