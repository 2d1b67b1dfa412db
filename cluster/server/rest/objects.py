"""Kubernetes objects in the datastore: keys, JSON values, resourceVersions and store errors.

The datastore stores bytes under keys; the REST layer speaks objects. :class:`ObjectStore` is
the one place that translates: it encodes an object without ``metadata.resourceVersion``,
decodes a value and sets ``resourceVersion`` to the key's ``mod_revision``, and turns the
datastore's errors into the Kubernetes ``Status`` errors clients expect (404, 409, 410).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from k3py.cluster.api import status
from k3py.cluster.api.customresources import convert, to_storage
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.server.store import (
    Compacted,
    Conflict,
    Datastore,
    Event,
    FutureRevision,
    KeyExists,
    KeyValue,
    NotFound,
    WatchExpired,
)

Object = dict[str, Any]

CONFLICT_MESSAGE = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def encode(obj: Object) -> bytes:
    """The stored form: compact JSON without the resourceVersion (the revision is the key's)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and "resourceVersion" in meta:
        meta = {k: v for k, v in meta.items() if k != "resourceVersion"}
        obj = {**obj, "metadata": meta}
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def decode(kv: KeyValue, revision: int | None = None) -> Object:
    obj: Object = json.loads(kv.value)
    obj.setdefault("metadata", {})["resourceVersion"] = str(
        kv.mod_revision if revision is None else revision
    )
    return obj


def too_old(revision: int, compacted: int) -> status.ApiError:
    return status.gone(f"too old resource version: {revision} ({compacted})")


def too_large(revision: int, current: int) -> status.ApiError:
    error = status.timeout(f"Too large resource version: {revision}, current: {current}")
    error.causes.append(
        status.Cause(
            "ResourceVersionTooLarge", f"Too large resource version: {revision}, current: {current}"
        )
    )
    error.retry_after_seconds = 1
    return error


@dataclass(frozen=True)
class ObjectList:
    items: list[Object]
    revision: int
    continue_key: str  # the last key returned when more remain, else ""


@dataclass(frozen=True)
class ObjectEvent:
    """One change of one object, as a watch reports it."""

    type: str  # "create" | "update" | "delete"
    object: Object
    previous: Object | None
    revision: int


class ObjectStore:
    """Objects of the served resources, stored in a :class:`Datastore`."""

    def __init__(self, datastore: Datastore) -> None:
        self.datastore = datastore
        self.shared = SharedDecodes()

    @property
    def revision(self) -> int:
        return self.datastore.current_revision

    @property
    def compact_revision(self) -> int:
        return self.datastore.compact_revision

    async def get(self, info: ResourceInfo, namespace: str | None, name: str) -> Object:
        obj = await self.get_or_none(info, namespace, name)
        if obj is None:
            raise status.not_found(info.group, info.plural, name)
        return obj

    async def get_or_none(
        self, info: ResourceInfo, namespace: str | None, name: str
    ) -> Object | None:
        kv = await self.datastore.get(info.storage_key(namespace, name))
        return None if kv is None else convert(info, decode(kv))

    async def list_page(
        self, prefix: str, *, revision: int, start_after: str, limit: int
    ) -> tuple[list[KeyValue], int, bool]:
        """One page of raw key-values; raises 410 for compacted and 504 for future revisions."""
        try:
            page = await self.datastore.list(
                prefix, revision=revision, start_after=start_after, limit=limit
            )
        except Compacted as err:
            raise too_old(err.revision, err.compact_revision) from None
        except FutureRevision as err:
            raise too_large(err.revision, err.current_revision) from None
        return page.items, page.revision, page.more

    async def list_prefix(self, prefix: str, page: int = 500) -> tuple[list[KeyValue], int]:
        """Every raw key-value under ``prefix`` at one revision (read in pages), and that
        revision: what a follower lists before it watches from there."""
        found: list[KeyValue] = []
        revision, start = 0, ""
        while True:
            items, revision, more = await self.list_page(
                prefix, revision=revision, start_after=start, limit=page
            )
            found.extend(items)
            if not more or not items:
                return found, revision
            start = items[-1].key

    async def list_all(self, info: ResourceInfo, namespace: str | None) -> list[Object]:
        """Every object of a resource (in one namespace or all), at one revision."""
        items, _ = await self.list_prefix(info.storage_prefix(namespace))
        return [convert(info, decode(kv)) for kv in items]

    async def create(self, info: ResourceInfo, obj: Object) -> Object:
        meta = obj["metadata"]
        key = info.storage_key(meta.get("namespace"), meta["name"])
        try:
            kv = await self.datastore.create(key, encode(to_storage(info, obj)))
        except KeyExists:
            raise status.already_exists(info.group, info.plural, meta["name"]) from None
        return _with_revision(obj, kv.mod_revision)

    async def update(self, info: ResourceInfo, obj: Object, expected_revision: int) -> Object:
        """Write ``obj`` if the stored one is still at ``expected_revision`` (0: any)."""
        meta = obj["metadata"]
        name = meta["name"]
        key = info.storage_key(meta.get("namespace"), name)
        try:
            kv = await self.datastore.update(
                key, encode(to_storage(info, obj)), expected_revision=expected_revision
            )
        except NotFound:
            raise status.not_found(info.group, info.plural, name) from None
        except Conflict:
            raise status.conflict(info.group, info.plural, name, CONFLICT_MESSAGE) from None
        return _with_revision(obj, kv.mod_revision)

    async def delete(self, info: ResourceInfo, obj: Object, expected_revision: int) -> Object:
        """Remove the object; returns its last state with the delete's revision."""
        meta = obj["metadata"]
        name = meta["name"]
        key = info.storage_key(meta.get("namespace"), name)
        try:
            kv = await self.datastore.delete(key, expected_revision=expected_revision)
        except NotFound:
            raise status.not_found(info.group, info.plural, name) from None
        except Conflict:
            raise status.conflict(info.group, info.plural, name, CONFLICT_MESSAGE) from None
        return decode(kv)

    async def watch(self, prefix: str, after: int) -> AsyncIterator[list[ObjectEvent]]:
        """Changes under ``prefix`` with revisions greater than ``after``, in order.

        Raises 410 (``Expired``) when ``after`` was compacted or the watcher fell behind.
        """
        if after < self.datastore.compact_revision:
            raise too_old(after, self.datastore.compact_revision)
        watch = self.datastore.watch(prefix, revision=after)
        try:
            async for events in watch:
                yield [self.shared.event(e) for e in events]
        except Compacted as err:
            raise too_old(err.revision, err.compact_revision) from None
        except WatchExpired as err:
            raise status.gone(str(err)) from None
        finally:
            watch.close()


def _with_revision(obj: Object, revision: int) -> Object:
    obj["metadata"]["resourceVersion"] = str(revision)
    return obj


class SharedDecodes:
    """Decoded objects and their JSON, shared by every watcher that sees the same change.

    The hub hands each change to every matching watcher; decoding (and encoding) it once
    instead of once per watcher keeps a thousand node agents' watches cheap. Entries are
    read-only by convention, and only the most recent few hundred are kept, and no more than
    ``max_bytes`` of them (large objects would otherwise pin hundreds of MB).
    """

    def __init__(self, size: int = 256, max_bytes: int = 16 * 1024 * 1024) -> None:
        self._size = size
        self._max_bytes = max_bytes
        self._objects: OrderedDict[tuple[str, int], tuple[Object, int]] = OrderedDict()
        self._object_bytes = 0
        self._lines: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self._line_bytes = 0

    def object(self, kv: KeyValue, revision: int | None = None) -> Object:
        key = (kv.key, kv.mod_revision if revision is None else revision)
        found = self._objects.get(key)
        if found is None:
            found = self._objects[key] = (decode(kv, revision), len(kv.value))
            self._object_bytes += found[1]
            while self._objects and (
                len(self._objects) > self._size or self._object_bytes > self._max_bytes
            ):
                self._object_bytes -= self._objects.popitem(last=False)[1][1]
        return found[0]

    def event(self, event: Event) -> ObjectEvent:
        prev = event.prev
        previous = self.object(prev) if prev is not None and prev.value else None
        if event.type == "delete":
            # The tombstone carries the last value; its revision is the delete's.
            kv = event.kv if event.kv.value else prev
            assert kv is not None
            obj = self.object(kv, event.kv.mod_revision)
        else:
            obj = self.object(event.kv)
        return ObjectEvent(event.type, obj, previous, event.kv.mod_revision)

    def line(self, event_type: str, event: ObjectEvent) -> bytes:
        """``{"type": ..., "object": ...}`` plus newline, as a watch stream sends it."""
        meta = event.object.get("metadata") or {}
        key = (str(meta.get("uid", "")), event.revision, event_type)
        found = self._lines.get(key)
        if found is None:
            body = json.dumps(
                {"type": event_type, "object": event.object},
                separators=(",", ":"),
                ensure_ascii=False,
            )
            found = self._lines[key] = body.encode() + b"\n"
            self._line_bytes += len(found)
            while self._lines and (
                len(self._lines) > self._size or self._line_bytes > self._max_bytes
            ):
                self._line_bytes -= len(self._lines.popitem(last=False)[1])
        return found
