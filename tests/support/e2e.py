"""Helpers of the end-to-end tests: the service's processes, waiting with clear failures.

The commands come from `docker-compose.yml` (`trainctl api`, `trainctl worker`, ...), run here
as `python -m cli.main ...` so the tests need no installed entry point.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import yaml

from core.launch import free_port  # noqa: F401  (re-exported for the e2e tests)

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
CLI = [sys.executable, "-m", "cli.main"]

# The real core on Cora, small enough for seconds per epoch on a CPU.
TINY_CORA: dict[str, Any] = {
    "family": "graphsage_skipgram",
    "name": "e2e",
    "data": {"format": "planetoid", "name": "Cora"},
    "training": {"epochs": 4, "batch_size": 4096},
    "walks": {"walks_per_node": 1, "walk_length": 5, "window": 2, "epoch_fraction": 0.25},
    "validation": {"max_val_pairs": 2000},
    "model": {"layers": 1, "hidden_dim": 16, "out_dim": 16},
    "probe": {"enabled": False},
}
CORA_NODES = 2708

T = TypeVar("T")


def compose_services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"]


def compose_command(service: str) -> list[str]:
    """The service's `trainctl ...` command from docker-compose.yml, as `python -m cli.main`."""
    command = compose_services()[service]["command"]
    assert command[0] == "trainctl", f"{service}: {command}"
    return [*CLI, *command[1:]]


def service_env(**values: str) -> dict[str, str]:
    """This environment without any service settings of the caller's, plus `values`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRAINCTL_") and k not in ("DATABASE_URL", "REDIS_URL", "BROKER_URL")
    }
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(values)
    return env


class Proc:
    """A service process in its own process group, output to `<log_dir>/<name>.log`."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.also_logs: list[Path] = []
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                argv,
                cwd=REPO,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        self.pid = self.popen.pid

    def log(self, lines: int = 40) -> str:
        """The last lines of its output, and of each file in `also_logs`."""
        parts = []
        for path in (self.log_path, *self.also_logs):
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(tail if path == self.log_path else f"--- {path.name} ---\n{tail}")
        return "\n".join(parts)

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.pid).children(recursive=True)
        except psutil.Error:
            return []

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL the process, its group and every descendant seen."""
        procs = [*self.descendants()]
        self.signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        for p in [*procs, *self.descendants()]:
            with contextlib.suppress(psutil.Error):
                p.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(10)


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    procs: list[Proc] = (),  # type: ignore[assignment]
    every: float = 0.1,
) -> T:
    """`condition()`'s first truthy value; fails after `timeout` s with the service logs."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for proc in procs:
            if proc.popen.poll() is not None:
                pytest.fail(
                    f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}:\n"
                    f"{proc.log()}"
                )
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {p.name} ---\n{p.log()}" for p in procs)
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{logs}")
        time.sleep(every)


class Api:
    """A small httpx client of a running API, for the tests' own checks."""

    def __init__(self, url: str, key: str):
        self.http = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def get(self, path: str, **kwargs: Any) -> Any:
        response = self.http.get(path, **kwargs)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, **kwargs: Any) -> Any:
        response = self.http.post(path, **kwargs)
        assert response.status_code < 400, response.text
        return response.json()

    def job(self, job_id: str) -> dict[str, Any]:
        return self.get(f"/jobs/{job_id}")

    def wait_finished(self, job_id: str, timeout: float, procs: list[Proc]) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        return wait_for(finished, timeout, f"job {job_id} to finish", procs, every=0.2)

    def close(self) -> None:
        self.http.close()


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
