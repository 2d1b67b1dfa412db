"""Watch over HTTP: a chunked stream of ``{"type": ..., "object": ...}`` lines per change.

A watch starts either from the current state (``resourceVersion`` unset or ``0``, or
``sendInitialEvents=true``: one ADDED event per existing object, then changes) or right after
a given resourceVersion. Label and field selectors apply to both sides of a change, so an object
that stops matching arrives as DELETED and one that starts matching as ADDED, as kube-apiserver
does. Clients that allow bookmarks get a BOOKMARK with the latest delivered resourceVersion
once a bookmark interval passes without events. A start revision that was compacted, or a
watcher that fell too far behind (in events or bytes), ends the stream with an ERROR event
carrying a 410 Status. A client that stops reading cannot make the server buffer for it: its
queue is cut off at the datastore hub's limits, and a write that stays blocked for
``watch_write_timeout_seconds`` closes the connection, as kube-apiserver drops unresponsive
watchers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from k3py.cluster.api import status
from k3py.cluster.api.customresources import convert
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.server.connections import release_memory
from k3py.cluster.server.rest.context import REST, RestContext
from k3py.cluster.server.rest.http import JSON, RequestTarget, response_form
from k3py.cluster.server.rest.objects import Object, ObjectEvent
from k3py.cluster.server.rest.read import (
    ListOptions,
    as_table,
    list_objects,
    list_options,
    parse_revision,
    partial_metadata,
)

logger = logging.getLogger(__name__)

# How often an idle watch checks that its client is still connected.
_LIVENESS_INTERVAL = 5.0
# kube-apiserver ends watches after a random 30-60 minutes so that clients rebalance.
_DEFAULT_TIMEOUT = (1800.0, 3600.0)
_TYPES = {"create": "ADDED", "update": "MODIFIED", "delete": "DELETED"}


def classify(event: ObjectEvent, opts: ListOptions) -> str | None:
    """The watch event type this change is for a watcher with ``opts``' selectors (None: skip)."""
    if not opts.filtered:
        return _TYPES[event.type]
    now = opts.matches(event.object)
    if event.type == "create":
        return "ADDED" if now else None
    if event.type == "delete":
        return "DELETED" if now else None
    before = event.previous is not None and opts.matches(event.previous)
    if now:
        return "MODIFIED" if before else "ADDED"
    return "DELETED" if before else None


class WatchStream:
    """Writes one watch's events to one HTTP response in the negotiated form."""

    def __init__(
        self,
        ctx: RestContext,
        request: web.Request,
        response: web.StreamResponse,
        info: ResourceInfo,
        form: str,
    ) -> None:
        self.ctx = ctx
        self.request = request
        self.response = response
        self.info = info
        self.form = form

    def _render(self, obj: Object) -> Any:
        if self.form == "table":
            return as_table(self.ctx, self.request, self.info, [obj])
        if self.form == "partial":
            return partial_metadata(obj)
        return obj

    async def _write(self, data: bytes) -> None:
        try:
            async with asyncio.timeout(self.ctx.settings.watch_write_timeout_seconds):
                await self.response.write(data)
        except TimeoutError:
            transport = self.request.transport
            if transport is not None:
                transport.abort()
            logger.info(
                "closed an unresponsive watch",
                extra={"fields": {"resource": self.info.plural}},
            )
            # What was queued for it is garbage now: give the memory back once it is freed.
            asyncio.get_running_loop().call_later(1.0, release_memory)
            raise ConnectionError("the watch client stopped reading") from None

    async def send(self, event_type: str, obj: Any) -> None:
        line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))
        await self._write(line.encode() + b"\n")

    async def send_event(self, event_type: str, event: ObjectEvent) -> None:
        obj = convert(self.info, event.object)  # another version of a custom resource
        if self.form == "json" and obj is event.object:  # encoded once for all its watchers
            await self._write(self.ctx.objects.shared.line(event_type, event))
        else:
            await self.send(event_type, self._render(obj))

    async def send_object(self, event_type: str, obj: Object) -> None:
        await self.send(event_type, self._render(obj))

    async def send_bookmark(self, revision: int, *, initial_events_end: bool = False) -> None:
        meta: dict[str, Any] = {"resourceVersion": str(revision)}
        if initial_events_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        bookmark = {"kind": self.info.kind, "apiVersion": self.info.api_version, "metadata": meta}
        await self.send("BOOKMARK", bookmark)

    async def send_error(self, error: status.ApiError) -> None:
        await self.send("ERROR", error.to_status())


async def serve_watch(request: web.Request, target: RequestTarget) -> web.StreamResponse:
    ctx = request.app[REST]
    info = target.info
    form = response_form(request)
    opts = list_options(request, info)
    version = opts.resource_version
    initial: list[Object] = []
    if version in ("", "0") or opts.send_initial_events:
        everything = ListOptions(
            opts.label_selector, opts.field_selector, 0, "", "", "", False, None, None
        )
        page = await list_objects(ctx, info, target.namespace, everything)
        initial, after = page.items, page.revision
    else:
        after = parse_revision(version)
    response = web.StreamResponse(
        status=200, headers={"Content-Type": JSON, "Cache-Control": "no-cache, private"}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    stream = WatchStream(ctx, request, response, info, form)
    timeout = opts.timeout_seconds or random.uniform(*_DEFAULT_TIMEOUT)  # noqa: S311
    try:
        for obj in initial:
            await stream.send_object("ADDED", obj)
        if opts.send_initial_events and opts.allow_bookmarks:
            await stream.send_bookmark(after, initial_events_end=True)
        await _follow(ctx, stream, target, opts, after, time.monotonic() + timeout)
    except status.ApiError as err:
        with contextlib.suppress(ConnectionError, RuntimeError):
            await stream.send_error(err)
    except (ConnectionError, RuntimeError):
        pass  # the client went away
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


async def _next_batch(changes: AsyncIterator[list[ObjectEvent]]) -> list[ObjectEvent] | None:
    try:
        return await anext(changes)
    except StopAsyncIteration:
        return None


async def _follow(
    ctx: RestContext,
    stream: WatchStream,
    target: RequestTarget,
    opts: ListOptions,
    after: int,
    deadline: float,
) -> None:
    changes: AsyncIterator[list[ObjectEvent]] = ctx.objects.watch(
        target.info.storage_prefix(target.namespace), after
    )
    bookmark_every = ctx.settings.watch_bookmark_interval
    next_bookmark = time.monotonic() + bookmark_every
    delivered = after
    pending: asyncio.Future[list[ObjectEvent] | None] | None = None
    stopping = asyncio.ensure_future(ctx.stopping.wait())
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            if pending is None:
                pending = asyncio.ensure_future(_next_batch(changes))
            wake = min(deadline, now + _LIVENESS_INTERVAL)
            if opts.allow_bookmarks:
                wake = min(wake, next_bookmark)
            waiting: set[asyncio.Future[Any]] = {pending, stopping}
            done, _ = await asyncio.wait(
                waiting, timeout=max(0.0, wake - now), return_when="FIRST_COMPLETED"
            )
            if stopping in done:
                return
            if not done:
                transport = stream.request.transport
                if transport is None or transport.is_closing():
                    return
                if opts.allow_bookmarks and time.monotonic() >= next_bookmark:
                    await stream.send_bookmark(delivered)
                    next_bookmark = time.monotonic() + bookmark_every
                continue
            batch_future, pending = pending, None
            batch = batch_future.result()
            if batch is None:
                return
            for event in batch:
                kind = classify(event, opts)
                if kind is not None:
                    await stream.send_event(kind, event)
                delivered = event.revision
            next_bookmark = time.monotonic() + bookmark_every
    finally:
        stopping.cancel()
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
        close = getattr(changes, "aclose", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
