"""Dependencies shared by the routes: settings, a session, the caller and their job."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.dispatch import Dispatcher
from store import queries
from store.keys import OwnerRef, authenticate
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


def get_current_owner(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> OwnerRef:
    """The owner of the request's `Authorization: Bearer <key>`, else 401."""
    if credentials is None:
        raise unauthorized("missing API key")
    owner = authenticate(session, credentials.credentials)
    session.commit()  # the connection goes back to the pool (see get_session)
    if owner is None:
        raise unauthorized("invalid API key")
    return owner


CurrentOwner = Annotated[OwnerRef, Depends(get_current_owner)]


def get_owned_job(job_id: str, session: SessionDep, owner: CurrentOwner) -> Job:
    """The caller's job `job_id`; another owner's job is as missing as a job that never was."""
    job = queries.get_owned_job(session, job_id, owner.id)
    session.commit()  # the connection goes back to the pool (see get_session)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=JOB_NOT_FOUND)
    return job


OwnedJob = Annotated[Job, Depends(get_owned_job)]
