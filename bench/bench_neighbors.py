"""Neighbour queries over a job's embeddings, 100,000 x 128 float32 by default.

Prints, in one run: the index build time; the latency of one query (k=10, cosine) through
`api.embeddings.EmbeddingIndex` against scikit-learn's `NearestNeighbors(algorithm="brute",
metric="cosine")` on the same vectors (the ratio); recall@10 against that exact reference; and
p50/p99 of `GET /jobs/{id}/embeddings/neighbors` through the real app (SQLite, in-process
client) after the index is built.

    python bench/bench_neighbors.py [--rows 100000 --dim 128 --queries 200]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    from sklearn.neighbors import NearestNeighbors

    from api.embeddings import EmbeddingIndex

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((args.rows, args.dim)).astype(np.float32)
    ids = [f"n{i}" for i in range(args.rows)]
    t0 = time.perf_counter()
    index = EmbeddingIndex(emb, ids)
    build = time.perf_counter() - t0
    reference = NearestNeighbors(n_neighbors=11, algorithm="brute", metric="cosine").fit(emb)
    rows = rng.choice(args.rows, size=args.queries, replace=False)

    ours, theirs, hits = [], [], 0
    for r in rows:
        t0 = time.perf_counter()
        (found,) = index.search(emb[r], 10, "cosine", exclude=[int(r)])
        ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        _, ref = reference.kneighbors(emb[r : r + 1], 11)
        theirs.append(time.perf_counter() - t0)
        hits += len({n.row for n in found} & set(ref[0].tolist()) - {int(r)})
    recall = hits / (10 * len(rows))
    print(f"index build: {build:.3f} s for {args.rows} x {args.dim}")
    print(
        f"one query (k=10): ours p50 {1e3 * statistics.median(ours):.2f} ms, scikit-learn brute "
        f"p50 {1e3 * statistics.median(theirs):.2f} ms -> ratio ours/sklearn "
        f"{statistics.median(ours) / statistics.median(theirs):.2f}; recall@10 {recall:.4f}"
    )
    api_latency(emb, args.queries)


def api_latency(emb: np.ndarray, queries: int) -> None:
    from fastapi.testclient import TestClient

    from api.main import create_app
    from store import queries as q
    from store.db import make_engine, session_factory, session_scope
    from store.keys import create_owner_key
    from store.settings import Settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(TRAINCTL_HOME=tmp)
        app = create_app(settings, dispatch=lambda job_id: None)
        with TestClient(app) as client:
            sessions = session_factory(make_engine(settings.database_url))
            with session_scope(sessions) as session:
                key = create_owner_key(session, "bench")
            auth = {"Authorization": f"Bearer {key}"}
            spec = {"family": "graphsage_skipgram", "data": {"format": "planetoid"}}
            job_id = client.post("/jobs", json=spec, headers=auth).json()["id"]
            buf = io.BytesIO()
            np.save(buf, emb)
            run = Path(settings.artifact_root) / job_id
            run.mkdir(parents=True)
            (run / "emb.npy").write_bytes(buf.getvalue())
            ids = "row,node_id\n" + "".join(f"{i},n{i}\n" for i in range(emb.shape[0]))
            (run / "ids.csv").write_text(ids)
            with session_scope(sessions) as session:
                for name, kind, meta in (
                    ("emb.npy", "embeddings", {"ids": "ids.csv"}),
                    ("ids.csv", "ids", {"id_column": "node_id"}),
                ):
                    data = (run / name).read_bytes()
                    digest = hashlib.sha256(data).hexdigest()
                    q.upsert_artifact(session, job_id, kind=kind, name=name,
                                      path=f"{job_id}/{name}", size=len(data),
                                      sha256=digest, meta=meta)  # fmt: skip
            url = f"/jobs/{job_id}/embeddings/neighbors"
            t0 = time.perf_counter()
            assert client.get(url, params={"id": "n0"}, headers=auth).status_code == 200
            first = time.perf_counter() - t0
            times = []
            for i in np.random.default_rng(1).choice(emb.shape[0], size=queries, replace=False):
                t0 = time.perf_counter()
                response = client.get(url, params={"id": f"n{i}", "k": 10}, headers=auth)
                times.append(time.perf_counter() - t0)
                assert response.status_code == 200
            times.sort()
            p99 = times[min(len(times) - 1, int(0.99 * len(times)))]
            print(
                f"API GET neighbors: first (loads the index) {first:.2f} s; then p50 "
                f"{1e3 * statistics.median(times):.1f} ms, p99 {1e3 * p99:.1f} ms "
                f"over {len(times)} queries"
            )


if __name__ == "__main__":
    main()
