"""The API's job routes against the real database: submission and validation, auth and
ownership, listing, cancelling, metrics polling and the SSE stream, health, 4xx not 500."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from api.main import create_app
from api.schemas import MetricsPublic, StepMetricsPublic
from store import queries
from store.db import session_scope
from store.models import Job
from store.settings import Settings
from tests.support.service import VALID_SPEC

JOB_ROUTES = [
    ("GET", "/jobs/{id}"),
    ("POST", "/jobs/{id}/cancel"),
    ("GET", "/jobs/{id}/metrics"),
    ("GET", "/jobs/{id}/metrics/stream"),
    ("GET", "/jobs/{id}/logs"),
    ("GET", "/jobs/{id}/checkpoints"),
    ("GET", "/jobs/{id}/checkpoints/best"),
    ("GET", "/jobs/{id}/embeddings"),
    ("GET", "/jobs/{id}/artifacts"),
    ("GET", "/jobs/{id}/artifacts/summary.json"),
    ("GET", "/jobs/{id}/summary"),
    ("GET", "/jobs/{id}/logs/stream"),
    ("POST", "/jobs/{id}/retry"),
    ("DELETE", "/jobs/{id}"),
]
ROUTES = [
    ("POST", "/jobs"),
    ("GET", "/jobs"),
    ("POST", "/datasets"),
    ("GET", "/datasets"),
    ("PUT", "/datasets/g"),
    ("DELETE", "/datasets/g"),
    *JOB_ROUTES,
]


def job_count(sessions) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(Job))


def submit(client: TestClient, auth: dict[str, str], **overrides) -> str:
    response = client.post("/jobs", json={**VALID_SPEC, **overrides}, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def start(sessions, job_id: str) -> None:
    with session_scope(sessions) as session:
        assert queries.claim_job(session, job_id, "test-worker") is not None


# --- submitting ---------------------------------------------------------------------------------


def test_post_job_stores_the_validated_spec_and_queues_it(client, auth, sessions, dispatched):
    response = client.post("/jobs", json=VALID_SPEC, headers=auth)
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["family"], body["name"], body["attempt"]) == (
        "queued",
        "graphsage_skipgram",
        "t",
        0,
    )
    assert body["spec"]["optimizer"]["name"] == "adam"  # defaults written out
    assert dispatched.job_ids == [body["id"]]
    with sessions() as session:
        job = session.get(Job, body["id"])
        assert job.spec == body["spec"] and job.spec["training"]["epochs"] == 2


def test_post_job_as_yaml(client, auth, dispatched):
    response = client.post(
        "/jobs",
        content=yaml.safe_dump(VALID_SPEC),
        headers={**auth, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["data"]["name"] == "Cora"


def _several_bad_fields() -> dict:
    return {
        **VALID_SPEC,
        "optimizer": {"name": "rmsprop", "lr": -1},
        "training": {"epochs": 0},
        "bogus": 1,
    }


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        pytest.param(
            {**VALID_SPEC, "family": "nope"},
            "application/json",
            {"family": "graphsage_skipgram"},
            id="unknown-family",
        ),
        pytest.param(
            {**VALID_SPEC, "optimizer": {"name": "rmsprop"}},
            "application/json",
            {"optimizer.name": "adamw"},
            id="bad-optimizer",
        ),
        pytest.param(
            _several_bad_fields(),
            "application/json",
            {
                "optimizer.name": "sgd",
                "optimizer.lr": None,
                "training.epochs": None,
                "bogus": "walks",
            },
            id="several-bad-fields",
        ),
        pytest.param("family: [unclosed", "application/yaml", {"": None}, id="bad-yaml"),
        pytest.param("- a\n- b\n", "application/yaml", {"": None}, id="yaml-list"),
        pytest.param("[1, 2]", "application/json", {"": None}, id="json-list"),
        pytest.param("{bad json", "application/json", {"": None}, id="bad-json"),
        pytest.param("a: &x [1]\nb: *x\n", "text/yaml", {"b": None}, id="yaml-alias"),
    ],
)
def test_bad_specs_are_422_listing_every_field_and_store_nothing(
    client, auth, sessions, dispatched, body, content_type, expected
):
    before = job_count(sessions)
    content = body if isinstance(body, str) else json.dumps(body)
    response = client.post("/jobs", content=content, headers={**auth, "Content-Type": content_type})
    assert response.status_code == 422, response.text
    errors = {e["loc"]: e for e in response.json()["detail"]}
    assert set(expected) <= set(errors), errors
    for loc, allowed_value in expected.items():
        assert errors[loc]["msg"]
        if allowed_value is not None:
            assert allowed_value in errors[loc]["allowed"]
    assert job_count(sessions) == before
    assert dispatched.job_ids == []


def test_unsupported_content_type_is_415(client, auth):
    response = client.post("/jobs", content="x", headers={**auth, "Content-Type": "text/html"})
    assert response.status_code == 415
    assert "application/json or application/yaml" in response.json()["detail"]


def test_queue_down_fails_the_job_with_503(client, auth, sessions, dispatched):
    dispatched.fail = True
    response = client.post("/jobs", json=VALID_SPEC, headers=auth)
    assert response.status_code == 503
    assert response.json()["detail"] == "job queue unavailable; the job was not queued"
    with sessions() as session:
        (job,) = session.scalars(select(Job)).all()
        # The broker's own words (its address) go to the log, not into what users see.
        assert job.status == "failed"
        assert job.error == "could not queue the job: the job queue was unavailable"


# --- auth and ownership -------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_valid_key(client, auth, method, path):
    job_id = submit(client, auth)
    url = path.format(id=job_id)
    for headers, detail in [
        ({}, "missing API key"),
        ({"Authorization": "Bearer tc_not-a-real-key-at-all"}, "invalid API key"),
        ({"Authorization": "Bearer "}, "missing API key"),
        ({"Authorization": f"Basic {auth['Authorization'].split()[1]}"}, "missing API key"),
    ]:
        response = client.request(method, url, headers=headers)
        assert response.status_code == 401, (url, headers)
        assert response.json()["detail"] == detail
        assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize(("method", "path"), JOB_ROUTES)
def test_another_owners_job_is_404_on_every_route(client, auth, other_auth, method, path):
    job_id = submit(client, auth)
    for job in (job_id, str(uuid.uuid4()), "not-a-uuid"):
        response = client.request(method, path.format(id=job), headers=other_auth)
        assert response.status_code == 404, (method, path)
        assert response.json()["detail"] == "job not found"
    assert client.get(f"/jobs/{job_id}", headers=auth).status_code == 200


def test_revoked_key_is_401(client, auth, sessions):
    from store.keys import revoke_key

    with session_scope(sessions) as session:
        assert revoke_key(session, auth["Authorization"].split()[1])
    assert client.get("/jobs", headers=auth).status_code == 401


# --- listing and cancelling ---------------------------------------------------------------------


def test_list_jobs_newest_first_with_pagination_and_filters(client, auth, other_auth):
    ids = [submit(client, auth, name=f"job{i}") for i in range(5)]
    submit(client, other_auth)
    client.post(f"/jobs/{ids[1]}/cancel", headers=auth)

    page = client.get("/jobs", params={"limit": 2}, headers=auth).json()
    assert page["count"] == 5 and [j["id"] for j in page["data"]] == ids[::-1][:2]
    page = client.get("/jobs", params={"limit": 2, "offset": 4}, headers=auth).json()
    assert [j["id"] for j in page["data"]] == [ids[0]]
    cancelled = client.get("/jobs", params={"status": "cancelled"}, headers=auth).json()
    assert cancelled["count"] == 1 and cancelled["data"][0]["id"] == ids[1]
    queued = client.get("/jobs?status=queued&family=graphsage_skipgram", headers=auth).json()
    assert queued["count"] == 4
    assert client.get("/jobs?family=other", headers=auth).json() == {"data": [], "count": 0}

    too_many = client.get("/jobs", params={"limit": 101}, headers=auth)
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == "query.limit"
    bad_status = client.get("/jobs", params={"status": "done"}, headers=auth)
    assert bad_status.status_code == 422
    assert "succeeded" in bad_status.json()["detail"][0]["allowed"]


def test_cancel_queued_running_finished(client, auth, sessions):
    queued = submit(client, auth)
    response = client.post(f"/jobs/{queued}/cancel", headers=auth)
    assert response.status_code == 200 and response.json()["status"] == "cancelled"

    running = submit(client, auth)
    start(sessions, running)
    body = client.post(f"/jobs/{running}/cancel", headers=auth).json()
    assert (body["status"], body["cancel_requested"]) == ("running", True)

    again = client.post(f"/jobs/{queued}/cancel", headers=auth)
    assert again.status_code == 409
    assert again.json()["detail"] == "job already finished (cancelled)"


# --- metrics ------------------------------------------------------------------------------------


def add_metrics(sessions, job_id: str, attempt: int, epochs) -> None:
    with session_scope(sessions) as session:
        for epoch in epochs:
            queries.upsert_metric(session, job_id, attempt, epoch, {"loss": 1 / epoch})


def test_metrics_incremental_polling_by_attempt(client, auth, sessions):
    job_id = submit(client, auth)
    start(sessions, job_id)
    add_metrics(sessions, job_id, 1, range(1, 6))
    url = f"/jobs/{job_id}/metrics"

    body = client.get(url, headers=auth).json()
    MetricsPublic.model_validate(body)  # the hand-built body is the declared schema
    assert [m["epoch"] for m in body["data"]] == [1, 2, 3, 4, 5]
    assert (body["count"], body["attempt"], body["status"]) == (5, 1, "running")
    assert body["data"][1]["values"] == {"loss": 0.5}
    body = client.get(url, params={"after_epoch": 3}, headers=auth).json()
    assert [m["epoch"] for m in body["data"]] == [4, 5]
    assert client.get(url, params={"after_epoch": 5}, headers=auth).json()["data"] == []

    with session_scope(sessions) as session:  # a retry: attempt 2 starts over
        queries.requeue_job(session, job_id)
    start(sessions, job_id)
    add_metrics(sessions, job_id, 2, [1])
    body = client.get(url, headers=auth).json()
    assert (body["attempt"], [m["epoch"] for m in body["data"]]) == (2, [1])
    assert client.get(url, params={"attempt": 1}, headers=auth).json()["count"] == 5


def add_steps(sessions, job_id: str, attempt: int, steps, per_epoch: int = 4) -> None:
    with session_scope(sessions) as session:
        for step in steps:
            values = {"train_loss": 1 / step, "lr": 0.01}
            queries.upsert_metric_step(session, job_id, attempt, step, step // per_epoch, values)


def test_step_metrics_polling_by_attempt(client, auth, sessions):
    job_id = submit(client, auth)
    start(sessions, job_id)
    add_steps(sessions, job_id, 1, [2, 4, 6, 8])
    add_metrics(sessions, job_id, 1, [1, 2])  # epoch rows are their own view
    url = f"/jobs/{job_id}/metrics"

    body = client.get(url, params={"granularity": "step"}, headers=auth).json()
    StepMetricsPublic.model_validate(body)  # the hand-built body is the declared schema
    assert [(m["step"], m["epoch"]) for m in body["data"]] == [(2, 0), (4, 1), (6, 1), (8, 2)]
    assert (body["count"], body["attempt"], body["status"]) == (4, 1, "running")
    assert body["data"][1]["values"] == {"train_loss": 0.25, "lr": 0.01}
    page = client.get(url, params={"granularity": "step", "after_step": 4}, headers=auth).json()
    assert [m["step"] for m in page["data"]] == [6, 8]
    page = client.get(url, params={"granularity": "step", "limit": 1}, headers=auth).json()
    assert [m["step"] for m in page["data"]] == [2]
    assert [m["epoch"] for m in client.get(url, headers=auth).json()["data"]] == [1, 2]

    with session_scope(sessions) as session:  # a retry: attempt 2 starts over
        queries.requeue_job(session, job_id)
    start(sessions, job_id)
    add_steps(sessions, job_id, 2, [2])
    body = client.get(url, params={"granularity": "step"}, headers=auth).json()
    assert (body["attempt"], [m["step"] for m in body["data"]]) == (2, [2])
    page = client.get(url, params={"granularity": "step", "attempt": 1}, headers=auth).json()
    assert page["count"] == 4

    for params, loc in [
        ({"granularity": "step", "after_epoch": 1}, "query.after_epoch"),
        ({"after_step": 1}, "query.after_step"),
    ]:
        response = client.get(url, params=params, headers=auth)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == loc
    bad = client.get(url, params={"granularity": "minute"}, headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["allowed"] == ["epoch", "step"]


def test_a_nan_metric_is_served_as_null(client, auth, sessions):
    job_id = submit(client, auth)
    start(sessions, job_id)
    with session_scope(sessions) as session:
        nan, inf = float("nan"), float("inf")
        queries.upsert_metric(session, job_id, 1, 1, {"loss": nan, "acc": None, "hist": [1.0, inf]})
        queries.upsert_metric_step(session, job_id, 1, 5, 1, {"grad_norm": inf, "lr": 0.1})
        queries.finish_job(session, job_id, "failed", "diverged")
    url = f"/jobs/{job_id}/metrics"
    response = client.get(url, headers=auth)
    # Strict JSON: a parser that refuses NaN reads it.
    body = json.loads(response.text, parse_constant=pytest.fail)
    assert body["data"][0]["values"] == {"loss": None, "acc": None, "hist": [1.0, None]}
    body = json.loads(client.get(url, params={"granularity": "step"}, headers=auth).text)
    assert body["data"][0]["values"] == {"grad_norm": None, "lr": 0.1}
    for granularity in ("epoch", "step"):
        events = read_sse(client, f"{url}/stream?granularity={granularity}", auth)
        data = json.loads(events[0]["data"], parse_constant=pytest.fail)
        assert None in data["values"].values()


def read_sse(client, url, headers) -> list[dict]:
    events, event = [], {}
    with client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                if event:
                    events.append(event)
                event = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(": ")
                event[key] = value
    return events


def test_sse_stream_sends_rows_then_end_and_resumes(client, auth, sessions):
    job_id = submit(client, auth)
    start(sessions, job_id)
    add_metrics(sessions, job_id, 1, [1, 2, 3])
    with session_scope(sessions) as session:
        queries.finish_job(session, job_id, "succeeded")
    url = f"/jobs/{job_id}/metrics/stream"

    events = read_sse(client, url, auth)
    assert [(e["event"], e.get("id")) for e in events] == [
        ("metric", "1"),
        ("metric", "2"),
        ("metric", "3"),
        ("end", None),
    ]
    assert json.loads(events[1]["data"]) == {"epoch": 2, "values": {"loss": 0.5}}
    assert json.loads(events[-1]["data"]) == {"status": "succeeded"}

    resumed = read_sse(client, url, {**auth, "Last-Event-ID": "2"})
    assert [(e["event"], e.get("id")) for e in resumed] == [("metric", "3"), ("end", None)]
    for bad_id in ("abc", "99999999999"):
        bad = client.get(url, headers={**auth, "Last-Event-ID": bad_id})
        assert bad.status_code == 422


def test_sse_step_stream_sends_steps_then_end_and_resumes(client, auth, sessions):
    job_id = submit(client, auth)
    start(sessions, job_id)
    add_steps(sessions, job_id, 1, [10, 20, 30])
    add_metrics(sessions, job_id, 1, [1])
    with session_scope(sessions) as session:
        queries.finish_job(session, job_id, "succeeded")
    url = f"/jobs/{job_id}/metrics/stream?granularity=step"

    events = read_sse(client, url, auth)
    assert [(e["event"], e.get("id")) for e in events] == [
        ("metric", "10"),
        ("metric", "20"),
        ("metric", "30"),
        ("end", None),
    ]
    assert json.loads(events[1]["data"]) == {
        "step": 20,
        "epoch": 5,
        "values": {"train_loss": 0.05, "lr": 0.01},
    }
    resumed = read_sse(client, url, {**auth, "Last-Event-ID": "20"})
    assert [(e["event"], e.get("id")) for e in resumed] == [("metric", "30"), ("end", None)]
    after = read_sse(client, f"{url}&after_step=10", auth)
    assert [e.get("id") for e in after] == ["20", "30", None]
    bad = client.get(url, headers={**auth, "Last-Event-ID": "x"})
    assert bad.status_code == 422
    assert bad.json()["detail"] == "Last-Event-ID must be the step of the last event received"
    assert client.get(f"{url}&after_epoch=1", headers=auth).status_code == 422


def test_sse_stream_follows_a_running_job(client, auth, sessions):
    job_id = submit(client, auth)
    start(sessions, job_id)

    def train() -> None:
        for epoch in (1, 2, 3):
            time.sleep(0.1)
            add_metrics(sessions, job_id, 1, [epoch])
        with session_scope(sessions) as session:
            queries.finish_job(session, job_id, "failed", "boom")

    thread = threading.Thread(target=train)
    thread.start()
    events = read_sse(client, f"/jobs/{job_id}/metrics/stream", auth)
    thread.join()
    assert [e.get("id") for e in events if e["event"] == "metric"] == ["1", "2", "3"]
    assert events[-1] == {"event": "end", "data": '{"status": "failed"}'}


def test_more_streams_than_connections_all_finish(client, auth, sessions, service_settings):
    """A stream holds no connection between its polls (held ones would starve the polls)."""
    streams = 3 * service_settings.api_threads  # the API has a connection per thread
    job_id = submit(client, auth)
    start(sessions, job_id)
    ended: list[str] = []

    def follow() -> None:
        events = read_sse(client, f"/jobs/{job_id}/metrics/stream", auth)
        ended.append(events[-1]["event"])

    threads = [threading.Thread(target=follow) for _ in range(streams)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    add_metrics(sessions, job_id, 1, [1])
    with session_scope(sessions) as session:
        queries.finish_job(session, job_id, "succeeded")
    for thread in threads:
        thread.join(timeout=30)
    assert ended == ["end"] * streams


# --- the app module ----------------------------------------------------------------------------


def run_python(code: str, tmp_path) -> None:
    """`code` in a fresh interpreter with an environment of nothing but a home."""
    env = {"PATH": "/usr/bin:/bin", "TRAINCTL_HOME": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


# Modules the API never imports: the training stack, and the worker (whose import pulls in the
# training core); Celery only once it queues a job.
NO_WORKER_NO_TORCH = (
    "def imported(name):\n"
    "    return [m for m in sys.modules if m == name or m.startswith(name + '.')]\n"
    "assert not imported('torch'), 'the API imported torch'\n"
    "assert not imported('worker'), f'the API imported {imported(\"worker\")}'\n"
)


def test_uvicorn_app_is_built_on_first_access_without_torch_or_the_worker(tmp_path):
    code = (
        "import sys, api.main\n"
        "assert 'app' not in vars(api.main)\n"
        "assert type(api.main.app).__name__ == 'FastAPI'\n"
        "assert 'celery' not in sys.modules, 'Celery is imported when a job is first queued'\n"
        + NO_WORKER_NO_TORCH
    )
    run_python(code, tmp_path)


def test_the_api_queues_a_job_without_the_worker(tmp_path):
    """The dispatcher sends `trainctl.run_job` with the broker settings of `store.broker`
    (here the embedded file-system broker), the worker package never imported."""
    code = (
        "import json, pathlib, sys, base64\n"
        "from api.dispatch import CeleryDispatcher\n"
        "from store.broker import TASK_NAME, embedded_broker_dir\n"
        "from store.settings import Settings\n"
        "settings = Settings()\n"
        "CeleryDispatcher(settings)('job-1')\n"
        "(message,) = (embedded_broker_dir(settings) / 'queue').iterdir()\n"
        "headers = json.loads(message.read_text())['headers']\n"
        "assert (headers['task'], headers['argsrepr']) == (TASK_NAME, \"['job-1']\"), headers\n"
        + NO_WORKER_NO_TORCH
    )
    run_python(code, tmp_path)


# --- health and error handling ------------------------------------------------------------------


def test_healthz_and_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok", "revision": None}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_readyz_is_503_when_unmigrated_or_unreachable(tmp_path):
    fresh = Settings(DATABASE_URL=f"sqlite:///{tmp_path}/fresh.db", TRAINCTL_HOME=str(tmp_path))
    with TestClient(create_app(fresh, dispatch=lambda _: None, migrate=False)) as client:
        response = client.get("/readyz")
        assert response.status_code == 503
        assert response.json()["detail"].startswith("database not migrated")
        assert client.get("/healthz").status_code == 200
    down = Settings(
        DATABASE_URL="postgresql://postgres@127.0.0.1:1/none", TRAINCTL_HOME=str(tmp_path)
    )
    with TestClient(create_app(down, dispatch=lambda _: None, migrate=False)) as client:
        response = client.get("/readyz")
        assert (response.status_code, response.json()["detail"]) == (503, "database unreachable")
        response = client.get("/jobs", headers={"Authorization": "Bearer tc_xxxxxxxxxxxxxxxx"})
        assert (response.status_code, response.json()["detail"]) == (503, "database unavailable")


def test_bad_input_is_4xx_never_500(client, auth):
    job_id = submit(client, auth)
    cases = [
        ("GET", "/jobs?limit=abc", {}),
        ("GET", "/jobs?offset=-1", {}),
        ("GET", f"/jobs/{job_id}/metrics?after_epoch=x", {}),
        ("GET", f"/jobs/{job_id}/metrics?attempt=0", {}),
        ("GET", f"/jobs/{job_id}/metrics?granularity=step&after_step=x", {}),
        ("GET", f"/jobs/{job_id}/metrics?granularity=step&after_step=99999999999", {}),
        ("GET", f"/jobs/{job_id}/metrics/stream?granularity=batch", {}),
        ("GET", f"/jobs/{job_id}/logs?tail=0", {}),
        ("GET", f"/jobs/{job_id}/embeddings?format=xml", {}),
        ("GET", f"/jobs/{job_id}/checkpoints/..%2F..%2Fetc%2Fpasswd", {}),
        ("POST", "/jobs", {"content": b"\xff\xfe\x00garbage"}),
        ("POST", "/jobs", {"content": b"x" * (1024 * 1024 + 1)}),
        ("POST", "/datasets", {"json": {"name": "x"}}),
        (
            "POST",
            "/datasets",
            {
                "content": b"--b\r\nbroken",
                "headers": {"Content-Type": "multipart/form-data; boundary=b"},
            },
        ),
        ("DELETE", f"/jobs/{job_id}", {}),
        ("GET", "/jobs/a%00b", {}),
        ("GET", f"/jobs/{job_id}/checkpoints/a%00b", {}),
        ("GET", f"/jobs/{job_id}/metrics?after_epoch=99999999999999999999", {}),
        ("GET", f"/jobs/{job_id}/metrics/stream?after_epoch=99999999999", {}),
        ("GET", "/nope", {}),
    ]
    for method, url, kwargs in cases:
        headers = {**auth, **kwargs.pop("headers", {})}
        response = client.request(method, url, headers=headers, **kwargs)
        assert 400 <= response.status_code < 500, (method, url, response.status_code, response.text)
    # PostgreSQL refuses a NUL character (422); SQLite simply finds nothing.
    assert client.get("/jobs?family=x%00", headers=auth).status_code in (200, 422)


# --- the run's summary, retry and delete --------------------------------------------------------


def test_summary_is_the_runs_summary_json_once_written(client, auth, sessions, service_settings):
    job_id = submit(client, auth)
    response = client.get(f"/jobs/{job_id}/summary", headers=auth)
    assert (response.status_code, response.json()) == (404, {"detail": "summary not found"})
    summary = {"best_epoch": 3, "monitor": "val_loss", "best_score": 0.5, "best_metrics": {}}
    path = service_settings.artifact_root / job_id / "summary.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(summary))
    with session_scope(sessions) as session:
        queries.upsert_artifact(session, job_id, kind="summary", name="summary.json",
                                path=f"{job_id}/summary.json", size=1, sha256="")  # fmt: skip
    assert client.get(f"/jobs/{job_id}/summary", headers=auth).json() == summary


def test_retry_and_delete_only_fit_finished_jobs(client, auth, sessions, dispatched):
    job_id = submit(client, auth)
    assert client.post(f"/jobs/{job_id}/retry", headers=auth).status_code == 409
    assert client.delete(f"/jobs/{job_id}", headers=auth).status_code == 409
    client.post(f"/jobs/{job_id}/cancel", headers=auth)
    dispatched.fail = True  # the broker is down: the retry is not left queued
    response = client.post(f"/jobs/{job_id}/retry", headers=auth)
    assert response.status_code == 503
    assert client.get(f"/jobs/{job_id}", headers=auth).json()["status"] == "failed"
    dispatched.fail = False
    job = client.post(f"/jobs/{job_id}/retry", headers=auth).json()
    assert (job["status"], job["queue_position"], job["error"]) == ("queued", 1, None)
    assert dispatched.job_ids == [job_id, job_id]
    client.post(f"/jobs/{job_id}/cancel", headers=auth)
    assert client.delete(f"/jobs/{job_id}", headers=auth).status_code == 204
    assert client.get(f"/jobs/{job_id}", headers=auth).status_code == 404
