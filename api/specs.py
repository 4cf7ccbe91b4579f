"""Reading a job spec from a request body (JSON or YAML)."""

from __future__ import annotations

import json

from fastapi import HTTPException, Request, status

from core.spec import BaseJobSpec, SpecError, load_spec

MAX_SPEC_BYTES = 1024 * 1024
JSON_TYPES = frozenset({"application/json"})
YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})


async def read_spec(request: Request) -> BaseJobSpec:
    """The validated spec in the body; `SpecError` (422) lists every bad field."""
    content_type = request.headers.get("content-type", "application/json")
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type not in JSON_TYPES | YAML_TYPES:
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            detail=f"unsupported content type {media_type!r}; "
            "send the spec as application/json or application/yaml",
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SPEC_BYTES:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                detail=f"spec too large; the limit is {MAX_SPEC_BYTES} bytes",
            )
    if media_type in JSON_TYPES:
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise SpecError([{"loc": "", "msg": f"not valid JSON: {exc}"}]) from None
        if not isinstance(data, dict):
            raise SpecError(
                [{"loc": "", "msg": f"a spec is a mapping of sections, got {type(data).__name__}"}]
            )
        return load_spec(data)
    return load_spec(bytes(body))
