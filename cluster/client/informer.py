"""Informers: a local cache of one kind of object, kept current by list + watch.

An :class:`Informer` lists the objects it is told to follow, then watches from the list's
resourceVersion, applying every event to its cache and calling the registered handlers
(add, update, delete). When the watch is too old (410 Expired) it lists again at once; when the
server cannot be reached it lists again after an exponential back-off on the given clock. A
relist diffs the new state against the cache, so handlers also hear about changes missed while
disconnected. ``synced`` is set once the first list is in the cache. Indexes (for example pods
by node name) answer "which objects have X" without scanning the cache.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, NamedTuple, Protocol

from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.status import ApiError
from k3py.cluster.client.client import ClientError
from k3py.cluster.client.clock import Clock, RealClock
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.client.informer")

Object = dict[str, Any]
AddHandler = Callable[[Object], None]
UpdateHandler = Callable[[Object, Object], None]
DeleteHandler = Callable[[Object], None]
IndexFunc = Callable[[Object], Iterable[str]]

INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# The server ends each watch after a randomised 5–10 minutes, as client-go's reflector asks.
WATCH_TIMEOUT_RANGE = (300, 600)


class ListWatcher(Protocol):
    """What an informer needs from a client (``KubeClient`` and the in-memory fake)."""

    async def list(
        self,
        info: ResourceInfo,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
    ) -> tuple[list[Object], str]: ...

    def watch(
        self,
        info: ResourceInfo,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int | None = None,
    ) -> AsyncIterator[tuple[str, Object]]: ...


def object_key(obj: Object) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    name = str(meta.get("name", ""))
    return f"{namespace}/{name}" if namespace else name


def split_key(key: str) -> tuple[str | None, str]:
    namespace, _, name = key.rpartition("/")
    return (namespace or None), name


class Handlers(NamedTuple):
    on_add: AddHandler | None = None
    on_update: UpdateHandler | None = None
    on_delete: DeleteHandler | None = None


class Informer:
    def __init__(
        self,
        client: ListWatcher,
        info: ResourceInfo,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        clock: Clock | None = None,
    ) -> None:
        self.client = client
        self.info = info
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.clock: Clock = clock or RealClock()
        self.synced = asyncio.Event()
        self.resource_version = ""
        self._cache: dict[str, Object] = {}
        self._handlers: list[Handlers] = []
        self._index_funcs: dict[str, IndexFunc] = {}
        self._indexes: dict[str, dict[str, set[str]]] = {}
        self._task: asyncio.Task[None] | None = None

    # -- registration ------------------------------------------------------------------------

    def add_handler(
        self,
        on_add: AddHandler | None = None,
        on_update: UpdateHandler | None = None,
        on_delete: DeleteHandler | None = None,
    ) -> None:
        """Register callbacks; objects already cached are replayed to ``on_add``."""
        self._handlers.append(Handlers(on_add, on_update, on_delete))
        if on_add is not None:
            for obj in builtins.list(self._cache.values()):
                self._call(on_add, obj)

    def add_index(self, name: str, func: IndexFunc) -> None:
        self._index_funcs[name] = func
        index: dict[str, set[str]] = {}
        for key, obj in self._cache.items():
            for value in func(obj):
                index.setdefault(value, set()).add(key)
        self._indexes[name] = index

    # -- reading the cache -------------------------------------------------------------------

    def get(self, name: str, namespace: str | None = None) -> Object | None:
        return self._cache.get(f"{namespace}/{name}" if namespace else name)

    def get_by_key(self, key: str) -> Object | None:
        return self._cache.get(key)

    def list(self, namespace: str | None = None) -> builtins.list[Object]:
        if namespace is None:
            return builtins.list(self._cache.values())
        prefix = namespace + "/"
        return [obj for key, obj in self._cache.items() if key.startswith(prefix)]

    def keys(self) -> builtins.list[str]:
        return builtins.list(self._cache)

    def by_index(self, name: str, value: str) -> builtins.list[Object]:
        keys = self._indexes[name].get(value, ())
        return [self._cache[k] for k in keys if k in self._cache]

    def __len__(self) -> int:
        return len(self._cache)

    # -- running -----------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"informer-{self.info.plural}")
        return self._task

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def run(self) -> None:
        """List and watch until cancelled, relisting on expiry and after failures."""
        backoff = INITIAL_BACKOFF
        while True:
            try:
                await self._list()
                backoff = INITIAL_BACKOFF
                while True:
                    started = self.clock.monotonic()
                    await self._watch()
                    if self.clock.monotonic() - started < 1.0:
                        # A watch the server ends at once is a sign of trouble: do not spin.
                        await self.clock.sleep(1.0)
            except ApiError as err:
                if err.code == 410:
                    logger.debug("watch expired; listing again", extra={"fields": self._fields()})
                    continue
                self._warn("list or watch refused", err, backoff)
            except ClientError as err:
                self._warn("API server unreachable", err, backoff)
            await self.clock.sleep(backoff * random.uniform(0.8, 1.2))  # noqa: S311
            backoff = min(backoff * 2, MAX_BACKOFF)

    def _fields(self) -> dict[str, str]:
        return {"resource": self.info.plural, "namespace": self.namespace or ""}

    def _warn(self, what: str, err: Exception, backoff: float) -> None:
        fields = {**self._fields(), "error": str(err), "retry_in": f"{backoff:.1f}s"}
        logger.warning(what, extra={"fields": fields})

    async def _list(self) -> None:
        items, version = await self.client.list(
            self.info,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
        )
        self.replace(items, version)
        self.synced.set()

    async def _watch(self) -> None:
        timeout = random.randint(*WATCH_TIMEOUT_RANGE)  # noqa: S311
        stream = self.client.watch(
            self.info,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            timeout_seconds=timeout,
        )
        async for kind, obj in stream:
            self.apply(kind, obj)

    # -- applying changes (public so that tests can drive a cache without a server) ----------

    def replace(self, items: Iterable[Object], resource_version: str) -> None:
        """Make the cache exactly ``items``, telling handlers what changed."""
        fresh = {object_key(obj): obj for obj in items}
        for key in [k for k in self._cache if k not in fresh]:
            self._remove(key)
        for key, obj in fresh.items():
            self._upsert(key, obj)
        self.resource_version = resource_version

    def apply(self, kind: str, obj: Object) -> None:
        """Apply one watch event (ADDED, MODIFIED, DELETED, BOOKMARK)."""
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            if version:
                self.resource_version = version
            return
        obj.setdefault("apiVersion", self.info.api_version)
        obj.setdefault("kind", self.info.kind)
        key = object_key(obj)
        if kind == "DELETED":
            if key in self._cache:
                self._remove(key, obj)
        else:
            self._upsert(key, obj)
        if version:
            self.resource_version = version

    def assume(self, obj: Object) -> None:
        """Put a write's answer into the cache before its watch event arrives.

        A controller that created or changed ``obj`` sees its own write at once (no duplicate
        creations on the next pass); a newer cached version is never replaced by an older one.
        """
        key = object_key(obj)
        old = self._cache.get(key)
        if old is not None and _newer_or_same(old, obj):
            return
        if (obj.get("metadata") or {}).get("deletionTimestamp") is None or old is not None:
            self._upsert(key, obj)

    def assume_deleted(self, obj: Object) -> None:
        """Drop an object a controller deleted outright, before the watch says so."""
        key = object_key(obj)
        if key in self._cache:
            self._remove(key, obj)

    def _upsert(self, key: str, obj: Object) -> None:
        old = self._cache.get(key)
        if old is not None and _version(old) == _version(obj) and _version(obj):
            return
        self._unindex(key, old)
        self._cache[key] = obj
        self._index(key, obj)
        for h in self._handlers:
            if old is None and h.on_add is not None:
                self._call(h.on_add, obj)
            elif old is not None and h.on_update is not None:
                self._call(h.on_update, old, obj)

    def _remove(self, key: str, final: Object | None = None) -> None:
        old = self._cache.pop(key)
        self._unindex(key, old)
        for h in self._handlers:
            if h.on_delete is not None:
                self._call(h.on_delete, final or old)

    def _index(self, key: str, obj: Object) -> None:
        for name, func in self._index_funcs.items():
            for value in func(obj):
                self._indexes[name].setdefault(value, set()).add(key)

    def _unindex(self, key: str, obj: Object | None) -> None:
        if obj is None:
            return
        for name, func in self._index_funcs.items():
            index = self._indexes[name]
            for value in func(obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    def _call(self, handler: Callable[..., None], *args: Object) -> None:
        # A broken handler must not stop the cache from following the server.
        try:
            handler(*args)
        except Exception:
            logger.exception("informer handler failed", extra={"fields": self._fields()})


def _newer_or_same(cached: Object, candidate: Object) -> bool:
    try:
        return int(_version(cached)) >= int(_version(candidate))
    except ValueError:
        return False


def _version(obj: Object) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
