"""The API's file routes: downloads come only from recorded artifacts inside the artifact root,
embeddings stream as .npy or CSV, logs tail, uploads stream to disk within a size limit."""

from __future__ import annotations

import asyncio
import builtins
import csv
import hashlib
import io
import os
from pathlib import Path

import httpx
import numpy as np
import pytest

from api.files import read_upto
from api.main import create_app
from store import queries
from store.db import session_scope
from tests.service.test_api import submit


def record(sessions, settings, job_id: str, relative: str, data: bytes, **fields) -> Path:
    """Write `<run dir>/<relative>` and record it as an artifact named `relative`."""
    path = settings.artifact_root / job_id / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    fields.setdefault("kind", "checkpoint")
    with session_scope(sessions) as session:
        queries.upsert_artifact(
            session,
            job_id,
            name=relative,
            path=f"{job_id}/{relative}",
            size=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            **fields,
        )
    return path


# --- checkpoints and artifacts ------------------------------------------------------------------


def test_checkpoints_list_and_download_with_best_alias(client, auth, sessions, service_settings):
    job_id = submit(client, auth)
    record(
        sessions,
        service_settings,
        job_id,
        "checkpoints/epoch=1.pt",
        b"one",
        epoch=1,
        tag="periodic",
    )
    record(sessions, service_settings, job_id, "checkpoints/best.pt", b"best", epoch=2, tag="best")
    record(sessions, service_settings, job_id, "summary.json", b"{}", kind="summary")
    base = f"/jobs/{job_id}/checkpoints"

    listing = client.get(base, headers=auth).json()
    assert listing["count"] == 2
    assert {c["name"]: c["tag"] for c in listing["data"]} == {
        "checkpoints/epoch=1.pt": "periodic",
        "checkpoints/best.pt": "best",
    }
    response = client.get(f"{base}/checkpoints/epoch=1.pt", headers=auth)
    assert response.status_code == 200 and response.content == b"one"
    assert "epoch%3D1.pt" in response.headers["content-disposition"]
    assert client.get(f"{base}/best", headers=auth).content == b"best"
    missing = client.get(f"{base}/last", headers=auth)
    assert (missing.status_code, missing.json()["detail"]) == (404, "checkpoint not found")
    assert client.get(f"{base}/summary.json", headers=auth).status_code == 404  # not a checkpoint

    artifacts = client.get(f"/jobs/{job_id}/artifacts", headers=auth).json()
    assert artifacts["count"] == 3
    assert client.get(f"/jobs/{job_id}/artifacts?kind=summary", headers=auth).json()["count"] == 1
    assert client.get(f"/jobs/{job_id}/artifacts/summary.json", headers=auth).content == b"{}"


@pytest.fixture
def fs_spy(monkeypatch):
    """Every path the process opens or stats while the fixture is active."""
    seen: list[str] = []

    def spy(func):
        def wrapper(path, *args, **kwargs):
            seen.append(os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else "")
            return func(path, *args, **kwargs)

        return wrapper

    for module, name in [
        (builtins, "open"),
        (io, "open"),
        (os, "open"),
        (os, "stat"),
        (os, "lstat"),
    ]:
        monkeypatch.setattr(module, name, spy(getattr(module, name)))
    return seen


TRAVERSALS = [
    "..%2F..%2Fsecret.txt",
    "../../secret.txt",
    "..%2F..%2F..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fsecret.txt",
    "checkpoints%2F..%2F..%2F..%2Fsecret.txt",
]


def test_traversal_names_are_404_and_never_reach_the_filesystem(
    client, auth, sessions, service_settings, fs_spy
):
    job_id = submit(client, auth)
    secret = service_settings.home.parent / "secret.txt"  # outside the artifact root
    secret.write_text("top secret")
    fs_spy.clear()
    for name in TRAVERSALS:
        for route in ("checkpoints", "artifacts"):
            response = client.get(f"/jobs/{job_id}/{route}/{name}", headers=auth)
            assert response.status_code == 404, (route, name)
            assert "top secret" not in response.text
    touched = [p for p in fs_spy if "secret" in p or "passwd" in p]
    assert touched == []
    # The spy does see the files that are served.
    record(sessions, service_settings, job_id, "ok.pt", b"ok")
    assert client.get(f"/jobs/{job_id}/checkpoints/ok.pt", headers=auth).content == b"ok"
    assert any(p.endswith("ok.pt") for p in fs_spy)


def test_a_recorded_path_outside_the_root_is_never_served(client, auth, sessions, service_settings):
    job_id = submit(client, auth)
    secret = service_settings.home.parent / "secret.txt"
    secret.write_text("top secret")
    with session_scope(sessions) as session:  # a bad row, e.g. written by a buggy worker
        queries.upsert_artifact(
            session,
            job_id,
            kind="checkpoint",
            name="evil.pt",
            path="../secret.txt",
            size=10,
            sha256="0" * 64,
            tag="best",
        )
    link = service_settings.artifact_root / job_id / "link.pt"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    with session_scope(sessions) as session:
        queries.upsert_artifact(
            session,
            job_id,
            kind="checkpoint",
            name="link.pt",
            path=f"{job_id}/link.pt",
            size=10,
            sha256="0" * 64,
        )
    for name in ("evil.pt", "best", "link.pt"):
        response = client.get(f"/jobs/{job_id}/checkpoints/{name}", headers=auth)
        assert response.status_code == 404 and "top secret" not in response.text


# --- logs and embeddings ------------------------------------------------------------------------


def test_logs_whole_and_tail(client, auth, service_settings):
    job_id = submit(client, auth)
    url = f"/jobs/{job_id}/logs"
    assert client.get(url, headers=auth).text == ""  # nothing written yet
    log = service_settings.artifact_root / job_id / "logs.txt"
    log.parent.mkdir(parents=True)
    lines = [f"line {i} " + "x" * 200 for i in range(2000)]  # longer than one tail block
    log.write_text("\n".join(lines) + "\n")
    assert client.get(url, headers=auth).text.splitlines() == lines
    assert client.get(url, params={"tail": 3}, headers=auth).text.splitlines() == lines[-3:]
    assert client.get(url, params={"tail": 5000}, headers=auth).text.splitlines() == lines
    log.write_text("a\nb\npartial")
    assert client.get(url, params={"tail": 2}, headers=auth).text == "b\npartial"


def test_read_upto_stops_at_the_size_seen(tmp_path):
    log = tmp_path / "logs.txt"
    log.write_bytes(b"0123456789")
    chunks = read_upto(log, 7, chunk_size=3)
    assert next(chunks) == b"012"
    with log.open("ab") as f:  # the run goes on appending
        f.write(b"more" * 100_000)
    assert b"".join(chunks) == b"3456"


def save_npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def csv_rows(client, auth, url: str, **params) -> list[list[str]]:
    response = client.get(url, params={"format": "csv", **params}, headers=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.reader(io.StringIO(response.text)))


def test_embeddings_as_npy_and_csv_keyed_through_meta(client, auth, sessions, service_settings):
    job_id = submit(client, auth)
    emb = np.arange(15, dtype=np.float32).reshape(5, 3) / 7  # [texts, dim]
    ids = 'row,text_id,split\n0,paper-a,train\n1,"b,with comma",train\n2,c,val\n3,d,val\n4,e,test\n'
    # Names the run chose: nothing in the API knows them.
    emb_meta = {"shape": [5, 3], "dtype": "float32", "ids": "out/keys.csv"}
    record(
        sessions,
        service_settings,
        job_id,
        "out/vectors.npy",
        save_npy(emb),
        kind="embeddings",
        meta=emb_meta,
    )
    record(
        sessions,
        service_settings,
        job_id,
        "out/keys.csv",
        ids.encode(),
        kind="ids",
        meta={"id_column": "text_id", "of": "out/vectors.npy"},
    )
    url = f"/jobs/{job_id}/embeddings"

    response = client.get(url, headers=auth)
    assert response.status_code == 200
    np.testing.assert_array_equal(np.load(io.BytesIO(response.content)), emb)

    rows = csv_rows(client, auth, url)
    assert rows[0] == ["text_id", "dim_0", "dim_1", "dim_2"]
    assert [r[0] for r in rows[1:]] == ["paper-a", "b,with comma", "c", "d", "e"]
    np.testing.assert_allclose(np.array([r[1:] for r in rows[1:]], dtype=float), emb, rtol=1e-6)
    listing = client.get(f"/jobs/{job_id}/artifacts?kind=embeddings", headers=auth).json()
    assert listing["data"][0]["meta"] == emb_meta


def test_embeddings_by_name_and_without_ids(client, auth, sessions, service_settings):
    job_id = submit(client, auth)
    record(
        sessions,
        service_settings,
        job_id,
        "a.npy",
        save_npy(np.zeros((2, 1), np.float32)),
        kind="embeddings",
        meta={"ids": "gone.csv"},
    )
    record(
        sessions,
        service_settings,
        job_id,
        "b.npy",
        save_npy(np.ones((3, 2), np.float32)),
        kind="embeddings",
    )
    url = f"/jobs/{job_id}/embeddings"
    rows = csv_rows(client, auth, url)  # the newest: b.npy, keyed by nothing
    assert rows[0] == ["row", "dim_0", "dim_1"] and [r[0] for r in rows[1:]] == ["0", "1", "2"]
    rows = csv_rows(client, auth, url, name="a.npy")  # its ids artifact is not recorded
    assert rows[0] == ["row", "dim_0"] and [r[0] for r in rows[1:]] == ["0", "1"]
    response = client.get(url, params={"name": "nope.npy"}, headers=auth)
    assert (response.status_code, response.json()["detail"]) == (404, "embeddings not found")
    # A file the run directory holds but the run did not record keys nothing.
    (service_settings.artifact_root / job_id / "node_ids.csv").write_text("row,node_id\n0,x\n")
    assert csv_rows(client, auth, url)[1][0] == "0"


def test_old_runs_node_ids_artifact_keys_the_rows(client, auth, sessions, service_settings):
    """Runs recorded before artifacts had meta: a `node_ids` artifact, no `meta.ids`."""
    job_id = submit(client, auth)
    record(
        sessions,
        service_settings,
        job_id,
        "embeddings.npy",
        save_npy(np.ones((3, 2), np.float32)),
        kind="embeddings",
    )
    ids = b"row,node_id\n0,paper-a\n1,paper-b\n2,paper-c\n"
    record(sessions, service_settings, job_id, "node_ids.csv", ids, kind="node_ids")
    rows = csv_rows(client, auth, f"/jobs/{job_id}/embeddings")
    assert rows[0] == ["node_id", "dim_0", "dim_1"]
    assert [r[0] for r in rows[1:]] == ["paper-a", "paper-b", "paper-c"]


def test_graph_embeddings_csv_takes_graph_ids(client, auth, sessions, service_settings):
    """Runs recorded before artifacts had meta: a `graph_ids` artifact, no `meta.ids`."""
    job_id = submit(client, auth)
    record(
        sessions,
        service_settings,
        job_id,
        "embeddings.npy",
        save_npy(np.ones((3, 2), dtype=np.float32)),
        kind="embeddings",
    )
    ids = b"row,graph_id,split\n0,17,train\n1,4,val\n2,9,test\n"
    record(sessions, service_settings, job_id, "graph_ids.csv", ids, kind="graph_ids")
    rows = csv_rows(client, auth, f"/jobs/{job_id}/embeddings")
    assert rows[0] == ["graph_id", "dim_0", "dim_1"]
    assert [r[0] for r in rows[1:]] == ["17", "4", "9"]


def test_embeddings_csv_is_chunked_for_many_rows(client, auth, sessions, service_settings):
    job_id = submit(client, auth)
    emb = np.random.default_rng(0).normal(size=(10_000, 4)).astype(np.float32)
    buf = io.BytesIO()
    np.save(buf, emb)
    record(sessions, service_settings, job_id, "embeddings.npy", buf.getvalue(), kind="embeddings")
    text = client.get(f"/jobs/{job_id}/embeddings?format=csv", headers=auth).text
    values = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1)
    assert values.shape == (10_000, 5)
    np.testing.assert_allclose(values[:, 1:], emb, rtol=1e-6)


def test_embeddings_missing_is_404(client, auth):
    job_id = submit(client, auth)
    response = client.get(f"/jobs/{job_id}/embeddings", headers=auth)
    assert (response.status_code, response.json()["detail"]) == (404, "embeddings not found")


# --- dataset uploads ----------------------------------------------------------------------------


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


def test_upload_dataset_streams_to_the_owners_folder(client, auth, service_settings):
    content = b"src,dst\n" + b"".join(b"%d,%d\n" % (i, i + 1) for i in range(2000))
    response = client.post(
        "/datasets", data={"name": "chain"}, files={"file": ("edges.csv", content)}, headers=auth
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["name"], body["path"], body["size"]) == ("chain", "chain/edges.csv", len(content))
    assert body["sha256"] == hashlib.sha256(content).hexdigest()
    stored = service_settings.upload_root / "alice" / "chain" / "edges.csv"
    assert stored.read_bytes() == content
    assert files_under(service_settings.upload_root) == [stored]  # no temporary file left

    listing = client.get("/datasets", headers=auth).json()
    assert listing["count"] == 1 and listing["data"][0]["path"] == "chain/edges.csv"
    again = client.post(
        "/datasets", data={"name": "chain"}, files={"file": ("other.csv", b"1,2\n")}, headers=auth
    )
    assert (again.status_code, again.json()["detail"]) == (409, "dataset 'chain' already exists")
    assert files_under(service_settings.upload_root) == [stored]


def test_upload_file_name_is_made_safe(client, auth, service_settings):
    response = client.post(
        "/datasets",
        data={"name": "x"},
        files={"file": ("../../.evil name.sh", b"1,2\n")},
        headers=auth,
    )
    assert response.status_code == 201
    assert response.json()["path"] == "x/evil_name.sh"
    assert (service_settings.upload_root / "alice" / "x" / "evil_name.sh").exists()


def test_upload_too_large_is_413_and_leaves_no_file(client, auth, service_settings):
    limit = service_settings.max_upload_bytes
    big = b"0" * (limit + 1)
    response = client.post(
        "/datasets", data={"name": "big"}, files={"file": ("e.csv", big)}, headers=auth
    )
    assert response.status_code == 413
    assert response.json()["detail"] == f"upload too large; the limit is {limit} bytes"

    # Without a Content-Length (chunked), the limit is enforced while streaming.
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nbig\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="e.csv"'
        "\r\n\r\n"
    ).encode()

    def chunks():
        yield head
        for _ in range(limit // 4096 + 2):
            yield b"1" * 4096

    response = client.post(
        "/datasets",
        content=chunks(),
        headers={**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413
    assert files_under(service_settings.upload_root) == []
    assert client.get("/datasets", headers=auth).json()["count"] == 0


@pytest.mark.parametrize("name", ["", "../x", ".hidden", "a" * 65, "a/b", "sp ace"])
def test_upload_bad_name_is_422_and_leaves_no_file(client, auth, service_settings, name):
    response = client.post(
        "/datasets", data={"name": name}, files={"file": ("e.csv", b"1,2\n")}, headers=auth
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == "name"
    assert files_under(service_settings.upload_root) == []


def test_slow_uploads_hold_no_connection(service_settings, auth, dispatched):
    """Uploads in progress, more than the API's connections, leave the API answering."""
    app = create_app(service_settings, dispatch=dispatched)
    boundary = "b0undary"
    headers = {**auth, "Content-Type": f"multipart/form-data; boundary={boundary}"}
    count = 3 * service_settings.api_threads  # the API has a connection per thread

    async def scenario() -> list[int]:
        release = asyncio.Event()

        async def body(i: int):
            yield (
                f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nd{i}'
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                'filename="e.csv"\r\n\r\n1,2\n'
            ).encode()
            await release.wait()  # the upload is still streaming
            yield f"\r\n--{boundary}--\r\n".encode()

        # httpx's ASGI transport streams a request body to the app as it is produced.
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://api") as client,
        ):
            uploads = [
                asyncio.create_task(client.post("/datasets", content=body(i), headers=headers))
                for i in range(count)
            ]
            await asyncio.sleep(0.5)
            try:
                response = await asyncio.wait_for(client.get("/jobs", headers=auth), 10)
                assert response.status_code == 200
            finally:
                release.set()
            return [r.status_code for r in await asyncio.gather(*uploads)]

    assert asyncio.run(scenario()) == [201] * count


def test_upload_without_a_file_is_422(client, auth):
    response = client.post(
        "/datasets", data={"name": "x"}, files={"other": ("e.csv", b"1")}, headers=auth
    )
    assert response.status_code == 422
    assert "'file'" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize(
    "content, fields, message",
    [
        (b"src,dst\na,b\nc\n", {}, "edges.csv, line 3: 1 column(s); an edge needs"),
        (b"src,dst\na,\n", {}, "edges.csv, line 2, column 'dst': empty node id"),
        (b"w,to\n1,b\n", {"src_column": "from"}, "no column 'from' (data.src_column)"),
        (b"\xff\xfe\n", {}, "edges.csv: not UTF-8 text"),
    ],
)
def test_an_edge_list_upload_is_checked_by_the_training_reader_and_nothing_is_stored(
    client, auth, service_settings, content, fields, message
):
    response = client.post(
        "/datasets",
        data={"name": "g", "format": "edge_list", **fields},
        files={"file": ("edges.csv", content)},
        headers=auth,
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == "file" and message in error["msg"]
    assert files_under(service_settings.upload_root) == []
    assert client.get("/datasets", headers=auth).json()["count"] == 0


def test_a_valid_edge_list_upload_with_reader_options_is_stored(client, auth, service_settings):
    response = client.post(
        "/datasets",
        data={"name": "g", "format": "edge_list", "comment": "#", "header": "true"},
        files={"file": ("edges.csv", b"from,to\n# a note\nalice,#python\n")},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    bad = client.post(
        "/datasets",
        data={"name": "h", "format": "parquet"},
        files={"file": ("x.bin", b"1,2\n")},
        headers=auth,
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0] == {
        "loc": "format",
        "msg": "unknown format 'parquet'; allowed: edge_list, species_matrix, records",
    }


@pytest.mark.parametrize(
    "fields, content, message",
    [
        ({"format": "species_matrix", "id_column": "site"}, b"site,a,b\ns1,1,two\n",
         "sites.csv, line 2, column 'b': 'two' is not a finite number"),
        ({"format": "species_matrix"}, b"a,b\n1,-3\n", "sites.csv, line 2, column 'b'"),
        ({"format": "records", "species_column": "taxon"}, b"event,species,count\ne1,x,1\n",
         "sites.csv"),
    ],
)  # fmt: skip
def test_table_and_record_uploads_are_checked_by_the_training_reader(
    client, auth, service_settings, fields, content, message
):
    response = client.post(
        "/datasets",
        data={"name": "m", **fields},
        files={"file": ("sites.csv", content)},
        headers=auth,
    )
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"][0]["msg"]
    assert files_under(service_settings.upload_root) == []


def test_a_finished_jobs_resource_carries_its_quality_block(
    client, auth, sessions, service_settings
):
    import json

    job_id = submit(client, auth)
    quality = {"metric": "probe_test_acc", "value": 0.82, "baseline": 0.6, "baseline_of": "x"}
    record(sessions, service_settings, job_id, "summary.json",
           json.dumps({"quality": quality}).encode(), kind="summary")  # fmt: skip
    assert client.get(f"/jobs/{job_id}", headers=auth).json()["quality"] is None  # queued
    with session_scope(sessions) as session:
        assert queries.claim_job(session, job_id, "w") is not None
        assert queries.finish_job(session, job_id, "succeeded", None)
    assert client.get(f"/jobs/{job_id}", headers=auth).json()["quality"] == quality
