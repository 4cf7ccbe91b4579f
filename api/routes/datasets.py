"""Datasets: upload an edge list or feature file, list, replace and delete the uploads (not
while a queued or running job of the owner's reads one: 409).

With the form field `format=edge_list` (and optionally `header`, `comment`, `src_column`,
`dst_column`, `delimiter`, as in a spec's `data` section) the file is checked by the same
reader training uses (`core.data.edges`, torch-free) before anything is stored: a bad file is a
422 naming the file, line and column."""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import PurePosixPath

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import CurrentOwner, SessionDep, SettingsDep
from api.schemas import DatasetPublic, DatasetsPublic
from api.uploads import Upload, receive_upload
from store import queries
from store.keys import NAME_PATTERN, OwnerRef
from store.models import Dataset, utcnow
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
        _check_name(name)
        await run_in_threadpool(_validate, upload)
        return await run_in_threadpool(_register, session, settings, owner, name, upload)
    finally:
        upload.tmp_path.unlink(missing_ok=True)


def _check_name(name: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {"loc": "name", "msg": f"dataset name {name!r} must match {NAME_PATTERN.pattern}"}
            ],
        )


@router.put("/{name}")
async def replace_dataset(
    name: str, request: Request, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> DatasetPublic:
    """Upload a file (multipart field `file`) as the dataset `name`, replacing its file if it
    exists; checked like `POST /datasets` (form field `format`). 409 while a queued or running
    job of the owner's reads it."""
    _check_name(name)
    upload = await receive_upload(
        request, settings.upload_root / INCOMING_DIR, settings.max_upload_bytes
    )
    try:
        if upload.fields.get("name", name) != name:
            raise HTTPException(
                status.HTTP_422_UNPROCESSABLE_CONTENT,
                detail=[{"loc": "name", "msg": f"the form's name must be {name!r} (the path's)"}],
            )
        await run_in_threadpool(_validate, upload)
        return await run_in_threadpool(_replace, session, settings, owner, name, upload)
    finally:
        upload.tmp_path.unlink(missing_ok=True)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(
    name: str, owner: CurrentOwner, session: SessionDep, settings: SettingsDep
) -> Response:
    """Delete the dataset `name` and its file; 409 while a queued or running job reads it."""
    dataset = queries.get_dataset(session, owner.id, name)
    if dataset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"dataset {name!r} not found")
    _refuse_in_use(session, owner, name)
    session.delete(dataset)
    session.flush()
    shutil.rmtree(settings.upload_root / owner.name / name, ignore_errors=True)
    log.info("owner %s deleted dataset %s", owner.name, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _refuse_in_use(session: Session, owner: OwnerRef, name: str) -> None:
    users = queries.active_jobs_using(session, owner.id, name)
    if users:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            detail=f"dataset {name!r} is in use by queued or running job(s) {', '.join(users)}; "
            "wait for them or cancel them first",
        )


def _replace(
    session: Session, settings: Settings, owner: OwnerRef, name: str, upload: Upload
) -> DatasetPublic:
    dataset = queries.get_dataset(session, owner.id, name)
    if dataset is None:
        return _register(session, settings, owner, name, upload)
    _refuse_in_use(session, owner, name)
    relative = PurePosixPath(owner.name, name, safe_filename(upload.filename))
    final = settings.upload_root / relative
    old = settings.upload_root / dataset.path
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(upload.tmp_path, final)  # atomic: a reader sees the old file or the new one
    if old != final:
        old.unlink(missing_ok=True)
    dataset.path, dataset.size, dataset.sha256 = str(relative), upload.size, upload.sha256
    dataset.created_at = utcnow()
    session.flush()
    log.info("owner %s replaced dataset %s (%d bytes)", owner.name, name, upload.size)
    return _public(dataset, owner)


VALIDATED_FORMATS = ("edge_list", "species_matrix", "records")
_EDGE_LIST_FIELDS = ("header", "comment", "src_column", "dst_column", "delimiter")
# The records reader's default columns (eBird's), as the denoising VAE spec has them.
_RECORD_COLUMNS = {
    "event_column": "SAMPLING EVENT IDENTIFIER",
    "species_column": "SCIENTIFIC NAME",
    "count_column": "OBSERVATION COUNT",
}


def _validate(upload: Upload) -> None:
    """Check the file as the form's `format` says, with the reader training uses (nothing to
    check without a format); 422 with the reader's message (file, line, column, allowed
    values) when it cannot be used. `edge_list` takes the edge-list fields of a spec's `data`
    (header, comment, src_column, dst_column, delimiter); `species_matrix` an `id_column`;
    `records` the `event_column`, `species_column` and `count_column` names."""
    kind = upload.fields.get("format")
    if kind is None:
        return
    if kind not in VALIDATED_FORMATS:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            detail=[
                {
                    "loc": "format",
                    "msg": f"unknown format {kind!r}; allowed: {', '.join(VALIDATED_FORMATS)}",
                }
            ],
        )
    from pydantic import ValidationError

    from core.data.errors import DataError

    shown = safe_filename(upload.filename)
    try:
        if kind == "edge_list":
            _check_edge_list(upload, shown)
        elif kind == "species_matrix":
            from core.data.tables import parse_table

            parse_table(upload.tmp_path, shown, upload.fields.get("id_column") or None,
                        nonnegative=True, allowed="counts or cover values >= 0")  # fmt: skip
        else:
            from core.data.tables import parse_columns

            names = [upload.fields.get(k) or v for k, v in _RECORD_COLUMNS.items()]
            parse_columns(upload.tmp_path, shown, names, roles=["event", "species", "count"])
    except ValidationError as exc:
        detail = [
            {"loc": ".".join(map(str, e["loc"])), "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail) from None
    except DataError as exc:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT, detail=[{"loc": "file", "msg": str(exc)}]
        ) from None


def _check_edge_list(upload: Upload, shown: str) -> None:
    from core.data.edges import read_edges
    from core.data.errors import DataWarnings
    from core.spec.data import EdgeListData

    options: dict[str, object] = {
        k: upload.fields[k] for k in _EDGE_LIST_FIELDS if k in upload.fields
    }
    if options.get("header") in ("true", "false"):
        options["header"] = options["header"] == "true"
    spec = EdgeListData(format="edge_list", path=shown, **options)  # type: ignore[arg-type]
    read_edges(spec, DataWarnings(), path=upload.tmp_path)


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
