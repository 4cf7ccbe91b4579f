"""`/ui`: the dashboard's page and its assets (from this package's `static/` folder, a closed set
read once), `/` redirecting to it, and `POST /ui/api/resolve`, which turns the submit form's text
and `--set` lines into the JSON spec the page then POSTs to `/jobs`.

The assets are plain files: HTML, CSS and JavaScript modules the browser runs as they are. The
page keeps the API key in `sessionStorage` and sends it as `Authorization: Bearer` with every
request (streams included: they are read with `fetch`, never `EventSource`, which cannot send
headers), so nothing here needs a key.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated, Any

import anyio
import yaml
from fastapi import APIRouter, Header, HTTPException, Request, status
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field

from api.deps import CurrentOwner
from core.spec import apply_overrides, parse_spec_text

log = logging.getLogger(__name__)

router = APIRouter(tags=["ui"])

INDEX = "index.html"
MAX_TEXT_CHARS = 1024 * 1024  # as POST /jobs (api.specs.MAX_SPEC_BYTES)
MAX_OVERRIDES = 200
_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


@cache
def assets() -> dict[str, Asset]:
    """Every file of `api/ui/static/` by name (read once; a name not here is a 404)."""
    found: dict[str, Asset] = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        if not entry.is_file():
            continue
        body = entry.read_bytes()
        suffix = "." + entry.name.rpartition(".")[2]
        media = _TYPES.get(suffix) or mimetypes.guess_type(entry.name)[0] or "text/plain"
        if media.startswith("text/"):
            media += "; charset=utf-8"
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        found[entry.name] = Asset(body=body, media_type=media, etag=etag)
    return found


def _send(asset: Asset, if_none_match: str | None) -> Response:
    # `no-cache`: the browser revalidates (a 304 when unchanged), so a new release shows at once.
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache"}
    if if_none_match is not None and asset.etag in if_none_match:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


@router.get("/", include_in_schema=False)
def root(request: Request) -> RedirectResponse:
    prefix = request.scope.get("root_path", "").rstrip("/")  # behind a proxy's path prefix
    return RedirectResponse(f"{prefix}/ui", status_code=status.HTTP_307_TEMPORARY_REDIRECT)


@router.get("/ui", include_in_schema=False)
def page(if_none_match: Annotated[str | None, Header()] = None) -> Response:
    """The dashboard (one page; its views are addressed by the URL's `#` part)."""
    return _send(assets()[INDEX], if_none_match)


@router.get("/ui/static/{name}", include_in_schema=False)
def static_file(name: str, if_none_match: Annotated[str | None, Header()] = None) -> Response:
    asset = assets().get(name)
    if asset is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail="not found")
    return _send(asset, if_none_match)


class ResolveRequest(BaseModel):
    text: Annotated[str, Field(max_length=MAX_TEXT_CHARS)]
    overrides: Annotated[list[str], Field(max_length=MAX_OVERRIDES)] = []


class ResolvePublic(BaseModel):
    """The spec as `POST /jobs` takes it, and the text's line of each field (`a.b.0.c`, 1-based),
    so that the page can show each validation error beside the line it names."""

    spec: dict[str, Any]
    lines: dict[str, int]


@router.post("/ui/api/resolve", tags=["ui"])
async def resolve(body: ResolveRequest, owner: CurrentOwner) -> ResolvePublic:
    """Parse the submit form's YAML or JSON text and apply its `key=value` override lines as
    `trainctl submit --set` does (`core.spec.apply_overrides`); stores nothing. A 422 names the
    bad line or override (`loc`: the override's key); a `SpecError` is a 422 as at `POST /jobs`.
    Signed-in callers only, though nothing of the owner's is read."""

    def run() -> ResolvePublic:
        data = parse_spec_text(body.text)
        lines = field_lines(body.text)
        overrides = [o for o in (line.strip() for line in body.overrides) if o]
        return ResolvePublic(spec=apply_overrides(data, overrides), lines=lines)

    return await anyio.to_thread.run_sync(run)


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def field_lines(text: str) -> dict[str, int]:
    """`{"training.epochs": 7, "model.encoder.0": 12, ...}`: the line (1-based) where each key
    or list item starts. Call after `parse_spec_text` accepted the text (no aliases, bounded
    depth)."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.YAMLError:
        return {}
    lines: dict[str, int] = {}
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                lines[child] = key.start_mark.line + 1
                stack.append((value, child))
        elif isinstance(node, yaml.SequenceNode):
            for index, value in enumerate(node.value):
                child = f"{path}.{index}" if path else str(index)
                lines[child] = value.start_mark.line + 1
                stack.append((value, child))
    return lines
