"""The command that runs one training job as its own process group under torchrun.

Imports nothing heavy: the worker builds commands without loading torch."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterable
from pathlib import Path


def training_command(
    spec_path: Path | str,
    out_dir: Path | str,
    devices: int,
    resume: bool = False,
    overrides: Iterable[str] = (),
    progress: bool = False,
) -> list[str]:
    """argv for `torch.distributed.run` with `devices` processes and a free rendezvous port."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        str(devices),
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "core.run",
        str(spec_path),
        "--out",
        str(out_dir),
    ]
    for item in overrides:
        cmd += ["--set", item]
    if resume:
        cmd += ["--resume", "auto"]
    if progress:
        cmd.append("--progress")
    return cmd


def free_port() -> int:
    """A TCP port free on this host right now (for one run's rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
