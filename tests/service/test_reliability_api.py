"""Issue 11 on the API, against real PostgreSQL: dry runs, per-owner limits, idempotent submits,
and errors without server internals (items 5, 8 and 11; `docs/reliability.md`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select, update

from api.main import create_app
from store import queries
from store.db import session_scope
from store.models import Job
from store.settings import Settings
from tests.support.service import VALID_SPEC, RecordingDispatcher

MISSING_PATH_SPEC = {**VALID_SPEC, "data": {"format": "edge_list", "path": "nowhere/e.csv"}}


@pytest.fixture
def limited_settings(tmp_path: Path, db_url: str) -> Settings:
    return Settings(
        DATABASE_URL=db_url,
        TRAINCTL_HOME=str(tmp_path / "home"),
        TRAINCTL_DATA_ROOT="/work/shared/data",
        TRAINCTL_MAX_QUEUED_PER_OWNER=2,
        TRAINCTL_QUOTA_RETRY_AFTER_SECONDS=17,
    )


@pytest.fixture
def limited(
    limited_settings: Settings, dispatched: RecordingDispatcher, engine: Engine
) -> Iterator[TestClient]:
    with TestClient(create_app(limited_settings, dispatch=dispatched)) as client:
        yield client


def job_count(sessions) -> int:
    with sessions() as session:
        return len(session.scalars(select(Job.id)).all())


# --- item 5: dry run ----------------------------------------------------------------------------


def test_dry_run_answers_the_normalized_spec_and_stores_nothing(client, auth, sessions, dispatched):
    response = client.post("/jobs?dry_run=true", json=VALID_SPEC, headers=auth)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["dry_run"] is True
    assert (body["family"], body["name"]) == ("graphsage_skipgram", "t")
    # Every default filled in, as the job would run.
    assert body["spec"]["training"]["epochs"] == 2
    assert body["spec"]["optimizer"]["name"] == "adam"
    assert body["spec"]["resources"]["devices"] == 1
    assert body["quota"] == {"queued": 0, "max_queued": 100, "running": 0, "max_running": 8}
    assert job_count(sessions) == 0 and dispatched.job_ids == []


def test_dry_run_refuses_what_a_submit_refuses(client, auth, sessions, dispatched):
    bad = {**VALID_SPEC, "training": {"epochs": 10**12}}
    response = client.post("/jobs?dry_run=true", json=bad, headers=auth)
    assert response.status_code == 422
    assert any(e["loc"] == "training.epochs" for e in response.json()["detail"])
    response = client.post("/jobs?dry_run=true", json=MISSING_PATH_SPEC, headers=auth)
    assert response.status_code == 422
    assert "no upload named 'nowhere'" in response.json()["detail"][0]["msg"]
    # Whatever a submit checks (the family's monitors too), the dry run checks the same way.
    bad_monitor = {**VALID_SPEC, "early_stopping": {"monitor": "no_such_metric"}}
    dry = client.post("/jobs?dry_run=true", json=bad_monitor, headers=auth)
    submitted = client.post("/jobs", json=bad_monitor, headers=auth)
    if submitted.status_code == 422:
        assert (dry.status_code, dry.json()) == (422, submitted.json())
    else:
        assert (dry.status_code, submitted.status_code) == (200, 201)
    assert job_count(sessions) == (1 if submitted.status_code == 201 else 0)


def test_a_data_path_the_file_system_refuses_is_a_422_not_a_500(client, auth, sessions):
    """Found by schemathesis: a 300-character folder name made `exists()` raise ENAMETOOLONG."""
    spec = {**VALID_SPEC, "data": {"format": "edge_list", "path": "0" * 300 + "/e.csv"}}
    for url in ("/jobs", "/jobs?dry_run=true"):
        response = client.post(url, json=spec, headers=auth)
        assert response.status_code == 422, response.text
        assert "no upload named" in response.json()["detail"][0]["msg"]
    assert job_count(sessions) == 0


def test_dry_run_in_yaml(client, auth):
    body = "family: graphsage_skipgram\ndata: {format: planetoid, name: Cora}\n"
    response = client.post(
        "/jobs?dry_run=true",
        content=body,
        headers={**auth, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 200
    assert response.json()["spec"]["training"]["epochs"] == 100


# --- item 5: per-owner limits -------------------------------------------------------------------


def test_queued_jobs_over_the_owner_limit_are_429_with_retry_after(
    limited, auth, other_auth, sessions, dispatched
):
    for _ in range(2):
        assert limited.post("/jobs", json=VALID_SPEC, headers=auth).status_code == 201
    response = limited.post("/jobs", json=VALID_SPEC, headers=auth)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "17"
    detail = response.json()["detail"]
    assert "2 queued jobs" in detail and "TRAINCTL_MAX_QUEUED_PER_OWNER" in detail
    assert job_count(sessions) == 2 and len(dispatched.job_ids) == 2
    # Another owner is not held back by alice's jobs.
    assert limited.post("/jobs", json=VALID_SPEC, headers=other_auth).status_code == 201
    # The dry run reports the quota instead of refusing.
    dry = limited.post("/jobs?dry_run=true", json=VALID_SPEC, headers=auth).json()
    assert dry["quota"]["queued"] == 2 and dry["quota"]["max_queued"] == 2
    # Once one has started, there is room again.
    first = dispatched.job_ids[0]
    with session_scope(sessions) as session:
        assert queries.claim_job(session, first, "w") is not None
    assert limited.post("/jobs", json=VALID_SPEC, headers=auth).status_code == 201


def test_retry_counts_against_the_queued_limit(limited, auth, sessions, dispatched):
    ids = [limited.post("/jobs", json=VALID_SPEC, headers=auth).json()["id"] for _ in range(2)]
    assert limited.post(f"/jobs/{ids[0]}/cancel", headers=auth).status_code == 200
    assert limited.post("/jobs", json=VALID_SPEC, headers=auth).status_code == 201  # 2 queued
    response = limited.post(f"/jobs/{ids[0]}/retry", headers=auth)
    assert response.status_code == 429 and "Retry-After" in response.headers
    with sessions() as session:
        assert queries.get_job(session, ids[0]).status == "cancelled"


def test_the_running_limit_holds_a_job_back_at_claim(sessions, pg_url):
    from store.keys import get_or_create_owner

    with session_scope(sessions) as session:
        owner = get_or_create_owner(session, "alice").id
        ids = [
            queries.create_job(session, owner, VALID_SPEC, family="graphsage_skipgram", name="t").id
            for _ in range(3)
        ]
    with session_scope(sessions) as session:
        assert queries.claim_job(session, ids[0], "w1", max_running=2) is not None
        assert queries.claim_job(session, ids[1], "w2", max_running=2) is not None
    limit = pytest.raises(queries.RunningLimitReached, match="MAX_RUNNING_PER_OWNER=2")
    with limit, session_scope(sessions) as session:
        queries.claim_job(session, ids[2], "w3", max_running=2)
    with sessions() as session:
        assert queries.get_job(session, ids[2]).status == "queued"
    with session_scope(sessions) as session:
        queries.finish_job(session, ids[0], "succeeded")
    with session_scope(sessions) as session:
        assert queries.claim_job(session, ids[2], "w3", max_running=2) is not None


# --- item 8: Idempotency-Key --------------------------------------------------------------------


def test_idempotency_key_makes_a_retried_submit_return_the_same_job(
    client, auth, other_auth, sessions, dispatched
):
    headers = {**auth, "Idempotency-Key": "submit-42"}
    first = client.post("/jobs", json=VALID_SPEC, headers=headers)
    assert first.status_code == 201
    again = client.post("/jobs", json=VALID_SPEC, headers=headers)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    # The same spec in YAML is the same request.
    yaml_body = "family: graphsage_skipgram\nname: t\ndata: {format: planetoid, name: Cora}\n"
    yaml_body += "training: {epochs: 2}\n"
    as_yaml = client.post(
        "/jobs", content=yaml_body, headers={**headers, "Content-Type": "application/yaml"}
    )
    assert (as_yaml.status_code, as_yaml.json()["id"]) == (200, first.json()["id"])
    assert job_count(sessions) == 1 and dispatched.job_ids == [first.json()["id"]]
    # Another spec under the same key is refused, naming the header.
    other = client.post("/jobs", json={**VALID_SPEC, "name": "other"}, headers=headers)
    assert other.status_code == 422
    assert other.json()["detail"][0]["loc"] == "header.Idempotency-Key"
    assert first.json()["id"] in other.json()["detail"][0]["msg"]
    # Keys are per owner.
    mallory = client.post(
        "/jobs", json=VALID_SPEC, headers={**other_auth, "Idempotency-Key": "submit-42"}
    )
    assert mallory.status_code == 201 and mallory.json()["id"] != first.json()["id"]
    assert job_count(sessions) == 2


def test_idempotency_key_over_255_characters_is_422(client, auth):
    response = client.post("/jobs", json=VALID_SPEC, headers={**auth, "Idempotency-Key": "k" * 256})
    assert response.status_code == 422


# --- item 11: no server internals ---------------------------------------------------------------


def test_a_jobs_error_is_served_without_server_paths(
    limited, limited_settings, auth, sessions, dispatched
):
    job_id = limited.post("/jobs", json=VALID_SPEC, headers=auth).json()["id"]
    uploads = limited_settings.upload_root / "alice"
    run = limited_settings.artifact_root / job_id
    raw = (
        "DatasetNotFound: dataset 'Nope' not found; looked in: /work/shared/data, "
        f"{uploads}\nbad row in {uploads}/g/edges.csv:3; checkpoint {run}/checkpoints/last.pt; "
        "cache /var/cache/trainctl/x/y.pt; broker redis://:secret@10.1.2.3:6379/0\n"
        'Traceback (most recent call last):\n  File "/srv/app/core/run.py", line 9, in main\n'
        "ValueError: boom"
    )
    with session_scope(sessions) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status="failed", error=raw))
    for served in (
        limited.get(f"/jobs/{job_id}", headers=auth).json()["error"],
        limited.get("/jobs", headers=auth).json()["data"][0]["error"],
    ):
        assert "/work/shared" not in served and str(limited_settings.home) not in served
        assert "/srv/app" not in served and "/var/cache" not in served
        assert "secret" not in served and "10.1.2.3" not in served
        assert "looked in: the data root, your uploads" in served
        assert "bad row in g/edges.csv:3" in served
        assert "checkpoint checkpoints/last.pt" in served
        assert "ValueError: boom" in served
    with sessions() as session:  # the stored text keeps the details for operators
        assert queries.get_job(session, job_id).error == raw


def test_an_unexpected_error_is_a_500_without_internals(
    limited_settings, dispatched, engine, auth, monkeypatch
):
    def broken(*args, **kwargs):
        raise RuntimeError("cannot open /srv/trainctl/secret.db at postgresql://u:pw@db:5432/x")

    monkeypatch.setattr(queries, "list_jobs", broken)
    app = create_app(limited_settings, dispatch=dispatched)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.get("/jobs", headers=auth)
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert detail.startswith("internal server error (reference ")
    assert "/srv" not in response.text and "pw" not in response.text
    assert "RuntimeError" not in response.text
