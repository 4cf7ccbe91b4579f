"""Reading a job spec from a request body (JSON or YAML).

The body is read up to MAX_SPEC_BYTES, then parsed and validated in a worker thread, never on
the event loop: a large or deeply nested body cannot delay another request. Nesting beyond
`core.spec.MAX_SPEC_DEPTH` is refused before anything is built (a 422, fast)."""

from __future__ import annotations

import json
from typing import Any

import anyio
from fastapi import HTTPException, Request, status

from core.spec import BaseJobSpec, SpecError, check_depth, load_spec

MAX_SPEC_BYTES = 1024 * 1024
JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


async def read_body(request: Request, what: str = "spec") -> tuple[bytes, bool]:
    """The request body (at most `MAX_SPEC_BYTES`) and whether it is JSON (else YAML); 415 for
    another content type, 413 past the limit, both naming `what` the body should be."""
    content_type = request.headers.get("content-type", "application/json")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type not in JSON_TYPES | YAML_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"unsupported content type {media_type!r}; "
            f"send the {what} as application/json or application/yaml",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SPEC_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                detail=f"{what} too large; the limit is {MAX_SPEC_BYTES} bytes",
            )
    return bytes(body), media_type in JSON_TYPES


async def read_spec(request: Request) -> BaseJobSpec:
    """The validated spec in the body; `SpecError` (422) lists every bad field."""
    body, is_json = await read_body(request)
    return await anyio.to_thread.run_sync(parse_body, body, is_json)


def parse_body(body: bytes, is_json: bool) -> BaseJobSpec:
    """The validated spec of a JSON or YAML body; SpecError (422) for anything else."""
    if not is_json:
        return load_spec(body)
    return load_spec(json_mapping(body, "a spec is a mapping of sections"))


def json_mapping(body: bytes, expected: str) -> dict[str, Any]:
    """A JSON body that must be an object, depth-checked; SpecError (422) saying `expected`
    otherwise."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise SpecError([{"loc": "", "msg": "not valid JSON: nested too deeply"}]) from None
    except ValueError as exc:
        raise SpecError([{"loc": "", "msg": f"not valid JSON: {exc}"}]) from None
    if not isinstance(data, dict):
        raise SpecError([{"loc": "", "msg": f"{expected}, got {type(data).__name__}"}])
    check_depth(data)
    return data
