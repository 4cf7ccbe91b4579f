"""A fast path for the request every open dashboard repeats: `GET /jobs/{job_id}/metrics`.

FastAPI resolves a route's parameters and dependencies anew on every request; for this route
(six parameters and the key check) that is most of a poll's CPU time, about 0.4 ms of a
0.5 ms request on this project's 2-core machine (cProfile, `bench/bench_api.py`). This ASGI
middleware answers the polls it can read for certain with the route's own code
(`api.routes.jobs.metrics_answer`) and hands everything else to the route itself:

- a query parameter it does not know, one given twice, or a value it cannot read as the
  route would (an integer out of the route's bounds, a granularity it does not name);
- `after_epoch` or `after_step` given with the other granularity;
- a missing or malformed `Authorization` header, or a key that is not in the key cache
  (`api.deps.KeyCache`: a key seen valid within `TRAINCTL_AUTH_CACHE_SECONDS`, so a revoked
  key stops working within that time here as on every route);
- an unknown job, or another owner's; a read that fails (the database is down: the route's
  exception handlers make that a 503).

So every error, and every request out of the ordinary, gets the route's answer word for word.
The first poll goes to the route, which the fast path then knows: it sets that route in the
scope of the polls it serves, so they are counted under its template like any other request
(`api.observability.RequestMetrics`).
"""

from __future__ import annotations

import re
from typing import get_args
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from api.routes.jobs import MAX_PAGE_ROWS, METRICS_QUERY_BOUNDS, Granularity, metrics_answer
from store.keys import OwnerRef, hash_key

PATH = re.compile(r"/jobs/([^/]+)/metrics")
ROUTE_PATH = "/jobs/{job_id}/metrics"
INTEGER = re.compile(r"-?[0-9]{1,10}")
GRANULARITIES = get_args(Granularity)


class MetricsPollFastPath:
    """ASGI middleware: serves the plain, valid, authenticated metrics polls (see the module)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: object | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not scope.get("root_path"):
            match = PATH.fullmatch(scope["path"])
            if match is not None:
                if self._route is not None and await self._serve(match[1], scope, receive, send):
                    return
                await self.app(scope, receive, send)
                # The route that served it (the router sets it in the scope): the fast path
                # puts it in the scope of the polls it serves, for the request metrics.
                route = scope.get("route")
                if self._route is None and getattr(route, "path", None) == ROUTE_PATH:
                    self._route = route
                return
        await self.app(scope, receive, send)

    async def _serve(self, job_id: str, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answers the poll and says True; False (nothing sent) where the route must."""
        query = _query(scope["query_string"])
        headers = _headers(scope["headers"])
        if query is None or headers is None:
            return False
        granularity = query.pop("granularity", "epoch")
        if granularity not in GRANULARITIES:
            return False
        numbers = {}
        for name, text in query.items():
            if name not in METRICS_QUERY_BOUNDS or INTEGER.fullmatch(text) is None:
                return False
            low, high = METRICS_QUERY_BOUNDS[name]
            if not low <= (number := int(text)) <= high:
                return False
            numbers[name] = number
        other = "after_step" if granularity == "epoch" else "after_epoch"
        if other in numbers:
            return False
        owner = _cached_owner(scope, headers.get(b"authorization"))
        if owner is None:
            return False
        if_none_match = headers.get(b"if-none-match")
        try:
            answer = await metrics_answer(
                scope["app"].state,
                job_id,
                owner.id,
                granularity,
                numbers.get(f"after_{granularity}", -1),
                numbers.get("attempt"),
                numbers.get("limit", MAX_PAGE_ROWS),
                None if if_none_match is None else if_none_match.decode("latin-1"),
            )
        except Exception:  # the database is down...: the route's exception handlers answer
            return False
        if answer is None:  # the route's 404
            return False
        scope["route"] = self._route
        await answer(scope, receive, send)
        return True


def _query(raw: bytes) -> dict[str, str] | None:
    """The query's parameters, each given once; None if one is given twice or is not ASCII."""
    try:
        pairs = parse_qsl(raw.decode("ascii"), keep_blank_values=True)
    except UnicodeDecodeError:
        return None
    query = dict(pairs)
    return query if len(query) == len(pairs) else None


def _headers(raw: list[tuple[bytes, bytes]]) -> dict[bytes, bytes] | None:
    """The two headers the poll reads, each given at most once; None otherwise."""
    found: dict[bytes, bytes] = {}
    for name, value in raw:
        if name in (b"authorization", b"if-none-match"):
            if name in found:
                return None
            found[name] = value
    return found


def _cached_owner(scope: Scope, authorization: bytes | None) -> OwnerRef | None:
    """The owner of a `Bearer` key found in the key cache; None for anything else."""
    if authorization is None:
        return None
    scheme, _, key = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not key or key != key.strip():
        return None
    cache = getattr(scope["app"].state, "key_cache", None)
    return None if cache is None else cache.get(hash_key(key))
