"""Issue 11 item 7, against real PostgreSQL: after a resume the default metrics view is the
job's effective history across attempts; `?attempt=N` is one attempt (`docs/reliability.md`)."""

from __future__ import annotations

from store import queries
from store.db import session_scope
from tests.support.service import VALID_SPEC


def submit(client, auth) -> str:
    response = client.post("/jobs", json=VALID_SPEC, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def new_attempt(sessions, job_id: str) -> None:
    """The job's next attempt starts (the previous one requeued, as after a lost worker)."""
    with session_scope(sessions) as session:
        queries.requeue_job(session, job_id)
        assert queries.claim_job(session, job_id, "w") is not None


def add_epochs(sessions, job_id: str, attempt: int, epochs) -> None:
    with session_scope(sessions) as session:
        for epoch in epochs:
            queries.upsert_metric(session, job_id, attempt, epoch, {"attempt": attempt})


def add_steps(sessions, job_id: str, attempt: int, steps) -> None:
    with session_scope(sessions) as session:
        for step in steps:
            queries.upsert_metric_step(session, job_id, attempt, step, step // 10, {"a": attempt})


def view(client, auth, job_id: str, **params) -> list[tuple[int, int]]:
    """(epoch, the attempt that wrote it) of each row of the metrics view."""
    body = client.get(f"/jobs/{job_id}/metrics", params=params, headers=auth).json()
    key = "step" if params.get("granularity") == "step" else "epoch"
    values = "a" if key == "step" else "attempt"
    return [(row[key], row["values"][values]) for row in body["data"]]


def test_a_resumed_attempt_replaces_what_it_redid_and_keeps_the_rest(client, auth, sessions):
    job_id = submit(client, auth)
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 1, range(1, 6))  # killed after epoch 5, checkpoint at 3
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 2, [4])  # resumed from epoch 3's checkpoint
    assert view(client, auth, job_id) == [(1, 1), (2, 1), (3, 1), (4, 2)]
    add_epochs(sessions, job_id, 2, [5, 6])
    assert view(client, auth, job_id) == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    body = client.get(f"/jobs/{job_id}/metrics", headers=auth).json()
    assert (body["attempt"], body["count"]) == (2, 6)
    # One attempt on request.
    assert view(client, auth, job_id, attempt=1) == [(e, 1) for e in range(1, 6)]
    assert view(client, auth, job_id, attempt=2) == [(4, 2), (5, 2), (6, 2)]
    # Incremental polling over the effective view.
    assert view(client, auth, job_id, after_epoch=3) == [(4, 2), (5, 2), (6, 2)]


def test_an_attempt_killed_after_the_last_epoch_still_shows_every_epoch(client, auth, sessions):
    """The issue's case: the resumed attempt had nothing left to do and wrote no rows; the
    default view used to be empty."""
    job_id = submit(client, auth)
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 1, [1, 2])
    new_attempt(sessions, job_id)  # resumed after the last epoch: no rows
    assert view(client, auth, job_id) == [(1, 1), (2, 1)]
    assert view(client, auth, job_id, attempt=2) == []


def test_three_attempts_follow_the_checkpoint_lineage(client, auth, sessions):
    job_id = submit(client, auth)
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 1, range(1, 7))
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 2, [5, 6, 7, 8])  # from epoch 4
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 3, [3, 4])  # from epoch 2 (a corrupt later checkpoint)
    # Epochs 5-8 of attempts 1 and 2 are not in the lineage of attempt 3's checkpoints.
    assert view(client, auth, job_id) == [(1, 1), (2, 1), (3, 3), (4, 3)]


def test_step_rows_combine_the_same_way(client, auth, sessions):
    job_id = submit(client, auth)
    new_attempt(sessions, job_id)
    add_steps(sessions, job_id, 1, [10, 20, 30, 40])
    new_attempt(sessions, job_id)
    add_steps(sessions, job_id, 2, [30, 40, 50])
    assert view(client, auth, job_id, granularity="step") == [
        (10, 1),
        (20, 1),
        (30, 2),
        (40, 2),
        (50, 2),
    ]
    assert view(client, auth, job_id, granularity="step", attempt=1) == [
        (10, 1),
        (20, 1),
        (30, 1),
        (40, 1),
    ]


def test_the_stream_sends_the_effective_history(client, auth, sessions):
    job_id = submit(client, auth)
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 1, [1, 2, 3])
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 2, [3])
    with session_scope(sessions) as session:
        queries.finish_job(session, job_id, "succeeded")
    text = client.get(f"/jobs/{job_id}/metrics/stream", headers=auth).text
    ids = [line.split(": ")[1] for line in text.splitlines() if line.startswith("id: ")]
    assert ids == ["1", "2", "3"]
    assert '"epoch":3,"values":{"attempt": 2}' in text
    assert "event: end" in text


def test_the_etag_of_the_default_view_changes_with_an_earlier_attempts_rows(client, auth, sessions):
    job_id = submit(client, auth)
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 1, [1, 2])
    url = f"/jobs/{job_id}/metrics"
    first = client.get(url, headers=auth)
    etag = first.headers.get("ETag")
    if etag is None:  # the ETag (another item) is not in this checkout
        return
    assert client.get(url, headers={**auth, "If-None-Match": etag}).status_code == 304
    new_attempt(sessions, job_id)
    add_epochs(sessions, job_id, 2, [2])
    again = client.get(url, headers={**auth, "If-None-Match": etag})
    assert again.status_code == 200
    assert [(r["epoch"], r["values"]["attempt"]) for r in again.json()["data"]] == [(1, 1), (2, 2)]
