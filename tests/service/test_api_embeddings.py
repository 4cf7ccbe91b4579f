"""Embeddings as a service: neighbours of a row or of vectors (exact, against a brute-force
reference), every bad query a 4xx naming its field, owner isolation, and run comparison."""

from __future__ import annotations

import numpy as np
import pytest

from api.embeddings import EmbeddingIndex, linear_cka
from tests.service.test_api import submit
from tests.service.test_api_files import record, save_npy


def _job_with_embeddings(client, auth, sessions, settings, emb: np.ndarray, prefix: str = "n"):
    job_id = submit(client, auth)
    ids = "row,node_id\n" + "".join(f"{i},{prefix}{i}\n" for i in range(emb.shape[0]))
    record(sessions, settings, job_id, "emb.npy", save_npy(emb), kind="embeddings",
           meta={"shape": list(emb.shape), "dtype": "float32", "ids": "ids.csv"})  # fmt: skip
    record(sessions, settings, job_id, "ids.csv", ids.encode(), kind="ids",
           meta={"id_column": "node_id"})  # fmt: skip
    return job_id


@pytest.fixture
def emb() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)


def _reference(emb: np.ndarray, query: np.ndarray, k: int, skip: int | None = None) -> list[int]:
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    scores = unit @ (query / np.linalg.norm(query))
    if skip is not None:
        scores[skip] = -np.inf
    return list(np.argsort(-scores)[:k])


def test_neighbours_of_a_row_match_brute_force(client, auth, sessions, service_settings, emb):
    job_id = _job_with_embeddings(client, auth, sessions, service_settings, emb)
    response = client.get(
        f"/jobs/{job_id}/embeddings/neighbors", params={"id": "n7", "k": 10}, headers=auth
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["query"] == "n7" and body["metric"] == "cosine"
    assert [n["row"] for n in body["data"]] == _reference(emb, emb[7], 10, skip=7)
    assert [n["id"] for n in body["data"]] == [f"n{n['row']}" for n in body["data"]]
    scores = [n["score"] for n in body["data"]]
    assert scores == sorted(scores, reverse=True) and scores[0] <= 1.0


def test_neighbours_of_vectors_cosine_and_dot(client, auth, sessions, service_settings, emb):
    job_id = _job_with_embeddings(client, auth, sessions, service_settings, emb)
    queries = emb[:3] + 0.01
    url = f"/jobs/{job_id}/embeddings/neighbors"
    body = client.post(url, json={"vectors": queries.tolist(), "k": 5}, headers=auth).json()
    assert [[n["row"] for n in hits] for hits in body["data"]] == [
        _reference(emb, q, 5) for q in queries
    ]
    dot = client.post(url, json={"vector": queries[0].tolist(), "k": 3, "metric": "dot"},
                      headers=auth).json()  # fmt: skip
    assert [n["row"] for n in dot["data"][0]] == list(np.argsort(-(emb @ queries[0]))[:3])


@pytest.mark.parametrize(
    "method, params, status, loc_or_text",
    [
        ("get", {"id": "nope"}, 404, "id 'nope' is not a row"),
        ("get", {"id": "n1", "k": 0}, 422, "k"),
        ("get", {"id": "n1", "k": 300}, 422, "k"),
        ("get", {"id": "n1", "metric": "l3"}, 422, "metric"),
        ("post", {"vector": [1.0, 2.0]}, 422, "vector"),
        ("post", {"vectors": [[0.0] * 16, [1.0] * 3]}, 422, "vectors.1"),
        ("post", {"vector": [0.0] * 16, "k": 301}, 422, "k"),
        ("post", {}, 422, "vector"),
    ],
)
def test_bad_queries_are_4xx_naming_the_field(
    client, auth, sessions, service_settings, emb, method, params, status, loc_or_text
):
    job_id = _job_with_embeddings(client, auth, sessions, service_settings, emb)
    url = f"/jobs/{job_id}/embeddings/neighbors"
    if method == "get":
        response = client.get(url, params=params, headers=auth)
    else:
        response = client.post(url, json=params, headers=auth)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if isinstance(detail, str):
        assert loc_or_text in detail
    else:
        locs = [d["loc"].removeprefix("query.").removeprefix("body.") for d in detail]
        assert loc_or_text in locs, detail


def test_another_owners_embeddings_are_404(
    client, auth, other_auth, sessions, service_settings, emb
):
    job_id = _job_with_embeddings(client, auth, sessions, service_settings, emb)
    url = f"/jobs/{job_id}/embeddings/neighbors"
    assert client.get(url, params={"id": "n1"}, headers=other_auth).status_code == 404
    response = client.get("/compare/embeddings", params={"a": job_id, "b": job_id},
                          headers=other_auth)  # fmt: skip
    assert response.status_code == 404


def test_compare_two_runs_over_the_same_ids(client, auth, sessions, service_settings, emb):
    rotation = np.linalg.qr(np.random.default_rng(1).standard_normal((16, 16)))[0]
    a = _job_with_embeddings(client, auth, sessions, service_settings, emb)
    b = _job_with_embeddings(
        client, auth, sessions, service_settings, (emb @ rotation * 3).astype(np.float32)
    )
    other = np.random.default_rng(2).standard_normal((300, 16)).astype(np.float32)
    c = _job_with_embeddings(client, auth, sessions, service_settings, other)
    same = client.get("/compare/embeddings", params={"a": a, "b": b}, headers=auth).json()
    assert same["common_ids"] == 300 and same["k"] == 10
    assert same["linear_cka"] == pytest.approx(1.0, abs=1e-4)
    assert same["knn_overlap"] == pytest.approx(1.0)
    unrelated = client.get("/compare/embeddings", params={"a": a, "b": c}, headers=auth).json()
    assert unrelated["linear_cka"] < 0.3 and unrelated["knn_overlap"] < 0.2
    disjoint = _job_with_embeddings(client, auth, sessions, service_settings, emb, prefix="x")
    response = client.get("/compare/embeddings", params={"a": a, "b": disjoint}, headers=auth)
    assert response.status_code == 422 and "share 0 ids" in response.json()["detail"][0]["msg"]


def test_linear_cka_is_invariant_to_rotation_and_scale():
    x = np.random.default_rng(3).standard_normal((200, 8))
    q = np.linalg.qr(np.random.default_rng(4).standard_normal((8, 8)))[0]
    assert linear_cka(x, 5 * x @ q) == pytest.approx(1.0)
    index = EmbeddingIndex(x.astype(np.float32), [str(i) for i in range(200)])
    (hits,) = index.search(x[0], 5, exclude=[0])
    assert 0 not in [h.row for h in hits] and len(hits) == 5


@pytest.mark.parametrize("fmt", ["parquet", "safetensors"])
def test_embeddings_download_as_parquet_and_safetensors(
    client, auth, sessions, service_settings, emb, fmt
):
    import io
    import json

    job_id = _job_with_embeddings(client, auth, sessions, service_settings, emb)
    response = client.get(f"/jobs/{job_id}/embeddings", params={"format": fmt}, headers=auth)
    assert response.status_code == 200, response.text[:300]
    assert f'filename="embeddings.{fmt}"' in response.headers["content-disposition"]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(io.BytesIO(response.content))
        assert table.column("node_id").to_pylist() == [f"n{i}" for i in range(300)]
        np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist()), emb)
    else:
        from safetensors.numpy import load

        np.testing.assert_array_equal(load(response.content)["embeddings"], emb)
        header_size = int.from_bytes(response.content[:8], "little")
        meta = json.loads(response.content[8 : 8 + header_size])["__metadata__"]
        assert json.loads(meta["ids"])[:2] == ["n0", "n1"] and meta["id_column"] == "node_id"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_conversion_is_kept_for_the_next_download_until_the_source_changes(
    client, auth, sessions, service_settings, emb, fmt
):
    import os

    job_id = _job_with_embeddings(client, auth, sessions, service_settings, emb)
    url, params = f"/jobs/{job_id}/embeddings", {"format": fmt}
    first = client.get(url, params=params, headers=auth)
    assert first.status_code == 200, first.text[:300]
    source = service_settings.artifact_root / job_id / "emb.npy"
    kept = list((source.parent / "exports").iterdir())
    assert [p.suffix for p in kept] == [f".{fmt}"]  # one whole file, no part file left
    second = client.get(url, params=params, headers=auth)
    assert second.content == first.content and "content-length" in second.headers  # from disk

    # A rewritten source (a retried job) is converted again; the old conversion goes.
    source.write_bytes(save_npy(emb[::-1].copy()))
    os.utime(source, ns=(1, 1))
    third = client.get(url, params=params, headers=auth)
    assert third.content != first.content
    again = list((source.parent / "exports").iterdir())
    assert len(again) == 1 and again != kept


def test_a_download_left_early_keeps_no_part_file(tmp_path):
    from store.exports import cached_export

    target = tmp_path / "exports" / "emb.1-2.parquet"
    body = cached_export(iter([b"a" * 10, b"b" * 10, b"c"]), target)
    assert next(body) == b"a" * 10
    body.close()  # the client went away
    assert list(target.parent.iterdir()) == []
    assert b"".join(cached_export(iter([b"x", b"y"]), target)) == b"xy"
    assert target.read_bytes() == b"xy" and list(target.parent.iterdir()) == [target]


def test_keeping_a_conversion_ticks_per_chunk_and_happens_once(tmp_path):
    import pyarrow.parquet as pq

    from store.exports import EmbeddingsSource, keep_exports

    emb = np.random.default_rng(1).random((12_000, 64), dtype=np.float32)  # 3 MB: 2 row groups
    np.save(tmp_path / "emb.npy", emb)
    source = EmbeddingsSource(tmp_path / "emb.npy", None, "row")
    ticks: list[int] = []
    (kept,) = keep_exports([source], ["parquet"], lambda: ticks.append(1))
    assert len(ticks) >= 2  # a worker's heartbeat goes on while a large conversion runs
    table = pq.read_table(kept)
    assert table.column("row").to_pylist()[:2] == ["0", "1"]
    np.testing.assert_array_equal(np.array(table.column("embedding").to_pylist()), emb)
    before = len(ticks)
    assert keep_exports([source], ["parquet"], lambda: ticks.append(1)) == [kept]
    assert len(ticks) == before  # kept already: nothing converted again


def test_cli_neighbors_compare_and_download_formats(
    cli, auth, client, sessions, service_settings, emb, tmp_path
):
    job_id = _job_with_embeddings(client, auth, sessions, service_settings, emb)
    result = cli("neighbors", job_id, "n7", "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["RANK", "ID", "COSINE"] and len(lines) == 4
    assert cli("compare", job_id, job_id).output.splitlines()[1].split()[-1] == "1.0000"
    out = tmp_path / "e.parquet"
    result = cli("download", job_id, "embeddings", "-o", str(out))  # the suffix picks it
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"PAR1"
