"""The dashboard in a real browser (Debian's Chromium through playwright) against the API over
HTTP on the test PostgreSQL database.

The default tests run the API in-process (uvicorn in a thread) with the store's own query
functions standing in for the worker's writes (claim, metric rows, log lines, artifacts), so
they take seconds; `test_real_stack_*` (marked slow) submit tiny Cora jobs through the page to a
real Celery worker.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from store import queries
from store.db import session_scope
from store.keys import authenticate
from store.models import Metric
from store.settings import Settings
from tests.support.service import VALID_SPEC, owner_key

pytestmark = pytest.mark.timeout(180)

BAD_SPEC = """family: graphsage_skipgram
name: bad
data:
  format: planetoid
  name: Cora
training:
  epochs: -3
  bogus: 1
"""


def sign_in(page: Any, base_url: str, key: str) -> None:
    """Open the dashboard and sign in with `key`; returns on the jobs list."""
    page.goto(f"{base_url}/ui#/signin")
    page.fill("#api-key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#jobs-table")


def owner_id(sessions: sessionmaker[Session], key: str) -> int:
    with session_scope(sessions) as session:
        owner = authenticate(session, key)
        assert owner is not None
        return owner.id


def add_job(sessions: sessionmaker[Session], key: str, name: str, *, running: bool = False) -> str:
    """A job of the key's owner, stored as the API stores one (queued, or claimed: running)."""
    oid = owner_id(sessions, key)
    with session_scope(sessions) as session:
        job_id = queries.create_job(
            session, oid, {**VALID_SPEC, "name": name}, family=VALID_SPEC["family"], name=name
        ).id
    if running:
        with session_scope(sessions) as session:
            assert queries.claim_job(session, job_id, "browser-test-worker") is not None
    return job_id


def attempt_of(sessions: sessionmaker[Session], job_id: str) -> int:
    with session_scope(sessions) as session:
        job = queries.get_job(session, job_id)
        assert job is not None
        return job.attempt


def metric_times(sessions: sessionmaker[Session], job_id: str) -> dict[int, datetime]:
    with session_scope(sessions) as session:
        rows = session.execute(
            select(Metric.epoch, Metric.created_at).where(Metric.job_id == job_id)
        ).all()
    return {epoch: created for epoch, created in rows}


def point_latencies(page: Any, created: dict[int, datetime]) -> dict[int, float]:
    """Seconds from each metric row's `created_at` to the browser drawing its point."""
    shown = page.evaluate("() => window.trainctlPerf.pointShown")
    return {
        epoch: round(shown[str(epoch)] / 1000 - at.timestamp(), 3)
        for epoch, at in created.items()
        if str(epoch) in shown
    }


def test_root_redirects_and_assets_are_local(api_url: str) -> None:
    response = httpx.get(f"{api_url}/", follow_redirects=False)
    assert response.status_code == 307 and response.headers["location"] == "/ui"
    page = httpx.get(f"{api_url}/ui")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:href|src)="(ui/static/[^"]+)"', page.text)
    assert {"ui/static/app.js", "ui/static/style.css"} <= set(assets)  # relative: a prefix works
    for path in assets:  # every asset is the API's own (no CDN)
        asset = httpx.get(f"{api_url}/{path}")
        assert asset.status_code == 200, path
        again = httpx.get(f"{api_url}/{path}", headers={"If-None-Match": asset.headers["etag"]})
        assert again.status_code == 304
    assert "http" not in "".join(
        httpx.get(f"{api_url}/{p}").text for p in assets if p.endswith("js")
    )
    assert httpx.get(f"{api_url}/ui/static/..%2fapi.js").status_code == 404
    assert httpx.get(f"{api_url}/ui/static/routes.py").status_code == 404


def test_resolve_applies_overrides_as_the_cli_and_stores_nothing(
    api_url: str, auth: dict[str, str]
) -> None:
    url = f"{api_url}/ui/api/resolve"
    body = {"text": BAD_SPEC, "overrides": ["training.epochs=7", "model.hidden_dim=[1, 2]", ""]}
    assert httpx.post(url, json=body).status_code == 401
    resolved = httpx.post(url, json=body, headers=auth).json()
    assert resolved["spec"]["training"] == {"epochs": 7, "bogus": 1}  # YAML scalars, as --set
    assert resolved["spec"]["model"] == {"hidden_dim": [1, 2]}
    assert resolved["lines"]["training.bogus"] == 8 and resolved["lines"]["data.name"] == 5
    bad = httpx.post(url, json={"text": BAD_SPEC, "overrides": ["nope"]}, headers=auth)
    assert bad.status_code == 422
    assert bad.json()["detail"] == [{"loc": "nope", "msg": "an override is dotted.key=value"}]
    broken = httpx.post(url, json={"text": "a: [1,\n"}, headers=auth)
    assert broken.status_code == 422 and "line" in broken.json()["detail"][0]["msg"]
    assert httpx.get(f"{api_url}/jobs", headers=auth).json()["count"] == 0


def test_sign_in_owner_isolation_and_401(
    api_url: str, page: Any, api_key: str, sessions: sessionmaker[Session], shot: Callable
) -> None:
    mine = add_job(sessions, api_key, "alice-job")
    theirs = add_job(sessions, owner_key(sessions, "mallory"), "mallory-job")

    page.goto(f"{api_url}/")  # redirected to /ui, then to sign-in (no key yet)
    page.wait_for_selector("#signin-form")
    shot(page, "signin")
    page.fill("#api-key", "tc_not_a_key")
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#signin-form .notice.error")
    assert "Key refused" in page.inner_text("#signin-form")
    assert page.evaluate("() => sessionStorage.getItem('trainctl.apiKey')") is None

    page.fill("#api-key", api_key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector(f"tr[data-job-id='{mine}']")
    assert page.locator(f"tr[data-job-id='{theirs}']").count() == 0  # another owner's job
    shot(page, "jobs")

    # Live: a job stored meanwhile shows without a reload.
    later = add_job(sessions, api_key, "alice-later")
    page.wait_for_selector(f"tr[data-job-id='{later}']", timeout=20_000)
    page.select_option("#filter-status", "running")
    page.wait_for_selector("#jobs-table td.muted")  # none running
    page.select_option("#filter-status", "")

    # Another owner's job page is as missing as a job that never was.
    page.goto(f"{api_url}/ui#/job/{theirs}")
    page.wait_for_selector(f"text=job {theirs} not found")
    assert "mallory-job" not in page.content()

    # A key the API stops accepting sends the page back to sign-in.
    page.evaluate("() => sessionStorage.setItem('trainctl.apiKey', 'tc_revoked')")
    page.goto(f"{api_url}/ui#/jobs")
    page.wait_for_selector("#signin-form .notice.error")
    assert "invalid API key" in page.inner_text("#signin-form")


def test_bad_spec_shows_field_errors_and_stores_nothing(
    api_url: str, page: Any, api_key: str, auth: dict[str, str], dispatched: Any, shot: Callable
) -> None:
    sign_in(page, api_url, api_key)
    page.click("nav a[data-view=submit]")
    upload = {"name": "bad.yaml", "mimeType": "application/yaml", "buffer": BAD_SPEC.encode()}
    page.set_input_files("#spec-file", files=[upload])  # an uploaded file fills the editor
    page.wait_for_function("() => document.querySelector('#spec-text').value.includes('bogus')")
    page.fill("#overrides", "model.hidden_dim=abc\nnot an override")
    page.click("#submit-button")
    # The override's own error first (the resolver refuses a line without `=`).
    page.wait_for_selector("#override-errors .field-error")
    assert page.locator("#override-errors .field-error").first.get_attribute("data-line") == "2"
    page.fill("#overrides", "model.hidden_dim=abc")
    page.click("#submit-button")
    page.wait_for_selector("#spec-errors .field-error[data-loc='training.epochs']")
    epochs = page.locator("#spec-errors .field-error[data-loc='training.epochs']")
    assert epochs.get_attribute("data-line") == "7"  # beside the line it names
    bogus = page.locator("#spec-errors .field-error[data-loc='training.bogus']")
    assert bogus.get_attribute("data-line") == "8" and "allowed: batch_size" in bogus.inner_text()
    hidden = page.locator("#override-errors .field-error[data-loc='model.hidden_dim']")
    assert hidden.get_attribute("data-line") == "1"
    assert "nothing was stored" in page.inner_text("#submit-status")
    shot(page, "submit-errors")
    assert httpx.get(f"{api_url}/jobs", headers=auth).json()["count"] == 0
    assert dispatched.job_ids == []

    # Fixed, with an override: stored, queued and shown.
    page.fill("#spec-text", BAD_SPEC.replace("  bogus: 1\n", ""))
    page.fill("#overrides", "training.epochs=3\nname=from-the-page")
    page.click("#submit-button")
    page.wait_for_selector("#job-header h2#job-name")
    jobs = httpx.get(f"{api_url}/jobs", headers=auth).json()
    assert jobs["count"] == 1 and dispatched.job_ids == [jobs["data"][0]["id"]]
    job = jobs["data"][0]
    assert job["name"] == "from-the-page" and job["spec"]["training"]["epochs"] == 3
    assert json.loads(page.inner_text("#spec"))["training"]["epochs"] == 3


def _write_artifacts(settings: Settings, sessions: sessionmaker[Session], job_id: str) -> bytes:
    """Embeddings [60, 8], their ids (with a split column) and a 2-D projection, written into
    the run directory and recorded as the worker records them; the embeddings' bytes."""
    run = settings.artifact_root / job_id
    run.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 8)).astype(np.float32)
    np.save(run / "embeddings.npy", emb)
    ids = io.StringIO()
    writer = csv.writer(ids)
    writer.writerow(["row", "node_id", "split"])
    writer.writerows((i, f"n{i:03d}", "train" if i < 40 else "test") for i in range(60))
    (run / "node_ids.csv").write_text(ids.getvalue())
    np.save(run / "embeddings.pca2d.npy", emb[:, :2].copy())
    files = {
        "embeddings.npy": (
            "embeddings",
            {"shape": [60, 8], "dtype": "float32", "ids": "node_ids.csv"},
        ),
        "node_ids.csv": ("ids", {"id_column": "node_id", "of": "embeddings.npy"}),
        "embeddings.pca2d.npy": (
            "projection",
            {
                "of": "embeddings.npy",
                "ids": "node_ids.csv",
                "method": "pca",
                "explained_variance_ratio": [0.3, 0.2],
            },
        ),
    }
    with session_scope(sessions) as session:
        for name, (kind, meta) in files.items():
            data = (run / name).read_bytes()
            queries.upsert_artifact(
                session, job_id, kind=kind, name=name, path=f"{job_id}/{name}", size=len(data),
                sha256=hashlib.sha256(data).hexdigest(), meta=meta,
            )  # fmt: skip
    return (run / "embeddings.npy").read_bytes()


def test_job_page_live_curve_log_artifacts_and_map(
    api_url: str,
    page: Any,
    api_key: str,
    sessions: sessionmaker[Session],
    service_settings: Settings,
    shot: Callable,
    tmp_path: Path,
) -> None:
    job_id = add_job(sessions, api_key, "live", running=True)
    attempt = attempt_of(sessions, job_id)
    log_path = service_settings.artifact_root / job_id / "logs.txt"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("starting\n")
    sign_in(page, api_url, api_key)
    page.goto(f"{api_url}/ui#/job/{job_id}")
    page.wait_for_selector("#stream-state:has-text('live')")
    page.wait_for_selector("#log:has-text('starting')")

    for epoch in range(1, 6):
        values = {"train_loss": 2.0 / epoch, "val_loss": 2.2 / epoch, "val_acc": 0.5 + epoch / 20}
        with session_scope(sessions) as session:
            queries.upsert_metric(session, job_id, attempt, epoch, values)
        with log_path.open("a") as f:
            f.write(f"epoch {epoch} done\n")
        # train_loss and val_loss on one chart: two points per epoch.
        page.wait_for_selector(f"#curve[data-points='{2 * epoch}']", timeout=10_000)
    page.wait_for_selector("#log:has-text('epoch 5 done')")
    latencies = point_latencies(page, metric_times(sessions, job_id))
    print(f"\nmetric row -> point drawn (s, in-process API, poll 0.02 s): {latencies}")
    assert len(latencies) == 5
    assert page.locator("#metric-table tbody tr").count() == 5
    shot(page, "job-running")

    page.select_option("#metric-select", "acc")
    page.wait_for_selector("#curve[data-points='5']")
    page.check("#log-scale")
    page.select_option("#metric-select", "loss")
    page.wait_for_selector("#curve[data-points='10']")

    emb_bytes = _write_artifacts(service_settings, sessions, job_id)
    with session_scope(sessions) as session:
        assert queries.finish_job(session, job_id, "succeeded")
    page.wait_for_selector("#stream-state:has-text('ended (succeeded)')")
    page.wait_for_selector("#job-header .badge[data-status=succeeded]")
    page.wait_for_selector("#artifacts tr[data-kind=projection]")
    size = page.locator("#artifacts tr[data-kind=embeddings] td.num")
    assert size.get_attribute("title") == f"{len(emb_bytes)} bytes"
    with page.expect_download() as info:
        page.click("#download-embeddings-npy")
    saved = tmp_path / "emb.npy"
    info.value.save_as(saved)
    assert saved.read_bytes() == emb_bytes
    with page.expect_download() as info:
        page.click("#artifacts button[data-artifact='node_ids.csv']")
    assert info.value.suggested_filename == "node_ids.csv"
    shot(page, "job-finished")

    page.click("#map-link")
    page.wait_for_selector("#map[data-points='60']")
    assert page.input_value("#colour-select") != ""  # coloured by the split column
    assert "split" in page.inner_text("#colour-select")
    x, y = page.evaluate("() => window.trainctlMap.screenOf(7)")
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#map-tooltip:not([hidden])")
    assert page.inner_text("#map-tooltip").startswith("node_id n007 · split train")
    shot(page, "map")


def test_cancel_failed_root_cause_and_compare(
    api_url: str, page: Any, api_key: str, sessions: sessionmaker[Session], shot: Callable
) -> None:
    queued = add_job(sessions, api_key, "to-cancel")
    failed = add_job(sessions, api_key, "broken", running=True)
    with session_scope(sessions) as session:
        for epoch in (1, 2, 3):
            queries.upsert_metric(session, failed, 1, epoch, {"val_loss": 1.0 / epoch})
        queries.finish_job(
            session, failed, "failed", "DatasetNotFound: no 'Corra' in the data roots\nTraceback..."
        )
    sign_in(page, api_url, api_key)

    page.goto(f"{api_url}/ui#/job/{queued}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-job")
    page.wait_for_selector("#job-header .badge[data-status=cancelled]")
    shot(page, "job-cancelled")

    page.goto(f"{api_url}/ui#/job/{failed}")
    page.wait_for_selector("#job-error .root-cause")
    assert page.inner_text("#job-error .root-cause").startswith("DatasetNotFound: no 'Corra'")
    page.wait_for_selector("#curve[data-points='3']")

    # Compare: one metric of several jobs on one chart; no group panel without a group.
    page.goto(f"{api_url}/ui#/jobs")
    for job_id in (queued, failed):
        page.check(f"tr[data-job-id='{job_id}'] input[type=checkbox]")
    page.click("#compare-selected")
    page.wait_for_selector("#compare-chart[data-points='3']")
    assert page.input_value("#compare-metric") == "val_loss"
    page.goto(f"{api_url}/ui#/compare?jobs={failed}&group=no-such-group")
    page.wait_for_selector("#compare-chart[data-points='3']")
    time.sleep(0.3)  # the group request has answered (404): the panel stays hidden
    assert page.locator("#group-panel").is_hidden()


def test_compare_group_members_mean_std(
    api_url: str,
    page: Any,
    api_key: str,
    auth: dict[str, str],
    sessions: sessionmaker[Session],
    shot: Callable,
) -> None:
    body = {
        "spec": VALID_SPEC,
        "sweep": {"grid": {"training.seed": [0, 1, 2]}},
        "metric": "val_loss",
    }
    response = httpx.post(f"{api_url}/groups", json=body, headers=auth)
    if response.status_code == 404:
        pytest.skip("this API has no /groups")
    assert response.status_code == 201, response.text
    group = response.json()
    finals = [0.5, 0.3, 0.4]  # each member's best (lowest) val_loss
    for member, final in zip(group["members"], finals, strict=True):
        with session_scope(sessions) as session:
            assert queries.claim_job(session, member["id"], "browser-test-worker") is not None
        with session_scope(sessions) as session:
            for epoch in (1, 2):
                values = {"val_loss": final * (3 - epoch), "train_loss": final}
                queries.upsert_metric(session, member["id"], 1, epoch, values)
            queries.finish_job(session, member["id"], "succeeded")
    sign_in(page, api_url, api_key)
    page.goto(f"{api_url}/ui#/compare?group={group['id']}")
    page.wait_for_selector("#compare-chart[data-points='6']")  # 3 members x 2 epochs
    page.wait_for_selector("#group-panel:not([hidden]) #group-stat")
    assert page.inner_text("#group-stat").startswith("val_loss: 0.4 ± 0.1 (n = 3")
    assert page.locator("#group-members tbody tr").count() == 3
    assert "training.seed=1" in page.inner_text("#group-members")
    shot(page, "compare-group")


# --- the production stack: a real Celery worker training tiny Cora jobs -------------------------


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_stack_submit_watch_download_map_cancel(
    stack: Any, page: Any, shot: Callable, tmp_path: Path
) -> None:
    import yaml

    from store.db import make_engine, session_factory
    from tests.support.e2e import CORA_NODES, TINY_CORA

    sign_in(page, stack.url, stack.key)
    page.click("nav a[data-view=submit]")
    page.fill("#spec-text", yaml.safe_dump(TINY_CORA, sort_keys=False))
    page.fill("#overrides", "training.epochs=8\nname=ui-cora")
    page.click("#submit-button")
    page.wait_for_selector("#job-header h2#job-name")
    job_id = page.url.rsplit("/", 1)[1]

    # The curve gains points while the job runs (seen in the page, not only at the end).
    seen: list[tuple[str, int]] = []
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = page.get_attribute("#job-header .badge", "data-status") or ""
        points = int(page.get_attribute("#curve", "data-points") or 0)
        if not seen or seen[-1] != (status, points):
            seen.append((status, points))
        if status in ("succeeded", "failed", "cancelled"):
            break
        if status == "running" and points and len({p for s, p in seen if s == "running"}) == 3:
            shot(page, "job-running")
        time.sleep(0.1)
    running = sorted({p for s, p in seen if s == "running" and p})
    assert len(running) >= 2, f"the curve did not grow while running: {seen}"
    page.wait_for_selector("#curve[data-points='16']")  # 8 epochs, train and val loss

    engine = make_engine(stack.db_url)
    try:
        created = metric_times(session_factory(engine), job_id)
    finally:
        engine.dispose()
    latencies = point_latencies(page, created)
    live = {e: s for e, s in latencies.items() if s < 30}  # rows drawn as they landed
    print(f"\nmetric row -> point drawn (s; real API, poll 0.5 s): {latencies}")
    if live:
        print(f"max {max(live.values()):.3f} s, mean {sum(live.values()) / len(live):.3f} s")
    job = stack.api.job(job_id)
    assert job["status"] == "succeeded", job["error"]
    page.wait_for_selector("#artifacts tr[data-kind=projection]")
    page.wait_for_selector("#log:has-text('loaded Cora: 2708 nodes')")
    shot(page, "job-succeeded")

    with page.expect_download() as info:
        page.click("#download-embeddings-npy")
    saved = tmp_path / "embeddings.npy"
    info.value.save_as(saved)
    emb = np.load(saved)
    assert emb.shape == (CORA_NODES, 16) and emb.dtype == np.float32

    page.click("#map-link")
    page.wait_for_selector(f"#map[data-points='{CORA_NODES}']")
    x, y = page.evaluate("() => window.trainctlMap.screenOf(42)")
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    page.wait_for_selector("#map-tooltip:not([hidden])")
    assert page.inner_text("#map-tooltip").startswith("node_id ")
    shot(page, "map")

    page.goto(f"{stack.url}/ui#/jobs")
    page.wait_for_selector(f"tr[data-job-id='{job_id}'] td.best:not(:empty)")
    shot(page, "jobs")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_real_stack_cancel_running_job(stack: Any, page: Any, shot: Callable) -> None:
    from tests.support.e2e import TINY_CORA

    sign_in(page, stack.url, stack.key)
    # A long job, cancelled from its page while it runs.
    long_spec = {
        **TINY_CORA,
        "name": "ui-cancel",
        "training": {**TINY_CORA["training"], "epochs": 500},
    }
    other = stack.api.post("/jobs", json=long_spec)
    page.goto(f"{stack.url}/ui#/job/{other['id']}")
    page.wait_for_selector("#job-header .badge[data-status=running]", timeout=120_000)
    page.wait_for_function(  # training: its first epoch is on the curve
        "() => Number(document.querySelector('#curve').dataset.points) >= 2", timeout=120_000
    )
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel-job")
    page.wait_for_selector("#job-header .badge[data-status=cancelled]", timeout=60_000)
    assert stack.api.job(other["id"])["status"] == "cancelled"
    shot(page, "job-cancelled")
