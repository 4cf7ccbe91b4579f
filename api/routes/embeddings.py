"""Embeddings as a service: nearest neighbours of a row or of vectors, and how much two runs
over the same ids agree (linear CKA, kNN overlap)."""

from __future__ import annotations

import logging
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from api.deps import JOB_NOT_FOUND, CurrentOwner, OwnedJob, SessionDep, SettingsDep
from api.embeddings import EmbeddingIndex, IndexCache, knn_overlap, linear_cka
from api.routes.files import _artifact_file
from store import queries
from store.exports import ids_of, open_embeddings, row_ids
from store.models import Job
from store.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(tags=["embeddings"])

MAX_K = 1000
MAX_QUERY_VECTORS = 256
COMPARE_QUERY_ROWS = 1000  # rows whose neighbours are compared (seeded sample of the common)


class NeighborPublic(BaseModel):
    id: str
    row: int
    score: float


class NeighborsPublic(BaseModel):
    metric: Literal["cosine", "dot"]
    k: int
    query: str | None = None
    data: list[NeighborPublic]


class NeighborsBatchPublic(BaseModel):
    metric: Literal["cosine", "dot"]
    k: int
    data: list[list[NeighborPublic]]


class VectorQuery(BaseModel):
    """One vector (`vector`) or a batch (`vectors`) of the embeddings' width."""

    vector: list[float] | None = None
    vectors: Annotated[list[list[float]], Field(max_length=MAX_QUERY_VECTORS)] | None = None
    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    metric: Literal["cosine", "dot"] = "cosine"


class ComparePublic(BaseModel):
    a: str
    b: str
    common_ids: int
    linear_cka: float
    knn_overlap: float
    k: int
    query_rows: int


def _index(request: Request, session: Session, settings: Settings, job: Job) -> EmbeddingIndex:
    """The job's (newest) embeddings as a cached index; 404 when it has none."""
    artifact = queries.find_artifact(session, job.id, kind="embeddings")
    path = _artifact_file(settings, artifact, "embeddings")
    assert artifact is not None
    cache: IndexCache = request.app.state.embedding_indexes

    def build() -> EmbeddingIndex:  # on a cache miss only
        ids_path, id_column = ids_of(session, settings.artifact_root, artifact)
        vectors = np.asarray(open_embeddings(path), dtype=np.float32)  # [rows, dim]
        vectors = vectors.reshape(vectors.shape[0], -1)
        ids = row_ids(ids_path, vectors.shape[0], id_column)  # the one ids reader of downloads
        keys = ids.to_pylist() if ids is not None else [str(i) for i in range(vectors.shape[0])]
        return EmbeddingIndex(vectors, keys)

    return cache.get(f"{artifact.sha256}:{artifact.path}", build)


def _bad(loc: str, msg: str) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[{"loc": loc, "msg": msg}])


def _answers(hits: list) -> list[NeighborPublic]:  # type: ignore[type-arg]
    return [NeighborPublic(id=n.id, row=n.row, score=n.score) for n in hits]


@router.get("/jobs/{job_id}/embeddings/neighbors")
async def neighbors_of_row(
    request: Request,
    job: OwnedJob,
    session: SessionDep,
    settings: SettingsDep,
    id: Annotated[str, Query(min_length=1, max_length=512, description="a row id")],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    metric: Literal["cosine", "dot"] = "cosine",
) -> NeighborsPublic:
    """The `k` rows nearest to row `id` (itself left out), best first."""
    index = await run_in_threadpool(_index, request, session, settings, job)
    row = index.row_of.get(id)
    if row is None:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, detail=f"id {id!r} is not a row of this job's embeddings"
        )
    if k >= index.rows:
        raise _bad("k", f"k must be smaller than the number of rows ({index.rows})")
    (hits,) = await run_in_threadpool(index.search, index.vectors[row], k, metric, [row])
    return NeighborsPublic(metric=metric, k=k, query=id, data=_answers(hits))


@router.post("/jobs/{job_id}/embeddings/neighbors")
async def neighbors_of_vectors(
    request: Request, job: OwnedJob, session: SessionDep, settings: SettingsDep, body: VectorQuery
) -> NeighborsBatchPublic:
    """The `k` rows nearest to each vector, best first."""
    if (body.vector is None) == (body.vectors is None):
        raise _bad("vector", "send one of 'vector' (one vector) or 'vectors' (a batch)")
    vectors = [body.vector] if body.vector is not None else body.vectors or []
    if not vectors:
        raise _bad("vectors", "no vectors")
    index = await run_in_threadpool(_index, request, session, settings, job)
    for i, v in enumerate(vectors):
        if len(v) != index.dim:
            loc = "vector" if body.vector is not None else f"vectors.{i}"
            raise _bad(loc, f"{len(v)} values; the embeddings have {index.dim} dimensions")
    if body.k > index.rows:
        raise _bad("k", f"k must be at most the number of rows ({index.rows})")
    matrix = np.asarray(vectors, dtype=np.float32)
    if not np.isfinite(matrix).all():
        raise _bad("vectors", "values must be finite numbers")
    hits = await run_in_threadpool(index.search, matrix, body.k, body.metric)
    return NeighborsBatchPublic(metric=body.metric, k=body.k, data=[_answers(h) for h in hits])


@router.get("/compare/embeddings")
async def compare_embeddings(
    request: Request,
    owner: CurrentOwner,
    session: SessionDep,
    settings: SettingsDep,
    a: Annotated[str, Query(min_length=1, max_length=64, description="a job id")],
    b: Annotated[str, Query(min_length=1, max_length=64, description="another job id")],
    k: Annotated[int, Query(ge=1, le=100)] = 10,
) -> ComparePublic:
    """How much the embeddings of jobs `a` and `b` agree over the ids they share: linear CKA
    and the mean overlap of each row's `k` cosine neighbours (on up to 1,000 seeded rows)."""
    jobs = []
    for name, job_id in (("a", a), ("b", b)):
        job = queries.get_owned_job(session, job_id, owner.id)
        if job is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"{name}: {JOB_NOT_FOUND}")
        jobs.append(job)
    ia = await run_in_threadpool(_index, request, session, settings, jobs[0])
    ib = await run_in_threadpool(_index, request, session, settings, jobs[1])

    def measure() -> ComparePublic:
        common = [rid for rid in ia.ids if rid in ib.row_of]
        if len(common) <= k:
            raise _bad("b", f"the jobs share {len(common)} ids; comparing needs more than k={k}")
        rows_a = np.asarray([ia.row_of[r] for r in common])
        rows_b = np.asarray([ib.row_of[r] for r in common])
        xa, xb = ia.vectors[rows_a], ib.vectors[rows_b]
        sample = np.random.default_rng(0).permutation(len(common))[:COMPARE_QUERY_ROWS]
        overlap = knn_overlap(
            EmbeddingIndex(xa, common), EmbeddingIndex(xb, common), np.sort(sample), k
        )
        return ComparePublic(
            a=a,
            b=b,
            common_ids=len(common),
            linear_cka=linear_cka(xa, xb),
            knn_overlap=overlap,
            k=k,
            query_rows=int(sample.size),
        )

    return await run_in_threadpool(measure)
