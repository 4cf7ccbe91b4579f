"""Job groups (`/groups`) against the real PostgreSQL test database: a sweep is expanded and
every member validated before anything is stored, stored whole in one transaction and queued
after the commit; members are ordinary jobs; a metric is summarised across them; cancel;
ownership; the 0004 migration; the CLI's `sweep` and `group`."""

from __future__ import annotations

import json
import statistics
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from api.main import create_app
from store import queries
from store.db import make_engine, session_scope
from store.migrate import downgrade, upgrade, upgrade_head
from store.models import Job, JobGroup
from store.settings import Settings
from tests.service.test_hostile_bodies import HOSTILE_SPECS
from tests.support.service import RecordingDispatcher, create_pg_database, drop_pg_database

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "mutag-10fold-group.yaml"
BASE = yaml.safe_load(EXAMPLE.read_text())["spec"]  # the MUTAG graph transformer, fold 0


def group_body(sweep: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"spec": BASE, "sweep": sweep, **extra}


def post_group(client: TestClient, auth: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/groups", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return response.json()


def counts(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as session:
        jobs = session.scalar(select(func.count()).select_from(Job))
        groups = session.scalar(select(func.count()).select_from(JobGroup))
        return jobs, groups


def run_member(
    sessions: sessionmaker[Session],
    job_id: str,
    values: list[float | None],
    *,
    metric: str = "val_accuracy",
    status: str | None = "succeeded",
) -> None:
    """What a worker records for a member: claim it, one metric row per epoch (through the
    store's own query), then finish it with `status` (None: leave it running)."""
    with session_scope(sessions) as session:
        assert queries.claim_job(session, job_id, "test-worker") is not None
    with session_scope(sessions) as session:
        job = queries.get_job(session, job_id)
        for epoch, value in enumerate(values, start=1):
            queries.upsert_metric(
                session, job_id, job.attempt, epoch, {metric: value, "train_loss": 1.0 / epoch}
            )
        if status is not None:
            queries.finish_job(session, job_id, status)


# --- submit -------------------------------------------------------------------------------------


def test_a_10_fold_group_stores_10_member_jobs_queued_after_the_commit(
    client, auth, sessions, dispatched
):
    body = post_group(
        client, auth, group_body({"grid": {"data.split.fold": {"range": [0, 10, 1]}}})
    )
    assert (body["size"], body["family"], body["name"]) == (10, "graph_transformer", "mutag-gps")
    assert body["metric"] == "val_accuracy"  # the spec's metric_for_best
    assert body["sweep"] == {
        "grid": {"data.split.fold": list(range(10))}, "zip": [], "keys": ["data.split.fold"]
    }  # fmt: skip
    assert body["counts"]["queued"] == 10
    members = body["members"]
    assert [m["index"] for m in members] == list(range(10))
    assert [m["values"] for m in members] == [{"data.split.fold": i} for i in range(10)]
    # Each member dispatched once, in member order, after it was stored.
    assert dispatched.job_ids == [m["id"] for m in members]

    with sessions() as session:
        jobs = session.scalars(select(Job).order_by(Job.group_index)).all()
        assert [j.spec["data"]["split"]["fold"] for j in jobs] == list(range(10))
        assert {j.group_id for j in jobs} == {body["id"]}
        assert all(j.status == "queued" for j in jobs)
    # A member is an ordinary job: its own routes, with its group.
    job = client.get(f"/jobs/{members[3]['id']}", headers=auth).json()
    assert (job["group_id"], job["group_index"], job["sweep_values"]) == (
        body["id"],
        3,
        {"data.split.fold": 3},
    )
    assert job["name"] == "mutag-gps[3]"
    assert client.post(f"/jobs/{members[3]['id']}/cancel", headers=auth).status_code == 200


def test_a_member_row_is_the_row_create_job_makes_plus_its_group(client, auth, sessions):
    """Members are inserted in bulk (`store.groups.create_group`); every column but the group's
    agrees with what `store.queries.create_job` stores for the same spec."""
    body = post_group(client, auth, group_body({"grid": {"training.seed": [7]}}))
    member_id = body["members"][0]["id"]
    with session_scope(sessions) as session:
        member = session.get(Job, member_id)
        plain_id = queries.create_job(
            session, member.owner_id, member.spec, family=member.family, name=member.name
        ).id
    with sessions() as session:
        member, plain = session.get(Job, member_id), session.get(Job, plain_id)
        assert (member.group_id, member.group_index, member.sweep_values) == (
            body["id"], 0, {"training.seed": 7}
        )  # fmt: skip
        assert plain.group_id is None and member.run_dir == member.id
        for column in Job.__table__.columns:
            if column.name in ("id", "run_dir", "group_id", "group_index", "sweep_values"):
                continue
            ours, theirs = getattr(member, column.key), getattr(plain, column.key)
            if isinstance(ours, datetime) or isinstance(theirs, datetime):
                assert (ours is None) == (theirs is None), column.name
            else:
                assert ours == theirs, column.name


def test_grid_crossed_with_zip_and_a_multi_seed_group(client, auth, sessions, dispatched):
    sweep = {
        "grid": {"training.seed": [0, 1, 2]},
        "zip": [{"model.layers": [2, 3], "model.channels": [64, 32]}],
    }
    body = post_group(client, auth, group_body(sweep, name="seeds", metric="val_loss"))
    assert (body["size"], body["name"], body["metric"]) == (6, "seeds", "val_loss")
    assert [m["values"] for m in body["members"]] == [
        {"training.seed": s, "model.layers": layers, "model.channels": channels}
        for s in (0, 1, 2)
        for layers, channels in ((2, 64), (3, 32))
    ]
    with sessions() as session:
        specs = [j.spec for j in session.scalars(select(Job).order_by(Job.group_index))]
    got = [(s["training"]["seed"], s["model"]["layers"], s["model"]["channels"]) for s in specs]
    assert got == [(0, 2, 64), (0, 3, 32), (1, 2, 64), (1, 3, 32), (2, 2, 64), (2, 3, 32)]
    assert len(dispatched.job_ids) == 6


def test_the_example_posts_as_yaml_and_a_spec_may_be_yaml_text(client, auth, dispatched):
    response = client.post(
        "/groups",
        content=EXAMPLE.read_bytes(),
        headers={**auth, "Content-Type": "application/yaml"},
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["size"], body["metric"]) == ("mutag-gps-10fold", 10, "test_accuracy")
    assert body["summary"]["reduce"] == "summary" and body["summary"]["n"] == 0

    text_spec = {"spec": yaml.safe_dump(BASE), "sweep": {"grid": {"training.seed": [0, 1]}}}
    assert post_group(client, auth, text_spec)["size"] == 2
    assert len(dispatched.job_ids) == 12


def test_one_invalid_member_stores_nothing_and_is_listed_with_its_values(
    client, auth, sessions, dispatched
):
    # k = 10: folds 10 and 11 do not exist.
    sweep = {"grid": {"data.split.fold": {"range": [0, 12]}, "training.seed": [0]}}
    response = client.post("/groups", json=group_body(sweep), headers=auth)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["msg"] == "2 of 12 members are invalid; nothing was stored"
    assert [d["index"] for d in detail[1:]] == [10, 11]
    bad = detail[1]
    assert bad["loc"] == "members.10"
    assert bad["values"] == {"data.split.fold": 10, "training.seed": 0}
    assert bad["errors"] == [
        {"loc": "data.split", "msg": "split.fold (10) must be in 0..9 (split.k - 1)"}
    ]
    assert "member 10 (data.split.fold=10, training.seed=0): data.split:" in bad["msg"]
    assert counts(sessions) == (0, 0)
    assert dispatched.job_ids == []


def test_bad_sweeps_and_bodies_are_422_naming_the_field(client, auth, sessions):
    cases = [
        ({"spec": BASE, "sweep": {"grid": {"data..split": [1]}}}, "sweep.grid.data..split"),
        ({"spec": BASE, "sweep": {"grid": {"training.seed": []}}}, "sweep.grid.training.seed"),
        ({"spec": BASE, "sweep": {"zip": [{"a.b": [1, 2], "c": [1]}]}}, "sweep.zip.0"),
        ({"spec": BASE, "sweep": {"grid": {"x": {"range": [0, 1, 0]}}}}, "sweep.grid.x.range"),
        ({"spec": BASE, "sweep": {"grid": {"family": ["dt_gcnn"]}}}, "sweep.grid.family"),
        ({"spec": BASE, "sweep": {"sweep": 1}}, "sweep.sweep"),
        ({"spec": BASE}, "sweep"),
        ({"spec": BASE, "sweep": {"grid": {"training.seed": [0]}}, "extra": 1}, "extra"),
        ({"spec": "family: !pyobject os.system", "sweep": {"grid": {"a": [1]}}}, "spec.family"),
    ]
    for body, loc in cases:
        response = client.post("/groups", json=body, headers=auth)
        assert response.status_code == 422, (body, response.text)
        locs = [d["loc"] for d in response.json()["detail"]]
        assert loc in locs, (body, locs)
    # A key the family does not have: the member's field error lists the allowed fields.
    response = client.post(
        "/groups", json=group_body({"grid": {"training.epoch": [1, 2]}}), headers=auth
    )
    errors = response.json()["detail"][1]["errors"]
    assert errors[0]["loc"] == "training.epoch" and "epochs" in errors[0]["allowed"]
    # A path through a value: the member says which part is not a section.
    response = client.post(
        "/groups", json=group_body({"grid": {"training.epochs.x": [1]}}), headers=auth
    )
    assert "training.epochs is a value (int), not a section" in response.json()["detail"][1]["msg"]
    assert counts(sessions) == (0, 0)


@pytest.mark.parametrize("body, content_type", HOSTILE_SPECS)
def test_hostile_bodies_are_4xx_and_store_nothing(client, auth, sessions, body, content_type):
    response = client.post("/groups", content=body, headers={**auth, "Content-Type": content_type})
    assert 400 <= response.status_code < 500, response.text
    # The same text as the base spec inside a JSON group body.
    wrapped = {"spec": body, "sweep": {"grid": {"training.seed": [0, 1]}}}
    response = client.post("/groups", json=wrapped, headers=auth)
    assert response.status_code == 422, response.text
    assert counts(sessions) == (0, 0)


def test_a_tag_in_the_group_file_names_its_field(client, auth):
    text = "spec: {family: graph_transformer}\nsweep:\n  grid: !sweep {a: [1]}\n"
    response = client.post("/groups", content=text, headers={**auth, "Content-Type": "text/yaml"})
    (error,) = response.json()["detail"]
    assert error["loc"] == "sweep.grid" and "YAML tag '!sweep' is not allowed" in error["msg"]
    assert (
        client.post(
            "/groups", content=b"{}", headers={**auth, "Content-Type": "text/csv"}
        ).status_code
        == 415
    )


def test_more_members_than_the_cap_is_422_naming_the_count_and_the_cap(client, auth, sessions):
    sweep = {"grid": {"training.seed": {"range": [0, 30]}, "data.split.fold": {"range": [0, 10]}}}
    response = client.post("/groups", json=group_body(sweep), headers=auth)
    assert response.status_code == 422
    (entry,) = response.json()["detail"]
    assert entry["msg"] == "the sweep has 300 members; the cap is 256"
    assert (entry["count"], entry["cap"]) == (300, 256)
    assert counts(sessions) == (0, 0)


def test_the_cap_is_a_setting(tmp_path, db_url, engine, auth, sessions):
    settings = Settings(
        DATABASE_URL=db_url, TRAINCTL_HOME=str(tmp_path / "h"), TRAINCTL_MAX_GROUP_MEMBERS=3
    )
    with TestClient(create_app(settings, dispatch=RecordingDispatcher())) as client:
        sweep = {"grid": {"training.seed": [0, 1, 2, 3]}}
        response = client.post("/groups", json=group_body(sweep), headers=auth)
    assert response.json()["detail"][0]["msg"] == "the sweep has 4 members; the cap is 3"


def test_members_count_against_the_owners_queued_jobs_limit(
    tmp_path, db_url, engine, auth, sessions
):
    settings = Settings(
        DATABASE_URL=db_url, TRAINCTL_HOME=str(tmp_path / "h"), TRAINCTL_MAX_QUEUED_PER_OWNER=5
    )
    with TestClient(create_app(settings, dispatch=RecordingDispatcher())) as client:
        post_group(client, auth, group_body({"grid": {"training.seed": [0, 1, 2]}}))
        response = client.post(
            "/groups", json=group_body({"grid": {"training.seed": [0, 1, 2]}}), headers=auth
        )
        assert response.status_code == 429
        assert response.json()["detail"].startswith(
            "the group has 3 members and you have 3 queued jobs; the limit is 5 queued jobs"
        )
        assert response.headers["Retry-After"]
        post_group(client, auth, group_body({"grid": {"training.seed": [0, 1]}}))  # 5: fits
    assert counts(sessions) == (5, 2)


def test_a_broker_outage_fails_the_unqueued_members_with_a_503(client, auth, sessions, dispatched):
    dispatched.fail = True
    response = client.post(
        "/groups", json=group_body({"grid": {"training.seed": [0, 1]}}), headers=auth
    )
    assert response.status_code == 503
    assert "0 of 2 members queued" in response.json()["detail"]
    with sessions() as session:
        assert {j.status for j in session.scalars(select(Job))} == {"failed"}


# --- reading a group ----------------------------------------------------------------------------


def test_the_metric_is_summarised_over_the_members_latest_attempts(client, auth, sessions):
    body = post_group(client, auth, group_body({"grid": {"training.seed": [0, 1, 2, 3]}}))
    ids = [m["id"] for m in body["members"]]
    run_member(sessions, ids[0], [0.5, 0.8, 0.7])
    run_member(sessions, ids[1], [0.6, None, 0.9])  # a NaN epoch is stored as null
    # Member 2: its first attempt failed with a high score; its retry is what counts.
    run_member(sessions, ids[2], [0.99], status="failed")
    with session_scope(sessions) as session:
        assert queries.retry_job(session, ids[2])
    run_member(sessions, ids[2], [0.4, 0.75], status=None)  # still running
    # Member 3 is still queued: no value.

    group = client.get(f"/groups/{body['id']}", headers=auth).json()
    best = [0.8, 0.9, 0.75]
    assert [m["value"] for m in group["members"]] == [*best, None]
    states = [m["status"] for m in group["members"]]
    assert states == ["succeeded", "succeeded", "running", "queued"]
    assert group["counts"] == {
        "queued": 1, "running": 1, "succeeded": 2, "failed": 0, "cancelled": 0
    }  # fmt: skip
    s = group["summary"]
    assert (s["metric"], s["mode"], s["reduce"]) == ("val_accuracy", "max", "best")
    summary = s
    assert summary["n"] == 3 and summary["best_index"] == 1
    assert summary["mean"] == pytest.approx(statistics.mean(best))
    assert summary["std"] == pytest.approx(statistics.stdev(best))  # sample std (n - 1)
    assert (summary["min"], summary["max"]) == (0.75, 0.9)

    last = client.get(f"/groups/{body['id']}?reduce=last", headers=auth).json()
    assert [m["value"] for m in last["members"]] == [0.7, 0.9, 0.75, None]
    low = client.get(f"/groups/{body['id']}?metric=train_loss", headers=auth).json()
    assert low["summary"]["mode"] == "min"  # a loss: lower is better
    assert [m["value"] for m in low["members"]] == [1 / 3, 1 / 3, 0.5, None]
    assert low["summary"]["best_index"] == 0
    worst = client.get(f"/groups/{body['id']}?mode=min", headers=auth).json()
    assert [m["value"] for m in worst["members"]] == [0.5, 0.6, 0.4, None]
    none = client.get(f"/groups/{body['id']}?metric=nope", headers=auth).json()
    assert none["summary"]["n"] == 0 and none["summary"]["mean"] is None
    bad = client.get(f"/groups/{body['id']}?reduce=median", headers=auth)
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == "query.reduce"


def test_test_metrics_come_from_each_members_summary(
    client, auth, sessions, service_settings: Settings
):
    body = post_group(client, auth, group_body({"grid": {"data.split.fold": [0, 1, 2]}}))
    ids = [m["id"] for m in body["members"]]
    for job_id, accuracy in zip(ids, (0.85, 0.9, None), strict=True):
        run_member(sessions, job_id, [0.7])
        if accuracy is None:
            continue  # finished without a summary (yet)
        run_dir = service_settings.artifact_root / job_id
        run_dir.mkdir(parents=True)
        summary = {"best_metrics": {"test_accuracy": accuracy}, "final_metrics": {}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        with session_scope(sessions) as session:
            queries.upsert_artifact(
                session, job_id, kind="summary", name="summary.json",
                path=f"{job_id}/summary.json", size=1, sha256="",
            )  # fmt: skip
    group = client.get(f"/groups/{body['id']}?metric=test_accuracy", headers=auth).json()
    assert [m["value"] for m in group["members"]] == [0.85, 0.9, None]
    summary = group["summary"]
    assert (summary["reduce"], summary["mode"], summary["n"]) == ("summary", "max", 2)
    assert summary["mean"] == pytest.approx(0.875)
    assert summary["std"] == pytest.approx(statistics.stdev([0.85, 0.9]))


def test_list_groups_newest_first_with_counts(client, auth, sessions):
    first = post_group(client, auth, group_body({"grid": {"training.seed": [0, 1]}}, name="a"))
    second = post_group(client, auth, group_body({"grid": {"training.seed": [0]}}, name="b"))
    run_member(sessions, first["members"][0]["id"], [0.5])
    listed = client.get("/groups", headers=auth).json()
    assert listed["count"] == 2
    assert [g["id"] for g in listed["data"]] == [second["id"], first["id"]]
    assert listed["data"][1]["counts"]["succeeded"] == 1
    assert listed["data"][1]["counts"]["queued"] == 1
    assert "members" not in listed["data"][0]


# --- cancel and ownership -----------------------------------------------------------------------


def test_cancel_stops_every_member_not_finished(client, auth, sessions):
    body = post_group(client, auth, group_body({"grid": {"training.seed": [0, 1, 2]}}))
    queued, running, done = (m["id"] for m in body["members"])
    run_member(sessions, running, [0.5], status=None)
    run_member(sessions, done, [0.5])
    response = client.post(f"/groups/{body['id']}/cancel", headers=auth)
    assert response.status_code == 200, response.text
    states = {m["id"]: m["status"] for m in response.json()["members"]}
    assert states == {queued: "cancelled", running: "running", done: "succeeded"}
    with sessions() as session:
        assert session.get(Job, running).cancel_requested  # its worker stops it
        assert not session.get(Job, done).cancel_requested
    with session_scope(sessions) as session:
        queries.finish_job(session, running, "cancelled")
    again = client.post(f"/groups/{body['id']}/cancel", headers=auth)
    assert again.status_code == 409
    assert again.json()["detail"] == "every member of the group already finished"


def test_another_owners_group_is_not_found(client, auth, other_auth):
    body = post_group(client, auth, group_body({"grid": {"training.seed": [0]}}))
    for method, path in (
        ("GET", f"/groups/{body['id']}"),
        ("POST", f"/groups/{body['id']}/cancel"),
        ("GET", "/groups/no-such-group"),
    ):
        response = client.request(method, path, headers=other_auth)
        assert (response.status_code, response.json()["detail"]) == (404, "group not found")
    assert client.get("/groups", headers=other_auth).json() == {"data": [], "count": 0}
    member = body["members"][0]["id"]
    assert client.get(f"/jobs/{member}", headers=other_auth).status_code == 404
    for method, path in (("GET", "/groups"), ("POST", "/groups"), ("GET", f"/groups/{body['id']}")):
        assert client.request(method, path).status_code == 401


# --- SQLite and the migration --------------------------------------------------------------------


def test_a_group_on_sqlite_is_stored_whole(tmp_path, sqlite_url, auth):
    settings = Settings(DATABASE_URL=sqlite_url, TRAINCTL_HOME=str(tmp_path / "h"))
    dispatched = RecordingDispatcher()
    with TestClient(create_app(settings, dispatch=dispatched)) as client:
        from store.db import session_factory
        from store.keys import create_owner_key

        engine = make_engine(sqlite_url)
        try:
            with session_scope(session_factory(engine)) as session:
                key = create_owner_key(session, "sqlite-owner")
            headers = {"Authorization": f"Bearer {key}"}
            body = post_group(client, headers, group_body({"grid": {"training.seed": [0, 1, 2]}}))
            bad = client.post(
                "/groups", json=group_body({"grid": {"data.split.fold": [9, 10]}}), headers=headers
            )
            assert bad.status_code == 422
            with engine.connect() as conn:
                rows = conn.execute(text("SELECT group_id, group_index FROM jobs")).all()
        finally:
            engine.dispose()
    assert sorted(rows, key=lambda r: r[1]) == [(body["id"], i) for i in range(3)]
    assert len(dispatched.job_ids) == 3


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_0004_goes_down_and_up_keeping_jobs_and_their_metrics(backend, tmp_path):
    """Down to 0003 drops the groups and the three columns, keeping every job and its metric
    rows (SQLite alters `jobs` in place: a rebuild would cascade-delete them); up again works."""
    if backend == "postgresql":
        url = create_pg_database("trainctl_migrate")
    else:
        url = f"sqlite:///{tmp_path}/m.db"
    engine = make_engine(url)
    t = "2026-01-01T00:00:00+00:00"
    try:
        upgrade(url, "0004")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO owners (name, created_at) VALUES ('a', :t)"), {"t": t})
            conn.execute(
                text(
                    "INSERT INTO job_groups (id, owner_id, name, family, spec, sweep, size, "
                    "created_at) VALUES ('g', 1, 'n', 'f', '{}', '{}', 1, :t)"
                ),
                {"t": t},
            )
            conn.execute(
                text(
                    "INSERT INTO jobs (id, owner_id, family, name, spec, status, created_at, "
                    "updated_at, run_dir, group_id, group_index, sweep_values) VALUES ('j', 1, "
                    "'f', 'n', '{}', 'succeeded', :t, :t, 'j', 'g', 0, '{\"a\": 1}')"
                ),
                {"t": t},
            )
            conn.execute(
                text(
                    'INSERT INTO metrics (job_id, attempt, epoch, "values", created_at) '
                    "VALUES ('j', 1, 1, '{}', :t)"
                ),
                {"t": t},
            )
            with pytest.raises(Exception, match="(?i)foreign key"), conn.begin_nested():
                conn.execute(text("DELETE FROM job_groups"))  # it has members
        downgrade(url, "0003")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM metrics")).scalar() == 1
            assert conn.execute(text("SELECT id FROM jobs")).scalars().all() == ["j"]
            columns = {c["name"] for c in _columns(engine, "jobs")}
            assert not columns & {"group_id", "group_index", "sweep_values"}
        upgrade_head(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT group_id FROM jobs")).scalar() is None
            assert conn.execute(text("SELECT count(*) FROM job_groups")).scalar() == 0
    finally:
        engine.dispose()
        if backend == "postgresql":
            drop_pg_database(url)


def _columns(engine: Any, table: str) -> list[dict[str, Any]]:
    from sqlalchemy import inspect

    return inspect(engine).get_columns(table)


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_sweep_submits_a_grid_and_group_shows_it(cli, sessions, tmp_path, dispatched):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(BASE))
    result = cli(
        "sweep", str(spec), "--grid", "data.split.fold=range:0:3", "--grid", "training.seed=0,1",
        "--zip", "optimizer.lr=0.001,0.0003;optimizer.weight_decay=0,0.01",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    group_id = result.output.strip().splitlines()[-1].split()[-1]
    with sessions() as session:
        jobs = session.scalars(select(Job).order_by(Job.group_index)).all()
    assert len(jobs) == 3 * 2 * 2 == len(dispatched.job_ids)
    assert jobs[-1].sweep_values == {
        "data.split.fold": 2, "training.seed": 1, "optimizer.lr": 0.0003,
        "optimizer.weight_decay": 0.01,
    }  # fmt: skip
    for job in jobs[:3]:
        run_member(sessions, job.id, [0.5 + 0.1 * job.group_index])
    shown = cli("group", group_id)
    assert shown.exit_code == 0, shown.output
    assert "3 succeeded" in shown.output and "9 queued" in shown.output
    assert "val_accuracy (best, max): 0.6 ± 0.1 (sample std, n=3)" in shown.output
    assert "data.split.fold=0 training.seed=1 optimizer.lr=0.001 optimizer.weight_decay=0" in (
        shown.output
    )

    bad = cli("sweep", str(spec), "--grid", "data.split.fold=8,9,10")
    assert bad.exit_code != 0
    assert "1 of 3 members are invalid" in bad.output and "members.2" in bad.output
    nogrid = cli("sweep", str(spec))
    assert nogrid.exit_code != 0 and "--grid" in nogrid.output


def test_cli_sweep_follow_shows_progress_then_the_table(cli, sessions, tmp_path):
    result = cli("sweep", str(EXAMPLE), "--grid", "training.seed=0,1", "--metric", "val_accuracy")
    assert result.exit_code == 0, result.output
    group_id = result.output.strip().split()[-1]
    with sessions() as session:
        ids = [j.id for j in session.scalars(select(Job).order_by(Job.group_index))]
    assert len(ids) == 20  # the file's 10 folds x 2 seeds
    for i, job_id in enumerate(ids):
        run_member(sessions, job_id, [0.8 if i % 2 else 0.9], status="succeeded")
    followed = cli("group", group_id, "--follow", "--interval", "0.05")
    assert followed.exit_code == 0, followed.output
    assert "20/20 done: 20 succeeded" in followed.output
    std = statistics.stdev([0.9, 0.8] * 10)
    assert f"val_accuracy (best, max): 0.85 ± {std:.4g} (sample std, n=20)" in followed.output


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_members_through_the_worker_summarise_their_test_accuracy(
    client, auth, sessions, service_settings: Settings
):
    """Two folds of a small MUTAG model trained for real by the worker's runner (the training
    command the Celery task runs), then summarised by the API from what the runs recorded."""
    from worker.runner import RunnerOptions, WorkerContext, run_job

    small = {
        **BASE,
        "positional_encodings": [{"kind": "rwse", "walk_lengths": [4], "dim": 4}],
        "model": {"layers": 1, "channels": 16, "heads": 2, "local_layer": "gine"},
        "training": {"epochs": 1, "batch_size": 64, "seed": 0},
        "scheduler": {"name": "none"},
    }
    body = post_group(
        client, auth, {"spec": small, "sweep": {"grid": {"data.split.fold": [0, 1]}},
                       "metric": "test_accuracy"}
    )  # fmt: skip
    ctx = WorkerContext(
        settings=service_settings,
        sessions=sessions,
        options=RunnerOptions(poll_seconds=0.2, heartbeat_seconds=1.0, cancel_grace_seconds=5),
    )
    for member in body["members"]:
        outcome = run_job(member["id"], ctx)
        with sessions() as session:
            job = session.get(Job, member["id"])
            log = (service_settings.artifact_root / job.run_dir / "logs.txt").read_text()
        assert outcome == "succeeded", (job.status, job.error, log[-3000:])
    group = client.get(f"/groups/{body['id']}", headers=auth).json()
    assert group["counts"]["succeeded"] == 2
    summary = group["summary"]
    assert (summary["metric"], summary["reduce"], summary["n"]) == ("test_accuracy", "summary", 2)
    assert 0.0 <= summary["mean"] <= 1.0 and summary["std"] >= 0.0
    val = client.get(f"/groups/{body['id']}?metric=val_accuracy", headers=auth).json()
    assert val["summary"]["n"] == 2
    assert all(m["value"] is not None for m in val["members"])
