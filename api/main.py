"""The FastAPI application: `create_app(settings, dispatch)`, and `app` for
`uvicorn api.main:app` (built on first access, from the environment's settings)."""

from __future__ import annotations

import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError
from starlette.routing import Match

from api.dispatch import CeleryDispatcher, Dispatcher
from api.docs import serve_docs_offline
from api.embeddings import IndexCache
from api.fastpoll import MetricsPollFastPath
from api.observability import install as install_observability
from api.openapi import document_errors
from api.routes import datasets, embeddings, files, health, jobs
from api.routes import families as families_routes
from api.routes import groups as groups_routes
from api.ui import routes as ui_routes
from core.spec import SpecError
from store.db import make_engine, session_factory
from store.migrate import head_revision, upgrade_head
from store.settings import Settings, get_settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, dispatch: Dispatcher | None = None, *, migrate: bool = True
) -> FastAPI:
    """The API for `settings` (default: the environment's). `dispatch(job_id)` queues a
    committed job (default: the Celery task `trainctl.run_job`). With `migrate`, start-up brings
    the database to the newest migration."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        if migrate:
            await run_in_threadpool(upgrade_head, settings.database_url)
        # The ~100k objects of the imported libraries live as long as the process: keep them out
        # of the garbage collector's full passes (each one a ~50 ms pause at the latency tail).
        gc.collect()
        gc.freeze()
        yield
        app.state.engine.dispose()

    app = FastAPI(
        title="trainctl",
        summary="Train graph and embedding models as a service.",
        version="0.1.0",
        lifespan=lifespan,
    )
    # A connection per worker thread (see api.deps.get_session).
    engine = make_engine(
        settings.database_url, isolation_level="AUTOCOMMIT", pool_size=settings.api_threads
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = session_factory(engine)
    app.state.dispatch = dispatch or CeleryDispatcher(settings)
    app.state.head_revision = head_revision()
    app.state.embedding_indexes = IndexCache()

    app.add_exception_handler(SpecError, _spec_error)
    app.add_exception_handler(RequestValidationError, _request_error)
    app.add_exception_handler(OperationalError, _database_unavailable)
    app.add_exception_handler(DataError, _bad_value)
    app.add_exception_handler(Exception, _internal_error)  # any other: a 500 without internals
    app.add_exception_handler(405, _method_not_allowed)
    document_errors(app)  # the error bodies and codes in /openapi.json (`api.openapi`)
    for module in (health, jobs, files, embeddings, datasets):
        app.include_router(module.router)
    app.include_router(families_routes.router)  # GET /families, /families/{f}/schema
    app.include_router(groups_routes.router)  # sweeps as job groups: /groups (docs/sweeps.md)
    app.include_router(ui_routes.router)  # the dashboard at /ui (and / redirecting there)
    serve_docs_offline(app)  # Swagger UI from the swagger-ui-bundle package, not a CDN
    app.add_middleware(MetricsPollFastPath)  # dashboards' polls without FastAPI's per-request work
    install_observability(app, settings)  # GET /metrics; request counts and latency
    return app


async def _spec_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SpecError)
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": exc.errors}
    )


async def _request_error(request: Request, exc: Exception) -> JSONResponse:
    """Bad query/path/header values, in the spec errors' shape: `{loc, msg, allowed?}`."""
    assert isinstance(exc, RequestValidationError)
    detail = []
    for err in exc.errors():
        entry = {"loc": ".".join(map(str, err["loc"])), "msg": err["msg"]}
        expected = (err.get("ctx") or {}).get("expected")
        if err["type"] in ("enum", "literal_error") and expected:
            entry["allowed"] = [v.strip(" '") for v in expected.replace(" or ", ", ").split(",")]
        detail.append(entry)
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, content={"detail": detail}
    )


async def _bad_value(request: Request, exc: Exception) -> JSONResponse:
    """A value the database refuses (a NUL character in a name, a number out of range)."""
    log.info("bad value on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        content={
            "detail": [
                {
                    "loc": "",
                    "msg": "a value in the request is not valid here "
                    "(a NUL character, or a number out of range)",
                }
            ]
        },
    )


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    log.error("database error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={"detail": "database unavailable"}
    )


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    """405 with an `Allow` header listing every method of every route on this path (Starlette
    lists only the first route's, and a path's methods are often separate routes)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    allow = ", ".join(sorted(methods))
    return JSONResponse(
        status_code=status.HTTP_405_METHOD_NOT_ALLOWED,
        content={"detail": f"method {request.method} not allowed here; allowed: {allow}"},
        headers={"Allow": allow},
    )


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """An unexpected error: the traceback goes to the log under a reference the client gets;
    the client sees no exception text, path or address (`docs/reliability.md`)."""
    reference = uuid.uuid4().hex[:12]
    log.error(
        "internal error %s on %s %s", reference, request.method, request.url.path, exc_info=exc
    )
    return JSONResponse(
        status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        content={"detail": f"internal server error (reference {reference}; details in the log)"},
    )


def __getattr__(name: str) -> Any:
    # `uvicorn api.main:app`: the app is built when first asked for, not when imported.
    if name == "app":
        app = create_app()
        globals()["app"] = app
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
