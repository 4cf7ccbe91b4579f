"""Liveness and readiness probes (no API key needed)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import SQLAlchemyError

from api.schemas import Health
from store.migrate import current_revision

log = logging.getLogger(__name__)

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz")
async def readyz(request: Request) -> Health:
    """The database is reachable and at the newest migration, and the broker answers; 503
    otherwise (the reason in the log; the response says which part is not ready)."""
    head = request.app.state.head_revision

    def read_revision() -> str | None:
        with request.app.state.engine.connect() as conn:
            return current_revision(conn)

    try:
        revision = await run_in_threadpool(read_revision)
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", exc)
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database unreachable") from None
    if revision != head:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"database not migrated (at {revision}, expected {head})",
        )
    ready = getattr(request.app.state.dispatch, "ready", None)
    if ready is not None:
        problem = await run_in_threadpool(ready)
        if problem is not None:
            log.warning("readiness: broker unreachable: %s", problem)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "job queue unreachable")
    return Health(status="ready", revision=revision)
