"""Dependencies shared by the routes: settings, a session, the caller and their job."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.coalesce import ReadCoalescer
from api.dispatch import Dispatcher
from store import queries
from store.keys import OwnerRef, authenticate, hash_key
from store.models import Job
from store.settings import Settings

JOB_NOT_FOUND = "job not found"

_bearer = HTTPBearer(auto_error=False, description="an API key from `trainctl keys create`")


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A session for this request.

    API sessions autocommit: every statement is its own transaction. The API's writes are each
    one conditional statement (`store.queries`), so none needs more, a request pays no
    BEGIN/ROLLBACK round trips, and opening or closing a session does no I/O (so it happens
    here, in the event loop).

    A connection is in use only inside a worker thread: a dependency that queries ends with
    `session.commit()`, which hands the connection back before the request waits for its next
    thread. So no more connections are in use than there are threads (the pool's size), and a
    thread never waits for a connection held by a request that is waiting for a thread.
    """
    with request.app.state.session_factory() as session:
        yield session


def get_dispatcher(request: Request) -> Dispatcher:
    return request.app.state.dispatch


SettingsDep = Annotated[Settings, Depends(get_settings)]
# Closed when the route function returns, not after the response is sent: a streamed download
# or metrics stream does not hold a connection for its whole length.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
DispatchDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail=detail, headers={"WWW-Authenticate": "Bearer"}
    )


class KeyCache:
    """Owners of recently valid API keys, so a dashboard's every poll does not look its key up.

    An entry is kept `ttl` seconds from the moment the lookup that found it *started*: a key
    revoked (committed) at time r is seen revoked by every lookup starting after r, and every
    entry from a lookup that started before r is gone by r + ttl. So a revoked key stops working
    within `ttl` (at most 1 s, `TRAINCTL_AUTH_CACHE_SECONDS`) in every API process. Keys are held
    by their sha256, never in clear; an unknown or revoked key is never cached (each try asks the
    database, and a new key works at once)."""

    MAX_ENTRIES = 10_000

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, OwnerRef]] = {}

    def get(self, digest: str) -> OwnerRef | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if entry[0] <= time.monotonic():
            self._entries.pop(digest, None)
            return None
        return entry[1]

    def put(self, digest: str, owner: OwnerRef, looked_up_at: float) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.MAX_ENTRIES:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) >= self.MAX_ENTRIES:
                self._entries.clear()
        self._entries[digest] = (looked_up_at + self.ttl, owner)


def _key_cache(request: Request) -> KeyCache:
    cache = getattr(request.app.state, "key_cache", None)
    if cache is None:
        cache = request.app.state.key_cache = KeyCache(
            request.app.state.settings.auth_cache_seconds
        )
    return cache


async def get_current_owner(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> OwnerRef:
    """The owner of the request's `Authorization: Bearer <key>`, else 401. A key seen valid
    within the last `TRAINCTL_AUTH_CACHE_SECONDS` is answered from memory, in the event loop
    (no database round trip, no worker thread); see `KeyCache`."""
    if credentials is None:
        raise unauthorized("missing API key")
    key = credentials.credentials
    cache = _key_cache(request)
    digest = hash_key(key)
    owner = cache.get(digest)
    if owner is not None:
        return owner

    def lookup() -> tuple[OwnerRef | None, float]:
        started = time.monotonic()  # before the read: the entry's age counts from here
        # A session of its own: a request answered from the cache opens none.
        with request.app.state.session_factory() as session:
            return authenticate(session, key), started

    # When an entry expires, every poller holding that key misses at once: one lookup for all.
    owner, started = await _key_lookups(request).read(digest, lookup)
    if owner is None:
        raise unauthorized("invalid API key")
    cache.put(digest, owner, started)
    return owner


def _key_lookups(request: Request) -> ReadCoalescer:
    lookups = getattr(request.app.state, "key_lookups", None)
    if lookups is None:
        lookups = request.app.state.key_lookups = ReadCoalescer()
    return lookups


CurrentOwner = Annotated[OwnerRef, Depends(get_current_owner)]


def get_owned_job(job_id: str, session: SessionDep, owner: CurrentOwner) -> Job:
    """The caller's job `job_id`; another owner's job is as missing as a job that never was."""
    job = queries.get_owned_job(session, job_id, owner.id)
    session.commit()  # the connection goes back to the pool (see get_session)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=JOB_NOT_FOUND)
    return job


OwnedJob = Annotated[Job, Depends(get_owned_job)]
