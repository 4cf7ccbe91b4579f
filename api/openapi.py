"""The OpenAPI document as the API really answers (issue 11 item 10, checked by schemathesis in
`tests/service/test_reliability_openapi.py`).

FastAPI documents a route's success response and a 422 of its own shape; this API's error
bodies are `{"detail": "..."}` or `{"detail": [{"loc": "a.b", "msg": "...", "allowed": [...]}]}`
(`api.main`'s handlers) and any route may answer 401 (a key missing or wrong), 404 (a path
naming something that is not the caller's), 503 (the database or the queue unreachable). This
module rewrites the generated document once, when it is first asked for:

- `HTTPValidationError` / `ValidationError` become the real 422 body (`loc` is a dotted string);
- every operation documents the errors it can answer (401 where it needs a key, 404 where its
  path names something, 503 and a `default` error body everywhere else);
- `POST /jobs` documents its body: the family specs' JSON Schema (a union discriminated by
  `family`, `core.spec.spec_models`), as JSON or as YAML (a YAML body of any route is the same
  object as its JSON body);
- a discriminated union's tag is required in each variant (pydantic needs it to pick one).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import FastAPI
from pydantic import Field, TypeAdapter

from core.spec import spec_models

ERROR_REF = {"$ref": "#/components/schemas/HTTPValidationError"}
SPEC_PREFIX = "JobSpec_"

ERROR_ITEM_SCHEMA: dict[str, Any] = {
    "title": "ValidationError",
    "type": "object",
    "description": "One bad field: where (`loc`, dotted: `training.epochs`, `query.limit`), "
    "what is wrong, and the allowed values where there is a closed set",
    "required": ["msg"],
    "properties": {
        "loc": {"type": "string"},
        "msg": {"type": "string"},
        "allowed": {"type": "array", "items": {}},
        "line": {"type": "integer"},
    },
}
ERROR_SCHEMA: dict[str, Any] = {
    "title": "Error",
    "type": "object",
    "description": "An error: a sentence, or a list of bad fields",
    "required": ["detail"],
    "properties": {
        "detail": {
            "anyOf": [
                {"type": "string"},
                {"type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}},
                {"type": "object"},
            ]
        }
    },
}
ERRORS = {
    "401": "no API key, or not a valid one",
    "404": "no such resource of the caller's",
    "422": "a parameter or the body is not valid (every bad field listed)",
    "503": "the database or the job queue is unreachable; try again",
    "default": "an error",
}


def document_errors(app: FastAPI) -> None:
    """Make `app.openapi()` answer the document described in this module's docstring."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _rewrite(schema)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _rewrite(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["HTTPValidationError"] = ERROR_SCHEMA
    components["ValidationError"] = ERROR_ITEM_SCHEMA
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            responses = operation.setdefault("responses", {})
            wanted = ["422", "default"]
            if operation.get("security") or schema.get("security"):
                wanted.append("401")
            if "{" in path:
                wanted.append("404")
            if path not in ("/healthz",):
                wanted.append("503")
            for code in wanted:
                entry = responses.setdefault(code, {"description": ERRORS[code]})
                entry.setdefault("description", ERRORS[code])
                entry["content"] = {"application/json": {"schema": ERROR_REF}}
            for code, entry in responses.items():
                # Error responses a route declared without a body schema get the error body.
                if code.startswith(("4", "5")) and "content" not in entry:
                    entry["content"] = {"application/json": {"schema": ERROR_REF}}
    _document_spec_body(schema, components)
    _yaml_like_json(schema)


def _yaml_like_json(schema: dict[str, Any]) -> None:
    """A body taken as JSON or YAML is the same object in either: its YAML entry gets the JSON
    entry's schema (not "any string", which a YAML body that is no mapping is not)."""
    for item in schema.get("paths", {}).values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            content = operation.get("requestBody", {}).get("content", {})
            json_schema = content.get("application/json", {}).get("schema")
            yaml = content.get("application/yaml")
            if json_schema and yaml is not None and yaml.get("schema", {}).get("type") == "string":
                yaml["schema"] = json_schema


def _document_spec_body(schema: dict[str, Any], components: dict[str, Any]) -> None:
    operation = schema.get("paths", {}).get("/jobs", {}).get("post")
    if operation is None:
        return
    models = spec_models()
    union = (
        models[0] if len(models) == 1 else Annotated[_union(models), Field(discriminator="family")]
    )
    spec_schema = TypeAdapter(union).json_schema(
        ref_template=f"#/components/schemas/{SPEC_PREFIX}{{model}}"
    )
    for name, definition in spec_schema.pop("$defs", {}).items():
        components[f"{SPEC_PREFIX}{name}"] = definition
    components["JobSpec"] = spec_schema
    _require_discriminators(components)
    body = operation.setdefault("requestBody", {"required": True})
    content = body.setdefault("content", {})
    content["application/json"] = {"schema": {"$ref": "#/components/schemas/JobSpec"}}
    content["application/yaml"] = {"schema": {"$ref": "#/components/schemas/JobSpec"}}


def _require_discriminators(components: dict[str, Any]) -> None:
    """A discriminated union's tag must be sent even where its variant has a default (pydantic
    cannot pick the variant without it), so each variant lists it as required."""

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            tag = node.get("discriminator", {}).get("propertyName")
            if tag:
                for ref in node["discriminator"].get("mapping", {}).values():
                    variant = components.get(ref.rsplit("/", 1)[-1])
                    if variant is not None and tag not in variant.setdefault("required", []):
                        variant["required"].append(tag)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(components)


def _union(models: tuple[type, ...]) -> Any:
    from typing import Union

    return Union[models]  # noqa: UP007  (a runtime tuple of classes)
