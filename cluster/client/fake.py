"""An in-memory Kubernetes API with :class:`KubeClient`'s methods, for unit tests without a server.

:class:`FakeApi` keeps objects per resource with one global resourceVersion counter and the API
server's object semantics that reconcile loops rely on: uid, generateName, creationTimestamp,
``generation`` bumped on spec changes, optimistic concurrency (stale resourceVersion → 409),
the status subresource split, the pod ``binding`` subresource, finalizers and (for pods on a
node) grace periods holding a deletion until finished,
label and field selectors, and watches from a resourceVersion (410 Expired once
:meth:`FakeApi.compact` dropped the history). Objects are defaulted as the API server
defaults them; patches use the object model's engines. It runs on a :class:`Clock` for timestamps.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import itertools
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from k3py.cluster.api import status
from k3py.cluster.api.defaults import apply_defaults
from k3py.cluster.api.patch import (
    apply_json_patch,
    apply_merge_patch,
    apply_strategic_merge_patch,
)
from k3py.cluster.api.resources import ResourceInfo, by_kind
from k3py.cluster.api.selectors import FieldSelector, LabelSelector
from k3py.cluster.client.clock import Clock, RealClock
from k3py.cluster.client.informer import object_key

Object = dict[str, Any]
_WITHOUT_GENERATION = ("status", "metadata", "apiVersion", "kind")


def rfc3339(clock: Clock) -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


class FakeApi:
    def __init__(self, clock: Clock | None = None) -> None:
        self.clock: Clock = clock or RealClock()
        self._objects: dict[ResourceInfo, dict[str, Object]] = {}
        self._revision = 0
        self._history: builtins.list[tuple[int, ResourceInfo, str, Object]] = []
        self._oldest = 1  # the oldest revision a watch may start after
        self._watchers: builtins.list[tuple[ResourceInfo, asyncio.Queue[Any]]] = []
        self._uids = itertools.count(1)
        self.requests: builtins.list[tuple[str, str, str]] = []  # (verb, plural, name)

    # -- helpers -----------------------------------------------------------------------------

    def _store(self, info: ResourceInfo) -> dict[str, Object]:
        return self._objects.setdefault(info, {})

    def _not_found(self, info: ResourceInfo, name: str) -> status.ApiError:
        return status.not_found(info.group, info.plural, name)

    def _record(self, info: ResourceInfo, kind: str, obj: Object) -> None:
        self._history.append((self._revision, info, kind, copy.deepcopy(obj)))
        for watched, queue in self._watchers:
            if watched == info:
                queue.put_nowait((self._revision, kind, copy.deepcopy(obj)))

    def _bump(self, obj: Object) -> None:
        self._revision += 1
        obj["metadata"]["resourceVersion"] = str(self._revision)

    def compact(self) -> None:
        """Forget the event history: older watches get 410 Expired, as after compaction."""
        self._history.clear()
        self._oldest = self._revision + 1

    def objects(self, info: ResourceInfo) -> builtins.list[Object]:
        """A snapshot of stored objects (test assertions)."""
        return [copy.deepcopy(o) for o in self._store(info).values()]

    # -- the KubeClient surface --------------------------------------------------------------

    async def get(
        self, info: ResourceInfo, name: str, namespace: str | None = None, *, subresource: str = ""
    ) -> Object:
        self.requests.append(("get", info.plural, name))
        key = f"{namespace}/{name}" if info.namespaced and namespace else name
        obj = self._store(info).get(key)
        if obj is None:
            raise self._not_found(info, name)
        return copy.deepcopy(obj)

    async def list(
        self,
        info: ResourceInfo,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
    ) -> tuple[builtins.list[Object], str]:
        self.requests.append(("list", info.plural, ""))
        labels = LabelSelector.parse(label_selector)
        fields = FieldSelector.parse(field_selector, info)
        items = [
            copy.deepcopy(o)
            for o in self._store(info).values()
            if _selected(o, namespace, labels, fields)
        ]
        return items, str(self._revision)

    async def watch(
        self,
        info: ResourceInfo,
        namespace: str | None = None,
        *,
        resource_version: str,
        label_selector: str = "",
        field_selector: str = "",
        timeout_seconds: int | None = None,
    ) -> AsyncIterator[tuple[str, Object]]:
        labels = LabelSelector.parse(label_selector)
        fields = FieldSelector.parse(field_selector, info)
        since = int(resource_version or self._revision)
        if since + 1 < self._oldest:
            raise status.gone(f"too old resource version: {since} ({self._oldest - 1})")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for revision, watched, kind, obj in self._history:
            if watched == info and revision > since:
                queue.put_nowait((revision, kind, obj))
        entry = (info, queue)
        self._watchers.append(entry)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                revision, kind, obj = item
                if revision > since and _selected(obj, namespace, labels, fields):
                    yield kind, copy.deepcopy(obj)
        finally:
            self._watchers.remove(entry)

    def end_watches(self, error: Exception | None = None) -> None:
        """End every open watch, normally or with ``error`` (as a server restart would)."""
        for _, queue in self._watchers:
            queue.put_nowait(error)

    async def create(
        self,
        info: ResourceInfo,
        obj: Object,
        namespace: str | None = None,
        *,
        subresource: str = "",
    ) -> Object:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        if info.namespaced:
            meta["namespace"] = namespace or meta.get("namespace") or "default"
        if subresource == "binding" and info.plural == "pods":
            return await self._bind(info, obj)
        if subresource == "eviction" and info.plural == "pods":
            await self.delete(info, meta["name"], meta["namespace"])
            return {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        self.requests.append(("create", info.plural, meta.get("name", "")))
        if not meta.get("name"):
            meta["name"] = f"{meta.get('generateName', '')}{next(self._uids):05x}"
        key = object_key(obj)
        store = self._store(info)
        if key in store:
            raise status.already_exists(info.group, info.plural, meta["name"])
        obj["apiVersion"], obj["kind"] = info.api_version, info.kind
        meta["uid"] = f"00000000-0000-4000-8000-{next(self._uids):012d}"
        meta["creationTimestamp"] = rfc3339(self.clock)
        if "spec" in obj or info.kind in ("Deployment", "ReplicaSet", "DaemonSet", "Job"):
            meta["generation"] = 1
        apply_defaults(info, obj)
        self._bump(obj)
        store[key] = obj
        self._record(info, "ADDED", obj)
        return copy.deepcopy(obj)

    async def _bind(self, pods: ResourceInfo, binding: Object) -> Object:
        meta = binding["metadata"]
        pod = self._store(pods).get(f"{meta['namespace']}/{meta['name']}")
        if pod is None:
            raise self._not_found(pods, meta["name"])
        if pod.get("spec", {}).get("nodeName"):
            raise status.conflict(
                "", "pods", meta["name"], f"pod {meta['name']} is already assigned to a node"
            )
        self.requests.append(("bind", "pods", meta["name"]))
        pod["spec"]["nodeName"] = binding["target"]["name"]
        self._bump(pod)
        self._record(pods, "MODIFIED", pod)
        return {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}

    async def update(self, info: ResourceInfo, obj: Object, *, subresource: str = "") -> Object:
        meta = obj.get("metadata") or {}
        self.requests.append(
            (
                "update" + (f"/{subresource}" if subresource else ""),
                info.plural,
                meta.get("name", ""),
            )
        )
        key = object_key(obj)
        store = self._store(info)
        current = store.get(key)
        if current is None:
            raise self._not_found(info, meta.get("name", ""))
        wanted = meta.get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise status.conflict(
                info.group,
                info.plural,
                meta.get("name", ""),
                "the object has been modified; please apply your changes to the latest version"
                " and try again",
            )
        return self._replace(info, key, current, copy.deepcopy(obj), subresource)

    def _replace(
        self, info: ResourceInfo, key: str, current: Object, new: Object, subresource: str
    ) -> Object:
        has_status = "status" in info.subresources
        if subresource == "status":
            merged = copy.deepcopy(current)
            merged["status"] = new.get("status", {})
            new = merged
        elif has_status:
            new["status"] = copy.deepcopy(current.get("status", {}))
        meta = new.setdefault("metadata", {})
        for fixed in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
            if fixed in current["metadata"]:
                meta[fixed] = current["metadata"][fixed]
        generation = current["metadata"].get("generation")
        if generation is not None:
            meta["generation"] = generation
            if _spec_of(new) != _spec_of(current):
                meta["generation"] = generation + 1
        new["apiVersion"], new["kind"] = info.api_version, info.kind
        apply_defaults(info, new)
        if new == current:
            return copy.deepcopy(current)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            del self._store(info)[key]
            self._bump(new)
            self._record(info, "DELETED", new)
            return copy.deepcopy(new)
        self._bump(new)
        self._store(info)[key] = new
        self._record(info, "MODIFIED", new)
        return copy.deepcopy(new)

    async def patch(
        self,
        info: ResourceInfo,
        name: str,
        patch: Object | builtins.list[Any],
        namespace: str | None = None,
        *,
        patch_type: Literal["merge", "strategic", "json"] = "merge",
        subresource: str = "",
    ) -> Object:
        self.requests.append(
            ("patch" + (f"/{subresource}" if subresource else ""), info.plural, name)
        )
        key = f"{namespace}/{name}" if info.namespaced and namespace else name
        current = self._store(info).get(key)
        if current is None:
            raise self._not_found(info, name)
        if patch_type == "json":
            new = apply_json_patch(copy.deepcopy(current), patch)
        elif patch_type == "strategic":
            assert isinstance(patch, dict)
            new = apply_strategic_merge_patch(copy.deepcopy(current), patch, info)
        else:
            new = apply_merge_patch(copy.deepcopy(current), patch)
        wanted = (new.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise status.conflict(info.group, info.plural, name, "the object has been modified")
        return self._replace(info, key, current, new, subresource)

    async def delete(
        self,
        info: ResourceInfo,
        name: str,
        namespace: str | None = None,
        *,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
        preconditions: Mapping[str, str] | None = None,
    ) -> Object | None:
        self.requests.append(("delete", info.plural, name))
        key = f"{namespace}/{name}" if info.namespaced and namespace else name
        store = self._store(info)
        current = store.get(key)
        if current is None:
            raise self._not_found(info, name)
        for field, value in (preconditions or {}).items():
            if current["metadata"].get(field) != value:
                raise status.conflict(
                    info.group, info.plural, name, f"Precondition failed: {field}: {value}"
                )
        meta = current["metadata"]
        if meta.get("finalizers") or _graceful(info, current, grace_period_seconds):
            # Finalizers hold the object; a pod on a node waits for that node to finish it.
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = rfc3339(self.clock)
                self._bump(current)
                self._record(info, "MODIFIED", current)
            return copy.deepcopy(current)
        del store[key]
        self._bump(current)
        self._record(info, "DELETED", current)
        return None


def _graceful(info: ResourceInfo, obj: Object, grace: int | None) -> bool:
    if info.kind != "Pod" or grace == 0:
        return False
    phase = (obj.get("status") or {}).get("phase")
    return bool((obj.get("spec") or {}).get("nodeName")) and phase not in ("Succeeded", "Failed")


def _spec_of(obj: Object) -> Any:
    return {k: v for k, v in obj.items() if k not in _WITHOUT_GENERATION}


def _selected(
    obj: Object, namespace: str | None, labels: LabelSelector, fields: FieldSelector
) -> bool:
    meta = obj.get("metadata") or {}
    if namespace and meta.get("namespace") != namespace:
        return False
    return labels.matches(meta.get("labels") or {}) and fields.matches(obj)


def info_of(api_version: str, kind: str) -> ResourceInfo:
    info = by_kind(api_version, kind)
    if info is None:
        raise KeyError(f"{api_version} {kind} is not a served kind")
    return info
