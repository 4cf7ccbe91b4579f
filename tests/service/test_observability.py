"""What an operator scrapes and reads, against the real database, Redis and Celery's brokers:
`GET /metrics` (request counts and latency by route template, jobs by status, queue depth,
workers seen alive, metric rows), the log stream resumed at a byte offset, and JSON log lines
(`TRAINCTL_LOG_FORMAT=json`)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
import uvicorn
from click.testing import CliRunner
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from api.main import create_app
from store import queries
from store.broker import TASK_NAME, make_celery
from store.db import session_scope
from store.logformat import JsonFormatter, configure_logging, job_context, log_format
from store.models import Job, utcnow
from store.settings import Settings
from tests.support.service import VALID_SPEC

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TRAINCTL_TEST_REDIS", "redis://127.0.0.1:6379/0")


def scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """`GET /metrics` (without an API key) parsed: {(sample name, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def submit(client: TestClient, auth: dict[str, str]) -> str:
    response = client.post("/jobs", json=VALID_SPEC, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


# --- GET /metrics -------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_template_and_jobs_by_status(
    client, auth, sessions, service_settings: Settings
) -> None:
    ids = [submit(client, auth) for _ in range(7)]
    queued, fresh, stale, done, failed, cancelled, second = ids
    with session_scope(sessions) as session:
        for job_id, worker in ((fresh, "w1"), (second, "w1"), (stale, "w2")):
            assert queries.claim_job(session, job_id, worker) is not None
        for job_id, status in ((done, "succeeded"), (failed, "failed")):
            assert queries.claim_job(session, job_id, "w3") is not None
            assert queries.finish_job(session, job_id, status)
        assert queries.request_cancel(session, cancelled)
        # w2's job has not reported for longer than the stale limit: not seen alive.
        old = utcnow() - timedelta(seconds=service_settings.stale_after_seconds + 5)
        session.execute(update(Job).where(Job.id == stale).values(updated_at=old))
        for epoch in (1, 2, 3):
            queries.upsert_metric(session, fresh, 1, epoch, {"val_loss": 1.0})
        for step in (10, 20):
            queries.upsert_metric_step(session, fresh, 1, step, 1, {"train_loss": 1.0})

    for _ in range(3):
        assert client.get("/healthz").status_code == 200
    for _ in range(2):
        assert client.get(f"/jobs/{fresh}/metrics", headers=auth).status_code == 200
    assert client.get(f"/jobs/{uuid.uuid4()}/metrics", headers=auth).status_code == 404
    wrong = {"Authorization": "Bearer tc_wrongwrongwrong"}
    assert client.get("/jobs", headers=wrong).status_code == 401
    assert client.get(f"/no/such/{uuid.uuid4()}").status_code == 404

    samples = scrape(client)
    requests = "trainctl_http_requests_total"
    assert value(samples, requests, method="POST", route="/jobs", status="201") == 7
    assert value(samples, requests, method="GET", route="/healthz", status="200") == 3
    route = "/jobs/{job_id}/metrics"
    assert value(samples, requests, method="GET", route=route, status="200") == 2
    assert value(samples, requests, method="GET", route=route, status="404") == 1
    assert value(samples, requests, method="GET", route="/jobs", status="401") == 1
    assert value(samples, requests, method="GET", route="unmatched", status="404") == 1
    # Templates only: no raw path (no job id) is ever a label.
    assert not any(fresh in v or "/no/such" in v for _, labels in samples for _, v in labels)

    latency = "trainctl_http_request_duration_seconds"
    assert value(samples, latency + "_count", method="GET", route=route) == 3
    total = value(samples, latency + "_sum", method="GET", route=route)
    assert total is not None and 0 < total < 30
    assert value(samples, latency + "_bucket", method="GET", route=route, le="+Inf") == 3

    jobs = {s: value(samples, "trainctl_jobs", status=s) for s in
            ("queued", "running", "succeeded", "failed", "cancelled")}  # fmt: skip
    assert jobs == {"queued": 1, "running": 3, "succeeded": 1, "failed": 1, "cancelled": 1}
    assert value(samples, "trainctl_workers_seen_alive") == 1  # w1 (two jobs); w2 is stale
    assert value(samples, "trainctl_metric_rows", granularity="epoch") == 3
    assert value(samples, "trainctl_metric_rows", granularity="step") == 2
    # The embedded broker (no REDIS_URL here): nothing was sent to it (the test dispatcher).
    assert value(samples, "trainctl_queue_depth", queue=service_settings.queue) == 0

    # The scrape itself is counted on the next one.
    again = scrape(client)
    assert value(again, requests, method="GET", route="/metrics", status="200") == 1


def test_queue_depth_counts_the_embedded_brokers_messages(tmp_path: Path, db_url, engine) -> None:
    settings = Settings(DATABASE_URL=db_url, TRAINCTL_HOME=str(tmp_path / "home"))
    celery = make_celery(settings)
    for _ in range(3):
        celery.send_task(TASK_NAME, args=[str(uuid.uuid4())], queue=settings.queue)
    with TestClient(create_app(settings, dispatch=lambda job_id: None)) as client:
        assert value(scrape(client), "trainctl_queue_depth", queue=settings.queue) == 3


def test_queue_depth_reads_the_redis_list_of_the_celery_queue(
    tmp_path: Path, db_url, engine
) -> None:
    queue = f"trainctl-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        DATABASE_URL=db_url,
        TRAINCTL_HOME=str(tmp_path / "home"),
        REDIS_URL=REDIS_URL,
        TRAINCTL_QUEUE=queue,
    )
    client_redis = redis.Redis.from_url(REDIS_URL)
    try:
        client_redis.ping()
    except redis.RedisError as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    celery = make_celery(settings)
    try:
        for priority in (None, None, 9):  # the default list and a priority step's list
            options = {} if priority is None else {"priority": priority}
            celery.send_task(TASK_NAME, args=[str(uuid.uuid4())], queue=queue, **options)
        with TestClient(create_app(settings, dispatch=lambda job_id: None)) as client:
            assert value(scrape(client), "trainctl_queue_depth", queue=queue) == 3
            client_redis.delete(queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9)))
            assert value(scrape(client), "trainctl_queue_depth", queue=queue) == 0
    finally:
        client_redis.delete(queue, *(f"{queue}\x06\x16{p}" for p in (3, 6, 9)))
        celery.close()


def test_an_unreachable_database_or_broker_leaves_its_series_out(tmp_path: Path) -> None:
    settings = Settings(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/none",
        TRAINCTL_HOME=str(tmp_path / "home"),
        REDIS_URL="redis://127.0.0.1:1/0",
    )
    app = create_app(settings, dispatch=lambda job_id: None, migrate=False)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        samples = scrape(client)
    assert value(samples, "trainctl_http_requests_total", method="GET", route="/healthz",
                 status="200") == 1  # fmt: skip
    names = {name for name, _ in samples}
    assert not names & {"trainctl_jobs", "trainctl_queue_depth", "trainctl_workers_seen_alive"}


@pytest.mark.slow
def test_several_uvicorn_processes_are_summed_in_multiprocess_mode(
    tmp_path: Path, db_url, engine
) -> None:
    """`PROMETHEUS_MULTIPROC_DIR`: every process's requests in each scrape."""
    port = _free_port()
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    env = {**os.environ, "DATABASE_URL": db_url, "TRAINCTL_HOME": str(tmp_path / "home"),
           "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}  # fmt: skip
    cmd = [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--port",
           str(port), "--workers", "2", "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(cmd, cwd=REPO, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, server)
        for _ in range(40):  # new connections: the two processes share them
            assert httpx.get(f"{url}/healthz").status_code == 200
        pids = {p.name.split("_")[-1] for p in metrics_dir.glob("*.db")}
        assert len(pids) >= 2, pids  # both processes answered some
        samples = {}
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
            for s in family.samples:
                samples[(s.name, frozenset(s.labels.items()))] = s.value
        healthz = value(samples, "trainctl_http_requests_total", method="GET", route="/healthz",
                        status="200")  # fmt: skip
        assert healthz is not None and healthz >= 40
    finally:
        server.terminate()
        server.wait(30)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert server.poll() is None, "uvicorn exited"
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail("the API did not become ready")


# --- the log stream, resumed --------------------------------------------------------------------


def parse_sse(body: str) -> list[dict[str, str]]:
    events = []
    for block in body.split("\n\n"):
        event: dict[str, str] = {}
        for line in block.splitlines():
            field, _, data = line.partition(": ")
            if field == "data":
                event["data"] = event["data"] + "\n" + data if "data" in event else data
            elif field in ("id", "event"):
                event[field] = data
        if event:
            events.append(event)
    return events


def test_log_stream_resumes_at_the_byte_offset_of_the_last_event(
    api_url, api_key, sessions, service_settings: Settings
) -> None:
    with session_scope(sessions) as session:
        from store.keys import get_or_create_owner

        owner_id = get_or_create_owner(session, "alice").id
        job_id = queries.create_job(session, owner_id, VALID_SPEC, family="f", name="t").id
        assert queries.claim_job(session, job_id, "test-worker") is not None
    log = service_settings.artifact_root / job_id / "logs.txt"
    log.parent.mkdir(parents=True)
    log.write_text("=== attempt 1 ===\nloaded Cora ✓\n")
    headers = {"Authorization": f"Bearer {api_key}"}
    url = f"{api_url}/jobs/{job_id}/logs/stream"

    # The first connection reads what is there, then drops (the client goes away).
    with httpx.stream("GET", url, headers=headers, timeout=10) as response:
        first = next(e for e in parse_sse(next(response.iter_text())) if e.get("event") == "log")
    assert first["data"] == "=== attempt 1 ===\nloaded Cora ✓"
    assert int(first["id"]) == len(log.read_bytes())  # bytes, not characters

    with log.open("a") as f:
        f.write("epoch 1\nepoch 2\n")
    with session_scope(sessions) as session:
        assert queries.finish_job(session, job_id, "succeeded")

    # Reconnecting with the last id: only what came after it, then the end.
    resumed = parse_sse(httpx.get(url, headers={**headers, "Last-Event-ID": first["id"]}).text)
    assert [e.get("event") for e in resumed] == ["log", "end"]
    assert resumed[0]["data"] == "epoch 1\nepoch 2"
    assert int(resumed[0]["id"]) == len(log.read_bytes())
    # `?offset=` is the same without the header; past the end there is nothing more to send.
    by_query = parse_sse(httpx.get(url, params={"offset": first["id"]}, headers=headers).text)
    assert by_query == resumed
    at_end = parse_sse(httpx.get(url, params={"offset": resumed[0]["id"]}, headers=headers).text)
    assert [e.get("event") for e in at_end] == ["end"]


def serve(app, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    """`app` on `port` (uvicorn in a thread); open streams are cut 0.5 s into a shutdown."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=0.5
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    return server, thread


def test_logs_follow_survives_an_api_restart_and_resumes_at_its_offset(
    service_settings: Settings, dispatched, engine, sessions, api_key, monkeypatch
) -> None:
    import cli.client
    from cli.main import main as trainctl
    from store.keys import get_or_create_owner

    monkeypatch.setattr(cli.client, "RECONNECT_DELAY_S", 0.1)
    with session_scope(sessions) as session:
        owner_id = get_or_create_owner(session, "alice").id
        job_id = queries.create_job(session, owner_id, VALID_SPEC, family="f", name="t").id
        assert queries.claim_job(session, job_id, "test-worker") is not None
    log = service_settings.artifact_root / job_id / "logs.txt"
    log.parent.mkdir(parents=True)
    log.write_text("line 1\n")
    port = _free_port()
    server, thread = serve(create_app(service_settings, dispatch=dispatched), port)
    env = {"TRAINCTL_URL": f"http://127.0.0.1:{port}", "TRAINCTL_API_KEY": api_key,
           "TRAINCTL_HOME": None}  # fmt: skip
    outcome = {}
    follower = threading.Thread(
        target=lambda: outcome.update(
            result=CliRunner().invoke(trainctl, ["logs", job_id, "-f"], env=env)
        )
    )
    follower.start()
    try:
        time.sleep(1.0)  # line 1 is out
        server.should_exit = True  # the API goes away mid-stream
        thread.join(30)
        with log.open("a") as f:
            f.write("line 2\n")  # written while nobody serves it
        time.sleep(0.5)
        server, thread = serve(create_app(service_settings, dispatch=dispatched), port)
        with log.open("a") as f:
            f.write("line 3\n")
        with session_scope(sessions) as session:
            assert queries.finish_job(session, job_id, "succeeded")
        follower.join(30)
    finally:
        server.should_exit = True
        thread.join(30)
    result = outcome["result"]
    assert result.exit_code == 0, result.output
    assert result.stdout == "line 1\nline 2\nline 3\n"  # each line once, in order
    assert "reconnecting" in result.stderr


# --- JSON log lines -----------------------------------------------------------------------------


def test_json_log_lines_parse_and_carry_the_job_id() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("trainctl.test.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    job_id = str(uuid.uuid4())
    try:
        logger.info("job %s: attempt %d on %s", job_id, 2, "host:1")  # the workers' wording
        logger.warning("no job here: %s", 'just text with "quotes"\nand a newline')
        logger.info("queued", extra={"job_id": "explicit"})
        with job_context("from-context"):
            logger.info("inside a job's context")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("could not queue job %s", job_id)
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(lines) == 5  # one object per line, newlines escaped
    first = lines[0]
    assert set(first) == {"time", "level", "logger", "message", "job_id"}
    assert first["level"] == "INFO" and first["logger"] == "trainctl.test.json"
    assert first["message"] == f"job {job_id}: attempt 2 on host:1"
    assert first["job_id"] == job_id and first["time"].endswith("+00:00")
    assert "job_id" not in lines[1] and lines[1]["message"].endswith("and a newline")
    assert lines[2]["job_id"] == "explicit" and lines[3]["job_id"] == "from-context"
    assert lines[4]["job_id"] == job_id and "RuntimeError: boom" in lines[4]["exc_info"]


def test_the_log_format_setting_is_checked() -> None:
    assert log_format("JSON") == "json" and log_format("text") == "text"
    with pytest.raises(ValueError, match="TRAINCTL_LOG_FORMAT='xml'.*text, json"):
        log_format("xml")
    with pytest.raises(ValueError, match="TRAINCTL_LOG_FORMAT"):
        configure_logging(logging.INFO, "yaml")


def test_the_service_commands_log_json_lines(tmp_path: Path, db_url) -> None:
    """`TRAINCTL_LOG_FORMAT=json trainctl -v migrate`: every stderr line is a JSON object."""
    env = {**os.environ, "TRAINCTL_LOG_FORMAT": "json", "DATABASE_URL": db_url,
           "TRAINCTL_HOME": str(tmp_path)}  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "-v", "migrate"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert any(line["logger"].startswith("alembic") for line in lines)


# --- Flower -------------------------------------------------------------------------------------


def test_flower_is_an_optional_compose_service_on_the_stacks_broker() -> None:
    from tests.support.e2e import compose_services

    services = compose_services()
    flower = services["flower"]
    assert flower["profiles"] == ["monitoring"]  # `docker compose up` alone leaves it out
    assert flower["image"].startswith("mher/flower:")
    broker = next(a for a in flower["command"] if a.startswith("--broker="))
    assert broker == f"--broker={services['api']['environment']['REDIS_URL']}"
    assert any(a.startswith("--basic_auth=") for a in flower["command"])
    assert flower["depends_on"] == {"redis": {"condition": "service_healthy"}}
