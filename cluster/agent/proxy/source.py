"""The agent's cache of Services and Endpoints: from the API while it answers, from disk offline.

:class:`ServiceCache` holds every Service and Endpoints object of the cluster in a slimmed form
(metadata name and namespace, spec, status, subsets: what the proxy, the DNS and the pods'
environment read) and tells its listeners which ``namespace/name`` changed. It is written to
``<agent dir>/cache/services.json`` a moment after changes (one atomic write for a burst, so a
board's flash sees few writes) and read back at start, so an agent that starts while the server
is unreachable proxies and resolves what it did before. :class:`ServiceSource` feeds it from two
informers; after their first list the server's view replaces whatever the file held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from k3py.cluster.api.resources import by_kind
from k3py.cluster.client import Clock, Informer, KubeApi, object_key
from k3py.fsutil import write_atomic
from k3py.shutdown import cancel_and_wait

logger = logging.getLogger("k3py.agent.services")

Object = dict[str, Any]
SERVICES = by_kind("v1", "Service")
ENDPOINTS = by_kind("v1", "Endpoints")
PERSIST_DELAY_SECONDS = 2.0
Listener = Callable[[str], None]


def _slim_meta(obj: Object) -> Object:
    meta = obj.get("metadata") or {}
    return {"name": meta.get("name", ""), "namespace": meta.get("namespace", "default")}


def slim_service(obj: Object) -> Object:
    return {
        "metadata": _slim_meta(obj),
        "spec": obj.get("spec") or {},
        "status": obj.get("status") or {},
    }


def slim_endpoints(obj: Object) -> Object:
    return {"metadata": _slim_meta(obj), "subsets": obj.get("subsets") or []}


class ServiceCache:
    def __init__(self, path: Path | None = None, clock: Clock | None = None) -> None:
        self.path = path
        self.clock = clock
        self.services: dict[str, Object] = {}
        self.endpoints: dict[str, Object] = {}
        self._listeners: list[Listener] = []
        self._dirty = asyncio.Event()

    # -- reading ------------------------------------------------------------------------------

    def service(self, namespace: str, name: str) -> Object | None:
        return self.services.get(f"{namespace}/{name}")

    def endpoints_of(self, namespace: str, name: str) -> Object | None:
        return self.endpoints.get(f"{namespace}/{name}")

    def names(self) -> set[str]:
        return {*self.services, *self.endpoints}

    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- writing ------------------------------------------------------------------------------

    def _changed(self, key: str) -> None:
        self._dirty.set()
        for listener in self._listeners:
            try:
                listener(key)
            except Exception:
                logger.exception("service listener failed", extra={"fields": {"key": key}})

    def set_service(self, obj: Object) -> None:
        key, slim = object_key(obj), slim_service(obj)
        if self.services.get(key) != slim:
            self.services[key] = slim
            self._changed(key)

    def delete_service(self, key: str) -> None:
        if self.services.pop(key, None) is not None:
            self._changed(key)

    def set_endpoints(self, obj: Object) -> None:
        key, slim = object_key(obj), slim_endpoints(obj)
        if self.endpoints.get(key) != slim:
            self.endpoints[key] = slim
            self._changed(key)

    def delete_endpoints(self, key: str) -> None:
        if self.endpoints.pop(key, None) is not None:
            self._changed(key)

    def retain(self, services: Iterable[str], endpoints: Iterable[str]) -> None:
        """Forget what the server no longer has (after a list)."""
        keep_services, keep_endpoints = set(services), set(endpoints)
        for key in [k for k in self.services if k not in keep_services]:
            self.delete_service(key)
        for key in [k for k in self.endpoints if k not in keep_endpoints]:
            self.delete_endpoints(key)

    # -- the file -----------------------------------------------------------------------------

    def load(self) -> int:
        """Read the stored cache; the number of services found."""
        if self.path is None or not self.path.exists():
            return 0
        try:
            data = json.loads(self.path.read_bytes())
        except (OSError, ValueError):
            logger.warning("unreadable service cache", extra={"fields": {"path": str(self.path)}})
            return 0
        for obj in data.get("services") or []:
            self.set_service(obj)
        for obj in data.get("endpoints") or []:
            self.set_endpoints(obj)
        return len(self.services)

    def save(self) -> None:
        if self.path is None:
            return
        data = {
            "services": [self.services[k] for k in sorted(self.services)],
            "endpoints": [self.endpoints[k] for k in sorted(self.endpoints)],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(data, separators=(",", ":")).encode(), 0o600)

    async def persist(self) -> None:
        """Write the file a moment after each burst of changes, until cancelled."""
        self._dirty.clear()
        while True:
            await self._dirty.wait()
            if self.clock is not None:
                await self.clock.sleep(PERSIST_DELAY_SECONDS)
            else:
                await asyncio.sleep(PERSIST_DELAY_SECONDS)
            self._dirty.clear()
            try:
                await asyncio.to_thread(self.save)
            except OSError as err:
                logger.warning("service cache not written", extra={"fields": {"error": str(err)}})


class ServiceSource:
    """Two informers (Services, Endpoints) feeding a :class:`ServiceCache`."""

    def __init__(self, api: KubeApi, cache: ServiceCache, clock: Clock) -> None:
        assert SERVICES is not None
        assert ENDPOINTS is not None
        self.cache = cache
        self.services = Informer(api, SERVICES, clock=clock)
        self.endpoints = Informer(api, ENDPOINTS, clock=clock)
        self._tasks: list[asyncio.Task[Any]] = []

    def start(self) -> None:
        count = self.cache.load()
        if count:
            logger.info("services from the local cache", extra={"fields": {"count": count}})
        cache = self.cache
        self.services.add_handler(
            on_add=cache.set_service,
            on_update=lambda _o, n: cache.set_service(n),
            on_delete=lambda o: cache.delete_service(object_key(o)),
        )
        self.endpoints.add_handler(
            on_add=cache.set_endpoints,
            on_update=lambda _o, n: cache.set_endpoints(n),
            on_delete=lambda o: cache.delete_endpoints(object_key(o)),
        )
        self._tasks += [self.services.start(), self.endpoints.start()]
        self._tasks.append(asyncio.create_task(self._after_first_list(), name="services-synced"))
        self._tasks.append(asyncio.create_task(cache.persist(), name="services-persist"))

    async def _after_first_list(self) -> None:
        await self.services.synced.wait()
        await self.endpoints.synced.wait()
        self.cache.retain(self.services.keys(), self.endpoints.keys())

    async def stop(self) -> None:
        for informer in (self.services, self.endpoints):
            await informer.stop()
        await cancel_and_wait(*self._tasks, log=logger)
        with contextlib.suppress(OSError):
            self.cache.save()
