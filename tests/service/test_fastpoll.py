"""The metrics-poll fast path (`api.fastpoll`) against the route it stands in for: the same
answer, byte for byte, for every poll it serves; every request it cannot read for certain
(bad or unknown parameters, a key not cached, another owner's job) answered by the route."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

import api.fastpoll
from api.fastpoll import MetricsPollFastPath
from api.main import create_app
from store import queries
from store.db import session_scope
from store.keys import revoke_key
from tests.service.test_metrics_cache import running_job

# (query string, headers beyond the owner's key) and whether the fast path answers it.
CASES = [
    ("", True),
    ("after_epoch=3", True),
    ("after_epoch=-1&limit=2", True),
    ("attempt=1", True),
    ("granularity=step&after_step=0", True),
    ("granularity=epoch&after_epoch=5&attempt=1&limit=10000", True),
    ("after_epoch=-2", False),  # out of the route's bounds: its 422
    ("limit=0", False),
    ("limit=10001", False),
    ("attempt=0", False),
    ("after_epoch=1.5", False),
    ("after_epoch=%2B3", False),  # "+3": the route's reading
    ("after_epoch=", False),
    ("granularity=hour", False),
    ("granularity=epoch&after_step=2", False),  # the other granularity's index: its 422
    ("after_epoch=1&after_epoch=2", False),  # given twice
    ("page=2", False),  # a parameter the route ignores: the route's answer
    ("after_epoch=99999999999", False),
]


@pytest.fixture
def route_only(service_settings, dispatched, engine) -> Iterator[TestClient]:
    """A client of an app without the fast path: the reference answers."""
    app = create_app(service_settings, dispatch=dispatched)
    app.user_middleware = [m for m in app.user_middleware if m.cls is not MetricsPollFastPath]
    with TestClient(app) as client:
        yield client


@pytest.fixture
def served(monkeypatch) -> list[str]:
    """The job ids of the polls the fast path answered."""
    calls: list[str] = []
    answer = api.fastpoll.metrics_answer

    async def spy(app_state, job_id, *args):
        result = await answer(app_state, job_id, *args)
        if result is not None:
            calls.append(job_id)
        return result

    monkeypatch.setattr(api.fastpoll, "metrics_answer", spy)
    return calls


def warm_up(client: TestClient, job_id: str, auth: dict[str, str], served: list[str]) -> None:
    """A first poll: the route answers it (and caches the key); the fast path learns the
    route, and answers the next ones."""
    assert client.get(f"/jobs/{job_id}/metrics", headers=auth).status_code == 200
    assert served == []


def _same(a, b) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content)
    for header in ("content-type", "etag", "cache-control"):
        assert a.headers.get(header) == b.headers.get(header), header


@pytest.mark.parametrize(("query", "fast"), CASES)
def test_every_poll_gets_the_routes_answer(client, route_only, auth, sessions, served, query, fast):
    job_id = running_job(client, auth, sessions, epochs=6)
    with session_scope(sessions) as session:
        queries.upsert_metric_step(session, job_id, 1, 2, 1, {"train_loss": 0.5})
    url = f"/jobs/{job_id}/metrics?{query}"
    warm_up(client, job_id, auth, served)
    got, expected = client.get(url, headers=auth), route_only.get(url, headers=auth)
    _same(got, expected)
    assert served == ([job_id] if fast else [])
    if got.status_code == 200:  # and the conditional poll of the same page
        conditional = {**auth, "If-None-Match": got.headers["etag"]}
        again, expected = (
            client.get(url, headers=conditional),
            route_only.get(url, headers=conditional),
        )
        assert again.status_code == 304
        _same(again, expected)


def test_keys_jobs_and_headers_it_cannot_vouch_for_go_to_the_route(
    client, route_only, auth, other_auth, sessions, served, api_key
):
    job_id = running_job(client, auth, sessions, epochs=2)
    url = f"/jobs/{job_id}/metrics"
    client.get("/jobs", headers=other_auth)  # both keys cached
    warm_up(client, job_id, auth, served)
    assert client.get(url, headers=auth).status_code == 200 and served == [job_id]
    served.clear()
    requests = [
        {},  # no key
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
        {"Authorization": "Bearer not-a-key"},
        other_auth,  # another owner's job: the route's 404
    ]
    for headers in requests:
        _same(client.get(url, headers=headers), route_only.get(url, headers=headers))
    missing = "/jobs/00000000-0000-0000-0000-000000000000/metrics"
    _same(client.get(missing, headers=auth), route_only.get(missing, headers=auth))
    assert served == []
    # A revoked key is refused once its cache entry is gone, here as on every route.
    with session_scope(sessions) as session:
        revoke_key(session, api_key)
    client.app.state.key_cache._entries.clear()  # as TRAINCTL_AUTH_CACHE_SECONDS passing does
    assert client.get(url, headers=auth).status_code == 401


def test_the_polls_it_serves_are_counted_under_the_routes_template(client, auth, sessions, served):
    job_id = running_job(client, auth, sessions, epochs=1)
    warm_up(client, job_id, auth, served)  # one poll served by the route
    for _ in range(3):
        assert client.get(f"/jobs/{job_id}/metrics", headers=auth).status_code == 200
    assert len(served) == 3
    text = client.get("/metrics").text
    line = next(
        line
        for line in text.splitlines()
        if line.startswith("trainctl_http_requests_total{")
        and 'route="/jobs/{job_id}/metrics"' in line
        and 'status="200"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) == 4
