"""The API's client protocol served inside the server process, for its own control plane.

The scheduler and controllers of ``k3py server`` used to reach the API over loopback TLS, HTTP
and JSON; every pod bound cost an encode, a TLS record, a parse and a decode on each side.
:class:`InProcessApi` meets :class:`~k3py.cluster.client.KubeApi` by calling the same functions
the HTTP handlers call (kind and field checks, placement at the URL's namespace and name,
:mod:`~k3py.cluster.server.rest.engine` for defaulting, validation and storage, the delete and
binding paths, ``list_objects`` and the store's watch with the watch handler's ``classify``), as
the admin identity, whose requests the authorizer chain is still asked about. Objects going in
are copied (the caller keeps its own) and objects coming out are copies too: watch events are
shared with every HTTP watcher of the same change, and a controller that edits what it got
must not change what the others see.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import random
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

from k3py.cluster.api import status
from k3py.cluster.api.bounded import WorkBudget
from k3py.cluster.api.resources import ResourceInfo
from k3py.cluster.api.selectors import FieldSelector, LabelSelector
from k3py.cluster.server.auth import UserInfo
from k3py.cluster.server.pki import ADMIN_GROUP, ADMIN_USER
from k3py.cluster.server.rest import delete, engine, eviction, subresources, typecheck, write
from k3py.cluster.server.rest.access import attributes, decide
from k3py.cluster.server.rest.context import RestContext
from k3py.cluster.server.rest.http import RequestTarget
from k3py.cluster.server.rest.objects import ObjectEvent
from k3py.cluster.server.rest.read import ListOptions, list_objects, parse_revision

Object = dict[str, Any]
PatchType = Literal["merge", "strategic", "json"]

_PATCH_CONTENT = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
}
_OPTIONS = write.WriteOptions(dry_run=False, field_validation="Warn")
_NO_OPTIONS = ListOptions(None, None, 0, "", "", "", False, None, None)
_TYPES = {"create": "ADDED", "update": "MODIFIED", "delete": "DELETED"}


def clone(value: Any) -> Any:
    """A deep copy of decoded JSON (dicts, lists, scalars): several times faster than
    :func:`copy.deepcopy`, which would spend the time saved on the wire."""
    if isinstance(value, dict):
        return {k: clone(v) if isinstance(v, dict | list) else v for k, v in value.items()}
    if isinstance(value, list):
        return [clone(v) if isinstance(v, dict | list) else v for v in value]
    return value


def _classify(event: ObjectEvent, opts: ListOptions) -> str | None:
    # The watch handler's rule (watch.classify), without importing the HTTP streaming module.
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


def _meta(obj: Object) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


class InProcessApi:
    """:class:`~k3py.cluster.client.KubeApi` over one server's :class:`RestContext`."""

    def __init__(self, ctx: RestContext, user: UserInfo | None = None) -> None:
        self.ctx = ctx
        self.user = user or UserInfo(ADMIN_USER, (ADMIN_GROUP,))

    async def close(self) -> None:
        """Nothing to release (the protocol's clients are closed alike)."""

    async def _authorize(self, target: RequestTarget, field_selector: str = "") -> None:
        query = {"fieldSelector": field_selector} if field_selector else None
        attrs = attributes(target, query)
        reason = await decide(self.ctx, self.user, attrs)
        if reason is not None:
            raise status.ApiError(
                403,
                "Forbidden",
                f'{attrs.resource} is forbidden: User "{self.user.name}" cannot {attrs.verb}'
                f" resource {attrs.resource!r}: {reason}",
                name=attrs.name,
                group=attrs.group,
                kind=attrs.resource,
            )

    @staticmethod
    def _target(
        info: ResourceInfo, namespace: str | None, name: str | None, sub: str, verb: str
    ) -> RequestTarget:
        if info.namespaced and not namespace and verb not in ("list", "watch"):
            raise status.bad_request(f"{info.plural} are namespaced: a namespace is required")
        return RequestTarget(info, namespace if info.namespaced else None, name, sub, verb)

    async def get(
        self, info: ResourceInfo, name: str, namespace: str | None = None, *, subresource: str = ""
    ) -> Object:
        target = self._target(info, namespace, name, subresource, "get")
        await self._authorize(target)
        # The store decodes a new object on every read: nothing to copy.
        obj = await self.ctx.objects.get(info, target.namespace, name)
        if subresource == "scale":
            return subresources.to_scale(obj)
        if subresource not in ("", "status"):
            raise status.method_not_allowed("GET", f"{info.plural}/{subresource}")
        return obj

    def _list_options(
        self, info: ResourceInfo, label_selector: str, field_selector: str, version: str = ""
    ) -> ListOptions:
        return ListOptions(
            label_selector=LabelSelector.parse(label_selector) if label_selector else None,
            field_selector=FieldSelector.parse(field_selector, info) if field_selector else None,
            limit=0,
            continue_token="",
            resource_version=version,
            resource_version_match="",
            allow_bookmarks=False,
            timeout_seconds=None,
            send_initial_events=None,
        )

    async def list(
        self,
        info: ResourceInfo,
        namespace: str | None = None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
    ) -> tuple[builtins.list[Object], str]:
        target = self._target(info, namespace, None, "", "list")
        await self._authorize(target, field_selector)
        opts = self._list_options(info, label_selector, field_selector, resource_version)
        page = await list_objects(self.ctx, info, target.namespace, opts)
        for item in page.items:
            item.setdefault("apiVersion", info.api_version)
            item.setdefault("kind", info.kind)
        return page.items, str(page.revision)

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
        """As the watch handler: from now (listing first) or after ``resource_version``; ends
        at ``timeout_seconds`` or when the server stops; 410 is raised as the ApiError."""
        target = self._target(info, namespace, None, "", "watch")
        await self._authorize(target, field_selector)
        opts = self._list_options(info, label_selector, field_selector)
        timeout = timeout_seconds or random.uniform(1800, 3600)  # noqa: S311 - not secret
        deadline = time.monotonic() + timeout
        if resource_version in ("", "0"):
            page = await list_objects(self.ctx, info, target.namespace, opts)
            after = page.revision
            for item in page.items:
                yield "ADDED", item
        else:
            after = parse_revision(resource_version)
        changes = self.ctx.objects.watch(info.storage_prefix(target.namespace), after)
        stopping = asyncio.ensure_future(self.ctx.stopping.wait())
        pending: asyncio.Future[builtins.list[ObjectEvent]] | None = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                if pending is None:
                    pending = asyncio.ensure_future(anext(changes))
                waiting: set[asyncio.Future[Any]] = {pending, stopping}
                done, _ = await asyncio.wait(
                    waiting, timeout=remaining, return_when="FIRST_COMPLETED"
                )
                if stopping in done or not done:
                    return
                batch_future, pending = pending, None
                try:
                    batch = batch_future.result()
                except StopAsyncIteration:
                    return
                for event in batch:
                    kind = _classify(event, opts)
                    if kind is not None:
                        # Shared with every other watcher of this change: hand out a copy.
                        yield kind, clone(event.object)
        finally:
            stopping.cancel()
            if pending is not None:
                pending.cancel()
                with contextlib.suppress(BaseException):
                    await pending
            with contextlib.suppress(Exception):
                await changes.aclose()  # type: ignore[attr-defined]

    def _checked(self, target: RequestTarget, obj: Object) -> Object:
        """The body checks of a create or replace (``write._read_object`` without the bytes)."""
        obj = clone(obj)
        write.check_kind(target.info, obj)
        typecheck.check(target.info, obj)
        write.check_fields(target.info, obj, None, _OPTIONS)
        write.place(target, obj)
        return obj

    async def create(
        self,
        info: ResourceInfo,
        obj: Object,
        namespace: str | None = None,
        *,
        subresource: str = "",
    ) -> Object:
        meta = _meta(obj)
        ns = namespace or meta.get("namespace")
        if subresource:
            name = str(meta.get("name", ""))
            target = self._target(info, ns, name, subresource, "create")
            await self._authorize(target)
            if info.plural != "pods" or subresource not in ("binding", "eviction"):
                raise status.method_not_allowed("POST", f"{info.plural}/{subresource}")
            assert target.namespace is not None
            if subresource == "eviction":  # the UpdatePlan controller's drain
                await eviction.evict_pod(self.ctx, target.namespace, name, delete.DeleteOptions())
            else:
                await subresources.bind(self.ctx, target.namespace, name, clone(obj))
            return {"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 201}
        target = self._target(info, ns, None, "", "create")
        await self._authorize(target)
        new = self._checked(target, obj)
        new_meta = new["metadata"]
        if info.namespaced:
            await write.namespace_accepts(self.ctx, new_meta["namespace"])
        generate = new_meta.get("generateName") if not new_meta.get("name") else None
        if not new_meta.get("name") and not generate:
            raise status.invalid(
                info.group,
                info.kind,
                "",
                [status.Cause("FieldValueRequired", "name or generateName is required", "")],
            )
        attempts = 8 if generate else 1
        for attempt in range(attempts):
            candidate = clone(new) if generate else new
            if generate:
                suffix = "".join(random.choices(write._NAME_ALPHABET, k=5))  # noqa: S311
                candidate["metadata"]["name"] = generate[:58] + suffix
            try:
                return await engine.create_object(self.ctx, info, candidate)
            except status.ApiError as err:
                if err.reason == "AlreadyExists" and attempt < attempts - 1:
                    continue
                raise
        raise AssertionError("unreachable")

    async def update(self, info: ResourceInfo, obj: Object, *, subresource: str = "") -> Object:
        meta = _meta(obj)
        name = str(meta.get("name", ""))
        target = self._target(info, meta.get("namespace"), name, subresource, "update")
        await self._authorize(target)
        new = self._checked(target, obj)
        wanted = write._precondition(new)
        deadline = WorkBudget(0, self.ctx.settings.request_timeout_seconds)
        while True:
            deadline.check_time()
            old = await self.ctx.objects.get(info, target.namespace, name)
            if wanted and wanted != int(old["metadata"]["resourceVersion"]):
                raise write._stale(info, name)
            try:
                return await engine.update_object(
                    self.ctx, info, clone(new), old, subresource=subresource
                )
            except status.ApiError as err:
                if err.reason == "Conflict" and not wanted:
                    continue
                raise

    async def patch(
        self,
        info: ResourceInfo,
        name: str,
        patch: Object | builtins.list[Any],
        namespace: str | None = None,
        *,
        patch_type: PatchType = "merge",
        subresource: str = "",
    ) -> Object:
        target = self._target(info, namespace, name, subresource, "patch")
        await self._authorize(target)
        settings = self.ctx.settings
        budget = WorkBudget(settings.max_request_body_bytes, settings.request_timeout_seconds)
        body = clone(patch)
        while True:
            budget.check_time()
            old = await self.ctx.objects.get(info, target.namespace, name)
            patched = write.apply_patch(info, old, _PATCH_CONTENT[patch_type], body, budget)
            write.check_kind(info, patched)
            typecheck.check(info, patched)
            write.check_fields(info, patched, None, _OPTIONS)
            if patched["metadata"].get("name") != name:
                raise status.bad_request("the name of an object cannot be changed by a patch")
            if info.namespaced:
                patched["metadata"]["namespace"] = target.namespace
            wanted = write._precondition(patched)
            if wanted and wanted != int(old["metadata"]["resourceVersion"]):
                raise write._stale(info, name)
            try:
                return await engine.update_object(
                    self.ctx, info, patched, old, subresource=subresource
                )
            except status.ApiError as err:
                if err.reason != "Conflict":
                    raise

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
        """Delete; the object (still there while finalizers run) or None if it is gone."""
        target = self._target(info, namespace, name, "", "delete")
        await self._authorize(target)
        if propagation_policy is not None and propagation_policy not in delete._POLICIES:
            raise status.bad_request(f"unknown propagationPolicy {propagation_policy!r}")
        given = dict(preconditions or {})
        opts = delete.DeleteOptions(
            grace_period_seconds=grace_period_seconds,
            propagation_policy=propagation_policy,
            uid=given.get("uid", ""),
            resource_version=given.get("resourceVersion", ""),
        )
        result, gone = await delete.delete_with_retries(
            self.ctx, info, target.namespace, name, opts
        )
        if gone and info.kind not in delete.RETURNS_DELETED_OBJECT:
            return None
        return result
