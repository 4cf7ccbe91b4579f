"""Datasets: upload an edge list or feature file, list the uploads."""

from __future__ import annotations

import logging
import os
import re
from pathlib import PurePosixPath

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import CurrentOwner, SessionDep, SettingsDep
from api.schemas import DatasetPublic, DatasetsPublic
from api.uploads import Upload, receive_upload
from store import queries
from store.keys import NAME_PATTERN, OwnerRef
from store.models import Dataset
from store.settings import Settings

log = logging.getLogger(__name__)

router = APIRouter(prefix="/datasets", tags=["datasets"])

INCOMING_DIR = ".incoming"  # beside the owners' folders, so the final move is a rename
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


def safe_filename(filename: str) -> str:
    """The client's file name reduced to `[A-Za-z0-9_.-]`, no directories, no leading dot."""
    name = _UNSAFE_CHARS.sub("_", PurePosixPath(filename.replace("\\", "/")).name)
    return name.lstrip(".")[:128] or "data"


def _public(dataset: Dataset, owner: OwnerRef) -> DatasetPublic:
    """`path` relative to the owner's uploads: what a spec's `data.path` names."""
    return DatasetPublic(
        name=dataset.name,
        path=str(PurePosixPath(dataset.path).relative_to(owner.name)),
        size=dataset.size,
        sha256=dataset.sha256,
        created_at=dataset.created_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED)
async def upload_dataset(
    request: Request, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> DatasetPublic:
    """Upload a file (multipart field `file`) as the dataset `name` (form field)."""
    upload = await receive_upload(
        request, settings.upload_root / INCOMING_DIR, settings.max_upload_bytes
    )
    try:
        name = upload.fields.get("name", "")
        if not NAME_PATTERN.fullmatch(name):
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[
                    {
                        "loc": "name",
                        "msg": f"dataset name {name!r} must match {NAME_PATTERN.pattern}",
                    }
                ],
            )
        return await run_in_threadpool(_register, session, settings, owner, name, upload)
    finally:
        upload.tmp_path.unlink(missing_ok=True)


def _register(
    session: Session, settings: Settings, owner: OwnerRef, name: str, upload: Upload
) -> DatasetPublic:
    relative = PurePosixPath(owner.name, name, safe_filename(upload.filename))
    dataset = Dataset(
        owner_id=owner.id, name=name, path=str(relative), size=upload.size, sha256=upload.sha256
    )
    session.add(dataset)
    try:
        # Claims (owner, name) before the file moves: a concurrent upload of the same name
        # fails here and never overwrites the first one's file.
        session.flush()
    except IntegrityError:
        session.rollback()
        raise HTTPException(
            status.HTTP_409_CONFLICT, detail=f"dataset {name!r} already exists"
        ) from None
    final = settings.upload_root / relative
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(upload.tmp_path, final)
    except OSError:
        session.delete(dataset)  # the row is committed already (autocommit): take it back
        session.flush()
        raise
    log.info("owner %s uploaded dataset %s (%d bytes)", owner.name, name, upload.size)
    return _public(dataset, owner)


@router.get("")
def list_datasets(session: SessionDep, owner: CurrentOwner) -> DatasetsPublic:
    rows = queries.list_datasets(session, owner.id)
    return DatasetsPublic(data=[_public(d, owner) for d in rows], count=len(rows))
