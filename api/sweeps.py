"""Reading a job group request (`POST /groups`): the base spec and its sweep, expanded and every
member validated with the spec loader of `POST /jobs` before anything is stored.

The body is read as `api.specs.read_spec` reads a spec (same content types and size limit) and
parsed, expanded and validated in a worker thread, never on the event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import Request
from pydantic import ValidationError

from api.schemas import GroupCreate
from api.specs import json_mapping, read_body
from core.spec import SpecError, parse_spec_text
from core.spec.sweep import Sweep, parse_sweep, validate_members
from store.groups import NewMember


@dataclass(frozen=True)
class PreparedGroup:
    """A group whose every member is a valid spec: ready to store."""

    name: str
    family: str
    spec: dict[str, Any]  # the base spec data as sent
    sweep: Sweep
    metric: str | None
    members: list[NewMember]


async def read_group(request: Request) -> PreparedGroup:
    """The request's group, expanded and validated; `SpecError` (422) lists every problem:
    the body's fields, the sweep's keys and ranges, the member cap, and every invalid member by
    index with its values and field errors."""
    body, is_json = await read_body(request, "group request")
    max_members = request.app.state.settings.max_group_members
    return await anyio.to_thread.run_sync(prepare_group, body, is_json, max_members)


def prepare_group(body: bytes, is_json: bool, max_members: int) -> PreparedGroup:
    """Parse a group body, expand its sweep and validate every member (see `read_group`)."""
    data = _parse(body, is_json)
    try:
        request = GroupCreate.model_validate(data)
    except ValidationError as exc:
        raise SpecError(
            [
                {"loc": ".".join(map(str, e["loc"][:1])), "msg": e["msg"]}
                for e in exc.errors(include_url=False)
            ]
        ) from None
    if isinstance(request.spec, str):
        try:
            base = json.loads(json.dumps(parse_spec_text(request.spec), default=str))
        except SpecError as exc:
            raise SpecError(_prefixed(exc.errors, "spec")) from None
    else:
        base = request.spec
    sweep = parse_sweep(request.sweep, max_members)
    valid, failures = validate_members(base, sweep)
    if failures:
        raise SpecError(invalid_members(failures, sweep.size))
    first = valid[0][1].model_dump(mode="json")
    best = first.get("metric_for_best") if isinstance(first.get("metric_for_best"), dict) else {}
    metric = request.metric or best.get("name")
    members = [
        NewMember(
            index=member.index,
            values=member.values,
            spec=spec.model_dump(mode="json"),
            name=f"{spec.name}[{member.index}]"[:200],
        )
        for member, spec in valid
    ]
    return PreparedGroup(
        name=request.name or valid[0][1].name,
        family=valid[0][1].family,
        spec=base,
        sweep=sweep,
        metric=metric,
        members=members,
    )


def invalid_members(failures: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The 422 detail of a sweep with invalid members: a first entry saying how many (and that
    nothing was stored), then one per member: `{loc: "members.<i>", msg, index, values,
    errors}` (`errors`: the member's field errors, `{loc, msg, allowed?}`)."""
    detail: list[dict[str, Any]] = [
        {
            "loc": "sweep",
            "msg": f"{len(failures)} of {size} members are invalid; nothing was stored",
            "invalid": len(failures),
            "count": size,
        }
    ]
    for failure in failures:
        values = ", ".join(f"{k}={json.dumps(v)}" for k, v in failure["values"].items())
        fields = "; ".join(f"{e['loc'] or '<spec>'}: {e['msg']}" for e in failure["errors"])
        detail.append(
            {
                "loc": f"members.{failure['index']}",
                "msg": f"member {failure['index']} ({values}): {fields}",
                "index": failure["index"],
                "values": failure["values"],
                "errors": failure["errors"],
            }
        )
    return detail


def _parse(body: bytes, is_json: bool) -> dict[str, Any]:
    if is_json:
        return json_mapping(body, "a group request is a mapping with `spec` and `sweep`")
    data = parse_spec_text(body)  # safe YAML: no tags (`!sweep`, `!pyobject`), no aliases
    # YAML's dates and timestamps as their text: what is stored (the base spec, each member's
    # sweep values) is plain JSON.
    return json.loads(json.dumps(data, default=str))


def _prefixed(errors: list[dict[str, Any]], prefix: str) -> list[dict[str, Any]]:
    return [{**e, "loc": f"{prefix}.{e['loc']}" if e.get("loc") else prefix} for e in errors]
