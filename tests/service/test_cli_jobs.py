"""What a user sees from the CLI between submit and the last download, against a live API
(uvicorn in a thread on the test database; the worker's side is played by the store queries it
uses): queue position and phases under `--follow`, the result block, `wait`'s exit statuses,
`logs -f`, `retry`, `delete`, datasets, keys, `--version`, `/docs` offline, and the download
progress bar under a pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from cli.main import main as trainctl
from store import queries
from store.db import session_scope
from store.keys import get_or_create_owner
from store.settings import Settings, get_settings
from tests.service.test_api_files import record
from tests.support.service import VALID_SPEC

REPO = Path(__file__).resolve().parents[2]

SUMMARY = {
    "family": "graphsage_skipgram",
    "epochs_completed": 2,
    "stopped_early": True,
    "monitor": "val_loss",
    "best_epoch": 1,
    "best_score": 0.8213,
    "best_checkpoint": "checkpoints/best-epoch-0001.pt",
    "best_metrics": {"probe_test_acc": 0.821},
    "outputs": ["embeddings.npy", "node_ids.csv", "predictions.csv", "tensorboard/events.x"],
    "quality": {"metric": "probe_test_acc", "value": 0.821, "baseline": 0.6, "baseline_of": "x"},
}


def new_job(sessions: sessionmaker[Session], spec: dict[str, Any] | None = None) -> str:
    """A queued job of alice's (the owner of `api_key`)."""
    with session_scope(sessions) as session:
        owner_id = get_or_create_owner(session, "alice").id
        return queries.create_job(session, owner_id, spec or VALID_SPEC, family="f", name="t").id


def claim(sessions: sessionmaker[Session], job_id: str) -> None:
    with session_scope(sessions) as session:
        assert queries.claim_job(session, job_id, "test-worker") is not None


def finish(sessions: sessionmaker[Session], job_id: str, status: str, error: str = "") -> None:
    with session_scope(sessions) as session:
        assert queries.finish_job(session, job_id, status, error or None)


def write_outputs(sessions, settings: Settings, job_id: str, epochs: int = 2) -> None:
    """What a run of `epochs` epochs leaves: metric rows, outputs, the summary."""
    with session_scope(sessions) as session:
        for epoch in range(1, epochs + 1):
            queries.upsert_metric(session, job_id, 1, epoch, {"val_loss": 1.0 / epoch})
    record(sessions, settings, job_id, "embeddings.npy", b"x", kind="embeddings")
    record(sessions, settings, job_id, "predictions.csv", b"p", kind="predictions")
    record(sessions, settings, job_id, "checkpoints/best-epoch-0001.pt", b"c", tag="best")
    record(sessions, settings, job_id, "summary.json", json.dumps(SUMMARY).encode(), kind="summary")


# --- following a job ----------------------------------------------------------------------------


class LiveOutput:
    """A command's output lines as it writes them (a reader thread), to wait for one."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            argv, cwd=REPO, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._seen = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line.rstrip("\n"))
                self._seen.notify_all()

    def wait_for(self, prefix: str, timeout: float = 30) -> str:
        """The first line starting with `prefix`, once the command has written it."""
        with self._seen:
            found = self._seen.wait_for(
                lambda: (
                    any(line.startswith(prefix) for line in self.lines)
                    or self.proc.poll() is not None
                ),
                timeout,
            )
            match = [line for line in self.lines if line.startswith(prefix)]
        assert found and match, f"no line {prefix!r} in {self.lines}"
        return match[0]

    def finish(self, timeout: float = 30) -> tuple[int, str]:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code, "\n".join(self.lines) + "\n"


def test_follow_shows_queue_position_phases_epochs_and_the_result(
    cli, api_url: str, api_key: str, sessions, service_settings: Settings, tmp_path: Path
) -> None:
    ahead = new_job(sessions)  # someone else's job is ahead in the queue
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**VALID_SPEC, "training": {"epochs": 3}}))
    env = {"TRAINCTL_URL": api_url, "TRAINCTL_API_KEY": api_key}
    follower = LiveOutput([sys.executable, "-m", "cli.main", "submit", str(spec), "--follow"], env)
    # Each change is made once the follower has shown the state before it: no state is
    # missed however slow the machine.
    job_id = follower.wait_for("")  # the first line: the job's id
    follower.wait_for("queued (position 2)")
    with session_scope(sessions) as session:
        queries.request_cancel(session, ahead)  # it leaves the queue: ours is next
    follower.wait_for("queued (position 1)")
    claim(sessions, job_id)
    follower.wait_for("running: starting")
    for phase in ("loading data", "training"):
        with session_scope(sessions) as session:
            queries.set_phase(session, job_id, phase)
        follower.wait_for(f"running: {phase}")
    write_outputs(sessions, service_settings, job_id)
    finish(sessions, job_id, "succeeded")
    code, output = follower.finish()

    assert code == 0, output
    lines = output.splitlines()
    assert lines[0] == job_id
    shown = [line for line in lines if line.startswith(("queued", "running"))]
    assert shown == [
        "queued (position 2)",
        "queued (position 1)",
        "running: starting",
        "running: loading data",
        "running: training (3 epochs)",
    ], output
    assert [line.split()[:2] for line in lines if line.startswith("epoch")] == [
        ["epoch", "1"],
        ["epoch", "2"],
    ]
    block = output[output.index("result:") : output.index("job ")]
    assert "stopped early at epoch 2 of 3" in block
    assert "best:       epoch 1, val_loss 0.8213 (checkpoints/best-epoch-0001.pt" in block
    assert "test (best checkpoint): probe_test_acc=0.821" in block
    assert "quality:    probe_test_acc 0.821 (baseline 0.6: x)" in block
    assert "outputs:    embeddings.npy, node_ids.csv, predictions.csv, tensorboard/" in block
    assert f"trainctl download {job_id} embeddings -o embeddings.npy" in block
    assert f"trainctl download {job_id} checkpoint -o best.pt" in block
    assert f"trainctl download {job_id} predictions.csv -o predictions.csv" in block
    assert f"download {job_id} node_ids.csv" not in block  # not recorded, not offered
    assert lines[-1] == f"job {job_id} succeeded"

    # `status` ends with the same block; `metrics --follow` re-attaches to a finished job.
    status = cli("status", job_id)
    assert status.exit_code == 0 and block in status.output, status.output
    again = cli("metrics", job_id, "--follow")
    assert again.exit_code == 0 and block in again.output and "epoch    2" in again.output


def test_status_shows_phase_and_queue_position(cli, sessions) -> None:
    first, second = new_job(sessions), new_job(sessions)
    result = cli("status", second)
    assert "status:      queued" in result.output
    assert "position:    2" in result.output and "phase:" not in result.output
    claim(sessions, first)
    with session_scope(sessions) as session:
        queries.set_phase(session, first, "loading data")
    assert "position:    1" in cli("status", second).output
    result = cli("status", first)
    assert "phase:       loading data" in result.output and "position:" not in result.output
    listed = {line.split()[0]: line for line in cli("jobs").output.splitlines()[1:]}
    assert "running (loading data)" in listed[first] and " queued " in listed[second]
    finish(sessions, first, "failed", "ValueError: boom")
    result = cli("status", first)
    assert "phase:" not in result.output and "error:       ValueError: boom" in result.output
    assert "result:" not in result.output  # no summary: nothing to show


def test_a_failed_follow_exits_1_with_the_error(cli, sessions) -> None:
    job_id = new_job(sessions)
    claim(sessions, job_id)
    finish(sessions, job_id, "failed", "DatasetNotFound: dataset 'x' not found")
    result = cli("metrics", job_id, "-f")
    assert result.exit_code == 1
    assert f"job {job_id} failed: DatasetNotFound: dataset 'x' not found" in result.output


# --- wait, logs -f ------------------------------------------------------------------------------


def test_wait_exit_status_tells_the_outcome(cli, sessions) -> None:
    for status, code in (("succeeded", 0), ("failed", 1), ("cancelled", 3)):
        job_id = new_job(sessions)
        claim(sessions, job_id)
        finish(sessions, job_id, status)
        result = cli("wait", job_id)
        assert (result.exit_code, result.output) == (code, f"job {job_id} {status}\n")
    queued = new_job(sessions)
    result = cli("wait", queued, "--timeout", "0.3", "--interval", "0.1")
    assert result.exit_code == 4 and "still queued after 0.3s" in result.output
    assert cli("wait", "no-such-job").exit_code == 5

    def finish_later() -> None:
        time.sleep(0.5)
        claim(sessions, queued)
        finish(sessions, queued, "succeeded")

    threading.Thread(target=finish_later).start()
    result = cli("wait", queued, "--interval", "0.1", "-q")
    assert (result.exit_code, result.output) == (0, "")


def test_logs_follow_prints_lines_as_written_until_the_end(
    cli, api_url, api_key, sessions, service_settings: Settings
) -> None:
    job_id = new_job(sessions)
    claim(sessions, job_id)
    log = service_settings.artifact_root / job_id / "logs.txt"
    log.parent.mkdir(parents=True)
    log.write_text("=== attempt 1 ===\nloaded Cora\n")

    def run() -> None:
        for i in range(3):
            time.sleep(0.2)
            with log.open("a") as f:
                f.write(f"epoch {i}")  # a partial line waits for its newline
                f.flush()
                time.sleep(0.1)
                f.write("\n")
        finish(sessions, job_id, "succeeded")

    thread = threading.Thread(target=run)
    thread.start()
    result = cli("logs", job_id, "-f")
    thread.join()
    assert result.exit_code == 0, result.output
    assert result.output == log.read_text()
    result = cli("logs", job_id, "-f", "--tail", "2")
    assert result.output == "epoch 1\nepoch 2\n"

    # Resuming: Last-Event-ID is the byte offset after the last event received.
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Last-Event-ID": str(len(b"=== attempt 1 ===\n")),
    }
    body = httpx.get(f"{api_url}/jobs/{job_id}/logs/stream", headers=headers).text
    assert body.startswith("id: ") and "data: loaded Cora\n" in body
    assert "attempt 1" not in body and body.endswith(
        'event: end\ndata: {"status": "succeeded"}\n\n'
    )


# --- retry, delete ------------------------------------------------------------------------------


def test_retry_a_failed_job_as_a_new_attempt(cli, sessions, dispatched) -> None:
    job_id = new_job(sessions)
    claim(sessions, job_id)
    result = cli("retry", job_id)
    assert (
        result.exit_code == 1 and "409 job is running; only a failed or cancelled" in result.output
    )
    finish(sessions, job_id, "failed", "boom")
    result = cli("retry", job_id)
    assert result.exit_code == 0, result.output
    assert result.output == f"job {job_id}: queued (position 1)\n"
    assert dispatched.job_ids == [job_id]
    claim(sessions, job_id)
    with session_scope(sessions) as session:
        job = queries.get_job(session, job_id)
        assert (job.attempt, job.error, job.phase) == (2, None, "starting")


def test_delete_a_finished_job_and_its_files(cli, sessions, service_settings: Settings) -> None:
    job_id = new_job(sessions)
    claim(sessions, job_id)
    write_outputs(sessions, service_settings, job_id)
    result = cli("delete", job_id, "--yes")
    assert result.exit_code == 1 and "409 job is running; only a finished job" in result.output
    finish(sessions, job_id, "succeeded")
    assert cli("delete", job_id, input="n\n").exit_code == 1  # asked, and declined
    result = cli("delete", job_id, "--yes")
    assert (result.exit_code, result.output) == (0, f"job {job_id}: deleted\n")
    assert not (service_settings.artifact_root / job_id).exists()
    assert "404 job not found" in cli("status", job_id).output


# --- datasets -----------------------------------------------------------------------------------


def test_datasets_upload_use_replace_delete(cli, sessions, tmp_path: Path) -> None:
    edges = tmp_path / "edges.csv"
    edges.write_text("a,b\nb,c\n")
    result = cli("datasets", "upload", "g", str(edges), "--format", "edge_list")
    assert result.exit_code == 0, result.output
    assert result.output == "dataset g: 8 bytes; in a spec: data.path: g/edges.csv\n"
    assert cli("datasets", "list").output.splitlines()[1].split()[:3] == ["g", "g/edges.csv", "8"]

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**VALID_SPEC, "data": {"format": "edge_list", "path": "g/x.csv"}}))
    result = cli("submit", str(spec))
    assert result.exit_code == 1
    assert "data.path: upload 'g' has no 'g/x.csv'; it holds: g/edges.csv" in result.output
    spec.write_text(json.dumps({**VALID_SPEC, "data": {"format": "edge_list", "path": "h/e.csv"}}))
    result = cli("submit", str(spec))
    assert result.exit_code == 1
    assert "data.path: no upload named 'h' (your uploads: g)" in result.output
    spec.write_text(
        json.dumps({**VALID_SPEC, "data": {"format": "edge_list", "path": "g/edges.csv"}})
    )
    result = cli("submit", str(spec))
    assert result.exit_code == 0, result.output
    job_id = result.output.strip()

    edges.write_text("a,b\n")
    for args in (("datasets", "upload", "g", str(edges), "--replace"), ("datasets", "delete", "g")):
        result = cli(*args)
        assert result.exit_code == 1
        assert f"409 dataset 'g' is in use by queued or running job(s) {job_id}" in result.output
    cli("cancel", job_id)
    result = cli("datasets", "upload", "g", str(edges), "--replace")
    assert result.output == "dataset g: 4 bytes; in a spec: data.path: g/edges.csv\n"
    assert (cli("datasets", "delete", "g").output, cli("datasets", "list").output) == (
        "dataset g: deleted\n",
        "no datasets yet (trainctl datasets upload NAME FILE)\n",
    )


def test_an_absolute_data_path_names_the_data_roots(cli, tmp_path: Path, monkeypatch) -> None:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({**VALID_SPEC, "data": {"format": "edge_list", "path": "/x/e.csv"}}))
    result = cli("submit", str(spec))
    assert result.exit_code == 1 and "TRAINCTL_DATA_ROOT" in result.output, result.output
    monkeypatch.setenv("TRAINCTL_DATA_ROOT", f"{tmp_path}/a:{tmp_path}/b")
    result = CliRunner().invoke(trainctl, ["train", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert f"data roots: {tmp_path}/a, {tmp_path}/b (TRAINCTL_DATA_ROOT" in result.output


# --- keys, version, docs ------------------------------------------------------------------------


def _run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_keys_create_list_revoke(db_url: str, engine, tmp_path: Path, monkeypatch) -> None:
    env = {"DATABASE_URL": db_url, "TRAINCTL_HOME": str(tmp_path)}
    created = _run_cli("keys", "create", "bob", env=env)  # as from a shell: its whole output
    assert created.returncode == 0, created.stderr
    # The key and one line saying what it is: no Alembic INFO lines.
    assert created.stderr == "" and len(created.stdout.splitlines()) == 2, created
    key = created.stdout.splitlines()[-1]

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:

        def keys(*args: str) -> Any:
            return CliRunner().invoke(trainctl, ["keys", *args])

        listed = keys("list").output.splitlines()
        assert listed[0].split() == ["PREFIX", "OWNER", "CREATED", "REVOKED"]
        assert listed[1].split()[:2] == [key[:12], "bob"] and len(listed[1].split()) == 3
        assert key not in "".join(listed)
        assert (keys("revoke", key[:12]).output, keys("revoke", key).exit_code) == (
            f"revoked {key[:12]}\n",
            1,  # no active key with that prefix any more
        )
        assert len(keys("list", "bob").output.splitlines()[1].split()) == 4
        assert keys("list", "nobody").output == "no API keys of nobody\n"
        assert keys("revoke", "tc_").exit_code == 2
    finally:
        get_settings.cache_clear()


def test_version() -> None:
    result = CliRunner().invoke(trainctl, ["--version"])
    assert re.fullmatch(r"trainctl, version \d+\.\d+\.\d+\S*\n", result.output)


def test_docs_render_offline(service_settings: Settings, dispatched, engine) -> None:
    app = create_app(service_settings, dispatch=dispatched)  # serves /docs itself, offline
    with TestClient(app) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text) + re.findall(
            r"url: '([^']+)'", page.text
        )
        assert urls and not [u for u in urls if "://" in u], urls  # nothing from elsewhere
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200 and response.content, url
        assert "SwaggerUIBundle" in client.get("/docs/assets/swagger-ui-bundle.js").text
        assert client.get("/redoc").status_code == 404  # ReDoc would need its CDN


# --- a progress bar in a terminal ---------------------------------------------------------------


def run_in_terminal(argv: list[str], env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal of 24 x 100 as stdin, stdout and stderr (a new pty has
    0 columns, where tqdm draws nothing); its exit status and everything it wrote."""
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(argv, cwd=REPO, env={**os.environ, **env}, stdin=secondary,
                            stdout=secondary, stderr=secondary, close_fds=True)  # fmt: skip
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # the terminal closed: the command is done
                break
            if not chunk:
                break
            output += chunk
        elif proc.poll() is not None:
            break
    os.close(primary)
    return proc.wait(10), output.decode(errors="replace")


def test_download_shows_a_progress_bar_in_a_terminal(
    api_url: str, api_key: str, sessions, service_settings: Settings, tmp_path: Path
) -> None:
    job_id = new_job(sessions)
    record(sessions, service_settings, job_id, "big.bin", os.urandom(3 << 20), kind="file")
    out = tmp_path / "big.bin"
    env = {"TRAINCTL_URL": api_url, "TRAINCTL_API_KEY": api_key}
    argv = [sys.executable, "-m", "cli.main", "download", job_id, "big.bin", "-o", str(out)]
    code, text = run_in_terminal(argv, env)
    assert code == 0, text
    assert out.stat().st_size == 3 << 20
    assert re.search(r"big\.bin: +\d+%\|", text), text  # tqdm's bar: "big.bin:  33%|███ ..."
    assert f"wrote {out} ({3 << 20} bytes)" in text


def test_follow_shows_an_epoch_progress_bar_in_a_terminal(
    api_url: str, api_key: str, sessions
) -> None:
    job_id = new_job(sessions)  # 2 epochs
    claim(sessions, job_id)
    with session_scope(sessions) as session:
        queries.set_phase(session, job_id, "training")

    def train() -> None:
        for epoch in (1, 2):
            time.sleep(1.0)
            with session_scope(sessions) as session:
                queries.upsert_metric(session, job_id, 1, epoch, {"val_loss": 1.0 / epoch})
        time.sleep(0.5)
        finish(sessions, job_id, "succeeded")

    thread = threading.Thread(target=train)
    thread.start()
    env = {"TRAINCTL_URL": api_url, "TRAINCTL_API_KEY": api_key}
    code, text = run_in_terminal([sys.executable, "-m", "cli.main", "metrics", job_id, "-f"], env)
    thread.join()
    assert code == 0, text
    assert "running: training (2 epochs)" in text and "epoch    2" in text
    assert re.search(r" 50%\|[^|]*\| 1/2 \[", text), text  # the bar after the first epoch
