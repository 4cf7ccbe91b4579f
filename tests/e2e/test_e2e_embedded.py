"""End to end on the embedded default: `trainctl up` with no DATABASE_URL or REDIS_URL runs the
API and a worker on SQLite and a file-system queue under a temporary TRAINCTL_HOME; the client
finds it through the credentials file `up` writes. Ctrl-C stops everything, and a job that was
running resumes when the service comes back.
"""

from __future__ import annotations

import hashlib
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from click.testing import CliRunner

from cli.main import main as trainctl
from store.db import make_engine, session_factory
from store.models import Job
from tests.support.e2e import (
    CLI,
    CORA_NODES,
    TINY_CORA,
    Api,
    Proc,
    free_port,
    healthy,
    service_env,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

JOB_TIMEOUT_S = 240


class Embedded:
    """`trainctl up` in a subprocess, restartable on the same TRAINCTL_HOME."""

    def __init__(self, home: Path):
        self.home = home
        self.env = service_env(TRAINCTL_HOME=str(home), TRAINCTL_CANCEL_GRACE_SECONDS="5")
        self.proc: Proc | None = None
        self.api: Api | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        port = free_port()
        self.proc = Proc(
            f"up-{self.starts}", [*CLI, "up", "--port", str(port)], self.env, self.home
        )
        # `up` writes its children's output here.
        self.proc.also_logs = [self.home / "logs" / "api.log", self.home / "logs" / "worker.log"]
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: healthy(url), 90, "`trainctl up` to answer /healthz", [self.proc])
        credentials = json.loads((self.home / "credentials").read_text())
        assert credentials["url"] == url
        self.api = Api(url, credentials["api_key"])

    def cli(self, *args: str) -> Any:
        """A client command that finds the service through TRAINCTL_HOME/credentials only."""
        env = {"TRAINCTL_HOME": str(self.home), "TRAINCTL_URL": None, "TRAINCTL_API_KEY": None}
        return CliRunner().invoke(trainctl, list(args), env=env, catch_exceptions=False)

    def submit(self, epochs: int) -> str:
        path = self.home / f"spec-{epochs}.json"
        path.write_text(json.dumps(TINY_CORA))
        result = self.cli("submit", str(path), "--set", f"training.epochs={epochs}")
        assert result.exit_code == 0, result.output
        return result.output.strip().splitlines()[-1]

    def stop(self) -> None:
        if self.api is not None:
            self.api.close()
        if self.proc is not None:
            self.proc.stop()


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    service = Embedded(tmp_path_factory.mktemp("embedded-home"))
    try:
        service.start()
        yield service
    finally:
        service.stop()


def test_up_trains_and_serves_downloads(embedded: Embedded, tmp_path: Path) -> None:
    assert embedded.proc is not None and embedded.api is not None
    assert (embedded.home / "trainctl.db").is_file()
    api, procs = embedded.api, [embedded.proc]
    wait_for(lambda: (embedded.home / "broker").is_dir(), 60, "the file-system broker", procs)
    job_id = embedded.submit(epochs=5)

    def metrics_while_running() -> bool:
        page = api.get(f"/jobs/{job_id}/metrics")
        if page["status"] != "running" and not page["count"] and page["status"] != "queued":
            pytest.fail(f"job {page['status']} before any metric row was seen")
        return bool(page["count"]) and page["status"] == "running"

    wait_for(metrics_while_running, JOB_TIMEOUT_S, "a metric row while running", procs)
    job = api.wait_finished(job_id, JOB_TIMEOUT_S, procs)
    assert job["status"] == "succeeded", job["error"]

    out = tmp_path / "emb.npy"
    result = embedded.cli("download", job_id, "embeddings", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (CORA_NODES, 16)

    ckpt = tmp_path / "best.pt"
    result = embedded.cli("download", job_id, "checkpoint", "--name", "best", "-o", str(ckpt))
    assert result.exit_code == 0, result.output
    best = [r for r in api.get(f"/jobs/{job_id}/checkpoints")["data"] if r["tag"] == "best"]
    assert hashlib.sha256(ckpt.read_bytes()).hexdigest() == best[0]["sha256"]


def test_ctrl_c_stops_everything_and_the_job_resumes_on_the_next_up(embedded: Embedded) -> None:
    assert embedded.proc is not None and embedded.api is not None
    up, api = embedded.proc, embedded.api
    job_id = embedded.submit(epochs=40)  # far more than can finish before Ctrl-C lands
    wait_for(
        lambda: api.get(f"/jobs/{job_id}/metrics")["count"] >= 1,
        JOB_TIMEOUT_S,
        "the first epoch",
        [up],
    )
    everything = up.descendants()
    assert any("core.run" in _cmdline(p) for p in everything), [_cmdline(p) for p in everything]

    up.signal(signal.SIGINT)  # Ctrl-C
    try:
        code = up.popen.wait(60)
    except Exception:
        pytest.fail(f"`trainctl up` did not stop within 60s after Ctrl-C:\n{up.log()}")
    assert code == 0, up.log()
    left = [p for p in everything if _alive(p)]
    assert not left, f"processes outlived `trainctl up`: {[_cmdline(p) for p in left]}"
    worker_log = (embedded.home / "logs" / "worker.log").read_text()
    assert "requeued: worker shutting down" in worker_log  # one line, no traceback
    assert "Traceback" not in worker_log, worker_log[-4000:]

    engine = make_engine(f"sqlite:///{embedded.home / 'trainctl.db'}")
    with session_factory(engine)() as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempt) == ("queued", 1)
    engine.dispose()

    embedded.api.close()
    embedded.start()  # the message went back to the file-system queue: the job resumes
    assert embedded.api is not None and embedded.proc is not None
    job = embedded.api.wait_finished(job_id, JOB_TIMEOUT_S, [embedded.proc])
    assert job["status"] == "succeeded", job["error"]
    assert job["attempt"] == 2
    page = embedded.api.get(f"/jobs/{job_id}/metrics?attempt=2")  # that attempt's own rows
    epochs = [row["epoch"] for row in page["data"]]
    assert page["attempt"] == 2 and epochs and epochs[-1] == 40
    assert epochs[0] > 1, "attempt 2 started from scratch instead of the last checkpoint"
    # The default view is the effective history: every epoch once, across the two attempts.
    history = [row["epoch"] for row in embedded.api.get(f"/jobs/{job_id}/metrics")["data"]]
    assert history == list(range(1, 41))


def _cmdline(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())
    except psutil.Error:
        return f"<pid {p.pid} gone>"


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
