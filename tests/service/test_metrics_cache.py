"""What makes metrics polling cheap, against the real database: the `ETag` / `If-None-Match`
round trip of `GET /jobs/{id}/metrics` (304 while nothing changed, a new tag once a row lands
or the status moves), and the API-key cache (a key found valid is answered from memory for at
most `TRAINCTL_AUTH_CACHE_SECONDS`; a revoked key stops working within 1 s)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import event

from api.coalesce import ReadCoalescer
from api.main import create_app
from store import queries
from store.db import session_scope
from store.keys import revoke_key
from store.settings import Settings
from tests.support.service import VALID_SPEC


def submit(client: TestClient, auth: dict[str, str]) -> str:
    response = client.post("/jobs", json=VALID_SPEC, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def running_job(client: TestClient, auth: dict[str, str], sessions, epochs: int = 0) -> str:
    job_id = submit(client, auth)
    with session_scope(sessions) as session:
        assert queries.claim_job(session, job_id, "test-worker") is not None
        for epoch in range(1, epochs + 1):
            queries.upsert_metric(session, job_id, 1, epoch, {"val_loss": 1.0 / epoch})
    return job_id


# --- ETag / If-None-Match -----------------------------------------------------------------------


def test_etag_round_trip_and_a_new_row_changes_the_tag(client, auth, sessions) -> None:
    job_id = running_job(client, auth, sessions, epochs=2)
    url = f"/jobs/{job_id}/metrics"
    first = client.get(url, headers=auth)
    assert first.status_code == 200 and first.json()["count"] == 2
    etag = first.headers["etag"]
    assert etag.startswith('W/"') and first.headers["cache-control"] == "private, no-cache"

    same = client.get(url, headers={**auth, "If-None-Match": etag})
    assert same.status_code == 304 and same.content == b""
    assert same.headers["etag"] == etag
    # A list of tags, and `*`, match too (RFC 9110 13.1.2); an unrelated tag does not.
    listed = client.get(url, headers={**auth, "If-None-Match": f'"other", {etag}'})
    assert listed.status_code == 304
    assert client.get(url, headers={**auth, "If-None-Match": "*"}).status_code == 304
    other = client.get(url, headers={**auth, "If-None-Match": 'W/"nope"'})
    assert other.status_code == 200 and other.json()["count"] == 2

    with session_scope(sessions) as session:
        queries.upsert_metric(session, job_id, 1, 3, {"val_loss": 0.3})
    changed = client.get(url, headers={**auth, "If-None-Match": etag})
    assert changed.status_code == 200
    assert [row["epoch"] for row in changed.json()["data"]] == [1, 2, 3]
    new_etag = changed.headers["etag"]
    assert new_etag != etag
    assert client.get(url, headers={**auth, "If-None-Match": new_etag}).status_code == 304

    # A rewritten row (same attempt and epoch, new values) is a change too.
    with session_scope(sessions) as session:
        queries.upsert_metric(session, job_id, 1, 3, {"val_loss": 0.25})
    rewritten = client.get(url, headers={**auth, "If-None-Match": new_etag})
    assert rewritten.status_code == 200
    assert rewritten.json()["data"][-1]["values"] == {"val_loss": 0.25}

    # The status is part of the answer, so of the tag.
    tag = rewritten.headers["etag"]
    with session_scope(sessions) as session:
        assert queries.finish_job(session, job_id, "succeeded")
    finished = client.get(url, headers={**auth, "If-None-Match": tag})
    assert finished.status_code == 200 and finished.json()["status"] == "succeeded"


def test_an_up_to_date_poller_gets_304_until_its_next_row(client, auth, sessions) -> None:
    job_id = running_job(client, auth, sessions, epochs=3)
    url = f"/jobs/{job_id}/metrics?after_epoch=3"
    empty = client.get(url, headers=auth)
    assert empty.status_code == 200 and empty.json()["data"] == []
    etag = empty.headers["etag"]
    for _ in range(3):
        assert client.get(url, headers={**auth, "If-None-Match": etag}).status_code == 304
    with session_scope(sessions) as session:
        queries.upsert_metric(session, job_id, 1, 4, {"val_loss": 0.2})
    fresh = client.get(url, headers={**auth, "If-None-Match": etag})
    assert fresh.status_code == 200 and [r["epoch"] for r in fresh.json()["data"]] == [4]


def test_step_rows_and_attempts_have_their_own_tags(client, auth, sessions) -> None:
    job_id = running_job(client, auth, sessions)
    with session_scope(sessions) as session:
        queries.upsert_metric_step(session, job_id, 1, 10, 1, {"train_loss": 1.0})
    url = f"/jobs/{job_id}/metrics?granularity=step"
    first = client.get(url, headers=auth)
    assert first.status_code == 200 and first.json()["count"] == 1
    etag = first.headers["etag"]
    assert client.get(url, headers={**auth, "If-None-Match": etag}).status_code == 304
    with session_scope(sessions) as session:
        queries.upsert_metric_step(session, job_id, 1, 20, 1, {"train_loss": 0.5})
    assert client.get(url, headers={**auth, "If-None-Match": etag}).status_code == 200
    epoch_tag = client.get(f"/jobs/{job_id}/metrics", headers=auth).headers["etag"]
    assert epoch_tag != etag

    # A retry is a new attempt: the latest attempt's page changes.
    with session_scope(sessions) as session:
        assert queries.finish_job(session, job_id, "failed", "boom")
        assert queries.retry_job(session, job_id)
        assert queries.claim_job(session, job_id, "test-worker") is not None
    latest = client.get(f"/jobs/{job_id}/metrics", headers={**auth, "If-None-Match": epoch_tag})
    assert latest.status_code == 200 and latest.json()["attempt"] == 2


def test_conditional_requests_keep_the_404_and_the_owner_check(client, auth, other_auth, sessions):
    job_id = running_job(client, auth, sessions, epochs=1)
    etag = client.get(f"/jobs/{job_id}/metrics", headers=auth).headers["etag"]
    stolen = client.get(f"/jobs/{job_id}/metrics", headers={**other_auth, "If-None-Match": etag})
    assert stolen.status_code == 404 and stolen.json() == {"detail": "job not found"}
    missing = client.get("/jobs/nope/metrics", headers={**auth, "If-None-Match": "*"})
    assert missing.status_code == 404


# --- the API-key cache --------------------------------------------------------------------------


def count_key_lookups(app) -> list[str]:
    """The API-key lookups the app's engine runs from now on."""
    return count_statements(app, "api_keys")


def test_a_valid_key_is_looked_up_once_per_second_and_a_revoked_one_fails_within_1s(
    service_settings: Settings, dispatched, engine, sessions, api_key, auth
) -> None:
    app = create_app(service_settings, dispatch=dispatched)
    with TestClient(app) as client:
        lookups = count_key_lookups(app)
        for _ in range(5):
            assert client.get("/jobs", headers=auth).status_code == 200
        assert len(lookups) == 1  # the first request asked the database; the others did not

        with session_scope(sessions) as session:
            assert revoke_key(session, api_key)
        revoked_at = time.monotonic()
        time.sleep(1.05)
        response = client.get("/jobs", headers=auth)
        assert time.monotonic() - revoked_at < 1.5
        assert response.status_code == 401 and response.json() == {"detail": "invalid API key"}
        # Never cached as invalid either: each try asks the database again.
        before = len(lookups)
        assert client.get("/jobs", headers=auth).status_code == 401
        assert len(lookups) == before + 1


def test_without_the_cache_a_revoked_key_fails_at_once(
    tmp_path, db_url, dispatched, engine, sessions, api_key, auth
) -> None:
    settings = Settings(
        DATABASE_URL=db_url, TRAINCTL_HOME=str(tmp_path / "home"), TRAINCTL_AUTH_CACHE_SECONDS=0
    )
    with TestClient(create_app(settings, dispatch=dispatched)) as client:
        assert client.get("/jobs", headers=auth).status_code == 200
        with session_scope(sessions) as session:
            assert revoke_key(session, api_key)
        assert client.get("/jobs", headers=auth).status_code == 401


def test_the_cache_cannot_be_set_beyond_one_second(tmp_path) -> None:
    with pytest.raises(ValueError, match="TRAINCTL_AUTH_CACHE_SECONDS"):
        Settings(TRAINCTL_HOME=str(tmp_path), TRAINCTL_AUTH_CACHE_SECONDS=5)


# --- identical concurrent reads share one query -------------------------------------------------


def test_coalesced_reads_share_a_run_that_starts_after_they_arrive() -> None:
    """`ReadCoalescer`: requests that arrive while a run is going wait for the next run (no
    answer older than a read of its own), those that arrive together share one."""
    runs: list[int] = []
    release = threading.Event()

    def read() -> int:
        runs.append(len(runs))
        release.wait(5)  # the first run is held until every request below has arrived
        return len(runs)

    async def main() -> tuple[list[int], list[int], int]:
        reads = ReadCoalescer()
        first = asyncio.ensure_future(reads.read("k", read))
        await asyncio.sleep(0.05)  # the first run has started (in its thread)
        later = [asyncio.ensure_future(reads.read("k", read)) for _ in range(20)]
        other = asyncio.ensure_future(reads.read("other", lambda: -1))
        await asyncio.sleep(0.05)
        release.set()
        return [await first], [await t for t in later], await other

    first, later, other = asyncio.run(main())
    assert first == [1]  # the run that was going when the others arrived
    assert later == [2] * 20  # one more run for all twenty, started after they arrived
    assert other == -1 and len(runs) == 2


def test_a_failed_coalesced_read_fails_every_request_of_its_batch() -> None:
    def fail() -> None:
        raise OSError("database gone")

    async def main() -> list[BaseException | None]:
        reads = ReadCoalescer()
        results = await asyncio.gather(*(reads.read("k", fail) for _ in range(5)),
                                       return_exceptions=True)  # fmt: skip
        assert await reads.read("k", lambda: "back") == "back"  # the next batch runs anew
        return results

    assert all(isinstance(r, OSError) for r in asyncio.run(main()))


def test_concurrent_pollers_of_one_job_share_queries_over_http(
    service_settings: Settings, dispatched, engine, sessions, auth
) -> None:
    app = create_app(service_settings, dispatch=dispatched)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        job_id = httpx.post(f"{base}/jobs", json=VALID_SPEC, headers=auth).json()["id"]
        with session_scope(sessions) as session:
            assert queries.claim_job(session, job_id, "test-worker") is not None
            queries.upsert_metric(session, job_id, 1, 1, {"val_loss": 1.0})
        url = f"{base}/jobs/{job_id}/metrics"
        etag = httpx.get(url, headers=auth).headers["etag"]
        statements = count_statements(app, "max(metrics.created_at)")

        async def poll(conditional: bool) -> httpx.Response:
            headers = {**auth, "If-None-Match": etag} if conditional else auth
            async with httpx.AsyncClient() as client:
                return await client.get(url, headers=headers)

        async def burst() -> list[httpx.Response]:
            return await asyncio.gather(*(poll(i % 2 == 0) for i in range(40)))

        answers = asyncio.run(burst())
        assert sorted({a.status_code for a in answers}) == [200, 304]
        assert all(a.headers["etag"] == etag for a in answers)
        assert all(a.json()["count"] == 1 for a in answers if a.status_code == 200)
        assert 1 <= len(statements) < 40  # shared: fewer state queries than requests
    finally:
        server.should_exit = True
        thread.join(30)


def count_statements(app, marker: str) -> list[str]:
    """The statements holding `marker` that the app's engine runs from now on."""
    seen: list[str] = []

    @event.listens_for(app.state.engine, "before_cursor_execute")
    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if marker in statement:
            seen.append(statement)

    return seen
