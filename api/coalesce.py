"""Identical concurrent reads served by one database query ("single flight", as CDNs collapse
requests for one URL): a hundred dashboards polling the same job's metrics cost one query per
round, and one worker-thread hop, instead of a hundred.

No answer is older than a read of its own would be: a request joins only a batch whose query
has not started yet, so the query it gets the answer of began after the request arrived. Per
key, at most one query runs and one batch waits for it; a request arriving while a query runs
waits for the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


class ReadCoalescer:
    """Runs `fn` in a worker thread once for all the requests of one `key` that arrive before
    the run starts (`fn` must give every one of them the same answer: put everything it
    depends on, the owner too, in the key). Event-loop only; not thread-safe."""

    def __init__(self) -> None:
        self._waiting: dict[Hashable, asyncio.Future[Any]] = {}
        self._running: dict[Hashable, asyncio.Future[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, key: Hashable, fn: Callable[[], T]) -> T:
        """`fn()`'s answer from a run that starts after this call (an exception it raises is
        raised to every request of the batch)."""
        future = self._waiting.get(key)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            # Marks an exception as retrieved even if every request of the batch went away.
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._waiting[key] = future
            task = asyncio.ensure_future(self._run(key, future, fn))
            self._tasks.add(task)  # a reference, so the task is not collected mid-way
            task.add_done_callback(self._tasks.discard)
        # A request that goes away (client disconnect) does not cancel the batch's run.
        return await asyncio.shield(future)

    async def _run(self, key: Hashable, future: asyncio.Future[Any], fn: Callable[[], Any]) -> None:
        try:
            previous = self._running.get(key)
            if previous is not None:
                await asyncio.wait([previous])
            # From here on a new request starts the next batch: this run starts after every
            # request of its own batch arrived.
            del self._waiting[key]
            self._running[key] = future
            try:
                result = await anyio.to_thread.run_sync(fn)
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)
        except BaseException:  # cancelled (the app stops): its requests are cancelled too
            if self._waiting.get(key) is future:
                del self._waiting[key]
            future.cancel()
            raise
        finally:
            if self._running.get(key) is future:
                del self._running[key]
